"""``siege-ctl status``: per site, the last complete sync, what is pending, what is parked,
its clock, keys it hands out like every other site, merge policies that differ from the
siège's (nothing crosses until they agree), a site that needs a resync (with what to run,
first in its problem), a decommissioned site as such; who holds the siège role.

Owns gathering that view at the siège: its own reports and records, and each site's own
Status (asked with the siège's site certificate). An unreachable site is shown as such with
what the siège last knew. Must never change anything.
"""

from __future__ import annotations

import time
from datetime import datetime

import grpc

from ..i18n import _, when
from ..node.db.schema import introspect
from ..node.journal import guardwatch
from ..node.journal.parking import listing as parked_listing
from ..node.journal.status import capture_status
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..node.mesh.exchange import policy_check
from ..node.model import keysources
from ..proto import coordinator_pb2, sync_pb2, sync_pb2_grpc
from . import reports
from .purge import decommissioned
from .reports import word
from .rounds import DIAL_IN_SILENCE_S, NEEDS_RESYNC, Rounds, resync_todo

TIMEOUT = 10.0


def mesh_status(node: Node, rounds: Rounds) -> coordinator_pb2.MeshStatusReply:
    with node.replica.database() as con:
        history = reports.listing(con, limit=0)
        own = capture_status(con)
        parked = parked_listing(con)
        own_guards = guardwatch.check(con, node.cfg.fire_triggers).lines()
        own_keys = keysources.warnings(con, introspect(con, node.cfg.tables),
                                       node.cfg.generators)
    held = node.replica.vector(publish=False)
    mine = node.replica.identity()
    reply = coordinator_pb2.MeshStatusReply(coordinator=node.cfg.site, conflicts=own.conflicts,
                                            awaiting_decision=own.awaiting_decision,
                                            round_running=rounds.running,
                                            schema_fingerprint=mine.schema_fingerprint,
                                            schema_changes=node.replica.schema_drift(),
                                            kept_values=node.replica.kept_values(),
                                            key_warnings=own_keys)
    reply.lost_guards.extend(own_guards)
    bundle, _changed = node.watcher.refresh()
    gone = decommissioned(node)
    for site in sorted(node.service_cfg.peers):
        out = reply.sites.add(site=site)
        if site in gone:
            out.decommissioned = gone[site]
            continue
        for report in history:  # newest first
            entry = next((s for s in report.sites if s.site == site), None)
            if entry is None:
                continue
            if not out.clock_offset_us and entry.clock_offset_us:
                out.clock_offset_us = entry.clock_offset_us
            if entry.outcome == "complete":
                out.last_complete_sync = report.ended
                break
        out.parked = sum(1 for p in parked if p.origin == site)
        out.held_here = sum(seq for (origin, _inc), seq in held.seqs.items() if origin == site)
        announced = node.addresses.announced(site)
        if announced is not None and announced.dials_out_only:
            _dialling_in(node, rounds, out)
            continue
        reached = node.addresses.reach(site)
        if reached.candidate is None:
            out.problem = reached.explain(site)
            continue
        out.address = f"{reached.candidate.address} ({word(reached.candidate.source)})"
        try:
            with transport.channel(reached.candidate.address, bundle, site) as ch:
                status = sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(),
                                                               timeout=TIMEOUT)
            out.reachable = True
            out.published = status.published
            out.backlog = status.backlog
            out.schema_fingerprint = status.schema_fingerprint
            out.schema_changes.extend(status.schema_changes)
            out.kept_values.extend(status.kept_values)
            out.lost_guards.extend(status.lost_guards)
            out.key_warnings.extend(status.key_warnings)
            out.problem = policy_check(node.replica, site, status)
        except grpc.RpcError as exc:
            out.problem = f"{exc.code().name}: {exc.details()}"
    for out in reply.sites:  # first, whatever else is wrong: nothing else helps it
        since = node.replica.read_state(f"{NEEDS_RESYNC}{out.site}")
        if since:
            out.problem = (f"{resync_todo(out.site)}. "
                           + _("Found by the sync of {when}").format(when=since)
                           + (". " + _("Also: {problem}").format(problem=out.problem)
                              if out.problem else ""))
    return reply


def _dialling_in(node: Node, rounds: Rounds, out: coordinator_pb2.SiteStatus) -> None:
    """A site that cannot be dialled: what its own exchanges here said (it is not asked)."""
    out.dials_in = True
    seen = node.addresses.dialled_in(out.site)
    if seen.last is not None:
        out.last_complete_sync = datetime.fromtimestamp(seen.last).isoformat(timespec="seconds")
    if seen.greeted is not None:
        out.published = sum(seq for (origin, _inc), seq in seen.greeted.held.seqs.items()
                            if origin == out.site)
    since = seen.last if seen.last is not None else rounds.started
    out.reachable = time.time() - since <= DIAL_IN_SILENCE_S
    if seen.greeted is not None and seen.greeted.refused \
            and time.time() - seen.greeted.at <= DIAL_IN_SILENCE_S:
        # It says hello but exchanges nothing: its last hello is news, its last exchange old.
        out.reachable = True
        out.problem = seen.greeted.refused
    elif not out.reachable:
        out.problem = _("it cannot be dialled and has not exchanged since {when}: check its "
                        "node and its line (it dials the siège itself, [node] dial_every)"
                        ).format(when=when(datetime.fromtimestamp(since)))
