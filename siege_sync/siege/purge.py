"""After a round: what every site holds, and telling every site what it may forget
(DESIGN §3.7; the rules themselves are ``node/journal/retention.py``'s).

Owns the coordinator's side of retention: it reads every site's vector (each site's applied
counters and its own published position, read at one moment by that site), takes the
minimum — what every site has applied — and orders the purge at the siège and at every
site, with the previous round's snapshot for the registers of ended lives. A site that
cannot be dialled counts with what it said it holds at its last hello here, and asks for the
order when it next dials in (``SyncNode.PurgeOrder``). It purges only
after a round that reached every site it counts: one site it cannot ask means nothing is
purged. A site whose last complete sync is older than the lag limit, or that was
decommissioned, stops holding the purge back: it is reported as needing a resync.

Must never purge on a guess: any doubt (a site unreachable, a vector missing) skips it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc

from ..node.journal import capture
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..node.mesh.discovery import Greeted
from ..node.model.vector import Vector
from ..proto import coordinator_pb2, sync_pb2, sync_pb2_grpc
from . import reports
from .reports import DIALS_IN

JOINING = "joining:"  # + site: a copy is on its way there (siege/join.py sets it)

log = logging.getLogger(__name__)

_SNAPSHOT = "retention_snapshot"
_DECOMMISSIONED = "decommissioned:"
TIMEOUT = 60.0


@dataclass(frozen=True)
class Snapshot:
    held: Vector  # what every site held (had applied)
    published: Vector  # each site's own published position

    def to_json(self) -> str:
        def enc(v: Vector) -> list[list[object]]:
            return [[s, i, n] for (s, i), n in sorted(v.seqs.items())]
        return json.dumps({"held": enc(self.held), "published": enc(self.published)})

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        raw = json.loads(text)

        def dec(rows: list[list[object]]) -> Vector:
            return Vector({(str(s), int(i)): int(n) for s, i, n in rows})  # type: ignore[call-overload]
        return cls(dec(raw["held"]), dec(raw["published"]))


def decommissioned(node: Node) -> dict[str, str]:
    """The sites decommissioned, with when."""
    with node.replica.database() as con:
        return {name[len(_DECOMMISSIONED):]: when for name, when in capture.states_starting(
            con, _DECOMMISSIONED).items()}


def decommission(node: Node, site: str) -> None:
    with node.replica.database() as con:
        capture.set_state(con, f"{_DECOMMISSIONED}{site}",
                          datetime.now().isoformat(timespec="seconds"))


class Purger:
    def __init__(self, node: Node, lag_days: float) -> None:
        self._node = node
        self._lag = timedelta(days=lag_days)

    def after_round(self, report: coordinator_pb2.RoundReport) -> None:
        """Purge what every counted site has applied; note lagging sites in the report."""
        node = self._node
        counted = [s for s in report.sites if s.site not in decommissioned(node)]
        # A site complete in this round is not lagging (this report is not stored yet); nor
        # is one that dials in and did lately.
        lagging = self._lagging([s.site for s in counted
                                 if s.outcome not in ("complete", DIALS_IN)])
        for entry in counted:
            if entry.site in lagging:
                entry.errors.append(
                    f"no complete sync for more than {self._lag.days} days: it no longer holds "
                    "back the purge of old events and will need a resync")
        counted = [s for s in counted if s.site not in lagging]
        if not counted or any(s.outcome not in ("complete", DIALS_IN) for s in counted) \
                or report.outcome == "stopped":
            return  # no site to count, or one we count was not reached: no purge on a guess
        if self._joining(report):
            return
        vectors = {node.cfg.site: node.replica.vector(publish=False)}
        bundle, _ = node.watcher.refresh()
        for entry in counted:
            if entry.outcome == DIALS_IN:
                # It cannot be asked: what it said it holds at its last hello here is a
                # lower bound of what it holds now, read at one moment (retention.py).
                greeted = _greeted_by_its_database(node, entry.site)
                if greeted is None:
                    log.info("[%s] no purge: %s dials in and has not said what its database "
                             "holds since this node started", node.cfg.site, entry.site)
                    return
                vectors[entry.site] = greeted.held
                continue
            address = node.address(entry.site)
            if address is None:
                log.info("[%s] no purge: %s is not reachable now", node.cfg.site, entry.site)
                return
            try:
                with transport.channel(address, bundle, entry.site) as ch:
                    status = sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(),
                                                                   timeout=TIMEOUT)
                vectors[entry.site] = Vector.from_proto(status.applied)
            except (grpc.RpcError, ValueError) as exc:
                log.info("[%s] no purge: %s did not give its vector (%s)", node.cfg.site,
                         entry.site, exc)
                return
        with node.replica.database() as con:
            saved = capture.get_long_state(con, _SNAPSHOT)
        before = Snapshot.from_json(saved) if saved else None
        order, now = plan(vectors, before)
        done = node.replica.purge(now.held, before.held if before else None,
                                  before.published if before else None)
        total = done.segments
        node.replica.keep_purge_order(order)  # sites that dial in ask for it
        for entry in counted:
            if entry.outcome == DIALS_IN:
                continue
            address = node.address(entry.site)
            if address is None:
                entry.errors.append("purge not done there: not reachable now")
                continue
            try:
                with transport.channel(address, bundle, entry.site) as ch:
                    reply = sync_pb2_grpc.SyncNodeStub(ch).Purge(order, timeout=TIMEOUT)
                total += reply.segments
            except grpc.RpcError as exc:
                entry.errors.append(f"purge not done there: {exc.code().name}: "
                                    f"{exc.details()}")
        with node.replica.database() as con:
            capture.set_long_state(con, _SNAPSHOT, now.to_json())
        report.purged_segments = total
        log.info("[%s] purged %d event segments mesh-wide", node.cfg.site, total)

    def _joining(self, report: coordinator_pb2.RoundReport) -> bool:
        """A copy sent to a site that has not synced since (siege/join.py) holds the purge
        back: the events after the copy must still be there for it."""
        node = self._node
        waiting = _joining_sites(node)
        for entry in report.sites:
            if entry.site in waiting and (entry.outcome == "complete" or (
                    entry.outcome == DIALS_IN
                    and _greeted_by_its_database(node, entry.site) is not None)):
                node.replica.write_state(f"{JOINING}{entry.site}", "")
                del waiting[entry.site]
        if waiting:
            log.info("[%s] no purge: %s not synced since a copy was sent", node.cfg.site,
                     ", ".join(sorted(waiting)))
        return bool(waiting)

    def _lagging(self, sites: list[str]) -> set[str]:
        with self._node.replica.database() as con:
            history = reports.listing(con, limit=0)
        if not history:
            return set()
        now = datetime.now()
        out = set()
        for site in sites:
            last = None
            first_seen = None  # the oldest round this site took part in (joined then)
            for report in history:  # newest first
                entry = next((s for s in report.sites if s.site == site), None)
                if entry is None:
                    continue
                first_seen = datetime.fromisoformat(report.started)
                if last is None and entry.outcome in ("complete", DIALS_IN):
                    last = datetime.fromisoformat(report.ended)
            since = last or first_seen
            if since is not None and now - since > self._lag:
                out.add(site)
        return out


def _greeted_by_its_database(node: Node, site: str) -> Greeted | None:
    """The last hello of a site that dials in, if its database is the one recorded here: a
    join or resync records the new database's epoch, so a hello of the database the copy
    replaced (or of one refused since) never counts."""
    greeted = node.addresses.dialled_in(site).greeted
    if greeted is None or greeted.epoch != node.replica.read_state(f"epoch:{site}"):
        return None
    return greeted


def _joining_sites(node: Node) -> dict[str, str]:
    with node.replica.database() as con:
        return {name[len(JOINING):]: value
                for name, value in capture.states_starting(con, JOINING).items() if value}


def plan(vectors: Mapping[str, Vector], before: Snapshot | None
         ) -> tuple[sync_pb2.PurgeRequest, Snapshot]:
    """The purge order for every site, from each counted site's vector (its applied counters
    and its own published position, read at one moment) and the previous round's snapshot;
    and this round's snapshot, to keep for the next one. Pure: the rounds and the tests that
    play them use the same rule."""
    everywhere = _minimum(list(vectors.values()))
    published = Vector({o: n for site, v in vectors.items() for o, n in v.seqs.items()
                        if o[0] == site})
    order = sync_pb2.PurgeRequest(applied_everywhere=everywhere.to_proto())
    if before is not None:
        order.held_then.CopyFrom(before.held.to_proto())
        order.published_then.CopyFrom(before.published.to_proto())
    return order, Snapshot(everywhere, published)


def _minimum(vectors: list[Vector]) -> Vector:
    origins = set.intersection(*(set(v.seqs) for v in vectors)) if vectors else set()
    return Vector({o: min(v.seq(o) for v in vectors) for o in origins})
