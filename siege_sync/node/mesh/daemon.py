"""``siege-node run``: the node as a long-running service.

Owns the process: the database connection, the gRPC server (the sync service, the standard
health service, server reflection) on mutual TLS only, every call admitted first
(admission.py), exchanges started through the service,
and a clean stop — on SIGTERM or SIGINT the server stops taking calls, lets the running ones
finish (grace period), then the database is closed.

Wake on commit (news.py): when the application commits changes here, a coordinator hears of
it at once — this node's own role (``news_hooks``), else the first coordinator that takes it
(``News``), or, for a site that dials out, its next exchange starts now.

Also the node's presence on the mesh (discovery.py): zeroconf on the LAN interfaces it is
given, its port announced to the sites that may coordinate every ``announce_every``, and —
for a site that cannot be dialled (``outbound_only``) — its own exchange with the best
reachable coordinator every ``dial_every``, and at once when that coordinator tells it, on
the one call the site keeps open to it, that it holds others' changes (tidings.py); what the
site asks of and tells its coordinators itself is ``upstream.py``'s.

Under systemd (``Type=notify``) it says READY once it listens and STOPPING when it drains
(readiness.py).

Signals are installed after the database is attached: the Firebird client library installs
its own handlers at the first attach and would otherwise replace ours. On Windows SIGTERM is
not delivered by services; SIGINT (Ctrl-C / the service wrapper's break) stops it the same way.
Must never open a plaintext port.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from importlib.metadata import entry_points

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...certs import CertError, verify_chain
from ...proto import sync_pb2, sync_pb2_grpc
from ..db.database import open_connection
from ..journal import capture, occupant
from ..journal.news import CommitWatch
from ..model.clock import Clock, SystemClock
from ..model.config import NodeConfig, ServiceConfig
from ..operations.join import JoinError, Restorer, database_exists, move_under_way
from . import transport
from .admission import Admission, Limits
from .announce import AnnounceError, Announcer, Browser
from .discovery import AddressBook
from .exchange import ExchangeError, exchange
from .exchange import Progress as ExchangeProgress
from .readiness import notify
from .replica import Replica
from .service import JoinService, SyncService, add_to_server
from .tidings import Listener
from .transport import SERVER_OPTIONS, BundleWatcher, server_credentials
from .upstream import Upstream

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
# A node waiting for its copy serves few calls: the siège's Restore and health checks.
JOIN_LIMITS = Limits(workers=6, reserve=3, per_peer=2)
NEWS_TIMEOUT = 5.0  # a coordinator's answer to news (a stop waits for one under way)
NEWS_UNWANTED_S = 60.0  # no coordinator took news: how long before telling them again
RESYNC_CHECK_S = 300.0  # how often a node asks whether the mesh purged events it lacks
RESYNC_FIRST_S = 30.0  # the first time after a start (its first exchanges come first)
CRL_NUMBER = "crl_number"  # SYNC$STATE: the highest revocation list number this node used
ROLE_ENTRY_POINTS = "siege_sync.roles"  # callables (node, server) -> role object or None
LISTEN_METHOD = "/" + sync_pb2.DESCRIPTOR.services_by_name["SyncNode"].full_name + "/Listen"


class NodeError(Exception):
    pass


class Node:
    """A running node. ``start`` returns the bound port; ``stop`` drains and closes."""

    def __init__(self, cfg: NodeConfig, clock: Clock = SystemClock()) -> None:
        """``clock``: the node's notion of time (tests and the fault injector skew it)."""
        if cfg.service is None:
            raise NodeError(f"{cfg.path or 'config'}: `run` needs a [node] section "
                            "(listen, bundle)")
        self.cfg = cfg
        self.service_cfg: ServiceConfig = cfg.service
        self.watcher = BundleWatcher(cfg.service.bundle)
        ident = self.watcher.bundle.identity
        if ident.name != cfg.site:
            raise NodeError(f"the bundle in {cfg.service.bundle} belongs to site "
                            f"{ident.name!r}, but this node is site {cfg.site!r}; give it its "
                            "own bundle (siege-certs issue SITE)")
        try:
            verify_chain(self.watcher.bundle.cert_pem, self.watcher.bundle.ca_pem)
        except CertError as exc:
            raise NodeError(f"{cfg.service.bundle}: {exc}; every peer refuses this node "
                            "until it has a valid certificate") from None
        self._con = open_connection(cfg.database)
        if not capture.is_installed(self._con):
            self._con.close()
            raise NodeError(f"capture is not installed in {cfg.database.dsn}: run "
                            "`siege-node install` first")
        where = str(cfg.path or "the config")
        try:
            for column in capture.upgrade_core(self._con):
                log.info("[%s] added %s (this version of the node writes it)", cfg.site, column)
            occupant.check_site(self._con, cfg.site, ident.mesh, cfg.database.dsn, where)
            occupant.occupy(self._con, cfg.site, cfg.database.dsn)
        except occupant.Occupied as exc:
            self._con.close()
            raise NodeError(str(exc)) from None
        except BaseException:
            self._con.close()
            raise
        self.replica = Replica(cfg, self._con, clock, lambda: self.watcher.refresh()[0],
                               on_reconnect=lambda con: occupant.occupy(
                                   con, cfg.site, cfg.database.dsn))
        try:
            self.watcher.guard_crl(int(capture.get_state(self._con, CRL_NUMBER) or 0),
                                   self._keep_crl_number)
        except CertError as exc:
            self._con.close()
            raise NodeError(str(exc)) from None
        self.mesh = ident.mesh
        self.addresses = AddressBook(cfg.site, lambda: self.service_cfg, self.replica,
                                     lambda: self.watcher.refresh()[0])
        self._server: grpc.Server | None = None
        self._admission: Admission | None = None
        self._health = health.HealthServicer()
        self._exchange_lock = threading.Lock()
        self._peer_locks: dict[str, threading.Lock] = {}
        self.roles: list[object] = []  # what roles attached (e.g. the coordinator)
        # A role's ear for news (a site committed changes): whether a round follows now.
        self.news_hooks: list[Callable[[str], bool]] = []
        self._commits: CommitWatch | None = None
        self._listener: Listener | None = None  # (a site that dials out: tidings.py)
        self._dial_now = threading.Event()  # the dial-out loop's wake
        self._news_unwanted_until = 0.0  # (monotonic) no coordinator took news
        self._announcer: Announcer | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # What this site asks of and tells its coordinators itself (upstream.py).
        self.upstream = Upstream(cfg.site, lambda: self.service_cfg, self.replica,
                                 self.addresses, self.watcher, self.exchange, self._stopping)

    def _members(self) -> set[str]:
        """The sites this node serves: its ``[peers]`` and the sites that may coordinate."""
        svc = self.service_cfg
        return {*svc.peers, *svc.coordinators(self.cfg.site)}

    def _keep_crl_number(self, number: int) -> None:
        """Kept on a connection of its own: the list changes rarely, and whoever noticed
        (any thread, perhaps inside the replica's database lock) must not wait for it."""
        con = open_connection(self.cfg.database)
        try:
            capture.set_state(con, CRL_NUMBER, str(number))
        finally:
            con.close()

    def start(self) -> int:
        try:
            return self._start()
        except BaseException:
            self.stop(grace=0)
            raise

    def _start(self) -> int:
        # Every site it serves may keep one Listen call open (tidings.py), on threads that
        # are added for them.
        self._admission = Admission(self.watcher, self.cfg.site,
                                    Limits(listeners=len(self._members())),
                                    lambda: set(self.service_cfg.coordinators(self.cfg.site)),
                                    self._members, waiting=frozenset({LISTEN_METHOD}))
        server, port = _listen(self.service_cfg.listen, self.watcher, self._admission)
        self._server = server
        # Requests are decoded by the service, so garbage is refused as INVALID_ARGUMENT.
        add_to_server(SyncService(self.replica, self.watcher, self.exchange,
                                  self.addresses.record_announce,
                                  self.addresses.note_traffic, self.addresses.note_hello,
                                  self.heard_news),
                      server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (sync_pb2.DESCRIPTOR.services_by_name["SyncNode"].full_name,
                 health.SERVICE_NAME, reflection.SERVICE_NAME)
        # Roles (the coordinator) plug in through entry points: node/ never imports them.
        for entry in entry_points(group=ROLE_ENTRY_POINTS):
            role = entry.load()(self, server)
            if role is not None:
                self.roles.append(role)
                names = (*names, *getattr(role, "service_names", ()))
        reflection.enable_server_reflection(names, server)
        server.start()
        for name in ("", names[0]):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("[%s] listening on %s (mTLS)", self.cfg.site, self.service_cfg.listen)
        self._start_presence(port)
        return port

    def _start_presence(self, port: int) -> None:
        svc = self.service_cfg
        if svc.lan:
            try:
                self.addresses.browser = Browser(self.mesh, svc.lan)
                self.addresses.browser.start()
                self._announcer = Announcer(self.cfg.site, self.mesh, port, svc.lan)
                self._announcer.start()
            except (AnnounceError, OSError) as exc:
                raise NodeError(f"zeroconf on [node] lan {list(svc.lan)}: {exc}") from exc
        if svc.announce_every:
            self._every(svc.announce_every, lambda: self.announce(port), "announce")
        if svc.outbound_only:
            self._every(svc.dial_every, self.dial_out, "dial-out", wake=self._dial_now)
            self._listener = Listener(self.cfg.site, self.upstream.listen_to,
                                      lambda: self.watcher.refresh()[0], self._dial_now.set)
            self._listener.start()
        self._commits = CommitWatch(self.cfg.site, self.cfg.database, self.on_commit)
        self._commits.start()
        if svc.siege and svc.siege != self.cfg.site:
            self._every(RESYNC_CHECK_S, self.upstream.check_resync, "resync-check",
                        first_after=RESYNC_FIRST_S)

    def _every(self, seconds: float, work: Callable[[], object], name: str,
               first_after: float = 0.0, wake: threading.Event | None = None) -> None:
        """``wake``: set, the next run starts at once (``stop`` sets it too)."""
        def loop() -> None:
            if first_after and self._stopping.wait(first_after):
                return
            while not self._stopping.is_set():
                try:
                    work()
                except Exception:  # a loop of the node must outlive one failure
                    log.exception("[%s] %s failed", self.cfg.site, name)
                if wake is None:
                    if self._stopping.wait(seconds):
                        return
                    continue
                wake.wait(seconds)
                wake.clear()

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def address(self, peer: str) -> str | None:
        """Where ``peer`` answered last, else where it answers now (discovery.py)."""
        return self.upstream.address(peer)

    def dial_out(self) -> sync_pb2.ExchangeReply | None:
        """A site that cannot be dialled exchanges with the best coordinator it reaches
        (upstream.py)."""
        return self.upstream.dial_out()

    def follow_purge_order(self, coordinator: str) -> None:
        """Ask ``coordinator`` for its last purge order and follow it once (upstream.py)."""
        self.upstream.follow_purge_order(coordinator)

    def check_resync(self) -> str:
        """Whether this site needs a resync; the reason, "" when not (upstream.py)."""
        return self.upstream.check_resync()

    def announce(self, port: int) -> dict[str, str]:
        """Tell every site that may coordinate where this node listens; what each saw."""
        return announce_to(self.cfg.site, self.service_cfg, self.addresses, self.watcher,
                           port)

    def heard_news(self, site: str) -> bool:
        """``site`` (this one, or one that said so) committed changes: whether a round with
        it follows now (a role that coordinates, in continuous mode)."""
        taken = False
        for hook in self.news_hooks:
            taken = hook(site) or taken
        return taken

    def on_commit(self) -> None:
        """The application committed changes here (news.py): a site that dials out
        exchanges now; otherwise this node's own role, or the first coordinator that takes
        it, runs a round with this site now. None taking it: the schedule brings them.
        Sites that dial out and listen here are told (tidings.py)."""
        self.replica.bulletin.post((self.cfg.site,))
        if self.service_cfg.outbound_only:
            self._dial_now.set()
            return
        if self.heard_news(self.cfg.site):
            return
        if time.monotonic() < self._news_unwanted_until:
            return
        bundle, _ = self.watcher.refresh()
        for site in self.service_cfg.coordinators(self.cfg.site):
            address = self.address(site) if site != self.cfg.site else None
            if address is None:
                continue
            try:
                with transport.channel(address, bundle, site) as ch:
                    reply = sync_pb2_grpc.SyncNodeStub(ch).News(sync_pb2.NewsRequest(),
                                                                timeout=NEWS_TIMEOUT)
            except grpc.RpcError as exc:
                log.debug("[%s] could not tell %s of new changes: %s", self.cfg.site, site,
                          exc.details())
                continue
            if reply.taken:
                return
        # No coordinator runs continuously now: asked again after a while, not at every
        # commit of a busy shop.
        self._news_unwanted_until = time.monotonic() + NEWS_UNWANTED_S

    def exchange(self, peer: str, stop: threading.Event | None = None,
                 round_no: int = 0, cap_bits_per_s: float | None = None,
                 progress: ExchangeProgress | None = None) -> sync_pb2.ExchangeReply:
        """One exchange with a configured peer (one at a time per peer; exchanges with
        different peers overlap on the network, the database work stays serialized).
        ``progress``: how far it is, after each batch (exchange.Moving)."""
        spec = self.service_cfg.peers.get(peer)
        if spec is None:
            known = ", ".join(sorted(self.service_cfg.peers)) or "none"
            return sync_pb2.ExchangeReply(peer=peer, problems=[
                f"{peer} is not a peer in {self.cfg.path or 'the config'} (known: {known})"])
        with self._exchange_lock:
            lock = self._peer_locks.setdefault(peer, threading.Lock())
        with lock:
            reached = self.addresses.reach(peer)
            if reached.candidate is None:
                why = reached.explain(peer)
                log.error("[%s] exchange with %s: %s", self.cfg.site, peer, why)
                return sync_pb2.ExchangeReply(peer=peer, problems=[why], unreachable=True)
            try:
                bundle, _ = self.watcher.refresh()
                return exchange(self.replica, bundle, peer, reached.candidate.address,
                                stop=stop, round_no=round_no, cap_bits_per_s=cap_bits_per_s,
                                progress=progress).to_proto()
            except ExchangeError as exc:
                log.error("[%s] exchange with %s failed: %s", self.cfg.site, peer, exc)
                reply = (exc.outcome.to_proto() if exc.outcome is not None
                         else sync_pb2.ExchangeReply(peer=peer))
                reply.problems.append(str(exc))
                reply.unreachable = exc.unreachable
                return reply

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        self._stopping.set()
        self._dial_now.set()
        if self._commits is not None:
            self._commits.close()
            self._commits = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.replica.bulletin.close()  # the calls listening here end now, not at the grace
        for role in self.roles:
            if hasattr(role, "close"):
                role.close()
        self.roles = []
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        if self._announcer is not None:
            self._announcer.close()  # the goodbye: browsers forget it at once
            self._announcer = None
        if self.addresses.browser is not None:
            self.addresses.browser.close()
            self.addresses.browser = None
        if self._server is not None:
            self._health.enter_graceful_shutdown()
            self._server.stop(grace).wait()
            self._server = None
        if self._admission is not None:
            self._admission.close()
            self._admission = None
        self.replica.close()


class Awaiting:
    """A site's node before it has a database (join.py): it serves the health check and the
    snapshot calls only, and announces itself to the sites that may coordinate, until
    ``siege-ctl join SITE`` at the siège has sent and it has restored the snapshot."""

    def __init__(self, cfg: NodeConfig, resync: bool = False,
                 by_server: bool | None = None) -> None:
        """``resync``: the site has a database, replaced by the copy (node/operations/join.py);
        ``by_server``: see ``Restorer``."""
        if cfg.service is None:
            raise NodeError(f"{cfg.path or 'config'}: `run` needs a [node] section "
                            "(listen, bundle)")
        self.cfg, self.service_cfg = cfg, cfg.service
        self.watcher = BundleWatcher(cfg.service.bundle)
        ident = self.watcher.bundle.identity
        if ident.name != cfg.site:
            raise NodeError(f"the bundle in {cfg.service.bundle} belongs to site "
                            f"{ident.name!r}, but this node is site {cfg.site!r}")
        try:
            self.restorer = Restorer(cfg, ident.mesh, resync=resync, by_server=by_server)
            if self.restorer.resume():  # a copy was being moved into place: it is now
                log.info("[%s] the copy an earlier attempt prepared is in place",
                         cfg.site)
                self.restorer.joined.set()
        except JoinError as exc:
            raise NodeError(str(exc)) from None
        self.addresses = AddressBook(cfg.site, lambda: self.service_cfg, None,
                                     lambda: self.watcher.refresh()[0])
        self._server: grpc.Server | None = None
        self._admission: Admission | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        self._admission = Admission(self.watcher, self.cfg.site, JOIN_LIMITS,
                                    lambda: set(self.service_cfg.coordinators(self.cfg.site)))
        server, port = _listen(self.service_cfg.listen, self.watcher, self._admission)
        add_to_server(JoinService(self.restorer, self.watcher, self.cfg.site,
                                  self.service_cfg.siege), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        server.start()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        what = "resync" if self.restorer.resync else "join"
        log.info("[%s] listening on %s (mTLS), waiting for the siège's copy of the database "
                 "(into %s): run `siege-ctl %s %s` at the siège", self.cfg.site,
                 self.service_cfg.listen, self.cfg.database.dsn, what, self.cfg.site)

        def announce() -> None:
            while not self._stopping.is_set() and not self.restorer.joined.is_set():
                announce_to(self.cfg.site, self.service_cfg, self.addresses,
                            self.watcher, port)
                self._stopping.wait(min(self.service_cfg.announce_every or 5.0, 5.0))

        self._thread = threading.Thread(target=announce, name="announce", daemon=True)
        self._thread.start()
        return port

    def wait(self, stopping: threading.Event) -> bool:
        """Until joined (True) or asked to stop (False)."""
        while not stopping.is_set():
            if self.restorer.joined.wait(0.2):
                return True
        return False

    def stop(self, grace: float = 5.0) -> None:
        """``grace``: the Restore call's reply goes out first."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self._admission is not None:
            self._admission.close()
            self._admission = None
        if self._thread is not None:
            self._thread.join(timeout=30)


def _listen(listen: str, watcher: BundleWatcher, admission: Admission
            ) -> tuple[grpc.Server, int]:
    """A gRPC server on mutual TLS only, bound to ``listen`` (not started); its port. Every
    call goes through ``admission`` first (who, how many at once)."""
    # No SO_REUSEPORT: a second node on the same port must fail, not share it.
    workers = admission.limits.threads
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 0)],
                         compression=grpc.Compression.Gzip, interceptors=[admission],
                         maximum_concurrent_rpcs=2 * workers)
    try:
        port = server.add_secure_port(listen, server_credentials(watcher))
    except RuntimeError:
        port = 0
    if port == 0:
        raise NodeError(f"cannot listen on {listen}: the port is in use (another siege-node "
                        "run?) or it is not an address of this machine")
    return server, port


def announce_to(site: str, svc: ServiceConfig, addresses: AddressBook,
                watcher: BundleWatcher, port: int) -> dict[str, str]:
    """Tell every site that may coordinate where this node listens; what each saw."""
    seen: dict[str, str] = {}
    bundle, _ = watcher.refresh()
    for coordinator in svc.coordinators(site):
        if coordinator == site:
            continue
        reached = addresses.reach(coordinator)
        if reached.candidate is None:
            log.debug("[%s] cannot announce to %s: %s", site, coordinator,
                      reached.explain(coordinator))
            continue
        try:
            with transport.channel(reached.candidate.address, bundle, coordinator) as ch:
                reply = sync_pb2_grpc.SyncNodeStub(ch).Announce(sync_pb2.AnnounceRequest(
                    port=port, dials_out_only=svc.outbound_only), timeout=10)
            seen[coordinator] = reply.seen
        except grpc.RpcError as exc:
            log.info("[%s] announce to %s: %s", site, coordinator, exc.details())
    return seen


def _on_signals(site: str, stopping: threading.Event) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("[%s] signal %d: stopping (finishing calls in progress)", site, signum)
        stopping.set()

    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)


def run(cfg: NodeConfig, clock: Clock = SystemClock(), join: bool = False,
        resync: bool = False) -> int:
    """Serve until SIGTERM. ``join`` (``siege-node join``): first wait for the siège's
    snapshot — the database must not exist yet —, then serve as the site. ``resync``
    (``siege-node resync``): the same over the site's existing database
    (node/operations/join.py)."""
    stopping = threading.Event()
    # A move into place left half done is finished by the waiting node (join.py). A resync
    # of a site whose database is gone altogether restores it as a join does.
    if join and not move_under_way(cfg):
        try:
            exists = database_exists(cfg)
        except JoinError as exc:
            raise NodeError(str(exc)) from None
        if exists:
            raise NodeError(f"{cfg.database.dsn} exists: a site joins only into a database "
                            "that does not exist yet; this site has one — start it with "
                            "`siege-node run`, or rebuild it from the siège with "
                            "`siege-node resync`")
    if join or resync:
        _on_signals(cfg.site, stopping)
        waiting = Awaiting(cfg, resync=resync)
        waiting.start()
        notify("READY=1", f"STATUS=waiting for the siège's copy: siege-ctl "
               f"{'resync' if resync else 'join'} {cfg.site} at the siège")
        try:
            joined = waiting.wait(stopping)
        finally:
            waiting.stop()
        if not joined:
            return 0
        log.info("[%s] joined: serving as the site now", cfg.site)
    node = Node(cfg, clock)
    # After the first attach: the Firebird client library installs its own handlers then.
    _on_signals(cfg.site, stopping)
    node.start()
    notify("READY=1", f"STATUS=serving {cfg.site}")
    try:
        stopping.wait()
    finally:
        notify("STOPPING=1")
        node.stop()
        log.info("[%s] stopped", cfg.site)
    return 0
