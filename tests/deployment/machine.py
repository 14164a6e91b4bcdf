"""A pretend fresh Debian machine, for running the README's deployment guide as written.

Owns a folder ``<base>/<name>`` holding the machine's own ``etc/`` (a copy of this machine's
``/etc`` when it is made), ``opt/``, ``srv/``, ``tmp/``, Firebird's ``var-lib-firebird/`` (its
security database, so SYSDBA's password is the one ``/etc/firebird/3.0/SYSDBA.password``
says) and ``var-log-firebird/``, and ``units/`` (the ``systemctl`` stand-in's pids and
journals); and the processes it starts, all in its host's network namespace of a
``tools.netns.Lan`` — its own loopback, so its Firebird server and its node take the ports
the guide names (3050, 7443) beside the other machine's.

Every command runs under ``unshare --mount`` with those folders bind-mounted over the real
paths (``MASKED``), so what the guide writes to ``/etc``, ``/opt``, ``/srv`` or ``/tmp`` —
``useradd`` included — lands in the machine's folder. Must never let a guide command write
elsewhere on this machine: a path the guide uses must be under ``MASKED`` (``/usr/local``,
``/root`` and ``/var/lib/siege`` are not, on purpose: the guide does not use them).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.netns import Host, Lan

# Real path -> the machine's folder for it.
MASKED = {"/etc": "etc", "/opt": "opt", "/srv": "srv", "/tmp": "tmp",
          "/var/lib/firebird": "var-lib-firebird", "/var/log/firebird": "var-log-firebird"}
ROOT = Path(__file__).resolve().parents[2]  # this repository
BIN = Path(__file__).resolve().parent / "bin"  # the systemctl and scp stand-ins
MACHINES_ENV = "SIEGE_GUIDE_MACHINES"  # the folder of every machine (for scp)
UNITS_ENV = "SIEGE_GUIDE_UNITS"  # this machine's units/ (for systemctl)
FIREBIRD_PORT = 3050
# root's PATH on a fresh Debian: its own python3 (whatever runs this test may live under /root,
# where the node's user cannot reach it).
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _outside_paths() -> list[Path]:
    """This repository and the test's Python environment, each once (the outermost)."""
    found: list[Path] = []
    for path in sorted({ROOT, Path(sys.prefix).resolve()}, key=lambda p: len(p.parts)):
        if not any(path == f or f in path.parents for f in found):
            found.append(path)
    return found


def inside(machines: Path, machine: str, path: str) -> Path:
    """Where ``path`` of ``machine`` lives on this machine (``/etc/x`` -> ``<m>/etc/x``)."""
    for real, folder in sorted(MASKED.items(), key=lambda kv: -len(kv[0])):
        if path == real or path.startswith(real + "/"):
            return machines / machine / folder / path[len(real):].lstrip("/")
    raise ValueError(f"{path}: not a path of a test machine (only {', '.join(MASKED)})")


class Machine:
    """One machine of the guide. ``sh(script)`` runs a guide block there as root."""

    def __init__(self, lan: Lan, name: str, base: Path) -> None:
        self.lan, self.name, self.base = lan, name, base
        self.root = base / name
        self.units = self.root / "units"
        self.units.mkdir(parents=True)
        subprocess.run(["cp", "-a", "/etc", str(self.root / "etc")], check=True)
        subprocess.run(["cp", "-a", "/var/lib/firebird", str(self.root / "var-lib-firebird")],
                       check=True)
        for folder in ("opt", "srv", "tmp", "var-log-firebird"):
            (self.root / folder).mkdir()
        (self.root / "tmp").chmod(0o1777)
        shutil.chown(self.root / "var-log-firebird", "firebird", "firebird")
        self.host: Host = lan.add_host(name)
        self.firebird: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return self.host.address

    def path(self, inside_path: str) -> Path:
        return inside(self.base, self.name, inside_path)

    def know(self, names: dict[str, str]) -> None:
        """Add ``host name -> address`` lines to the machine's ``/etc/hosts`` (its DNS)."""
        with open(self.path("/etc/hosts"), "a", encoding="ascii") as hosts:
            hosts.writelines(f"{address}\t{name}\n" for name, address in names.items())

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run with the machine's folders over the real paths — the test's own
        files (this repository: the wheelhouse, the stand-ins; the Python running the test)
        still seen where they are, even under a masked path (a clone in /tmp)."""
        q = shlex.quote
        steps = []
        for path in _outside_paths():
            for real, folder in MASKED.items():
                if str(path).startswith(real + "/"):
                    seen_at = self.root / folder / str(path)[len(real) + 1:]
                    steps.append(f"mkdir -p {q(str(seen_at))} && "
                                 f"mount --bind {q(str(path))} {q(str(seen_at))}")
        steps += [f"mount --rbind {q(str(self.root / folder))} {real}"
                  for real, folder in MASKED.items()]
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", " && ".join(steps) + ' && exec "$@"', "machine", *argv]

    def start_firebird(self, timeout: float = 30.0) -> None:
        """The shop's Firebird server, as Debian's package runs it (user firebird, port 3050
        of the machine's loopback, its configuration from the machine's ``/etc``)."""
        log = open(self.root / "firebird.out", "ab")  # noqa: SIM115 (the server keeps it)
        self.firebird = self.lan.run(self.host, self.wrap(
            ["setpriv", "--reuid=firebird", "--regid=firebird", "--init-groups",
             "/usr/sbin/firebird"]), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        probe = ("import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', "
                 f"{FIREBIRD_PORT}), 1).close()\nexcept OSError:\n sys.exit(1)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lan.call(self.host, [sys.executable, "-c", probe], check=False
                             ).returncode == 0:
                return
            if self.firebird.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: the Firebird server did not start:\n"
                           + (self.root / "firebird.out").read_text(errors="replace")[-2000:])

    def sysdba_password(self) -> str:
        for line in self.path("/etc/firebird/3.0/SYSDBA.password").read_text().splitlines():
            if line.startswith("ISC_PASSWORD="):
                return line.split("=", 1)[1].strip().strip('"')
        raise RuntimeError(f"{self.name}: no ISC_PASSWORD in /etc/firebird/3.0/SYSDBA.password")

    def environment(self) -> dict[str, str]:
        """What a guide command sees besides this process's environment."""
        return {"PATH": f"{BIN}{os.pathsep}{DEBIAN_PATH}",
                MACHINES_ENV: str(self.base), UNITS_ENV: str(self.units)}

    def sh(self, script: str, env: dict[str, str] | None = None, timeout: float = 900.0,
           trace: bool = True) -> subprocess.CompletedProcess:
        """Run ``script`` with bash as root on the machine (``-e``, ``-u``; ``-x`` unless not
        ``trace``: each command is shown, the first that fails ends it)."""
        flags = "-euxo" if trace else "-euo"
        proc = self.lan.run(self.host, self.wrap(["bash", flags, "pipefail", "-c", script]),
                            env={**self.environment(), **(env or {})}, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\n(killed after {timeout:.0f} s)"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def python(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code`` with this test's Python on the machine (an independent read)."""
        done = self.sh(f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}",
                       timeout=timeout, trace=False)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: python failed:\n{done.stdout[-3000:]}")
        return done.stdout

    def journal(self, unit: str) -> str:
        path = self.units / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else "(no journal)"

    def stop_units(self) -> None:
        """SIGTERM every service the systemctl stand-in started here (by its pid)."""
        for pid_file in self.units.glob("*.pid"):
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
