"""``siege-node run``: the node as a long-running service.

Owns the process: the database connection, the gRPC server (the sync service, the standard
health service, server reflection) on mutual TLS only, exchanges started through the service,
and a clean stop — on SIGTERM or SIGINT the server stops taking calls, lets the running ones
finish (grace period), then the database is closed.

Signals are installed after the database is attached: the Firebird client library installs
its own handlers at the first attach and would otherwise replace ours. On Windows SIGTERM is
not delivered by services; SIGINT (Ctrl-C / the service wrapper's break) stops it the same way.
Must never open a plaintext port.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from importlib.metadata import entry_points

import grpc
from firebird.driver import Connection
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..proto import sync_pb2
from . import capture
from .clock import Clock, SystemClock
from .config import NodeConfig, ServiceConfig
from .database import open_connection
from .exchange import ExchangeError, exchange
from .replica import Replica
from .service import SyncService, add_to_server
from .transport import CHANNEL_OPTIONS, BundleWatcher, server_credentials

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
ROLE_ENTRY_POINTS = "siege_sync.roles"  # callables (node, server) -> role object or None


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
        self._con = open_connection(cfg.database)
        if not capture.is_installed(self._con):
            self._con.close()
            raise NodeError(f"capture is not installed in {cfg.database.dsn}: run "
                            "`siege-node install` first")
        try:
            _claim(self._con, cfg, ident.mesh)
        except BaseException:
            self._con.close()
            raise
        self.replica = Replica(cfg, self._con, clock)
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()
        self._exchange_lock = threading.Lock()
        self._peer_locks: dict[str, threading.Lock] = {}
        self.roles: list[object] = []  # what roles attached (e.g. the coordinator)

    def start(self) -> int:
        try:
            return self._start()
        except BaseException:
            self.stop(grace=0)
            raise

    def _start(self) -> int:
        # No SO_REUSEPORT: a second node on the same port must fail, not share it.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                             options=[*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)],
                             compression=grpc.Compression.Gzip)
        self._server = server
        try:
            port = server.add_secure_port(self.service_cfg.listen,
                                          server_credentials(self.watcher))
        except RuntimeError:
            port = 0
        if port == 0:
            raise NodeError(f"cannot listen on {self.service_cfg.listen}: the port is in use "
                            "(another siege-node run?) or it is not an address of this "
                            "machine")
        # Requests are decoded by the service, so garbage is refused as INVALID_ARGUMENT.
        add_to_server(SyncService(self.replica, self.watcher, self.exchange), server)
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
        return port

    def exchange(self, peer: str, stop: threading.Event | None = None,
                 round_no: int = 0, cap_bits_per_s: float | None = None
                 ) -> sync_pb2.ExchangeReply:
        """One exchange with a configured peer (one at a time per peer; exchanges with
        different peers overlap on the network, the database work stays serialized)."""
        spec = self.service_cfg.peers.get(peer)
        if spec is None:
            known = ", ".join(sorted(self.service_cfg.peers)) or "none"
            return sync_pb2.ExchangeReply(peer=peer, problems=[
                f"{peer} is not a peer in {self.cfg.path or 'the config'} (known: {known})"])
        with self._exchange_lock:
            lock = self._peer_locks.setdefault(peer, threading.Lock())
        with lock:
            try:
                bundle, _ = self.watcher.refresh()
                return exchange(self.replica, bundle, peer, spec.address, stop=stop,
                                round_no=round_no, cap_bits_per_s=cap_bits_per_s).to_proto()
            except ExchangeError as exc:
                log.error("[%s] exchange with %s failed: %s", self.cfg.site, peer, exc)
                reply = (exc.outcome.to_proto() if exc.outcome is not None
                         else sync_pb2.ExchangeReply(peer=peer))
                reply.problems.append(str(exc))
                reply.unreachable = exc.unreachable
                return reply

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        for role in self.roles:
            if hasattr(role, "close"):
                role.close()
        self.roles = []
        if self._server is not None:
            self._health.enter_graceful_shutdown()
            self._server.stop(grace).wait()
            self._server = None
        self.replica.close()


def _claim(con: Connection, cfg: NodeConfig, mesh: str) -> None:
    """A database serves one site of one mesh: the first node to serve it records them
    (``SYNC$STATE`` site, mesh), every later start checks them.

    Why: nothing else tied a database to its site. A config pointing at another site's
    database, or at one that served another mesh, was served as is — that database's
    changes published under this site's name and numbers, its peers' epochs and vectors
    taken for this mesh's (found by tests/test_hostile.py). The mesh is the name in the
    certificates (not the CA's key), so a renewed CA or certificate changes nothing."""
    wanted = {"site": cfg.site, "mesh": mesh}
    recorded = {name: capture.get_state(con, name) for name in wanted}
    if any(recorded[name] not in (None, value) for name, value in wanted.items()):
        raise NodeError(
            f"{cfg.database.dsn} is the database of site {recorded['site']!r} of mesh "
            f"{recorded['mesh']!r} (its node recorded that), but this node is site "
            f"{cfg.site!r} of mesh {mesh!r} ({cfg.path or 'the config'}): point [database] "
            "dsn at this site's own database. Nothing was changed. If that database really "
            "is to become this site's, it must join as a new site (its unsynced changes "
            "would otherwise be lost): ask for a resync of this site from the siège")
    for name, value in wanted.items():
        if recorded[name] is None:
            capture.set_state(con, name, value)


def run(cfg: NodeConfig, clock: Clock = SystemClock()) -> int:
    node = Node(cfg, clock)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("[%s] signal %d: stopping (finishing calls in progress)", cfg.site, signum)
        stopping.set()

    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    node.start()
    try:
        stopping.wait()
    finally:
        node.stop()
        log.info("[%s] stopped", cfg.site)
    return 0
