"""A sync round: gather from every site, then redistribute to every site.

Owns the coordinator's round on the node that holds the siège role: each phase exchanges
with every configured site still in service (a site that dials out is not dialled: the round
reports the exchanges it made itself; several at once, bounded — the network overlaps, the database
work stays serialized by the node; a ``news`` round gathers only from the sites that said
they committed changes, wake on commit), reports each site's progress as it goes (changes
actually applied, of about how many, every ``PROGRESS_S``; heartbeats never counted), counts
the changes per table, and never lets one failed or unreachable site abort the others: the
site is reported and keeps its backlog for the next round. ``stop`` ends the round at the next
batch boundary — every batch is applied whole or not at all — and the report says stopped.

Every round is stored (``reports.py``), with every transaction held at any site when it
ended (``held_everywhere``: the siège's own record, each reachable site's Status, and what a
site that dials in said last through ``ReportHeld``), described from the siège's log — or,
for a transaction held at the siège itself, from its origin. The
report's sentences speak the siège's ``[operator] language``. Must never apply anything
itself: exchanges do.
"""

from __future__ import annotations

import contextvars
import logging
import shutil
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import grpc
from firebird.driver import Connection

from ..certs import Bundle, CertError, days_left, from_pem
from ..i18n import _, speaking, when
from ..node.db.database import READ_COMMITTED_RW, transaction
from ..node.journal import eventlog, guardwatch, parking
from ..node.journal.capture import EVENTS_TABLE
from ..node.journal.parking import listing as parked_listing
from ..node.journal.status import capture_status
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..node.mesh.exchange import Moving
from ..proto import coordinator_pb2, events_pb2, sync_pb2, sync_pb2_grpc
from . import reports
from .purge import decommissioned
from .reports import DIALS_IN

log = logging.getLogger(__name__)

PARALLEL_SITES = 4
PROGRESS_S = 2.0  # a running exchange says how far it is this often (siege-ctl manual)
# A site's certificate is read (one more TLS connection) at most this often: continuous
# rounds every few seconds spent a handshake a site each on a number that changes daily.
CERT_CHECK_S = 3600.0
PHASES = ("gather", "redistribute")
DIAL_IN_SILENCE_S = 3600.0  # a site dialling in is "failed" after this long without a word
SILENT_AFTER_HELLOS = 3  # hellos of a site dialling in with the same heartbeat: it is silent
NEEDS_RESYNC = "needs_resync:"  # SYNC$STATE at the siège, per site: since when, and why

Progress = Callable[[coordinator_pb2.SiteProgress], None]


class RoundBusy(Exception):
    pass


class Rounds:
    def __init__(self, node: Node,
                 finish: Callable[[coordinator_pb2.RoundReport], None] | None = None,
                 cap: Callable[[str, dtime], float | None] | None = None) -> None:
        """``finish``: work after the exchanges that completes the report before it is
        stored (the purge). ``cap``: a site's bandwidth cap (bits/s) at a time of day."""
        self._node = node
        self._finish = finish
        self._caps = cap
        self._running = threading.Lock()
        self._stop = threading.Event()
        self.progress_every = PROGRESS_S
        self.started = time.time()  # UTC seconds: the clock of a site never heard from
        # Per site dialling in: its heartbeat as last seen changing, and its hello count then.
        self._beats: dict[str, tuple[int | None, int]] = {}
        # Per site dialling in: what it last said is held there (ReportHeld), and when.
        self.held_reported: dict[str, tuple[float, coordinator_pb2.HeldReply]] = {}
        # Per site: when its certificate was last read (monotonic) and when it expires.
        self._expiries: dict[str, tuple[float, datetime]] = {}

    @property
    def sites(self) -> list[str]:
        gone = decommissioned(self._node)
        return sorted(s for s in self._node.service_cfg.peers if s not in gone)

    def _cap(self, site: str) -> float | None:
        return self._caps(site, datetime.now().time()) if self._caps is not None else None

    @property
    def running(self) -> bool:
        return self._running.locked()

    def stop(self) -> bool:
        """Ask the running round to stop; whether one was running."""
        if not self._running.locked():
            return False
        self._stop.set()
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Stop the running round and wait for it to store its report (before the node
        closes its database)."""
        self.stop()
        if self._running.acquire(timeout=timeout):
            self._running.release()

    def run(self, trigger: str, progress: Progress | None = None,
            news: Collection[str] | None = None) -> coordinator_pb2.RoundReport:
        """``news``: a round for sites that said they committed changes (wake on commit,
        node/journal/news.py): it gathers from those only, then redistributes to every site, and
        asks for no heartbeat (the scheduled rounds do)."""
        if not self._running.acquire(blocking=False):
            raise RoundBusy("a round is already running; wait for it or `siege-ctl stop` it")
        try:
            self._stop.clear()
            with speaking(self._node.cfg.language):  # what the report says
                return self._run(trigger, progress or (lambda _p: None), news)
        finally:
            self._running.release()

    def _run(self, trigger: str, progress: Progress,
             news: Collection[str] | None = None) -> coordinator_pb2.RoundReport:
        site_id = self._node.cfg.site
        started = datetime.now()
        before = self._conflicts()
        with self._node.replica.database() as con:
            round_no = reports.next_id(con)
        report = coordinator_pb2.RoundReport(id=round_no, trigger=trigger,
                                             started=started.isoformat(timespec="seconds"))
        per_site = {s: report.sites.add(site=s, outcome="complete") for s in self.sites}
        lock = threading.Lock()  # progress callbacks and report updates from the pool

        def one(site: str, phase: str) -> None:
            entry = per_site[site]
            if self._stop.is_set():
                with lock:
                    if entry.outcome == "complete":
                        entry.outcome = "skipped"
                    progress(coordinator_pb2.SiteProgress(site=site, phase=phase,
                                                          state="skipped"))
                return
            announced = self._node.addresses.announced(site)
            if announced is not None and announced.dials_out_only:
                # It cannot be dialled (CGNAT): it exchanges with the siège on its own
                # schedule (daemon.dial_out); the round reports those exchanges.
                if phase == "gather":
                    self._dialled_in(entry)
                with lock:
                    progress(coordinator_pb2.SiteProgress(
                        site=site, phase=phase, state=entry.outcome,
                        events_in=entry.events_in, events_out=entry.events_out))
                return
            with lock:
                progress(coordinator_pb2.SiteProgress(site=site, phase=phase, state="running"))
            t0 = time.monotonic()
            said = [t0]  # when progress was last said

            def moving(now: Moving) -> None:
                """A long phase never goes quiet: how far it is, every PROGRESS_S."""
                if time.monotonic() - said[0] < self.progress_every:
                    return
                said[0] = time.monotonic()
                with lock:
                    progress(coordinator_pb2.SiteProgress(
                        site=site, phase=phase, state="running", events_in=now.pulled,
                        events_out=now.sent, expected_in=now.expected_in,
                        expected_out=now.expected_out))

            try:
                # Gathering asks each site for its heartbeat of this round (see below).
                reply = self._node.exchange(site, stop=self._stop,
                                            round_no=round_no if phase == "gather"
                                            and news is None else 0,
                                            cap_bits_per_s=self._cap(site), progress=moving)
            except Exception as exc:  # one site's surprise must not lose the whole round
                log.exception("[%s] exchange with %s", site_id, site)
                reply = sync_pb2.ExchangeReply(peer=site, problems=[
                    f"unexpected error: {type(exc).__name__}: {exc}"])
            with lock:
                entry.unreachable = entry.unreachable or reply.unreachable
                if reply.stopped and entry.outcome == "complete":
                    entry.outcome = "stopped"
                entry.events_in += reply.pulled_events
                entry.events_out += reply.pushed_events
                for table, count in reply.pulled_tables.items():
                    entry.tables_in[table] += count
                for table, count in reply.pushed_tables.items():
                    entry.tables_out[table] += count
                entry.duration_ms += int((time.monotonic() - t0) * 1000)
                entry.clock_offset_us = reply.clock_offset_us
                if reply.lost_guards:  # as its latest hello said (a failed one says nothing)
                    entry.ClearField("lost_guards")
                    entry.lost_guards.extend(reply.lost_guards)
                failed = bool(reply.problems)
                if failed:
                    entry.outcome = "failed"
                    entry.errors.extend(p for p in reply.problems if p not in entry.errors)
                progress(coordinator_pb2.SiteProgress(
                    site=site, phase=phase, state="failed" if failed else "done",
                    events_in=reply.pulled_events, events_out=reply.pushed_events,
                    error="; ".join(reply.problems)))

        for phase in PHASES:
            sites = [s for s in self.sites if news is None or phase != "gather" or s in news]
            with ThreadPoolExecutor(max_workers=PARALLEL_SITES,
                                    thread_name_prefix=f"round-{phase}") as pool:
                # Each in a copy of this context: they speak the report's language.
                for future in [pool.submit(contextvars.copy_context().run, one, s, phase)
                               for s in sites]:
                    future.result()
            if phase == "gather" and news is None and not self._stop.is_set():
                self._check_heartbeats(report, round_no)
        if not self._stop.is_set():  # a stopped round ends now
            self._health(report)
        with self._node.replica.database() as con:
            parked = parked_listing(con)
            # The siège's own guards: its triggers fire for what it applies, as anyone's.
            report.siege_lost_guards.extend(
                guardwatch.check(con, self._node.cfg.fire_triggers).lines())
        for entry in report.sites:
            entry.parked = sum(1 for p in parked if p.origin == entry.site)
            self._needs_resync(entry)
        # Not asked again of a site this round could not reach (its Status would time out).
        gone = {e.site for e in report.sites if e.unreachable}
        report.held.extend(held_everywhere(self._node, self.held_reported,
                                           skip=frozenset(gone)).held)
        report.ended = datetime.now().isoformat(timespec="seconds")
        report.new_conflicts = max(self._conflicts() - before, 0)
        report.outcome = _outcome(report, self._stop.is_set())
        if self._finish is not None:
            try:
                self._finish(report)
            except Exception:  # the round happened: its report is stored whatever follows
                log.exception("[%s] after round %d", site_id, round_no)
        with self._node.replica.database() as con:
            reports.store(con, report)
        log.info("[%s] round %d (%s): %s", site_id, report.id, trigger, report.outcome)
        return report

    def _needs_resync(self, entry: coordinator_pb2.SiteReport) -> None:
        """A site this round found needing a resync (events it lacks purged here, or a
        database the mesh no longer takes) is said so with the commands to run, and kept
        on record for ``siege-ctl status`` and the alert (``NEEDS_RESYNC``) until it is
        resynced (join.py clears it) or syncs completely again."""
        why = next((e for e in entry.errors if any(m in e for m in _resync_marks(entry.site))),
                   None)
        name = f"{NEEDS_RESYNC}{entry.site}"
        if why is None:
            if entry.outcome == "complete" and self._node.replica.read_state(name):
                self._node.replica.write_state(name, "")
            return
        entry.errors.append(resync_todo(entry.site))
        if not self._node.replica.read_state(name):
            self._node.replica.write_state(
                name, f"{datetime.now():%Y-%m-%d %H:%M} {' '.join(why.split())}")

    def _dialled_in(self, entry: coordinator_pb2.SiteReport) -> None:
        """A site that dials in: what its own exchanges moved since the last round; failed
        when it has not exchanged for DIAL_IN_SILENCE_S (its node or its line is down)."""
        seen = self._node.addresses.take_traffic(entry.site)
        entry.events_in, entry.events_out = seen.events_in, seen.events_out
        # Announcing is no proof of syncing: without an exchange since this node started,
        # the clock runs from its start.
        last = seen.last if seen.last is not None else self.started
        greeted = seen.greeted
        if greeted is not None and greeted.refused \
                and time.time() - greeted.at <= DIAL_IN_SILENCE_S:
            # Its hellos come but the siège's service refuses its Pull and Push (its merge
            # policies differ): that is why nothing moves, not a broken capture.
            entry.outcome = "failed"
            entry.errors.append(greeted.refused)
        elif time.time() - last > DIAL_IN_SILENCE_S:
            entry.outcome = "failed"
            entry.errors.append(_(
                "it cannot be dialled and has not exchanged since {when}: check its node and "
                "its line (it dials the siège itself, [node] dial_every)").format(
                    when=when(datetime.fromtimestamp(last))))
        elif self._silent(entry.site, seen.hellos):
            entry.outcome = "failed"
            entry.silent = True
            entry.errors.append(_(
                "it dials in but its heartbeat has not changed over its last {count} "
                "exchanges — its capture is broken or not installed "
                "(or every one of its exchanges was cut before it sent its changes); run "
                "`siege-node status` and `siege-node install` there").format(
                    count=SILENT_AFTER_HELLOS))
        else:
            entry.outcome = DIALS_IN

    def _silent(self, site: str, hellos: int) -> bool:
        """A site dialling in writes a heartbeat before each exchange it starts: one that
        keeps saying hello while its heartbeat stays the same is reachable but silent."""
        beat = self._node.replica.heartbeats().get(site)
        seen = self._beats.get(site)
        if seen is None or seen[0] != beat:
            self._beats[site] = (beat, hellos)
            return False
        return hellos - seen[1] >= SILENT_AFTER_HELLOS

    def _health(self, report: coordinator_pb2.RoundReport) -> None:
        """Certificates' days left, the siège's free disk and log size, for the alerts."""
        node = self._node
        bundle, _changed = node.watcher.refresh()
        report.siege_cert_days_left = bundle.days_to_expiry()
        for entry in report.sites:
            if entry.outcome != "complete":
                continue
            known = self._expiries.get(entry.site)
            if known is not None and time.monotonic() - known[0] < CERT_CHECK_S:
                entry.cert_days_left = days_left(known[1])
                continue
            address = node.address(entry.site)
            if address is None:
                continue
            try:
                pem = transport.peer_certificate(address, bundle, entry.site, timeout=10)
                not_after = from_pem(pem).not_after
            except (OSError, CertError):
                continue
            self._expiries[entry.site] = (time.monotonic(), not_after)
            entry.cert_days_left = days_left(not_after)
        folder = Path(node.cfg.database.dsn).parent
        if folder.is_dir():  # a local database (not "host:/path" through a server)
            report.siege_disk_free_mb = shutil.disk_usage(folder).free // (1024 * 1024)
        with node.replica.database() as con:
            report.siege_stored_events = eventlog.stored_events(con)

    def _check_heartbeats(self, report: coordinator_pb2.RoundReport, round_no: int) -> None:
        """A site that answered but whose heartbeat of this round did not come back with
        its events is reachable but silent: its capture is broken."""
        beats = self._node.replica.heartbeats()
        for entry in report.sites:
            if entry.outcome == "complete" and beats.get(entry.site, 0) != round_no:
                entry.outcome = "failed"
                entry.silent = True
                entry.errors.append(_(
                    "reachable but silent: its heartbeat for sync {id} did not arrive — its "
                    "capture is broken or not installed; run `siege-node status` and "
                    "`siege-node install` there").format(id=round_no))

    def _conflicts(self) -> int:
        with self._node.replica.database() as con:
            return capture_status(con).conflicts


def _resync_marks(site: str) -> tuple[str, ...]:
    """What an exchange's problems say when only a resync of ``site`` helps: the events it
    lacks are purged here (outbox.PurgedHere), or its database is one the mesh no longer
    takes (replica.meet). Not a held transaction of *another* origin that needs one
    (parking.py names that origin)."""
    return ("needs a resync", f"siege-ctl resync {site}`", "`siege-ctl resync` for this site")


def resync_todo(site: str) -> str:
    """What an operator does for a site that needs a resync (said the same everywhere)."""
    return (f"{site} NEEDS A RESYNC: at {site}, stop its node (the application may keep "
            f"running) and start `siege-node resync --config FILE`, then run `siege-ctl "
            f"resync {site}` at the siège; what {site} wrote that the mesh lacks goes on "
            f"record in its new database (`siege-node conflicts` there)")


def _outcome(report: coordinator_pb2.RoundReport, stopped: bool) -> str:
    outcomes = [s.outcome for s in report.sites]
    if stopped:
        return "stopped"
    if all(o in ("complete", DIALS_IN) for o in outcomes):
        return "complete"
    if outcomes and all(o == "failed" for o in outcomes):
        return "failed"
    return "partial"


STATUS_TIMEOUT = 10.0


def held_everywhere(node: Node,
                    reported: dict[str, tuple[float, coordinator_pb2.HeldReply]] | None = None,
                    sites: frozenset[str] = frozenset(),
                    skip: frozenset[str] = frozenset()) -> coordinator_pb2.HeldReply:
    """Every transaction held at the siège and at each site (``sites``: only those), with
    its rows and values from the siège's log. A site is asked for its Status (its
    ``SYNC$PARKED``); a site that dials in cannot be asked: what it said last through
    ``ReportHeld`` stands, with its time. Sites that could not be asked are in ``problems``."""
    me = node.cfg.site
    reply = coordinator_pb2.HeldReply()
    gone = decommissioned(node)
    wanted = [s for s in [me, *sorted(node.service_cfg.peers)]
              if s not in gone and (not sites or s in sites)]
    bundle, _changed = node.watcher.refresh()
    found: list[coordinator_pb2.HeldTransaction] = []
    asked: list[str] = []
    # The sites first, outside the pipeline's lock: a slow site must not hold it up.
    for site in wanted:
        if site == me or site in skip:
            continue
        announced = node.addresses.announced(site)
        if announced is not None and announced.dials_out_only:
            said = (reported or {}).get(site)
            if said is None:
                reply.problems.append(
                    f"{site} dials in and cannot be asked; it has not said what it holds "
                    f"since the siège started: run `siege-node held` at {site}")
                continue
            when, what = said
            for t in what.held:
                out = coordinator_pb2.HeldTransaction()
                out.CopyFrom(t)
                out.site = site
                out.reported = datetime.fromtimestamp(when).isoformat(sep=" ",
                                                                      timespec="seconds")
                found.append(out)
            continue
        asked.append(site)

    def ask(site: str) -> tuple[list[coordinator_pb2.HeldTransaction], str]:
        address = node.address(site)
        if address is None:
            return [], f"{site}: no address known (siege-ctl test)"
        try:
            with transport.channel(address, bundle, site) as ch:
                status = sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(),
                                                               timeout=STATUS_TIMEOUT)
        except grpc.RpcError as exc:
            return [], f"{site} could not be asked: {exc.code().name}: {exc.details()}"
        out = []
        for p in status.parked:
            try:
                since = datetime.fromisoformat(p.since)
            except ValueError:
                since = datetime.now()
            held = parking.to_proto(parking.Held(site, parking.Parked(
                p.origin, p.incarnation, p.seq, p.reason, since, since, p.attempts)))
            held.last_tried = ""  # its Status does not say
            held.past_limit = p.past_limit
            out.append(held)
        return out, ""

    # Several at once, as the round's exchanges: N sites cost about one Status, not N.
    with ThreadPoolExecutor(max_workers=PARALLEL_SITES, thread_name_prefix="held") as pool:
        for held_there, problem in pool.map(ask, asked):
            found.extend(held_there)
            if problem:
                reply.problems.append(problem)
    own: list[coordinator_pb2.HeldTransaction] = []
    with node.replica.database() as con:
        if me in wanted:
            own = [parking.to_proto(h) for h in parking.held_here(con, me)]
        for out in found:
            describe_from_log(con, out)
            reply.held.append(out)
    for out in own:
        if not out.rows:  # the siège stores only what it applied: ask the origin
            describe_from_origin(node, bundle, out)
        reply.held.append(out)
    return reply


def describe_from_origin(node: Node, bundle: Bundle,
                         held: coordinator_pb2.HeldTransaction) -> None:
    """Fill the rows of a transaction held at the siège itself from its origin (a Pull of
    what the siège lacks, read only as far as that transaction, then cancelled)."""
    where = (f"these events are at {held.origin}; the siège stores only what it applied")
    announced = node.addresses.announced(held.origin)
    address = node.address(held.origin) if held.origin in node.service_cfg.peers else None
    if address is None or (announced is not None and announced.dials_out_only):
        held.rows_note = f"{where}, and {held.origin} cannot be dialled to read them"
        return
    have = node.replica.vector(publish=False).to_proto()
    events: list[events_pb2.Event] = []
    count = 0
    try:
        with transport.channel(address, bundle, held.origin) as ch:
            stream = sync_pb2_grpc.SyncNodeStub(ch).Pull(
                sync_pb2.PullRequest(have=have, max_events_per_batch=500),
                timeout=STATUS_TIMEOUT)
            for batch in stream:
                for body in batch.events:
                    event = events_pb2.Event.FromString(body)
                    if (event.origin.site, event.origin.incarnation) != (
                            held.origin, held.incarnation) or event.seq < held.first_seq:
                        continue
                    if event.seq == held.first_seq:
                        count = max(event.tx.count, 1)
                    if count and len(events) < count:
                        events.append(event)
                if count and len(events) >= count:
                    stream.cancel()
                    break
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.CANCELLED:
            held.rows_note = (f"{where}, and {held.origin} could not be asked: "
                              f"{exc.code().name}: {exc.details()}")
            return
    if not events:
        held.rows_note = f"{where}, and it did not send them"
        return
    held.rows_note = ""
    held.last_seq = events[-1].seq
    for event in events:
        r = parking.row_of(event)
        held.rows.add(table=r.table, op=r.op, key=r.key, values=r.values,
                      key_data=r.key_data)


def describe_from_log(con: Connection, held: coordinator_pb2.HeldTransaction) -> None:
    """Fill ``held``'s rows and values from the siège's log (it stores every event that
    passed through it) when the holding site could not."""
    if held.rows:
        return
    rows, last = parking.held_rows(con, parking.Parked(
        held.origin, held.incarnation, held.first_seq, held.reason, datetime.now(),
        datetime.now(), held.attempts))
    if not rows:
        held.rows_note = (f"its events are not stored at the siège either (the siège holds "
                          f"them itself, or never had them): they are at {held.origin}")
        return
    held.last_seq = last
    held.rows_note = ""
    for r in rows:
        held.rows.add(table=r.table, op=r.op, key=r.key, values=r.values,
                      key_data=r.key_data)
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT MAX(LAST_SEQ) FROM {EVENTS_TABLE} WHERE ORIGIN = ? AND "
                    "INCARNATION = ?", (held.origin, held.incarnation))
        newest = cur.fetchone()[0]
        cur.close()
    held.behind = max(int(newest or 0) - last, 0)
