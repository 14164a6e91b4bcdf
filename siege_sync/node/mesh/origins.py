"""Whose events may travel from whom (DESIGN §3.6 "who may say what").

A site sends its own events; a coordinator — a site whose certificate carries the relay role
and whom this node's config lets coordinate (``admission.relaying_only_if_coordinator``) —
sends every origin's. One departure from the design's first form, now that every source
transaction carries its origin's seal (``journal/seal.py``; the design's "later: events
signed by their origin"): **a coordinator that checks seals takes the events of any origin
but its own from any site**, and says so (``HelloReply.takes_any_origin``,
``PullRequest.any_origin``), so that a site sends it every origin's events it lacks. A
forwarded transaction cannot be forged or altered on the way: the coordinator refuses one its
origin did not seal as it is. Without it, a stand-in's transactions that reached only one
site (that site pulled them from the stand-in) were stranded there when the stand-in lost its
database before the siège had them: the siège then waited for ever for them, and held every
later transaction of that site that depended on them (chaos seed 303).

A coordinator's own events still come back to it only from a coordinator (a rewound
coordinator believes a claim on its own chain from coordinators only: ``ownchain.py``), and
a site that does not coordinate takes others' events from coordinators only.

Pure decisions on identities: must never read the database or the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...certs import PeerIdentity, Role


def takes_any_origin(relays: bool, checks_seals: bool) -> bool:
    """Whether this node takes any origin's events (but its own) from any site: it
    coordinates (``relays``: its certificate's relay role) and checks every seal."""
    return relays and checks_seals


def may_take(sender: PeerIdentity, origin: str, me: str, takes_any: bool) -> bool:
    """May ``sender`` (as admitted: its relay role only if it coordinates here) give this
    node, ``me``, the events of ``origin``?"""
    if origin == sender.name or sender.has_role(Role.RELAY):
        return True
    return takes_any and origin != me


@dataclass(frozen=True)
class Sending:
    """What this node sends a peer: ``only`` one origin's events (None: every origin's),
    never those of ``skip``."""

    only: str | None
    skip: str | None = None

    def covers(self, origin: str) -> bool:
        return (self.only is None or origin == self.only) and origin != self.skip


def sending(me: str, relays: bool, peer: PeerIdentity, peer_takes_any: bool) -> Sending:
    """What this node (``relays``: it coordinates) sends ``peer`` (as admitted), who said
    whether it takes any origin's events (``peer_takes_any``)."""
    if relays:
        return Sending(None)
    if peer_takes_any and peer.has_role(Role.RELAY):
        return Sending(None, skip=peer.name)
    return Sending(me)
