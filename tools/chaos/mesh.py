"""The product as shipped, for the chaos run (issue 19 item 1): ``siege-node run`` processes
configured like a customer's mesh, their databases on one private Firebird server, the lines
between them, and the operator's procedures (join, resync) run as an operator runs them.

The mesh (``ShippedMesh``):

* ``siege`` — the siège: relay certificate, ``[siege] continuous = true`` with
  ``pause_seconds = 1`` (it runs its own rounds back to back and purges after each complete
  round; the harness never starts an exchange).
* ``lyon`` — a stand-in: relay certificate, ``[node] coordinator = true``, ``priority = 1``,
  ``takeover_after = 5`` s and the same ``[siege]`` schedule, used while it stands in.
* ``nice`` — an ordinary site reached through faulty lines both ways
  (``tools.faultline.FaultyLine``): line ``nice`` carries every call *to* nice (the siège's
  and the stand-in's rounds), lines ``nice>siege`` / ``nice>lyon`` carry nice's own calls
  (announce, purge order, resync check). Its database lives on a small filesystem (a
  128 MiB tmpfs owned by ``firebird``, mounted once per server under its data folder) so
  that it can be filled (disk full).
* ``brest`` — ``outbound_only = true``: it announces itself (``announce_every = 2``) and
  dials in every ``dial_every = 2`` s through lines ``brest>siege`` / ``brest>lyon``; the
  siège never dials it.
* ``vannes`` — joins during the workload (``join()``: ``siege-node join`` there, the siège's
  ``[peers]`` extended and its node restarted, ``siege-ctl join vannes``).
* a replaced site — ``replace_and_resync``: lyon's database put back from an older copy
  (``old_copy``) with its application shut out, then ``siege-node resync`` there and
  ``siege-ctl resync lyon``.

``quiet`` waits on the nodes' own status (nothing waiting to publish, nothing held, every
site's vector past what every origin had published at one moment); the oracle's checks owe
nothing to it.

Settings and their trade-off (the chaos run must fit ~30 s a trial): rounds back to back
(pause 1 s) so that faults meet rounds and purges all the time; ``takeover_after = 5`` s
(customers use minutes: the election logic is the same, its check every
``takeover_after / 3``); ``dial_every = 2`` s; retention is left at its default (30 days): a
site offline for a while then holds nothing back only if it dials in (brest, counted by its
last hello), so "offline past several purges" is struck at brest; a short retention lag
would turn every long fault into a resync. gRPC keepalive is the product's (30 s + 20 s,
``siege_sync/node/mesh/transport.py``): a black hole longer than it costs ~65 s of a trial.

Every node writes its log (its stderr) to ``<folder>/logs/<site>.log``; ``log_since`` reads
it (faults.py observes the nodes' work there).

A node's clock: ``siege-node run`` reads its skew from a file the harness rewrites
(``SIEGE_SYNC_FAULT_CLOCK_SKEW_FILE``, re-read at most once a second), so ``set_skew`` makes
a running node's clock jump. ``siege-node join``/``resync`` (which go on serving as the site)
read no skew file yet (/tmp/patches/B-clockjump.diff): a site whose process is one of those
is restarted as ``run`` with its new skew, and ``set_skew`` says so ("restart"). A product
without the skew file (``RUNTIME_CLOCK`` False) gets the same restart.

What it must never do: write application data (the application is the caller's, through
``app_connect``), start an exchange itself (the siège's own rounds and brest's dial-ins move
everything), end a process it did not start (every process is ended by its pid), touch a
mount it did not make.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from siege_sync.node import cli as node_cli
from siege_sync.node.db import dbserver
from siege_sync.node.db.database import (
    DatabaseSpec,
    DatabaseUnavailable,
    open_connection,
    transaction,
)
from siege_sync.node.journal import capture, conflicts, guardwatch
from siege_sync.node.model.config import GeneratorRange
from tools.faultline import FaultyLine
from tools.localmesh import Pki, _grant_application, free_port

SIEGE, STAND_IN, LINED, DIAL_IN, JOINER = "siege", "lyon", "nice", "brest", "vannes"
SITES = (SIEGE, STAND_IN, LINED, DIAL_IN)
ROUNDS = {"continuous": "true", "pause_seconds": "1"}
TAKEOVER_AFTER_S = 5.0
DIAL_EVERY_S = 2.0
SMALL_DISK_MB = 128
SMALL_DISK_DIR = "small-disk"  # under the server's data folder (its DatabaseAccess)
START_LIMIT_S = 60.0
STOP_GRACE_S = 15.0  # SIGTERM (an operator's service stop), then SIGKILL
GENERATOR_SPAN = 10_000_000  # each site's range of every generator that needs one
CLOCK_SKEW_ENV = node_cli.CLOCK_SKEW_ENV
CLOCK_SKEW_FILE_ENV: str | None = getattr(node_cli, "CLOCK_SKEW_FILE_ENV", None)
RUNTIME_CLOCK = CLOCK_SKEW_FILE_ENV is not None  # the product re-reads a skew file


class MeshError(RuntimeError):
    """The harness could not bring the mesh (or a step of an operator's procedure) about."""


@dataclass
class Site:
    name: str
    port: int
    dsn: str
    config: Path
    log: Path
    index: int  # its generator range
    proc: subprocess.Popen | None = None
    skew_s: float = 0.0
    command: str = "run"  # what its next process is started as (run, join, resync)
    started_as: str = ""  # what its running process was started as
    lines_in: tuple[str, ...] = ()  # the faulty lines its calls and its callers go through


@dataclass
class ServerDisk:
    """The small filesystem of a server (where one site's database lives)."""

    path: Path
    ballast: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ballast = self.path / "ballast"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int = 0) -> int:
        """Fill it up with a ballast file (leaving ``leave_bytes``); bytes written."""
        want = max(0, self.free_bytes() - leave_bytes)
        written = 0
        with open(self.ballast, "ab") as out:
            chunk = b"\0" * (1 << 20)
            while written < want:
                try:
                    out.write(chunk[: min(len(chunk), want - written)])
                    out.flush()
                except OSError:  # full: exactly what was wanted
                    break
                written += min(len(chunk), want - written)
        return written

    def empty(self) -> bool:
        """Remove the ballast; whether there was one."""
        try:
            self.ballast.unlink()
            return True
        except FileNotFoundError:
            return False


def small_disk(server) -> ServerDisk:
    """The server's small filesystem: a size-limited tmpfs owned by ``firebird`` under its
    data folder, mounted once for the server's life. The server runs in its own mount
    namespace (tools/fbserver.py) which copied the mounts at its start: after mounting, it
    is restarted once so that it sees the tmpfs (and every later start copies it too).
    ``FirebirdServer.close()`` unmounts it (or ``release_small_disk``, to keep the server)."""
    import pwd

    path = server.data_dir / SMALL_DISK_DIR
    if not _mounted(path):
        path.mkdir(exist_ok=True)
        fb = pwd.getpwnam("firebird")
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size={SMALL_DISK_MB}m,mode=0770,uid={fb.pw_uid},gid={fb.pw_gid}",
                        "tmpfs", str(path)], check=True, capture_output=True, text=True)
    if server.pid is not None and not _sees_mount(server.pid, path):
        server.restart()
    return ServerDisk(path)


def release_small_disk(server) -> None:
    """Unmount the server's small filesystem (after the server stopped, or before it is
    restarted: its copy of the mount lives as long as its namespace)."""
    path = server.layout.data / SMALL_DISK_DIR if server._layout is not None else None
    if path is not None and _mounted(path):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _mounted(path: Path) -> bool:
    return _in_mountinfo(Path("/proc/self/mountinfo"), path)


def _sees_mount(pid: int, path: Path) -> bool:
    return _in_mountinfo(Path(f"/proc/{pid}/mountinfo"), path)


def _in_mountinfo(info: Path, path: Path) -> bool:
    try:
        text = info.read_text()
    except OSError:
        return False
    target = str(path.resolve())
    return any(line.split()[4] == target for line in text.splitlines() if line.strip())


class ShippedMesh:
    """The mesh of the module docstring. ``schema``: DDL run at every site before install;
    ``generators``: names of the generators that need a range per site (or a mapping from
    name to anything: its keys are used); ``before_install(con, site)``: rows the shop held
    before siege-sync was installed (SYSDBA, capture not installed yet); ``app_user``: the
    application's ordinary Firebird user; ``seed`` names the databases (with a random tag,
    so trials can share a server)."""

    SITES = SITES
    APP_PASSWORD = "app-pw"

    def __init__(self, server, folder: Path, schema: list[str],
                 generators: Iterable[str] | Mapping[str, object],
                 before_install: Callable[[object, str], None], app_user: str,
                 seed: int) -> None:
        self.server, self.folder, self.schema = server, Path(folder), list(schema)
        # name -> each site's block size (site n: [(n+1)*size+1, (n+2)*size-1], as
        # tools/chaos/shop.py says), or names only (GENERATOR_SPAN each)
        self.generators: dict[str, int] = (
            {g: int(v) if isinstance(v, int) else GENERATOR_SPAN
             for g, v in generators.items()} if isinstance(generators, Mapping)
            else dict.fromkeys(generators, GENERATOR_SPAN))
        self.app_user, self.seed = app_user, seed
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        self.tag = f"s{seed}x{uuid.uuid4().hex[:5]}"
        self.pki = Pki(self.folder)
        self.pki.admin("ops")
        self.disk = small_disk(server)
        self.lines: dict[str, FaultyLine] = {}
        self.sites_: dict[str, Site] = {}
        self._lock = threading.RLock()
        self._app_gate: dict[str, threading.Event] = {}  # cleared: the app must wait
        self._joined: list[str] = []
        self._unfinished: dict[str, str] = {}  # site -> the procedure a fault broke
        self._closed = False
        # (seconds into the last quiet(), what it waited for): where the time went
        self.quiet_trace: list[tuple[float, str]] = []
        pw = self.folder / "db.pw"
        pw.write_text(server.password)
        pw.chmod(0o600)
        self.ctl_config = self.folder / "siege-ctl.toml"
        try:
            ports = {s: free_port() for s in SITES}
            self.lines[LINED] = FaultyLine(ports[LINED])
            for src in (LINED, DIAL_IN):
                for dst in (SIEGE, STAND_IN):
                    self.lines[f"{src}>{dst}"] = FaultyLine(ports[dst])
            for index, site in enumerate(SITES):
                path = (self.disk.path / f"{site}{self.tag}.fdb" if site == LINED
                        else server.path(f"{site}{self.tag}"))
                self.sites_[site] = Site(site, ports[site], server.dsn(path),
                                         self.folder / f"{site}.toml",
                                         self.folder / "logs" / f"{site}.log", index)
                self._app_gate[site] = _open_gate()
            self.sites_[LINED].lines_in = (LINED, f"{LINED}>{SIEGE}", f"{LINED}>{STAND_IN}")
            self.sites_[DIAL_IN].lines_in = (f"{DIAL_IN}>{SIEGE}", f"{DIAL_IN}>{STAND_IN}")
            for site in SITES:
                self._create(site, before_install)
                self._write_config(site)
            self._write_ctl_config()
            for site in SITES:
                self._spawn(site)
            for site in SITES:
                self._wait_serving(site)
        except BaseException:
            self.close()
            raise

    # --- what the trial uses ------------------------------------------------------------

    def sites(self) -> list[str]:
        """The sites in the mesh now (a joined one once its join succeeded)."""
        return [*SITES, *self._joined]

    def app_connect(self, site: str):
        """A new connection as the application user. While the site's database is being
        replaced (resync), the application waits, as a shop told to stop its till would."""
        from firebird.driver import DatabaseError

        self._app_gate[site].wait(300)
        try:
            return open_connection(DatabaseSpec(self.sites_[site].dsn, user=self.app_user,
                                                password=self.APP_PASSWORD))
        except DatabaseUnavailable as exc:
            # The application sees the driver's own error (a server down, a shut-down
            # database), as it would without the node's wrapper.
            if isinstance(exc.__cause__, DatabaseError):
                raise exc.__cause__ from None
            raise

    def sysdba(self, site: str):
        """A new connection as SYSDBA (the caller closes it)."""
        return open_connection(self.sysdba_spec(site))

    def sysdba_spec(self, site: str) -> DatabaseSpec:
        return DatabaseSpec(self.sites_[site].dsn, user="SYSDBA",
                            password=self.server.password)

    def skew(self, site: str) -> float:
        return self.sites_[site].skew_s

    def losers(self, site: str, table: str) -> list:
        con = self.sysdba(site)
        try:
            return conflicts.listing(con, table)
        finally:
            con.close()

    def heal(self) -> None:
        """Every line whole, disk space back, the server up, every node up and serving."""
        for line in self.lines.values():
            line.resume()
        self.disk.empty()
        if not self.server.running:
            self.server.start()
        for site in self.sites():
            self._app_gate[site].set()
            if not self.up(site) and site not in self._unfinished:
                self.start(site)
        self._finish_procedures()
        for site in self.sites():
            self._wait_serving(site)

    def _finish_procedures(self) -> None:
        """A join or resync that another fault broke (the siège away, a black hole) is run
        again, as an operator would once the mesh is whole; MeshError if it fails again."""
        for site, kind in sorted(self._unfinished.items()):
            s = self.sites_[site]
            if self.up(site) and s.command != kind:
                self.stop(site)
            s.command = kind
            if kind == "resync":  # the restore refuses while the application is attached
                self._app_gate[site].clear()
                self.shut_out_application(site)
            if not self.up(site):
                self._spawn(site)
            _wait_listening(s.port, s, START_LIMIT_S)
            said = self._procedure(kind, site)
            self._app_gate[site].set()
            if not said.startswith(("JOINED", "RESYNCED")):
                raise MeshError(f"siege-ctl {kind} {site}, run again once the mesh was "
                                f"whole, failed: {said}")
            del self._unfinished[site]
            s.command = "run"
            if kind == "join":
                self._joined.append(site)

    def quiet(self, limit_s: float) -> tuple[bool, str]:
        """Wait (the siège's own continuous rounds, brest's dial-ins) until every site holds
        everything: a moment T when no site has captured changes waiting to publish is found,
        then every site must have applied, of every other origin, at least what that origin
        had published at T, and hold nothing (parked). Heartbeats keep every origin
        publishing a little each round, so the vectors are never all equal at one instant:
        what must arrive is what existed at T. False and why (the last shortfall) at
        ``limit_s``."""
        import grpc

        began = time.monotonic()
        deadline = began + limit_s
        why = "not asked yet"
        target: dict[tuple[str, int], int] | None = None
        self.quiet_trace = []
        while time.monotonic() < deadline:
            if not self.quiet_trace or self.quiet_trace[-1][1] != why:
                self.quiet_trace.append((round(time.monotonic() - began, 1), why))
            try:
                statuses = {site: self.status(site) for site in self.sites()}
            except grpc.RpcError as exc:
                why = f"a node does not answer: {exc.code().name} {exc.details()}"
                time.sleep(0.5)
                continue
            if target is None:
                waiting = [f"{site} ({st.backlog})" for site, st in statuses.items()
                           if st.backlog]
                if waiting:
                    why = f"captured changes not published yet at {', '.join(waiting)}"
                    time.sleep(0.3)
                    continue
                target = {(st.site, st.incarnation): st.published for st in statuses.values()}
            why = _shortfall(statuses, target)
            if not why:
                return True, ""
            time.sleep(0.5)
        return False, why

    def close(self) -> None:
        """End this mesh's processes (by pid), lines, ballast and its small-disk files."""
        self._closed = True
        for gate in self._app_gate.values():
            gate.set()
        for site in self.sites_.values():
            self._kill_proc(site)
        for line in self.lines.values():
            line.close()
        self.disk.empty()
        for leftover in self.disk.path.glob(f"*{self.tag}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    # --- nodes ---------------------------------------------------------------------------

    def up(self, site: str) -> bool:
        proc = self.sites_[site].proc
        return proc is not None and proc.poll() is None

    def pid(self, site: str) -> int | None:
        proc = self.sites_[site].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def pids(self) -> dict[int, str]:
        """pid -> site of every node running now."""
        return {pid: site for site in self.sites_ if (pid := self.pid(site)) is not None}

    def start(self, site: str, wait: bool = True) -> None:
        self._spawn(site)
        if wait:
            self._wait_serving(site)

    def kill(self, site: str) -> None:
        """SIGKILL, as a power cut would."""
        self._kill_proc(self.sites_[site])

    def stop(self, site: str) -> None:
        """An operator's service stop: SIGTERM, SIGKILL after ``STOP_GRACE_S``."""
        proc = self.sites_[site].proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._kill_proc(self.sites_[site])

    def restart(self, site: str) -> None:
        self.stop(site)
        self.start(site)

    def set_skew(self, site: str, seconds: float) -> str:
        """The node's clock jumps to ``seconds`` of skew now; how ("runtime": the running
        node re-reads it; "restart": the product cannot, the node was restarted with it)."""
        s = self.sites_[site]
        s.skew_s = float(seconds)
        if RUNTIME_CLOCK:
            tmp = self._skew_file(site).with_suffix(".new")
            tmp.write_text(f"{seconds}\n")
            tmp.replace(self._skew_file(site))
            if s.started_as == "run" or not self.up(site):
                return "runtime"
            # `siege-node join`/`resync` go on serving with the system clock (the product
            # reads the skew file for `run` only: /tmp/patches/B-clockjump.diff).
        if self.up(site):
            self.kill(site)
            self.start(site)
        return "restart"

    def log_size(self, site: str) -> int:
        try:
            return self.sites_[site].log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, site: str, offset: int) -> str:
        try:
            with open(self.sites_[site].log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def status(self, site: str, digests: bool = False, timeout: float = 10.0):
        """``site``'s node's Status reply (as the admin "ops"); raises grpc.RpcError."""
        from siege_sync.proto import sync_pb2

        ch, stub = self.stub(site)
        with ch:
            return stub.Status(sync_pb2.StatusRequest(digests=digests), timeout=timeout)

    def stub(self, site: str):
        """A channel and a SyncNode stub to ``site``'s node (directly, not through a line)."""
        from siege_sync.certs import load_bundle
        from siege_sync.node.mesh.transport import channel
        from siege_sync.proto import sync_pb2_grpc

        ch = channel(f"127.0.0.1:{self.sites_[site].port}",
                     load_bundle(self.pki.folder / "bundles" / "ops"), site)
        return ch, sync_pb2_grpc.SyncNodeStub(ch)

    def ctl(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
        """``siege-ctl`` as the operator runs it (admin certificate "ops"). Raises
        ``subprocess.TimeoutExpired`` after ``timeout``."""
        return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                               str(self.ctl_config), *args], capture_output=True, text=True,
                              timeout=timeout, env=self._env(None))

    def _procedure(self, *args: str) -> str:
        """``siege-ctl join|resync SITE``: its report's outcome, or why there is none."""
        try:
            return _outcome(self.ctl(*args))
        except subprocess.TimeoutExpired as exc:
            return f"no report: siege-ctl {' '.join(args)} did not end in {exc.timeout:.0f} s"

    def node_cmd(self, site: str, *args: str, timeout: float = 120.0
                 ) -> subprocess.CompletedProcess:
        """``siege-node ARGS --config`` of ``site`` (status, conflicts...)."""
        cmd, *rest = args
        return subprocess.run([sys.executable, "-m", "siege_sync.node.cli", cmd, "--config",
                               str(self.sites_[site].config), *rest], capture_output=True,
                              text=True, timeout=timeout, env=self._env(None))

    # --- operator procedures -------------------------------------------------------------

    def join(self, site: str = JOINER, during: Callable[[], None] | None = None
             ) -> tuple[bool, str]:
        """A new site joins as README "A new site" says: its config and bundle, ``siege-node
        join`` there, ``[peers.SITE]`` added at the siège and the stand-in and their nodes
        restarted, ``siege-ctl join SITE``. ``during`` runs while the copy is under way.
        Whether it joined, and what siege-ctl said."""
        with self._lock:
            if site in self.sites_:
                return False, f"{site} is already a site"
            port = free_port()
            path = self.server.path(f"{site}{self.tag}")
            s = self.sites_[site] = Site(site, port, self.server.dsn(path),
                                         self.folder / f"{site}.toml",
                                         self.folder / "logs" / f"{site}.log", len(SITES))
            self._app_gate[site] = _open_gate()
            self._write_config(site)
            for coordinator in (SIEGE, STAND_IN):
                self._write_config(coordinator)
        s.command = "join"
        self._spawn(site)
        _wait_listening(port, s, START_LIMIT_S)
        for coordinator in (SIEGE, STAND_IN):  # [peers] is read at start only
            self.restart(coordinator)
        worker = None
        if during is not None:
            worker = threading.Thread(target=during, daemon=True)
            worker.start()
        said = self._procedure("join", site)
        if worker is not None:
            worker.join(60)
        if not said.startswith("JOINED"):
            self._unfinished[site] = "join"  # heal() runs it again
            return False, said
        self._wait_serving(site)
        s.command = "run"
        self._joined.append(site)
        return True, said

    def old_copy(self, site: str) -> bytes:
        """A backup of ``site``'s database now (to put it back later: ``replace``)."""
        out = io.BytesIO()
        dbserver.backup(dbserver.served(self.sites_[site].dsn), self.sysdba_spec(site), out)
        return out.getvalue()

    def replace_and_resync(self, site: str, copy: bytes) -> tuple[bool, str]:
        """``site``'s database is put back from ``copy`` (an older backup), then rebuilt as
        README "A resync" says: the application stopped there (it waits in
        ``app_connect``; its open connections are shut down), the node stopped, the old copy
        restored in place, ``siege-node resync`` there, ``siege-ctl resync SITE``. Whether
        it resynced, and what siege-ctl said."""
        s = self.sites_[site]
        gate = self._app_gate[site]
        gate.clear()
        try:
            self.stop(site)
            self.shut_out_application(site)
            where = dbserver.served(s.dsn)
            spec = self.sysdba_spec(site)
            dbserver.drop(where, spec)
            dbserver.restore(where, spec, io.BytesIO(copy))
            s.command = "resync"
            self._spawn(site)
            _wait_listening(s.port, s, START_LIMIT_S)
            said = self._procedure("resync", site)
            if not said.startswith("RESYNCED"):
                self._unfinished[site] = "resync"  # heal() runs it again
                return False, said
            self._wait_serving(site)
            return True, said
        finally:
            s.command = "run"
            gate.set()

    def shut_out_application(self, site: str) -> int:
        """End the application's attachments to ``site``'s database (as a DBA does before a
        restore); how many."""
        con = self.sysdba(site)
        try:
            with transaction(con) as tm:
                cur = tm.cursor()
                cur.execute("DELETE FROM MON$ATTACHMENTS WHERE MON$USER = ? AND "
                            "MON$ATTACHMENT_ID <> CURRENT_CONNECTION", (self.app_user.upper(),))
                n = cur.affected_rows
                cur.close()
            return n
        finally:
            con.close()

    # --- building ------------------------------------------------------------------------

    def _create(self, site: str, before_install: Callable[[object, str], None]) -> None:
        con = self.server.create_database(self._db_path(site), ddl=self.schema)
        try:
            before_install(con, site)
            if con.main_transaction.is_active():
                con.commit()
            ranges = self._ranges(site)
            capture.install(con, generators=ranges)
            guardwatch.remember_install(con, ())
            _grant_application(con, self.app_user, self.APP_PASSWORD)
            _grant_generators_and_procedures(con, self.app_user)
        finally:
            con.close()

    def _db_path(self, site: str) -> Path:
        return Path(dbserver.served(self.sites_[site].dsn).path)

    def _ranges(self, site: str) -> tuple[GeneratorRange, ...]:
        index = self.sites_[site].index
        return tuple(GeneratorRange(name, (index + 1) * size + 1, (index + 2) * size - 1)
                     for name, size in self.generators.items())

    def _address(self, frm: str, to: str) -> str | None:
        """Where ``frm`` reaches ``to`` (None: ``to`` is found by its announcements)."""
        if to == DIAL_IN:
            return None
        if to == LINED:
            return f"127.0.0.1:{self.lines[LINED].port}"
        if frm in (LINED, DIAL_IN) and to in (SIEGE, STAND_IN):
            return f"127.0.0.1:{self.lines[f'{frm}>{to}'].port}"
        return f"127.0.0.1:{self.sites_[to].port}"

    def _write_config(self, site: str) -> None:
        s = self.sites_[site]
        bundle = self.folder / "bundles" / site
        if not bundle.exists():
            bundle = self.pki.site(site, relay=site in (SIEGE, STAND_IN))
        node = [f'listen = "127.0.0.1:{s.port}"', f'bundle = "{bundle}"',
                f'siege = "{SIEGE}"']
        if site == STAND_IN:
            node += ["coordinator = true", "priority = 1",
                     f"takeover_after = {TAKEOVER_AFTER_S:g}"]
        if site == DIAL_IN:
            node += ["outbound_only = true", f"dial_every = {DIAL_EVERY_S:g}",
                     "announce_every = 2"]
        if site in (LINED, JOINER):
            node += ["announce_every = 10"]
        lines = [f'site = "{site}"', "", "[database]", f'dsn = "{s.dsn}"', 'user = "SYSDBA"',
                 'password_file = "db.pw"', "", "[node]", *node, ""]
        if site in (SIEGE, STAND_IN):
            peers = [p for p in self.sites_ if p != site]
        else:  # ordinary sites know the sites that may coordinate
            peers = [SIEGE, STAND_IN]
        for peer in peers:
            lines.append(f"[peers.{peer}]")
            address = self._address(site, peer)
            if address is not None:
                lines.append(f'address = "{address}"')
            if peer == STAND_IN:
                lines += ["coordinator = true", "priority = 1"]
            lines.append("")
        for rng in self._ranges(site):
            lines += [f"[generators.{rng.name}]", f"start = {rng.start}", f"end = {rng.end}", ""]
        if site in (SIEGE, STAND_IN):
            lines += ["[siege]", *(f"{k} = {v}" for k, v in ROUNDS.items()), ""]
        s.config.write_text("\n".join(lines))

    def _write_ctl_config(self) -> None:
        self.ctl_config.write_text(
            f'address = "127.0.0.1:{self.sites_[SIEGE].port}"\nsiege = "{SIEGE}"\n'
            f'bundle = "bundles/ops"\n[stand_ins]\n'
            f'{STAND_IN} = "127.0.0.1:{self.sites_[STAND_IN].port}"\n')

    def _skew_file(self, site: str) -> Path:
        return self.folder / f"{site}.skew"

    def _env(self, site: str | None) -> dict[str, str]:
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
        env.pop(CLOCK_SKEW_ENV, None)
        if site is not None:
            s = self.sites_[site]
            if RUNTIME_CLOCK:
                skew = self._skew_file(site)
                if not skew.exists():
                    skew.write_text(f"{s.skew_s}\n")
                env[CLOCK_SKEW_FILE_ENV] = str(skew)  # type: ignore[index]
            elif s.skew_s:
                env[CLOCK_SKEW_ENV] = str(s.skew_s)
        return env

    def _spawn(self, site: str) -> None:
        s = self.sites_[site]
        if self.up(site):
            return
        with open(s.log, "ab") as log:
            log.write(f"--- harness: siege-node {s.command} started at "
                      f"{time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            s.started_as = s.command
            s.proc = subprocess.Popen(
                [sys.executable, "-m", "siege_sync.node.cli", s.command, "--config",
                 str(s.config)], stdout=subprocess.DEVNULL, stderr=log,
                stdin=subprocess.DEVNULL, env=self._env(site))

    def _wait_serving(self, site: str, limit_s: float = START_LIMIT_S) -> None:
        import grpc

        s = self.sites_[site]
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if s.proc is None or s.proc.poll() is not None:
                raise MeshError(f"{site}'s node exited: {self.log_since(site, 0)[-3000:]}")
            try:
                self.status(site, timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.2)
        raise MeshError(f"{site}'s node did not serve within {limit_s:.0f} s: "
                        f"{self.log_since(site, 0)[-3000:]}")

    def _kill_proc(self, s: Site) -> None:
        proc = s.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    # --- quiet ---------------------------------------------------------------------------

def _shortfall(statuses: Mapping[str, object], target: Mapping[tuple[str, int], int]) -> str:
    """What a site lacks of ``target`` (origin -> published seq), or holds parked; ""."""
    for site, st in statuses.items():
        if len(st.parked):
            return f"{site} holds {len(st.parked)} transactions of other sites (parked)"
        applied = {(o.site, o.incarnation): o.seq for o in st.applied.origins}
        for origin, seq in sorted(target.items()):
            if origin[0] != site and applied.get(origin, 0) < seq:
                return (f"{site} applied {origin[0]}#{origin[1]} up to "
                        f"{applied.get(origin, 0)}, it had published {seq}")
    return ""


def _grant_generators_and_procedures(con, user: str) -> None:
    """What an application is granted beside its tables: its generators and procedures
    (never the sync's own objects)."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute("SELECT TRIM(RDB$GENERATOR_NAME) FROM RDB$GENERATORS WHERE "
                    "COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND "
                    "RDB$GENERATOR_NAME NOT STARTING WITH 'SYNC$'")
        for (name,) in cur.fetchall():
            cur.execute(f'GRANT USAGE ON GENERATOR "{name}" TO USER {user}')
        cur.execute("SELECT TRIM(RDB$PROCEDURE_NAME) FROM RDB$PROCEDURES WHERE "
                    "COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND "
                    "RDB$PROCEDURE_NAME NOT STARTING WITH 'SYNC$'")
        for (name,) in cur.fetchall():
            cur.execute(f'GRANT EXECUTE ON PROCEDURE "{name}" TO USER {user}')
        cur.close()


def _outcome(done: subprocess.CompletedProcess) -> str:
    """What ``siege-ctl join|resync`` said: its report's outcome ("JOINED", "RESYNCED,
    UNSYNCED"...) and the report's problems, or its error."""
    text = done.stdout + done.stderr
    found = re.search(r"^\S.*?: ((?:JOINED|RESYNCED|FAILED)[^\n]*)$", text, re.M)
    head = found.group(1) if found else f"no report (exit {done.returncode})"
    problems = [line.strip() for line in text.splitlines()
                if "failed" in line or "error" in line.lower()]
    return " ".join([head, *problems[:3]])[:1500]


def _open_gate() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def _wait_listening(port: int, s: Site, limit_s: float) -> None:
    import socket

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if s.proc is None or s.proc.poll() is not None:
            raise MeshError(f"{s.name}'s node ({s.command}) exited: "
                            f"{s.log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise MeshError(f"nothing listens on {port} ({s.name}, {s.command})")


__all__ = ["ShippedMesh", "ServerDisk", "small_disk", "release_small_disk", "MeshError",
           "RUNTIME_CLOCK", "SITES"]
