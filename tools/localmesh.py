"""Local meshes of real nodes, for the demo, the tests, the chaos runs and the benchmark: a
mesh CA with a bundle per site (``Pki``), node configurations, ``LocalMesh`` — sites with
embedded databases whose nodes serve over real mTLS on loopback, started in this process —
and ``ProcessMesh`` — ``siege-node run`` processes whose databases live on a Firebird server
(so the caller can write to them while the nodes run)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from pathlib import Path

from siege_sync.certs import Authority, write_bundle
from siege_sync.node.journal import capture
from siege_sync.node.mesh.daemon import Node
from siege_sync.node.model import config
from siege_sync.node.model.config import Peer
from tests.fbdb import create_db
from tools.fbserver import free_port

MESH = "acme"




class Pki:
    """A mesh CA in ``folder/ca`` and bundles in ``folder/bundles/NAME``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = Authority.create(folder / "ca", MESH)

    def site(self, name: str, relay: bool = False, now: datetime | None = None,
             days: int = 365) -> Path:
        issued = self.ca.issue_site(name, relay=relay, now=now, days=days)
        return write_bundle(self.folder / "bundles" / name, issued)

    def admin(self, name: str) -> Path:
        return write_bundle(self.folder / "bundles" / name, self.ca.issue_admin(name))


def node_config(folder: Path, site: str, dsn: str, bundle: Path, port: int,
                peers: dict[str, int] | None = None, siege: dict | None = None,
                language: str = "en", **database: str) -> config.NodeConfig:
    raw: dict = {
        "site": site,
        "database": {"dsn": dsn, **database},
        "node": {"listen": f"127.0.0.1:{port}", "bundle": str(bundle), "siege": "siege"},
        "peers": {p: {"address": f"127.0.0.1:{pp}"} for p, pp in (peers or {}).items()},
        "operator": {"language": language},
    }
    if site != "siege":  # the siège it names is a peer (found by its announcements if none)
        raw["peers"].setdefault("siege", {})
    if siege:
        raw["siege"] = siege
    return config.parse(raw, folder / f"{site}.toml")


class LocalMesh:
    """Sites with embedded databases and nodes started in this process."""

    def __init__(self, folder: Path, sites: dict[str, bool], ddl: list[str],
                 siege_settings: dict | None = None, language: str = "en") -> None:
        """``sites``: site id -> relay role; the site "siege" coordinates, with
        ``siege_settings`` as its ``[siege]`` section; ``language``: every node's
        ``[operator] language``."""
        self.pki = Pki(folder)
        self.folder = folder
        self.ports = {s: free_port() for s in sites}
        self.cons = {}
        self.nodes: dict[str, Node] = {}
        for site, relay in sites.items():
            bundle = self.pki.site(site, relay=relay)
            con = create_db(folder / f"{site}.fdb", ddl=ddl)
            capture.install(con)
            self.cons[site] = con
            peers = {p: port for p, port in self.ports.items() if p != site}
            cfg = node_config(folder, site, str(folder / f"{site}.fdb"), bundle,
                              self.ports[site], peers,
                              siege=siege_settings if site == "siege" else None,
                              language=language)
            self.nodes[site] = Node(cfg)
            self.nodes[site].start()

    def exchange(self, site: str, peer: str):
        return self.nodes[site].exchange(peer)

    def joining_site(self, site: str, generators: dict | None = None
                     ) -> tuple[config.NodeConfig, int]:
        """A new site as an operator sets it up for ``siege-ctl join``: its bundle, its
        config (the database does not exist yet), a port; the siège told where it is. The
        caller runs its waiting node (``daemon.Awaiting``)."""
        port = free_port()
        raw = {"site": site, "database": {"dsn": str(self.folder / f"{site}.fdb")},
               "node": {"listen": f"127.0.0.1:{port}", "bundle": str(self.pki.site(site)),
                        "siege": "siege"},
               "peers": {"siege": {"address": f"127.0.0.1:{self.ports['siege']}"}}}
        if generators:
            raw["generators"] = generators
        self.set_peer("siege", site, port)
        return config.parse(raw, self.folder / f"{site}.toml"), port

    def join(self, cfg: config.NodeConfig, resync: bool = False,
             progress: Callable[[object], None] = lambda _p: None,
             waiting: object | None = None, spool: Path | None = None,
             timeout: float = 120.0):
        """``siege-ctl join`` (or ``resync``) of ``cfg``'s site, as an operator runs it: the
        site's node waiting (``siege-node join``/``resync``; ``waiting`` if the caller
        started it), the siège's Joiner; once restored, the site's node serves as the site
        (``self.nodes[site]``). Returns the join's report."""
        import threading

        from siege_sync.node.mesh.daemon import Awaiting
        from siege_sync.siege.join import Joiner

        if waiting is None:
            waiting = Awaiting(cfg, resync=resync)
            waiting.start()
        outcome: dict = {}

        def send() -> None:
            try:
                outcome["report"] = Joiner(self.nodes["siege"], spool=spool).run(
                    cfg.site, progress, resync)
            except BaseException as exc:  # handed to the caller below
                outcome["error"] = exc

        joiner = threading.Thread(target=send, name="join")
        joiner.start()
        try:
            while not waiting.restorer.joined.wait(0.2):
                if not joiner.is_alive():
                    break  # the join failed before the site restored anything
        finally:
            waiting.stop()
        if waiting.restorer.joined.is_set():
            self.nodes[cfg.site] = Node(cfg)
            self.nodes[cfg.site].start()
        joiner.join(timeout)
        if "error" in outcome:
            raise outcome["error"]
        if "report" not in outcome:
            raise RuntimeError(f"the join of {cfg.site} did not end within {timeout} s")
        return outcome["report"]

    def set_peer(self, site: str, peer: str, port: int) -> None:
        node = self.nodes[site]
        peers = {**node.service_cfg.peers, peer: Peer(peer, f"127.0.0.1:{port}")}
        node.service_cfg = dataclasses.replace(node.service_cfg, peers=peers)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(grace=1)
        for con in self.cons.values():
            if not con.is_closed():
                con.close()


class ProcessMesh:
    """Sites "siege" (coordinates, relays), "lyon", "nice" as ``siege-node run`` processes
    on loopback, their databases through ``server`` (a ``tools.fbserver.FirebirdServer``).
    ``siege_toml`` is appended to the siège's config (its ``[siege]`` settings). An admin
    certificate "ops" is issued for driving them. Processes are ended by their pid.

    ``app_user``: the application (``connection``) connects as that ordinary user, granted
    what an application is granted on the user tables, instead of SYSDBA.
    ``faulty_lines``: the siège reaches each site through a ``tools.faultline.FaultyLine``
    (``self.lines[site]``), which can cut or stall the connections.
    ``env``: extra environment of a site's node process (e.g. a skewed clock).
    ``outbound``: sites that cannot be dialled (``outbound_only``, dialling in every
    ``dial_every`` seconds); the others' configs give them a port nobody listens on."""

    SITES = ("siege", "lyon", "nice")
    APP_PASSWORD = "app-pw"

    def __init__(self, server, folder: Path, ddl: list[str], siege_toml: str = "",
                 app_user: str | None = None, faulty_lines: bool = False,
                 env: dict[str, dict[str, str]] | None = None,
                 outbound: Collection[str] = (), dial_every: float = 60.0) -> None:
        import uuid

        from tools.faultline import FaultyLine

        self.server, self.folder = server, folder
        self.app_user = app_user
        self.env = env or {}
        self.lines: dict[str, FaultyLine] = {}
        self.logs: dict[str, Path] = {}
        self.pki = Pki(folder)
        self.pki.admin("ops")
        self.ports = {s: free_port() for s in self.SITES}
        tag = uuid.uuid4().hex[:6]
        self.cons: dict = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.configs: dict[str, str] = {}
        self.dsns: dict[str, str] = {}
        pw = folder / "db.pw"
        pw.write_text(server.password)
        pw.chmod(0o600)
        try:
            for site in self.SITES:
                bundle = self.pki.site(site, relay=site == "siege")
                name = f"{site}{tag}"
                self.cons[site] = server.create_database(name, ddl=ddl)
                self.dsns[site] = server.dsn(name)
                capture.install(self.cons[site])
                if app_user:
                    _grant_application(self.cons[site], app_user, self.APP_PASSWORD)
                    self.cons[site].close()
                    self.cons[site] = self._open(site)
                lines = [f'site = "{site}"', "[database]", f'dsn = "{self.dsns[site]}"',
                         'user = "SYSDBA"', 'password_file = "db.pw"', "[node]",
                         f'listen = "127.0.0.1:{self.ports[site]}"', f'bundle = "{bundle}"',
                         'siege = "siege"']
                if site in outbound:
                    lines += ["outbound_only = true", f"dial_every = {dial_every:g}"]
                for peer in self.SITES:
                    if peer != site:
                        port = self.ports[peer] if peer not in outbound else free_port()
                        if faulty_lines and site == "siege" and peer not in outbound:
                            self.lines[peer] = FaultyLine(port)
                            port = self.lines[peer].port
                        lines += [f"[peers.{peer}]", f'address = "127.0.0.1:{port}"']
                path = folder / f"{site}.toml"
                path.touch(0o600)  # (it may hold a password: the node refuses it otherwise)
                path.write_text("\n".join(lines) + "\n"
                                + (siege_toml if site == "siege" else ""))
                self.configs[site] = str(path)
            for site in self.SITES:
                self.start(site)
        except BaseException:
            self.close()
            raise

    def stub(self, site: str):
        """A channel and a SyncNode stub to ``site``'s node, as the admin "ops"."""
        from siege_sync.certs import load_bundle
        from siege_sync.node.mesh.transport import channel
        from siege_sync.proto import sync_pb2_grpc

        ch = channel(f"127.0.0.1:{self.ports[site]}",
                     load_bundle(self.pki.folder / "bundles" / "ops"), site)
        return ch, sync_pb2_grpc.SyncNodeStub(ch)

    def start(self, site: str) -> None:
        """Start ``site``'s node and wait until it serves (its log if it exits). Its log
        goes to ``self.logs[site]`` (appended at each start): a pipe nobody reads would
        stop a chatty node once full."""
        import grpc

        from siege_sync.proto import sync_pb2

        log = self.logs[site] = self.folder / f"{site}.log"
        with log.open("ab") as out:
            proc = self.procs[site] = subprocess.Popen(
                [sys.executable, "-m", "siege_sync.node.cli", "run", "--config",
                 self.configs[site]], stdout=subprocess.DEVNULL, stderr=out,
                env={**os.environ, "GRPC_VERBOSITY": "ERROR", **self.env.get(site, {})})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                said = log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{site}'s node exited: {said}")
            ch, stub = self.stub(site)
            with ch:
                try:
                    stub.Status(sync_pb2.StatusRequest(), timeout=2)
                    return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise RuntimeError(f"{site}'s node did not start serving")

    def up(self, site: str) -> bool:
        return self.procs[site].poll() is None

    def kill(self, site: str) -> None:
        """SIGKILL, as a power cut would."""
        self.procs[site].send_signal(signal.SIGKILL)
        self.procs[site].wait()

    def connection(self, site: str):
        """The application's connection to ``site``'s database (as ``app_user`` when given),
        opened again if the server restarted."""
        from firebird.driver import DatabaseError

        from siege_sync.node.db.database import READ_COMMITTED_RW, transaction

        con = self.cons[site]
        try:
            with transaction(con, READ_COMMITTED_RW) as tm:
                tm.cursor().execute("SELECT 1 FROM RDB$DATABASE")
            return con
        except DatabaseError:
            try:
                con.close()
            except DatabaseError:
                pass
            self.cons[site] = self._open(site)
            return self.cons[site]

    def _open(self, site: str):
        from siege_sync.node.db.database import DatabaseSpec, open_connection

        if self.app_user:
            return open_connection(DatabaseSpec(self.dsns[site], user=self.app_user,
                                                password=self.APP_PASSWORD))
        return self.open_as_sysdba(site)

    def open_as_sysdba(self, site: str):
        """A new connection to ``site``'s database as SYSDBA (the caller closes it)."""
        from siege_sync.node.db.database import DatabaseSpec, open_connection

        return open_connection(DatabaseSpec(self.dsns[site], user="SYSDBA",
                                            password=self.server.password))

    def exchange(self, peer: str) -> int:
        """The siège exchanges with ``peer`` now; events moved (0 if it failed)."""
        return max(self.exchange_checked(peer), 0)

    def exchange_checked(self, peer: str) -> int:
        """The siège exchanges with ``peer`` now; events moved, or -1 if the exchange failed
        or said problems (then it proves nothing about being in sync)."""
        import grpc

        from siege_sync.proto import sync_pb2

        ch, stub = self.stub("siege")
        with ch:
            try:
                reply = stub.Exchange(sync_pb2.ExchangeRequest(peer=peer), timeout=300)
            except grpc.RpcError:
                return -1
        return -1 if reply.problems else reply.pulled_events + reply.pushed_events

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        for con in self.cons.values():
            if not con.is_closed():
                con.close()


def _grant_application(con, user: str, password: str) -> None:
    """Create ``user`` (an ordinary login of the server) and grant it what an application
    is granted: reading and writing the user tables, nothing of the sync's own objects."""
    from siege_sync.node.db.database import transaction

    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"CREATE OR ALTER USER {user} PASSWORD '{password}'")
        cur.execute("SELECT TRIM(RDB$RELATION_NAME) FROM RDB$RELATIONS WHERE "
                    "COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND RDB$VIEW_BLR IS NULL AND "
                    "RDB$RELATION_NAME NOT STARTING WITH 'SYNC$'")
        tables = [row[0] for row in cur.fetchall()]
        for table in tables:
            cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON {table} "
                        f"TO USER {user}")
        cur.close()


@contextlib.contextmanager
def behind_the_triggers_back(con) -> Iterator[None]:
    """Capture off for the block, as a restore or a manual fix with triggers disabled is
    (changes made inside are never captured: drift for ``analyse`` to find)."""
    from siege_sync.node.db.database import transaction
    from siege_sync.node.journal.capture import TRIGGER_PREFIX

    def switch(state: str) -> None:
        with transaction(con) as tm:
            cur = tm.cursor()
            cur.execute("SELECT TRIM(RDB$TRIGGER_NAME) FROM RDB$TRIGGERS "
                        f"WHERE RDB$TRIGGER_NAME STARTING WITH '{TRIGGER_PREFIX}'")
            for (name,) in cur.fetchall():
                cur.execute(f"ALTER TRIGGER {name} {state}")
            cur.close()

    switch("INACTIVE")
    try:
        yield
    finally:
        switch("ACTIVE")
