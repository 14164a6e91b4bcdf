"""A private, throw-away Firebird 3 server for tests and benchmarks.

``FirebirdServer(workdir)`` builds a private Firebird root (its own ``firebird.conf``,
``databases.conf``, security database, lock, temp, data and log folders) and runs
``/usr/sbin/firebird`` (Super server) from it as user ``firebird``, listening on a free TCP port
of 127.0.0.1 only::

    with FirebirdServer(tmp_path) as srv:
        con = srv.create_database("site", ddl=["CREATE TABLE T (ID INTEGER PRIMARY KEY)"])
        ...  # srv.dsn("site") == "inet://127.0.0.1:<port>//<data_dir>/site.fdb"

What it owns: the folder ``<workdir>/fbserver`` (or, when user ``firebird`` cannot enter
``workdir`` -- pytest's ``tmp_path`` is under a 0700 folder -- a fresh ``/tmp/siege-fbserver-*``
folder linked from ``<workdir>/fbserver`` and deleted by ``close()``), and the one server
process it started, which it stops by that process id only.

What it must never do: touch the system's Firebird configuration (``/etc/firebird``), its
security database (only copied), its lock folder ``/tmp/firebird``, its port 3050 or its log;
stop any process it did not start; stop anything by name.

How (all measured on Debian 12, Firebird 3.0.11):

* ``FIREBIRD=<private root>`` makes the server read the private ``firebird.conf``;
  ``FIREBIRD_LOCK`` moves the lock/shared-memory files (the conf has no setting for them).
* Debian compiles the log folder in (``/var/log/firebird/firebird3.0.log``; ``FIREBIRD`` does
  not move it). When the machine allows mount namespaces (root with CAP_SYS_ADMIN), the server
  runs in its own one where a private folder is bind-mounted over ``/var/log/firebird``, so its
  log is ``<base>/log/firebird3.0.log``. Otherwise (e.g. an unprivileged container) it logs to
  the system file, which is usually not writable for it: the log is then mostly lost, and the
  startup error shows what can be read.
* ``firebird`` stays in the foreground (it does not fork), and ``unshare``/``sh``/``setpriv``
  all ``exec``, so the process started is the server itself: SIGTERM shuts it down (1 to 3
  SIGTERMs in 100 are swallowed by Firebird; SIGKILL follows after ``stop_timeout``).
  ``fbguard`` is not used: its lock file lives in the compiled-in ``/run/firebird3.0``, shared
  with the system's guardian, and it restarts a server that is killed.
* ``setpriv --pdeathsig TERM``: the server gets SIGTERM when the thread that started it ends
  (a crashed or killed test run leaves no server behind). Start it from the main thread, or
  pass ``die_with_parent=False``.
* The client (the test process) needs nothing: ``inet://127.0.0.1:PORT//path`` goes through the
  Remote provider of whatever ``firebird.conf`` the client reads. The server accepts
  ``WireCrypt = Enabled`` so a client configured with ``WireCrypt = Disabled`` still connects.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from firebird.driver import Connection

    from siege_sync.node.db.database import DatabaseSpec

SYSTEM_ROOT = Path("/usr/lib/x86_64-linux-gnu/firebird/3.0")
SYSTEM_SECURITY_DB = Path("/var/lib/firebird/3.0/system/security3.fdb")
# Compiled into Debian's build (FB_LOGDIR), not movable by FIREBIRD.
SYSTEM_LOG_DIR = Path("/var/log/firebird")
LOG_NAME = "firebird3.0.log"
FB_USER = "firebird"
HOST = "127.0.0.1"
PACKAGES = "libfbclient2 firebird3.0-server-core firebird3.0-utils firebird3.0-server"
INSTALL_HINT = (
    f"install them as root with `apt-get install -y --no-install-recommends {PACKAGES}` "
    "(or `make os-deps`)"
)

# gds codes seen by the startup probe (see FIREBIRD_NOTES.md)
_GDS_IO_ERROR = 335544344  # the probe's file does not exist: the server is up and let us in
_GDS_NETWORK = 335544721  # unable to complete network request: not accepting yet
_GDS_LOGIN = 335544472  # user name and password are not defined

_PROBE_NAME = ".fbserver-probe-missing.fdb"
# firebird.conf settings that keep the server private; extra_config cannot override them.
_OWNED_SETTINGS = ("RemoteServicePort", "RemoteBindAddress", "SecurityDatabase", "ServerMode")


class FirebirdServerError(RuntimeError):
    """The private server cannot be built, started or stopped; the message says why."""


@dataclass(frozen=True)
class Layout:
    """The private server's folders. ``base`` holds them all."""

    base: Path

    @property
    def root(self) -> Path:
        """``FIREBIRD``: symlinks to the system root plus our own ``*.conf`` and ``intl``."""
        return self.base / "root"

    @property
    def lock(self) -> Path:
        return self.base / "lock"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def tmp(self) -> Path:
        return self.base / "tmp"

    @property
    def system(self) -> Path:
        return self.base / "system"

    @property
    def log(self) -> Path:
        return self.base / "log"

    @property
    def security_db(self) -> Path:
        return self.system / "security3.fdb"

    @property
    def conf(self) -> Path:
        return self.root / "firebird.conf"

    @property
    def pidfile(self) -> Path:
        """The running server's pid (guards against a second server in the same folder)."""
        return self.base / "server.pid"

    @property
    def output(self) -> Path:
        """The server process's stdout/stderr (it writes almost nothing there)."""
        return self.log / "server.out"


@dataclass(frozen=True)
class Programs:
    """Where the programs are, and the ``firebird`` account."""

    server: Path
    isql: Path
    setpriv: Path
    unshare: Path | None
    uid: int
    gid: int

    @classmethod
    def find(cls) -> Programs:
        """Check the requirements; raise FirebirdServerError saying what is missing."""
        if os.name != "posix" or not sys.platform.startswith("linux"):
            raise FirebirdServerError("tools.fbserver runs on Linux (Debian's Firebird 3 packages)")
        if os.geteuid() != 0:
            raise FirebirdServerError(
                "tools.fbserver must run as root: it starts the server as user 'firebird' and "
                "gives it a data folder owned by that user (run the tests as root)"
            )
        missing: list[str] = []
        try:
            account = pwd.getpwnam(FB_USER)
        except KeyError:
            account = None
            missing.append(f"user {FB_USER!r}")
        server = _package_file("firebird3.0-server", "/sbin/firebird") or _existing(
            "/usr/sbin/firebird")
        isql = _package_file("firebird3.0-utils", "/bin/isql-fb") or _existing("/usr/bin/isql-fb")
        for what, path in (("server program /usr/sbin/firebird (firebird3.0-server)", server),
                           ("isql-fb (firebird3.0-utils)", isql),
                           (f"{SYSTEM_SECURITY_DB} (firebird3.0-server-core)",
                            _existing(SYSTEM_SECURITY_DB)),
                           (f"{SYSTEM_ROOT}/plugins (firebird3.0-server-core)",
                            _existing(SYSTEM_ROOT / "plugins")),
                           ("libfbclient.so.2 (libfbclient2)",
                            _existing(SYSTEM_ROOT / "lib" / "libfbclient.so.2"))):
            if path is None:
                missing.append(what)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            missing.append("setpriv (util-linux)")
        if missing:
            raise FirebirdServerError(
                "cannot run a private Firebird server, missing: " + "; ".join(missing)
                + f". The Firebird packages are {PACKAGES}: {INSTALL_HINT}."
            )
        assert account and server and isql and setpriv
        unshare = shutil.which("unshare")
        return cls(server=server, isql=isql, setpriv=Path(setpriv),
                   unshare=Path(unshare) if unshare else None,
                   uid=account.pw_uid, gid=account.pw_gid)

    def as_firebird(self, argv: list[str], *, pdeathsig: bool = False) -> list[str]:
        """``argv`` run as user firebird (no supplementary groups), ``exec``-ed in place."""
        cmd = [str(self.setpriv), f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        if pdeathsig:
            cmd.append("--pdeathsig=TERM")
        return [*cmd, "--", *argv]


def _sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        raise FirebirdServerError(f"the Firebird server pid {proc.pid} survives SIGKILL"
                                  ) from None


def _existing(path: str | Path) -> Path | None:
    p = Path(path)
    return p if p.exists() else None


def _package_file(package: str, suffix: str) -> Path | None:
    """The file of an installed Debian package whose path ends with ``suffix``."""
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                             check=False, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.endswith(suffix) and Path(line).is_file():
            return Path(line)
    return None


def _build_intl(src: Path, dst: Path) -> None:
    """``dst``: a real folder holding copies of the INTL modules of ``src`` (links for the rest).

    Debian's ``fbintl.conf`` loads ``$(root)/intl/fbintl``, and ``$(root)`` is our private root.
    Firebird 3's module loader drops every symbol of a module whose ``dladdr`` file name is not
    its ``realpath`` (``DlfcnModule::findSymbol``): reached through a symlink, ``libfbintl.so``
    loads but yields nothing, and WIN1252, ISO8859_1, WIN1250... are "not installed" (UTF8 and
    the other built-in sets still work). A copy reached by its real path is accepted.
    """
    if dst.is_symlink():
        dst.unlink()
    dst.mkdir(exist_ok=True)
    dst.chmod(0o755)
    for s in src.iterdir():
        d = dst / s.name
        if d.is_symlink() or d.exists():
            d.unlink()  # a new inode: never rewrite a library a dead server may have mapped
        if s.name.endswith(".so") or ".so." in s.name:
            shutil.copyfile(s, d)
            d.chmod(0o644)
        else:
            d.symlink_to(s)


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (whoever binds it checks it really got it).

    Chosen below the kernel's range of ephemeral ports: a port the kernel hands out (bind to
    port 0) is also what it gives the outgoing connections of every test that runs until
    the server binds it — a node of the suite lost its port that way ("the port is in use").
    Only an explicit bind can take a port below that range."""
    low = _ephemeral_low()
    for _ in range(200):
        port = secrets.randbelow(low - 10_000) + 10_000
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # (a crowded machine)
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return max(low, 11_000)


def _listen_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port or 0.0.0.0:port (IPv4)."""
    inodes: set[str] = set()
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _tail(path: Path, start: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    text = data.decode("utf-8", "replace").strip()
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text or "(empty)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _PortTaken(Exception):
    pass


@dataclass(eq=False)
class FirebirdServer:
    """A private Firebird 3 Super server on 127.0.0.1, run as user ``firebird``.

    Use as a context manager (``__enter__`` starts it, ``__exit__`` calls ``close()``), or
    call ``start()`` / ``stop()`` / ``close()`` yourself.

    ``password`` is SYSDBA's (random when not given). ``port`` is chosen free when not given.
    ``extra_config`` adds ``firebird.conf`` lines (e.g. ``{"WireCrypt": "Disabled"}``).
    ``private_log``: run in a mount namespace so the log is private (None: when possible).
    ``keep_files``: ``close()`` leaves a ``/tmp/siege-fbserver-*`` folder in place.
    """

    workdir: Path
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    port: int = 0
    extra_config: dict[str, str] = field(default_factory=dict)
    private_log: bool | None = None
    die_with_parent: bool = True
    start_timeout: float = 30.0
    stop_timeout: float = 2.0
    keep_files: bool = False
    user: str = field(default="SYSDBA", init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()
        if "'" in self.password or not self.password:
            raise ValueError("the password must be non-empty and contain no quote")
        owned = {k.lower() for k in _OWNED_SETTINGS} & {k.lower() for k in self.extra_config}
        if owned:
            raise ValueError(f"extra_config may not set {sorted(owned)}: the tool owns them")
        self._programs = Programs.find()
        self._layout: Layout | None = None
        self._external_base = False  # base is a /tmp folder created by us
        self._proc: subprocess.Popen[bytes] | None = None
        self._namespace = False
        self._log_start = 0
        self._connections: list[Connection] = []
        self.start_seconds = 0.0  # duration of the last start() (spawn until it accepts)
        self.stop_seconds = 0.0  # duration of the last stop() (SIGTERM until reaped)
        self.forced_stops = 0  # stops that needed SIGKILL (see stop())

    # -- public API ---------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise FirebirdServerError("the server has not been started yet")
        return self._layout

    @property
    def data_dir(self) -> Path:
        """Where databases go; owned by ``firebird``; the server opens files only here."""
        return self.layout.data

    @property
    def root_dir(self) -> Path:
        """The private Firebird root (``FIREBIRD`` of the server)."""
        return self.layout.root

    @property
    def log_path(self) -> Path:
        """The server's log file (the system one when no private log could be arranged)."""
        return self.layout.log / LOG_NAME if self._namespace else SYSTEM_LOG_DIR / LOG_NAME

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def dsn_prefix(self) -> str:
        """Append an absolute path: ``dsn_prefix + "/abs/x.fdb"``."""
        return f"inet://{HOST}:{self.port}/"

    def path(self, path_or_name: str | Path) -> Path:
        """``"site"`` -> ``data_dir/site.fdb``; relative paths under ``data_dir``; absolute kept."""
        p = Path(path_or_name)
        if p.is_absolute():
            return p
        if not p.suffix:
            p = p.with_suffix(".fdb")
        return self.data_dir / p

    def dsn(self, path_or_name: str | Path) -> str:
        """``inet://127.0.0.1:PORT//abs/path`` (the form DatabaseSpec sees as remote)."""
        return self.dsn_prefix + str(self.path(path_or_name))

    def spec(self, path_or_name: str | Path) -> DatabaseSpec:
        from siege_sync.node.db.database import DatabaseSpec

        return DatabaseSpec(self.dsn(path_or_name), user=self.user, password=self.password)

    def create_database(self, name: str | Path, dialect: int = 3, ddl: list[str] | None = None,
                        charset: str = "UTF8") -> Connection:
        """Create the database through the server, run ``ddl``; an open connection.

        ``close()`` closes the connections it returned that are still open.
        """
        from tests.fbdb import create_db

        con = create_db(self.path(name), dialect=dialect, ddl=ddl or [], charset=charset,
                        dsn=self.dsn(name), user=self.user, password=self.password)
        self._connections.append(con)
        return con

    def connect(self, name: str | Path) -> Connection:
        """Open a connection through the server the way the node does (tracked like above)."""
        from siege_sync.node.db.database import open_connection

        con = open_connection(self.spec(name))
        self._connections.append(con)
        return con

    def start(self) -> Self:
        """Build the private root on first use, start the server, wait until it accepts."""
        if self.running:
            raise FirebirdServerError(f"the server already runs (pid {self.pid})")
        if self._layout is None:
            self._layout = self._build()
        automatic_port = self.port == 0
        for attempt in range(5 if automatic_port else 1):
            if automatic_port:
                self.port = free_port()
            try:
                self._spawn_and_wait()
                return self
            except _PortTaken:
                self._terminate()
                if not automatic_port or attempt == 4:
                    raise FirebirdServerError(
                        f"port {HOST}:{self.port} is in use by another process") from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server: SIGTERM, SIGKILL after ``stop_timeout``; wait until it is gone.

        A clean stop takes ~0.11 s. Firebird 3.0.11 swallows 1 to 3 SIGTERMs in 100 (measured,
        also long after start: the server then stays up for good, whatever it is sent but
        SIGKILL -- more SIGTERM/SIGUSR1 to any thread, a connection to its port), hence the
        short ``stop_timeout``; ``forced_stops`` counts those. Committed data is safe (forced
        writes are on by default).

        Connections still open through it fail on their next call with
        ``firebird.driver.DatabaseError`` (sqlcode -902, gds 335544726 "Error reading data
        from the connection" or 335544727 "Error writing data to the connection").
        """
        self._terminate()

    def restart(self) -> None:
        """Stop the server process and start a new one on the same port (fault tests).

        Open connections are dead afterwards (see ``stop()`` for the error); new ones work.
        """
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server now, as a power cut of its machine would (fault tests): no
        shutdown at all; open connections fail on their next call. ``start()`` brings a new
        server up on the same port (forced writes keep what was committed)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _sigkill(proc)
        if self._layout is not None:
            self._layout.pidfile.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the tracked connections, stop the server, remove a ``/tmp`` base folder
        (after unmounting what a caller mounted under it: the chaos run's small disk)."""
        self._close_connections()
        self.stop()
        if self._layout is not None:
            _unmount_under(self._layout.base)
        if self._layout is not None and self._external_base and not self.keep_files:
            link = self.workdir / "fbserver"
            if link.is_symlink() and link.resolve() == self._layout.base.resolve():
                link.unlink()
            shutil.rmtree(self._layout.base, ignore_errors=True)
            self._layout = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def diagnostics(self) -> str:
        """What the server said: its stdout/stderr and the new part of its log."""
        lay = self.layout
        return (f"--- server output ({lay.output}):\n{_tail(lay.output)}\n"
                f"--- server log ({self.log_path}, this run):\n"
                f"{_tail(self.log_path, self._log_start)}")

    # -- building -----------------------------------------------------------------------------

    def _build(self) -> Layout:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._firebird_can_enter(self.workdir):
            base = self.workdir / "fbserver"
            if base.is_symlink():
                base.unlink()
            base.mkdir(exist_ok=True)
        else:
            base = Path(tempfile.mkdtemp(prefix="siege-fbserver-", dir="/tmp"))
            self._external_base = True
            link = self.workdir / "fbserver"
            if link.is_symlink():
                link.unlink()
            elif link.exists():
                raise FirebirdServerError(f"{link} exists and is not a link; remove it")
            link.symlink_to(base, target_is_directory=True)
        base.chmod(0o755)
        # Resolved: the INTL module must be reached by its real path (see _build_intl).
        lay = Layout(base.resolve())
        try:
            self._prepare(lay)
        except BaseException:
            if self._external_base:  # ours alone: leave nothing behind
                (self.workdir / "fbserver").unlink(missing_ok=True)
                shutil.rmtree(base, ignore_errors=True)
            raise
        return lay

    def _prepare(self, lay: Layout) -> None:
        other = self._live_server(lay)
        if other:
            raise FirebirdServerError(
                f"another Firebird server (pid {other}) runs from {lay.base}; stop it or use "
                "another workdir")
        self._build_root(lay)
        for d in (lay.lock, lay.data, lay.tmp, lay.system, lay.log):
            d.mkdir(exist_ok=True)
            os.chown(d, self._programs.uid, self._programs.gid)
            d.chmod(0o770)
        if not self._firebird_can_enter(lay.data):
            raise FirebirdServerError(f"user firebird cannot enter {lay.data}")
        if not lay.security_db.exists():
            shutil.copyfile(SYSTEM_SECURITY_DB, lay.security_db)
            os.chown(lay.security_db, self._programs.uid, self._programs.gid)
            lay.security_db.chmod(0o660)
        self._namespace = self._can_use_namespace(lay)
        # The conf must name the private security database before isql runs: without it the
        # user manager writes to the *system* security database whatever file isql attached.
        self._write_conf(lay)
        self._set_password(lay)

    def _build_root(self, lay: Layout) -> None:
        lay.root.mkdir(exist_ok=True)
        lay.root.chmod(0o755)
        own = {"firebird.conf", "databases.conf"}
        for src in SYSTEM_ROOT.iterdir():
            if src.name in own:
                continue
            dst = lay.root / src.name
            if src.name == "intl":
                _build_intl(src, dst)
                continue
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            dst.symlink_to(src)
        (lay.root / "databases.conf").write_text(
            "# Written by tools/fbserver.py (private test server).\n"
            f"security.db = {lay.security_db}\n{{\n\tRemoteAccess = false\n}}\n",
            encoding="utf-8")

    def _write_conf(self, lay: Layout) -> None:
        settings = {
            "RemoteServicePort": str(self.port),
            "RemoteBindAddress": HOST,
            "ServerMode": "Super",
            "SecurityDatabase": str(lay.security_db),
            "DatabaseAccess": f"Restrict {lay.data}",
            "TempDirectories": str(lay.tmp),
            "WireCrypt": "Enabled",
            "UdfAccess": "None",
            "ExternalFileAccess": "None",
            **self.extra_config,
        }
        lay.conf.write_text(
            "# Written by tools/fbserver.py (private test server); rewritten at each start.\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8")

    def _env(self, lay: Layout) -> dict[str, str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(lay.data),
               "LANG": "C.UTF-8", "FIREBIRD": str(lay.root), "FIREBIRD_LOCK": str(lay.lock),
               "FIREBIRD_TMP": str(lay.tmp)}
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        return env

    def _in_namespace(self, lay: Layout, argv: list[str]) -> list[str]:
        """``argv`` (already dropping to firebird) with a private /var/log/firebird, if used."""
        if not self._namespace:
            return argv
        assert self._programs.unshare is not None
        return [str(self._programs.unshare), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", 'mount --bind -- "$1" "$2" && shift 2 && exec "$@"',
                "sh", str(lay.log), str(SYSTEM_LOG_DIR), *argv]

    @staticmethod
    def _live_server(lay: Layout) -> int | None:
        """The pid in the pidfile if that process still runs from this private root."""
        try:
            pid = int(lay.pidfile.read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"FIREBIRD={lay.root}\0".encode() in environ else None

    def _firebird_can_enter(self, path: Path) -> bool:
        cmd = self._programs.as_firebird(["/usr/bin/test", "-x", str(path)])
        return subprocess.run(cmd, check=False, capture_output=True).returncode == 0

    def _can_use_namespace(self, lay: Layout) -> bool:
        if self.private_log is False:
            return False
        ok = (self._programs.unshare is not None and SYSTEM_LOG_DIR.is_dir()
              and subprocess.run([str(self._programs.unshare), "--mount", "--propagation",
                                  "private", "--", "mount", "--bind", "--", str(lay.log),
                                  str(SYSTEM_LOG_DIR)],
                                 check=False, capture_output=True).returncode == 0)
        if self.private_log and not ok:
            raise FirebirdServerError(
                "private_log=True needs `unshare --mount` and `mount --bind` (root with "
                f"CAP_SYS_ADMIN) and the folder {SYSTEM_LOG_DIR}")
        return ok

    def _set_password(self, lay: Layout) -> None:
        """SYSDBA's password in the private security database (embedded, server stopped)."""
        if f"SecurityDatabase = {lay.security_db}\n" not in lay.conf.read_text(encoding="utf-8"):
            raise AssertionError("the private firebird.conf must be written first")
        sql = (f"CREATE OR ALTER USER SYSDBA PASSWORD '{self.password}' USING PLUGIN Srp;\n"
               "COMMIT;\n")
        cmd = self._in_namespace(lay, self._programs.as_firebird(
            [str(self._programs.isql), "-bail", "-q", "-user", "SYSDBA", str(lay.security_db)]))
        res = subprocess.run(cmd, input=sql, text=True, capture_output=True, env=self._env(lay),
                             cwd=lay.data, check=False, timeout=60)
        if res.returncode != 0 or res.stderr.strip():
            raise FirebirdServerError(
                f"setting the SYSDBA password in {lay.security_db} failed "
                f"(isql-fb exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")

    # -- running ------------------------------------------------------------------------------

    def _spawn_and_wait(self) -> None:
        lay = self.layout
        self._write_conf(lay)
        self._log_start = _size(self.log_path)
        argv = self._in_namespace(lay, self._programs.as_firebird(
            [str(self._programs.server)], pdeathsig=self.die_with_parent))
        began = time.monotonic()
        with open(lay.output, "ab") as out:
            self._proc = subprocess.Popen(argv, env=self._env(lay), cwd=lay.data,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          start_new_session=True)
        lay.pidfile.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(began)
        except BaseException:
            self._terminate()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(self, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.start_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._proc = None
                raise FirebirdServerError(
                    f"the Firebird server exited with status {rc} while starting on "
                    f"{HOST}:{self.port}\n{self.diagnostics()}")
            listening = _listen_inodes(self.port)
            if listening & _socket_inodes(self._proc.pid):
                if self._probe():
                    return
            elif listening:
                raise _PortTaken()
            if time.monotonic() > deadline:
                pid = self._proc.pid
                self._terminate()
                raise FirebirdServerError(
                    f"the Firebird server (pid {pid}) did not accept connections on "
                    f"{HOST}:{self.port} within {self.start_timeout:.0f} s; stopped it.\n"
                    f"{self.diagnostics()}")
            time.sleep(0.01)

    def _probe(self) -> bool:
        """Attach to a missing file: "I/O error" proves the server runs and the login works."""
        from firebird.driver import DatabaseError, connect

        try:
            con = connect(self.dsn(_PROBE_NAME), user=self.user, password=self.password,
                          charset="UTF8")
        except DatabaseError as exc:
            codes = set(getattr(exc, "gds_codes", ()) or ())
            if _GDS_IO_ERROR in codes:
                return True
            if _GDS_NETWORK in codes:
                return False
            if _GDS_LOGIN in codes:
                raise FirebirdServerError(
                    f"the server rejects SYSDBA's password (security database "
                    f"{self.layout.security_db})\n{self.diagnostics()}") from exc
            raise FirebirdServerError(
                f"unexpected answer of the starting server: {str(exc).strip()} {sorted(codes)}"
                f"\n{self.diagnostics()}") from exc
        con.close()
        return True

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        began = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.forced_stops += 1
                _sigkill(proc)
        self.stop_seconds = time.monotonic() - began
        if self._layout is not None:
            self._layout.pidfile.unlink(missing_ok=True)

    def _close_connections(self) -> None:
        close_quietly(self._connections)
        self._connections.clear()


def _unmount_under(base: Path) -> None:
    """Unmount (lazily) every filesystem mounted at or under ``base`` in this namespace."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    root = str(base.resolve())
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    for point in sorted((p for p in points if p == root or p.startswith(root + "/")),
                        reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def close_quietly(connections: Iterable[Connection]) -> None:
    """Close connections whose server may be gone (ignores the driver's errors)."""
    from firebird.driver import DatabaseError

    for con in connections:
        with contextlib.suppress(DatabaseError):
            if not con.is_closed():
                con.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fbserver",
        description="Run a private Firebird 3 server on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--workdir", type=Path, required=True,
                        help="folder for the server's files "
                             "(databases go in WORKDIR/fbserver/data)")
    parser.add_argument("--password", help="SYSDBA password (random when not given)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (free one when not given)")
    args = parser.parse_args(argv)
    kwargs: dict[str, object] = {"port": args.port}
    if args.password:
        kwargs["password"] = args.password
    try:
        srv = FirebirdServer(args.workdir, **kwargs)  # type: ignore[arg-type]
    except FirebirdServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with srv:
        # After start(): the first call into libfbclient installs Firebird's own SIGINT/SIGTERM
        # handlers (they shut the client library down and swallow the signal, restarting
        # blocking calls); ours replace them. Both are set because a process started in the
        # background inherits SIGINT ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        print(f"Firebird server pid {srv.pid} on {HOST}:{srv.port} "
              f"(started in {srv.start_seconds:.2f} s)")
        print(f"DSN prefix: {srv.dsn_prefix}  e.g. {srv.dsn('example')}")
        print(f"user: {srv.user}  password: {srv.password}")
        print(f"data dir: {srv.data_dir}  log: {srv.log_path}")
        if srv._external_base:
            print(f"(user firebird cannot enter {srv.workdir}: the files are in "
                  f"{srv.layout.base} and are deleted at exit)")
        print("Ctrl-C stops it.", flush=True)
        try:
            while srv.running:
                time.sleep(0.2)
            print(f"the server exited by itself\n{srv.diagnostics()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping...", flush=True)
    print(f"stopped in {srv.stop_seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
