"""What a site asks of, and tells, the sites that may coordinate, on its own initiative.

Owns, for a site that cannot be dialled (``outbound_only``), its exchange with the best
coordinator it reaches (``dial_out``) and what a coordinator would otherwise ask it by
calling: its last purge order, followed once and only from a certificate with the relay role
(``follow_purge_order``), and what is held here (``report_held``); where it listens for a
coordinator's news (``listen_to``, tidings.py). For every site, whether the mesh purged
events this database lacks, so that it needs a resync (``check_resync``, kept in
``SYNC$STATE`` for ``siege-node status`` and said in the log).

Part of one ``daemon.Node``: the node's config may change under it (``service``). Must
never decide what to apply: exchanges and purges go through the replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from ...certs import CertError, Role
from ...proto import coordinator_pb2_grpc, sync_pb2, sync_pb2_grpc
from ..journal import parking
from ..model.config import ServiceConfig
from ..model.vector import Vector
from . import transport
from .discovery import AddressBook
from .replica import PurgeRefused, Replica
from .transport import BundleWatcher

log = logging.getLogger(__name__)

PURGE_ORDER_TIMEOUT = 30.0
RESYNC_ASK_TIMEOUT = 10.0  # a stop waits for a question under way: kept short
RESYNC_LOG_S = 3600.0  # the same need said again in the log at most this often
NEEDS_RESYNC = "needs_resync"  # SYNC$STATE: why this site needs a resync ("" when not)

Exchange = Callable[..., sync_pb2.ExchangeReply]  # (peer, stop=) -> the exchange's reply


class Upstream:
    """One site's own calls to its coordinators (see the module's docstring)."""

    def __init__(self, site: str, service: Callable[[], ServiceConfig], replica: Replica,
                 addresses: AddressBook, watcher: BundleWatcher, exchange: Exchange,
                 stopping: threading.Event) -> None:
        self._site = site
        self._service = service
        self._replica = replica
        self._addresses = addresses
        self._watcher = watcher
        self._exchange = exchange
        self._stopping = stopping
        self._obeyed = b""  # the last purge order followed (dial_out asks for it each time)
        self._told: set[str] = set()  # coordinators whose missing PurgeOrder was logged
        self._resync_said = ("", 0.0)  # the need last logged, when (monotonic)

    def address(self, peer: str) -> str | None:
        """Where ``peer`` answered last, else where it answers now (discovery.py)."""
        last = self._addresses.last(peer)
        if last is not None:
            return last.address
        reached = self._addresses.reach(peer)
        return reached.candidate.address if reached.candidate is not None else None

    def dial_out(self) -> sync_pb2.ExchangeReply | None:
        """A site that cannot be dialled exchanges with the best coordinator it reaches —
        the siège, or a stand-in when the siège is gone."""
        for site in self._service().coordinators(self._site):
            if site == self._site:
                continue
            if self._addresses.reach(site).candidate is not None:
                # No round calls here to ask for a heartbeat: this site writes one before
                # each exchange it starts, through its capture path, and the coordinator
                # checks that it keeps changing (siege/rounds.py).
                self._replica.beat(self._replica.clock.utc_now_us())
                reply = self._exchange(site, stop=self._stopping)
                log.info("[%s] dialled out to %s: %d events in, %d out%s", self._site,
                         site, reply.pulled_events, reply.pushed_events,
                         f"; problems: {'; '.join(reply.problems)}" if reply.problems else "")
                if not reply.unreachable:  # problems said, or not: the order is checked
                    self.follow_purge_order(site)
                    self.report_held(site)
                return reply
        log.warning("[%s] no site that may coordinate is reachable (%s)", self._site,
                    ", ".join(self._service().coordinators(self._site)) or "none listed")
        return None

    def listen_to(self) -> list[tuple[str, str]]:
        """Where a site that dials out listens for news: the coordinator it would dial."""
        for site in self._service().coordinators(self._site):
            if site == self._site:
                continue
            reached = self._addresses.reach(site).candidate
            if reached is not None:
                return [(site, reached.address)]
        return []

    def report_held(self, coordinator: str) -> None:
        """A coordinator cannot ask this site what it holds (it cannot dial it): this site
        tells it after each exchange it starts (an empty report clears the siège's copy)."""
        address = self.address(coordinator)
        if address is None:
            return
        with self._replica.database() as con:
            held = parking.held_here(con, self._site)
        bundle, _ = self._watcher.refresh()
        try:
            with transport.channel(address, bundle, coordinator) as ch:
                coordinator_pb2_grpc.CoordinatorStub(ch).ReportHeld(parking.report(held),
                                                                    timeout=30)
        except grpc.RpcError as exc:
            log.info("[%s] could not tell %s what is held here: %s", self._site,
                     coordinator, exc.details())

    def follow_purge_order(self, coordinator: str) -> None:
        """A coordinator cannot order a purge here (it cannot dial this site): this site
        asks for the last one it ordered, and follows it once — if its certificate carries
        the relay role, as the Purge call requires, and it claims nothing not applied here."""
        address = self.address(coordinator)
        if address is None:
            return
        try:
            order = self._purge_order(coordinator, address, PURGE_ORDER_TIMEOUT)
        except grpc.RpcError as exc:
            # A coordinator not upgraded yet lacks the call: said once, not every dial.
            quiet = exc.code() is grpc.StatusCode.UNIMPLEMENTED and coordinator in self._told
            (log.debug if quiet else log.warning)(
                "[%s] could not ask %s for its last purge order: %s: %s", self._site,
                coordinator, exc.code().name, exc.details())
            self._told.add(coordinator)
            return
        if not order.HasField("applied_everywhere") or order.SerializeToString() == self._obeyed:
            return
        try:
            bundle, _ = self._watcher.refresh()
            ident = transport.peer_identity(address, bundle, coordinator, PURGE_ORDER_TIMEOUT)
            if not ident.has_role(Role.RELAY):
                raise PurgeRefused(f"{coordinator}'s certificate has no relay role: only a "
                                   "coordinator may order a purge")
            done = self._replica.obey_purge(order, coordinator)
        except (PurgeRefused, CertError, OSError) as exc:
            log.warning("[%s] purge order of %s not followed: %s", self._site, coordinator,
                        exc)
            return
        self._obeyed = order.SerializeToString()
        log.info("[%s] purge ordered by %s: %d segments, %d ended lives", self._site,
                 coordinator, done.segments, done.lives)

    def _purge_order(self, coordinator: str, address: str,
                     timeout: float) -> sync_pb2.PurgeRequest:
        """The last purge ``coordinator`` ordered (raises ``grpc.RpcError``)."""
        bundle, _ = self._watcher.refresh()
        with transport.channel(address, bundle, coordinator) as ch:
            return sync_pb2_grpc.SyncNodeStub(ch).PurgeOrder(sync_pb2.PurgeOrderRequest(),
                                                             timeout=timeout)

    def check_resync(self) -> str:
        """Whether this site needs a resync, said in its log and kept in its database
        (``siege-node status`` shows it); the reason, "" when it does not.

        Why here: a site put back from an older backup, whose missing events the mesh has
        purged since, is otherwise told nothing — the siège's push to it stops where the
        purge began and only the round report said so (issue 27). The coordinator's last
        purge order says what every counted site had applied when it was purged: an origin
        this site holds less of can never be completed by exchanges."""
        for coordinator in self._service().coordinators(self._site):
            if coordinator == self._site or self._stopping.is_set():
                continue
            address = self.address(coordinator)
            if address is None:
                continue
            try:
                order = self._purge_order(coordinator, address, RESYNC_ASK_TIMEOUT)
            except grpc.RpcError:
                continue  # not reachable now, or not upgraded: asked again next time
            reason = ""
            if order.HasField("applied_everywhere"):
                purged = Vector.from_proto(order.applied_everywhere)
                mine = self._replica.vector(publish=False)
                lacking = [f"{origin} (incarnation {inc}) after #{mine.seq((origin, inc))} "
                           f"(purged up to #{purged.seq((origin, inc))})"
                           for origin, inc in sorted(purged)
                           if purged.seq((origin, inc)) > mine.seq((origin, inc))]
                if lacking:
                    reason = (f"events this database lacks were purged mesh-wide ({coordinator}'s "
                              f"last purge order): {', '.join(lacking)} — they can never "
                              "arrive (this database was put back from an older copy, or "
                              "lagged past the retention limit). Rebuild it: stop this node, "
                              f"run `siege-node resync --config FILE` here, then "
                              f"`siege-ctl resync {self._site}` at the siège; what this "
                              "site wrote that the mesh lacks goes on record here")
            self._said_resync(reason)
            return reason
        return self._replica.read_state(NEEDS_RESYNC) or ""

    def _said_resync(self, reason: str) -> None:
        if (self._replica.read_state(NEEDS_RESYNC) or "") != reason:
            self._replica.write_state(NEEDS_RESYNC, reason)
        said, when = self._resync_said
        now = time.monotonic()
        if reason and (reason != said or now - when >= RESYNC_LOG_S):
            log.error("[%s] THIS SITE NEEDS A RESYNC: %s", self._site, reason)
            self._resync_said = (reason, now)
        elif not reason and said:
            log.info("[%s] no resync needed any more", self._site)
            self._resync_said = ("", now)
