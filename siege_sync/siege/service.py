"""The coordinator's gRPC service (``siege.v1.Coordinator``) for ``siege-ctl``.

Owns who may drive the coordinator: admin certificates only (``siege-certs issue-admin``),
checked like every call of the node (certificate, mesh, revocation) — except ``ReportHeld``,
by which a site (its own certificate, for itself only) says what is held there. Must never
run two rounds at once: a second request is refused with the reason.

Every call answers in the language its caller asks for (``accept-language`` metadata, sent
by ``siege-ctl``), else the siège's ``[operator] language``. ``AlertTest`` sends an alert
email now and returns the mail server's every answer.

``Held`` lists every held transaction (rounds.held_everywhere); with ``retry``, each holding
site's next attempt happens now: the siège exchanges with that site (its push carries the
held transaction again), or — held at the siège itself — with the origin; a site that dials
in retries at its own next dial, which is said.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import grpc

from ..certs import Kind
from ..i18n import LANGUAGE_KEY, LanguageError, _, check_language, speaking, use
from ..node.db import values
from ..node.db.schema import introspect
from ..node.journal import conflicts
from ..node.mesh.daemon import Node
from ..node.mesh.gatekeeper import Gatekeeper
from ..proto import coordinator_pb2, coordinator_pb2_grpc
from . import purge, reports, siteprobe
from .alerts import Alerter
from .analyse import AnalyseError, Analyser
from .join import Joiner, JoinRefused
from .meshstatus import mesh_status
from .rounds import RoundBusy, Rounds, describe_from_log, held_everywhere
from .schedule import Scheduler

log = logging.getLogger(__name__)


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, node: Node, rounds: Rounds,
                 after_round: Callable[[coordinator_pb2.RoundReport], None],
                 role: Callable[[], str] = lambda: "the configured siège",
                 joiner: Joiner | None = None, alerter: Alerter | None = None,
                 scheduler: Scheduler | None = None) -> None:
        """``role``: how this node holds the role now (election.py), for status;
        ``alerter``: the emails of ``[siege.alerts]`` (None: not configured)."""
        self._alerter = alerter
        self._scheduler = scheduler
        self._node = node
        self._rounds = rounds
        self._after_round = after_round
        self._role = role
        self._joiner = joiner or Joiner(node)
        self._gate = Gatekeeper(node.watcher, node.cfg.site)
        for method in coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].methods:
            setattr(self, method.name, self._in_callers_language(
                getattr(self, method.name), method.server_streaming))

    def _in_callers_language(self, handler: Callable, streaming: bool) -> Callable:
        """``handler``, speaking the language its caller asks for (``siege-ctl`` sends its
        shell's in the ``accept-language`` metadata), else the siège's ``[operator]
        language``. Stored reports speak the siège's whoever asks (rounds.py)."""
        def language(context: grpc.ServicerContext) -> str:
            asked = dict(context.invocation_metadata() or ()).get(LANGUAGE_KEY, "")
            try:
                return check_language(str(asked), "accept-language") if asked \
                    else self._node.cfg.language
            except LanguageError:
                return self._node.cfg.language

        if not streaming:
            def unary(request: object, context: grpc.ServicerContext) -> object:
                with speaking(language(context)):
                    return handler(request, context)
            return unary

        def stream(request: object, context: grpc.ServicerContext) -> Iterator:
            spoken = contextvars.copy_context()  # each step runs in it (and what it starts)
            spoken.run(use, language(context))
            steps = spoken.run(handler, request, context)
            while True:
                try:
                    item = spoken.run(next, steps)
                except StopIteration:
                    return
                yield item
        return stream

    def _admin(self, context: grpc.ServicerContext) -> None:
        self._gate.caller(context, Kind.ADMIN)

    def Round(self, request: coordinator_pb2.RoundRequest,
              context: grpc.ServicerContext) -> Iterator[coordinator_pb2.RoundEvent]:
        self._admin(context)

        def work(progress: Callable[[object], None]) -> coordinator_pb2.RoundReport:
            report = self._rounds.run(request.trigger or "manual", progress)
            self._after_round(report)
            return report

        return self._stream(context, "round", work, coordinator_pb2.RoundEvent,
                            {RoundBusy: grpc.StatusCode.FAILED_PRECONDITION})

    def Analyse(self, request: coordinator_pb2.AnalyseRequest,
                context: grpc.ServicerContext) -> Iterator[coordinator_pb2.AnalyseEvent]:
        self._admin(context)
        return self._stream(context, "analysis",
                            lambda progress: Analyser(self._node, progress,
                                                     self._rounds.held_reported).run(request),
                            coordinator_pb2.AnalyseEvent,
                            {AnalyseError: grpc.StatusCode.INVALID_ARGUMENT})

    def Join(self, request: coordinator_pb2.JoinRequest,
             context: grpc.ServicerContext) -> Iterator[coordinator_pb2.JoinEvent]:
        self._admin(context)
        return self._stream(context, "join",
                            lambda progress: self._joiner.run(request.site, progress,
                                                              request.resync),
                            coordinator_pb2.JoinEvent,
                            {JoinRefused: grpc.StatusCode.FAILED_PRECONDITION})

    def _stream(self, context: grpc.ServicerContext, what: str,
                work: Callable[[Callable[[object], None]], coordinator_pb2.RoundReport],
                event: type, refusals: dict[type[BaseException], grpc.StatusCode]
                ) -> Iterator:
        """Run ``work`` in its own thread, streaming its progress then its report as
        ``event``s; its refusals (e.g. a round already running) end the call with their
        status, anything else as INTERNAL."""
        events: queue.Queue = queue.Queue()

        def run() -> None:
            try:
                report = work(lambda p: events.put(event(progress=p)))
                events.put(event(done=report))
            except BaseException as exc:  # handed to the caller's stream below
                events.put(exc)

        # In a copy of this context: the work speaks the caller's language.
        threading.Thread(target=contextvars.copy_context().run, args=(run,), name=what,
                         daemon=True).start()
        while True:
            item = events.get()
            for kind, code in refusals.items():
                if isinstance(item, kind):
                    context.abort(code, str(item))
            if isinstance(item, BaseException):
                log.error("[%s] the %s failed: %s", self._node.cfg.site, what, item)
                context.abort(grpc.StatusCode.INTERNAL, f"the {what} failed: {item}")
            yield item
            if item.HasField("done"):
                return

    def Stop(self, request: coordinator_pb2.StopRequest,
             context: grpc.ServicerContext) -> coordinator_pb2.StopReply:
        self._admin(context)
        return coordinator_pb2.StopReply(was_running=self._rounds.stop())

    def Reports(self, request: coordinator_pb2.ReportsRequest,
                context: grpc.ServicerContext) -> coordinator_pb2.ReportsReply:
        self._admin(context)
        with self._node.replica.database() as con:
            return coordinator_pb2.ReportsReply(reports=reports.listing(con, request.limit))

    def Report(self, request: coordinator_pb2.ReportRequest,
               context: grpc.ServicerContext) -> coordinator_pb2.RoundReport:
        self._admin(context)
        with self._node.replica.database() as con:
            found = reports.get(con, request.id)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no report {request.id}; "
                          "`siege-ctl report list` shows them")
        return found

    def MeshStatus(self, request: coordinator_pb2.MeshStatusRequest,
                   context: grpc.ServicerContext) -> coordinator_pb2.MeshStatusReply:
        self._admin(context)
        reply = mesh_status(self._node, self._rounds)
        reply.role = self._role()
        if self._alerter is not None:
            reply.alert_problems.extend(self._alerter.problems())
        if self._scheduler is not None:
            due = self._scheduler.next_round
            reply.next_round = due.isoformat(timespec="seconds") if due else ""
            reply.continuous = self._scheduler.continuous
        return reply

    def Conflicts(self, request: coordinator_pb2.ConflictsRequest,
                  context: grpc.ServicerContext) -> coordinator_pb2.ConflictsReply:
        self._admin(context)
        reply = coordinator_pb2.ConflictsReply()
        with self._node.replica.database() as con:
            if request.reapply:
                try:
                    reply.reapplied = conflicts.reapply(con, request.reapply).short_id
                except conflicts.ConflictError as exc:
                    context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
                log.info("[%s] an operator re-applied losing version %s", self._node.cfg.site,
                         reply.reapplied)
            try:
                if request.ack:
                    conflicts.mark_seen(con, request.ack)
                    reply.acknowledged = 1
                if request.ack_before:
                    reply.acknowledged += conflicts.mark_seen_before(
                        con, datetime.fromisoformat(request.ack_before))
            except conflicts.ConflictError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            except ValueError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, _(
                    "--ack-before {when}: not a date; write YYYY-MM-DD (or YYYY-MM-DD HH:MM)"
                ).format(when=request.ack_before))
            keys = {name: table.primary_key for name, table in introspect(con).tables.items()}
            for c in conflicts.listing(con, request.table or None,
                                       self._node.cfg.policies):
                if c.seen and not request.all:
                    reply.seen_left_out += 1
                    continue
                state = ("re-applied" if c.reapplied else
                         "awaiting a decision" if c.awaiting_decision else "")
                named = keys.get(c.table) or [""] * len(c.key)
                reply.conflicts.add(
                    id=c.short_id, recorded=c.recorded.isoformat(timespec="seconds"),
                    table=c.table, kind=c.kind, seen=c.seen,
                    key=", ".join(f"{n}={values.describe(k)}" if n else values.describe(k)
                                  for n, k in zip(named, c.key, strict=False)),
                    column=c.column or "", losing_value=values.describe(c.value),
                    current_value=values.describe(conflicts.current_value(con, c))
                    if c.column else "", loser=c.loser,
                    winner=c.lost_to or c.winner or "", state=state,
                    changed=c.changed.isoformat(timespec="seconds") if c.changed else "")
        return reply

    def Decommission(self, request: coordinator_pb2.DecommissionRequest,
                     context: grpc.ServicerContext) -> coordinator_pb2.DecommissionReply:
        self._admin(context)
        if request.site not in self._node.service_cfg.peers:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.site!r} is not a site of this "
                          "siège's [peers]")
        purge.decommission(self._node, request.site)
        log.warning("[%s] %s decommissioned by an operator", self._node.cfg.site, request.site)
        return coordinator_pb2.DecommissionReply()

    def Test(self, request: coordinator_pb2.TestRequest,
             context: grpc.ServicerContext) -> coordinator_pb2.TestReply:
        self._admin(context)
        return coordinator_pb2.TestReply(sites=siteprobe.probe_all(self._node))

    # --- held transactions (siege-ctl held, siege-node held) -------------------------------

    def Held(self, request: coordinator_pb2.HeldRequest,
             context: grpc.ServicerContext) -> coordinator_pb2.HeldReply:
        self._admin(context)
        me = self._node.cfg.site
        everyone = [me, *sorted(self._node.service_cfg.peers)]
        unknown = [s for s in request.sites if s not in everyone]
        if unknown:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"unknown site {', '.join(unknown)} (sites of this siège: "
                          f"{', '.join(everyone)})")
        sites = frozenset(request.sites)
        reported = self._rounds.held_reported
        if not request.retry:
            return held_everywhere(self._node, reported, sites)
        before = held_everywhere(self._node, reported, sites)
        retried = self._retry(before)
        after = held_everywhere(self._node, reported, sites)
        still = {(t.site, t.origin, t.incarnation, t.first_seq): t for t in after.held}
        for t in before.held:
            now = still.get((t.site, t.origin, t.incarnation, t.first_seq))
            retried.append(
                f"{t.origin}#{t.first_seq} at {t.site}: " + (
                    "APPLIED now" if now is None else
                    f"still {now.state} ({now.attempts} attempts): {now.message}"))
        after.retried.extend(retried)
        return after

    def _retry(self, held: coordinator_pb2.HeldReply) -> list[str]:
        """Each holding site's next attempt, now; what each exchange did."""
        me = self._node.cfg.site
        done: list[str] = []
        peers: list[str] = []
        for t in held.held:
            peer = t.origin if t.site == me else t.site
            if peer not in peers and peer != me:
                peers.append(peer)
        for peer in peers:
            announced = self._node.addresses.announced(peer)
            if announced is not None and announced.dials_out_only:
                done.append(f"{peer} dials in and cannot be dialled: it tries again at its "
                            f"next dial (every {self._node.service_cfg.dial_every:.0f} s "
                            f"there), or now with `siege-node held --retry` at {peer}")
                continue
            if peer not in self._node.service_cfg.peers:
                done.append(f"{peer} is not a peer of the siège: it cannot be asked")
                continue
            reply = self._node.exchange(peer)
            done.append(f"exchanged with {peer}: {reply.pulled_events} events applied at the "
                        f"siège, {reply.pushed_events} at {peer}"
                        + (f"; {'; '.join(reply.problems)}" if reply.problems else ""))
        return done

    def AlertTest(self, request: coordinator_pb2.AlertTestRequest,
                  context: grpc.ServicerContext) -> coordinator_pb2.AlertTestReply:
        self._admin(context)
        if self._alerter is None:
            return coordinator_pb2.AlertTestReply(problem=_(
                "{site} sends no alerts: its config has no [siege.alerts] section (smtp_host, "
                "sender, to...)").format(site=self._node.cfg.site))
        done, problem = self._alerter.test()
        return coordinator_pb2.AlertTestReply(sent=not problem, problem=problem,
                                              said=done.said,
                                              to=self._alerter.recipients)

    def ReportHeld(self, request: coordinator_pb2.HeldReply,
                   context: grpc.ServicerContext) -> coordinator_pb2.HeldReply:
        caller = self._gate.caller(context, Kind.SITE)
        reply = coordinator_pb2.HeldReply()
        reply.CopyFrom(request)
        for t in reply.held:
            t.site = caller.name  # a site speaks for itself only
        # Kept for the rounds' reports and siege-ctl held: a site that dials in is not asked.
        kept = coordinator_pb2.HeldReply()
        kept.CopyFrom(reply)
        self._rounds.held_reported[caller.name] = (time.time(), kept)
        with self._node.replica.database() as con:
            for t in reply.held:
                describe_from_log(con, t)
        return reply
