"""Whether this site may publish: its own chain confirmed by a peer, or a claim that this
database is an older copy, believed on proof only (DESIGN §3.7, ``rewind.py``).

After a start nothing is published (nor applied) until a peer's hello has confirmed the
head of this site's own chain: a database restored from an old copy must not reuse
sequence numbers. A peer that says it holds more of this site's events than this database
published (``CLAIMED``) would push it into a new incarnation; that is taken for true only
when the peer shows one of those transactions, signed by this site's own certificate and
chaining from our head (issue 20), or when a coordinator says it purged them mesh-wide.
Until then nothing is published; a proof never shown lets publishing go on as before.

Owns that state (``confirmed``, the pending claim) and the decisions on it; every database
step runs on the connection its caller gives, inside the caller's pipeline lock
(``replica.Replica``). Must never decide whom to trust beyond this: the coordinators whose
word on purges counts come from the node's config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from firebird.driver import Connection

from ..journal import capture, rewind
from ..journal.seal import Forged, Unknown, Verifier
from ..model.vector import Vector

log = logging.getLogger(__name__)


class PeerRefused(Exception):
    """A peer that must not be exchanged with until an operator acts (changed epoch, a
    diverged chain)."""


@dataclass(frozen=True)
class _Claim:
    """A peer said it holds more of this site's events than this database published (it
    would have been rewound): nothing is published until the claim is proved or refuted."""

    peer: str
    seq: int  # of our current incarnation, as the peer holds it
    head: bytes
    holds: dict[int, int]  # every incarnation of ours the peer holds, and how far
    was_confirmed: bool  # publishing went on before the claim (again if it is refuted)


def _incarnation(con: Connection) -> int:
    return int(capture.get_state(con, "incarnation") or "1")


class OwnChain:
    """This site's own chain as its peers confirm or dispute it (see the module's
    docstring)."""

    def __init__(self, site: str, verifier: Verifier | None,
                 coordinators: Callable[[], set[str]]) -> None:
        self._site = site
        self._verifier = verifier
        self._coordinators = coordinators
        self.confirmed = False  # a peer confirmed our head: publishing may go on
        self._claim: _Claim | None = None

    @property
    def claim_pending(self) -> bool:
        return self._claim is not None

    def meet(self, con: Connection, peer: str, peer_vector: Vector,
             proof: list[bytes] | None, purged: bool) -> None:
        """How far a peer's vector (its hello) holds our own events: confirms our chain, or
        says that we were rewound (``proof``, ``purged``: what a hello reply brought, see
        ``_claimed``). Raises ``PeerRefused`` when the peer holds other events under our
        numbers."""
        origin = (self._site, _incarnation(con))
        seq, head = peer_vector.seq(origin), peer_vector.heads.get(origin, b"")
        holds = {inc: n for (site, inc), n in peer_vector.seqs.items() if site == self._site}
        check = rewind.confirm_own_chain(
            con, self._site, seq, head, holds,
            # (the siège's or a stand-in's empty vector still confirms: a new mesh's first
            # round, before the siège published anything, must not fail)
            peer_holds_anything=any(peer_vector.seqs.values()) or peer in self._coordinators(),
            proved=False)
        if check is rewind.ChainCheck.CLAIMED:
            self._claimed(con, _Claim(peer, seq, head, holds, self.confirmed or (
                self._claim is not None and self._claim.was_confirmed)), proof, purged)
            return
        if check is rewind.ChainCheck.DIVERGED:
            raise PeerRefused(
                f"{peer} holds other events under this site's numbers: this database "
                "went on from an older copy; run `siege-ctl resync` for this site")
        if check is rewind.ChainCheck.UNCONFIRMED:
            if not self.confirmed:
                log.info("[%s] %s's vector is empty: it confirms nothing; waiting for a peer "
                         "that holds events to confirm this site's chain", self._site, peer)
            return
        self.confirmed = True

    def _claimed(self, con: Connection, claim: _Claim, proof: list[bytes] | None,
                 purged: bool) -> None:
        """A peer says it holds more of our events than we published. Taken for true only
        when it shows one of those transactions, signed by this site's own certificate and
        chaining from our head (a relay or any site could otherwise push this site into a
        new incarnation: issue 20). A hello reply brings it along (``proof``); a peer that
        dialled us can only bring it in the stream that follows, and only a coordinator
        sends us our own events: another site's word is not acted on. Events purged
        mesh-wide can no longer be shown: a coordinator's word that it purged them
        (``purged``) is taken, as its purge orders are — staying on the old numbers would
        publish new changes under numbers the mesh already used, and a resync would then
        take them for synced. Until then nothing is published; a proof never shown lets
        publishing go on as before."""
        if proof is None and claim.peer not in self._coordinators():
            log.warning("[%s] %s says it holds this site's events beyond #%d, but only the "
                        "siège or a stand-in can send them back: not acted on", self._site,
                        claim.peer, claim.seq)
            return
        if self._claim is None:
            log.warning("[%s] %s says it holds this site's events beyond #%d (this database "
                        "would be an older copy): publishing waits until it shows them",
                        self._site, claim.peer, claim.seq)
        self._claim = claim
        self.confirmed = False
        if proof is None:
            return
        if purged:
            self.purged(con, claim.peer)
        elif self.prove(con, proof) is False and self._claim is not None:
            self._refute(f"its hello brought no transaction of this site beyond #{claim.seq}")

    def purged(self, con: Connection, peer: str) -> None:
        """``peer`` says it no longer stores the events of ours it claims (``_claimed``)."""
        claim = self._claim
        if claim is None or claim.peer != peer:
            return
        if peer not in self._coordinators():
            self._refute("says it purged them, and only a coordinator's word on purges counts")
            return
        check = rewind.confirm_own_chain(con, self._site, claim.seq, claim.head,
                                         claim.holds, proved=True)
        if check is rewind.ChainCheck.DIVERGED:
            self._refute("our chains differ (run `siege-ctl resync` for this site)")
            return
        log.warning("[%s] rewound: coordinator %s held this site's events up to #%d and "
                    "purged them (every site had them); new incarnation %d", self._site,
                    peer, claim.seq, _incarnation(con))
        self._claim = None
        self.confirmed = True

    def unproved(self, peer: str) -> None:
        """``peer``'s stream ended without the events it claimed: its claim is refuted."""
        if self._claim is not None and self._claim.peer == peer:
            self._refute("its stream ended without them")

    def prove(self, con: Connection, bodies: list[bytes]) -> bool | None:
        """True: proved and acted on (a new incarnation is taken); False: no proof there
        (or a forged one, refuted); None: signed with a certificate of ours not received
        yet (still pending)."""
        claim = self._claim
        assert claim is not None
        incarnation, seq, head = rewind.own_chain(con)
        found = rewind.claimed_transaction(self._site, incarnation, seq, head, bodies)
        if found is None:
            return False
        events, tx = found
        if self._verifier is not None:
            try:
                self._verifier.check(con, self._site, events, tx)
            except Forged as exc:
                self._refute(f"what it sent as proof is refused: {exc}")
                return False
            except Unknown:
                return None
        check = rewind.confirm_own_chain(con, self._site, claim.seq, claim.head,
                                         claim.holds, proved=True)
        if check is rewind.ChainCheck.DIVERGED:
            self._refute("our chains differ (run `siege-ctl resync` for this site)")
            return False
        if check is rewind.ChainCheck.NEW_INCARNATION:
            log.warning("[%s] rewound: %s showed this site's transaction #%d-%d (incarnation "
                        "%d), signed by this site, which this database never published; new "
                        "incarnation %d", self._site, claim.peer, events[0].seq,
                        events[-1].seq, events[0].origin.incarnation, _incarnation(con))
        self._claim = None
        self.confirmed = True
        return True

    def _refute(self, why: str) -> None:
        claim = self._claim
        assert claim is not None
        log.error("[%s] %s says it holds this site's events beyond #%d, but %s: not "
                  "believed%s", self._site, claim.peer, claim.seq, why,
                  "; publishing goes on" if claim.was_confirmed else "")
        self._claim = None
        self.confirmed = claim.was_confirmed
