"""A private LAN of Linux network namespaces for multi-host tests.

Owns building it and tearing it down: one namespace holding a bridge, one namespace per host
with a veth to that bridge and an address in a private /24, and the processes a test runs
inside the hosts. Also owns the faults a site meets on a real link: its address changes (a
dynamic IP), its cable is pulled, or a firewall/NAT lets it dial out while nobody can dial in.

Must never touch the root namespace's interfaces, routes or firewall: every ``ip`` command
names a namespace this module created (``ip -n NS``), and the bridge lives in a namespace of
its own. Must never end a process it did not start or that does not live in one of its
namespaces, and only ever by pid. Needs root: ``require_netns()`` says so with a clear error;
a multi-host test that cannot run must fail, never skip silently.

Example::

    with Lan() as lan:
        a, b = lan.add_host("a"), lan.add_host("b")
        server = lan.run(b, [sys.executable, "-m", "http.server", "8000"])
        lan.call(a, ["ping", "-c1", b.address])
        with lan.inbound_blocked(b):   # b can dial out, nobody can dial b
            ...
        lan.readdress(b)               # b gets a new address, like a dynamic IP
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Every namespace this module creates is named PREFIX<creator pid>-<random>-<role>, so two
# runs never collide and sweep_stale() can tell which ones a dead run left behind.
PREFIX = "ssn"
_STALE = re.compile(rf"{PREFIX}(\d+)-[0-9a-f]+-")
_HOST_NAME = re.compile(r"[a-z][a-z0-9]{0,9}\Z")  # bridge port "p-<name>" stays <= 15 chars
BRIDGE = "br0"  # inside the bridge namespace: names there cannot collide with anything
HOST_INTERFACE = "eth0"  # inside each host namespace, same reason
NFT_TABLE = "siege_harness"
TERM_GRACE_S = 3.0  # how long processes get to exit on SIGTERM before SIGKILL


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot create network namespaces."""


class HarnessError(RuntimeError):
    """A command building or changing the LAN failed."""


@dataclass
class Host:
    """A host of a ``Lan``. ``address`` is its current IPv4 address: ``Lan.readdress``
    changes it in place, so a test holding the Host always sees the live one."""

    name: str
    netns: str
    address: str
    port: str  # the bridge side of its veth, in the bridge namespace
    interface: str = HOST_INTERFACE


def require_netns() -> None:
    """Raise ``NetnsUnavailable`` unless this process can create and use a namespace."""
    why = "multi-host tests need root and ip netns: "
    if os.geteuid() != 0:
        raise NetnsUnavailable(why + f"running as uid {os.geteuid()}; run the tests as root")
    if shutil.which("ip") is None:
        raise NetnsUnavailable(why + "no `ip` command (Debian package iproute2)")
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    add = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if add.returncode != 0:
        raise NetnsUnavailable(why + f"`ip netns add` failed: {add.stderr.strip()}")
    try:
        up = subprocess.run(["ip", "-n", probe, "link", "set", "lo", "up"],
                            capture_output=True, text=True)
        if up.returncode != 0:
            raise NetnsUnavailable(why + f"cannot configure a namespace: {up.stderr.strip()}")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def list_namespaces() -> list[str]:
    out = _ip("netns", "list")
    # Lines read "name" or "name (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete the namespaces a crashed earlier run left behind, and the processes in them.

    Only namespaces named by this module whose creating process is gone: a run still alive
    (another test session, in parallel) keeps its own."""
    removed = []
    for name in list_namespaces():
        match = _STALE.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        _kill_namespace_pids(name)
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
            removed.append(name)
    return removed


class Lan:
    """A bridge and the hosts plugged into it, all in namespaces of their own.

    Use it as a context manager: leaving it ends every process started with ``run`` (and
    anything else still living in its namespaces) and deletes every namespace, whatever
    state a failed test left it in."""

    def __init__(self, subnet: str = "10.77.0.0/24", term_grace_s: float = TERM_GRACE_S) -> None:
        self.term_grace_s = term_grace_s
        self.subnet = ipaddress.IPv4Network(subnet)
        if self.subnet.prefixlen > 29:
            raise ValueError(f"subnet {subnet}: too small for a LAN of test hosts")
        self._tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.bridge_netns = f"{self._tag}-br"
        self._hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []  # creation order; deleted in reverse
        self._processes: list[subprocess.Popen] = []
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Lan:
        require_netns()
        sweep_stale()
        try:
            self._add_namespace(self.bridge_netns)
            # No multicast snooping: without an IGMP querier on this LAN a snooping bridge
            # may stop forwarding groups it has not seen joined; zeroconf needs them all.
            # No STP, no forward delay: a port forwards as soon as it is up.
            self._ipn(self.bridge_netns, "link", "add", BRIDGE, "type", "bridge",
                      "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
            self._ipn(self.bridge_netns, "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(raise_errors=exc is None)

    def close(self, raise_errors: bool = True) -> None:
        """End the processes, then delete the namespaces. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._end_processes()
        problems = []
        for netns in reversed(self._namespaces):
            _kill_namespace_pids(netns)
            done = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True)
            if done.returncode != 0 and netns in list_namespaces():
                problems.append(f"{netns}: {done.stderr.strip()}")
        self._namespaces.clear()
        if problems and raise_errors:
            raise HarnessError("could not delete namespaces: " + "; ".join(problems))

    # -- hosts ---------------------------------------------------------------------------

    @property
    def hosts(self) -> dict[str, Host]:
        return dict(self._hosts)

    def add_host(self, name: str, address: str | None = None) -> Host:
        """Plug a new host into the bridge; its address is the next free one unless given."""
        self._check_open()
        if not _HOST_NAME.match(name):
            raise ValueError(f"host name {name!r}: use 1-10 lowercase letters or digits, "
                             "starting with a letter")
        if name in self._hosts:
            raise ValueError(f"host {name!r} already exists on this LAN")
        address = self._free_address(address)
        host = Host(name=name, netns=f"{self._tag}-{name}", address=address, port=f"p-{name}")
        self._add_namespace(host.netns)
        # Created from inside the bridge namespace straight into the host's: the pair never
        # exists in the root namespace, even for an instant.
        self._ipn(self.bridge_netns, "link", "add", host.port, "type", "veth",
                  "peer", "name", host.interface, "netns", host.netns)
        self._ipn(self.bridge_netns, "link", "set", host.port, "master", BRIDGE)
        self._ipn(self.bridge_netns, "link", "set", host.port, "up")
        self._ipn(host.netns, "addr", "add", f"{address}/{self.subnet.prefixlen}",
                  "dev", host.interface)
        self._ipn(host.netns, "link", "set", host.interface, "up")
        self._add_multicast_route(host)
        self._hosts[name] = host
        return host

    def readdress(self, host: Host | str, new_address: str | None = None) -> str:
        """Give the host another address (the next free one unless given), like a dynamic
        IP changing: the old one is gone at once, connections bound to it break."""
        self._check_open()
        host = self._host(host)
        new_address = self._free_address(new_address)
        # Delete before adding: with the kernel's default (no promote_secondaries) deleting
        # a primary address also deletes the secondaries of its subnet, the new one included.
        self._ipn(host.netns, "addr", "flush", "dev", host.interface)
        self._ipn(host.netns, "addr", "add", f"{new_address}/{self.subnet.prefixlen}",
                  "dev", host.interface)
        # Removing a device's last IPv4 address drops every route through it, ours included.
        self._add_multicast_route(host)
        host.address = new_address
        return new_address

    def disconnect(self, host: Host | str) -> None:
        """Pull the host's cable: the bridge side of its veth goes down. The host keeps its
        address and routes (as a PC does when the switch dies); its packets go nowhere."""
        self._check_open()
        self._ipn(self.bridge_netns, "link", "set", self._host(host).port, "down")

    def reconnect(self, host: Host | str) -> None:
        """Plug the cable back. Every host also forgets its unresolved and failed ARP
        entries: a dial made while the cable was out leaves one, and the kernel would fail
        the first dial after the reconnect with "No route to host" until it expires."""
        self._check_open()
        self._ipn(self.bridge_netns, "link", "set", self._host(host).port, "up")
        for each in self._hosts.values():
            self._ipn(each.netns, "neigh", "flush", "dev", each.interface,
                      "nud", "failed")
            self._ipn(each.netns, "neigh", "flush", "dev", each.interface,
                      "nud", "incomplete")

    def block_inbound(self, host: Host | str) -> None:
        """Nobody can open a connection (or send a datagram) to the host; the host can still
        dial out and get its answers: a site behind NAT or a closed firewall.

        Stateful (conntrack) filtering with nftables inside the host's namespace: accept
        loopback and replies to what the host started, drop everything else coming in
        (silently, as a real NAT does, so a dialler times out rather than being refused).
        LAN multicast is dropped too: a site behind NAT does not hear the LAN's zeroconf."""
        self._check_open()
        host = self._host(host)
        nft = shutil.which("nft")
        if nft is None:
            raise HarnessError("blocking inbound traffic needs nft "
                               "(Debian package nftables: apt-get install nftables)")
        rules = (
            f"table inet {NFT_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy drop;\n"
            '    iifname "lo" accept\n'
            "    ct state established,related accept\n"
            "  }\n"
            "}\n"
        )
        self.call(host, [nft, "-f", "-"], input_text=rules)

    def unblock_inbound(self, host: Host | str) -> None:
        self._check_open()
        host = self._host(host)
        nft = shutil.which("nft")
        if nft is None:
            raise HarnessError("nft is missing (Debian package nftables)")
        self.call(host, [nft, "delete", "table", "inet", NFT_TABLE])

    @contextlib.contextmanager
    def inbound_blocked(self, host: Host | str) -> Iterator[Host]:
        """``block_inbound`` for the duration of a ``with`` block."""
        self.block_inbound(host)
        try:
            yield self._host(host)
        finally:
            if not self._closed:
                self.unblock_inbound(host)

    # -- processes -----------------------------------------------------------------------

    def run(self, host: Host | str, argv: Sequence[str], env: Mapping[str, str] | None = None,
            **popen_kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside the host's namespace and return it; the Lan ends it on close.

        ``env`` adds variables to this process's environment (it does not replace it: `ip`
        itself needs PATH). The process gets a session of its own (``start_new_session``) so
        that closing the Lan ends its children too, never this test's own process group."""
        self._check_open()
        host = self._host(host)
        popen_kwargs.setdefault("start_new_session", True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        # `ip netns exec` execs the command after entering the namespace: the Popen's pid is
        # the command's own, so ending it by pid reaches the right process.
        proc = subprocess.Popen(["ip", "netns", "exec", host.netns, *argv],
                                env=full_env, **popen_kwargs)
        self._processes.append(proc)
        return proc

    def call(self, host: Host | str, argv: Sequence[str], timeout: float = 10.0,
             check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        """Run a short command inside the host's namespace to completion (text output)."""
        self._check_open()
        host = self._host(host)
        done = subprocess.run(["ip", "netns", "exec", host.netns, *argv], input=input_text,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise HarnessError(f"on host {host.name}: {' '.join(argv)} exited "
                               f"{done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
        return done

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HarnessError("this Lan is closed")
        if not self._namespaces:
            raise HarnessError("use the Lan as a context manager (with Lan() as lan: ...)")

    def _host(self, host: Host | str) -> Host:
        name = host.name if isinstance(host, Host) else host
        try:
            return self._hosts[name]
        except KeyError:
            raise ValueError(f"no host {name!r} on this LAN "
                             f"(hosts: {sorted(self._hosts)})") from None

    def _free_address(self, wanted: str | None) -> str:
        used = {h.address for h in self._hosts.values()}
        if wanted is None:
            for candidate in self.subnet.hosts():
                if str(candidate) not in used:
                    return str(candidate)
            raise HarnessError(f"no free address left in {self.subnet}")
        address = ipaddress.IPv4Address(wanted)
        if address not in self.subnet or address in (self.subnet.network_address,
                                                     self.subnet.broadcast_address):
            raise ValueError(f"address {wanted}: not a host address of {self.subnet}")
        if str(address) in used:
            raise ValueError(f"address {wanted} is already used on this LAN")
        return str(address)

    def _add_multicast_route(self, host: Host) -> None:
        # A host has no default route here; without this route a sender that does not pick
        # its multicast interface (IP_MULTICAST_IF) gets "Network is unreachable".
        self._ipn(host.netns, "route", "replace", "224.0.0.0/4", "dev", host.interface)

    def _add_namespace(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        self._ipn(netns, "link", "set", "lo", "up")

    def _ipn(self, netns: str, *args: str) -> str:
        return _ip("-n", netns, *args)

    def _end_processes(self) -> None:
        running = [p for p in self._processes if p.poll() is None]
        for proc in running:
            _signal_process(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.term_grace_s
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_process(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2.0)
        for proc in self._processes:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._processes.clear()


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line ``proc`` prints on its stdout (opened with ``stdout=subprocess.PIPE``),
    without its newline; a ``HarnessError`` naming what the process said if it exits or
    does not finish a line within ``timeout`` seconds. Lets a test wait until a server says
    it is ready instead of sleeping.

    Reads the pipe's descriptor one byte at a time, never through ``proc.stdout``'s buffer:
    a buffered ``readline`` may swallow the lines after the one it returns, and a later
    ``select`` would then wait for data already read. Use only this to read that stdout."""
    if proc.stdout is None:
        raise HarnessError("read_line needs a process started with stdout=subprocess.PIPE")
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            partial = f" (only {line.decode('utf-8', 'replace')!r})" if line else ""
            raise HarnessError(f"{_describe(proc)} printed no line within {timeout:.1f} s"
                               + partial)
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        byte = os.read(fd, 1)
        if byte == b"\n":
            return line.decode("utf-8", "replace")
        if not byte:
            break
        line += byte
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2.0)
    said = ""
    if proc.stderr is not None and proc.returncode is not None:
        said = proc.stderr.read()
        said = said.decode("utf-8", "replace") if isinstance(said, bytes) else said
    raise HarnessError(f"{_describe(proc)} closed its output (exit {proc.returncode})"
                       + (f" after {line.decode('utf-8', 'replace')!r}" if line else "")
                       + (f": {said.strip()}" if said.strip() else ""))


def _describe(proc: subprocess.Popen) -> str:
    args = proc.args if isinstance(proc.args, (list, tuple)) else [str(proc.args)]
    shown = [a if len(a) <= 40 else a[:37] + "..." for a in map(str, args)]
    return f"process {proc.pid} ({' '.join(shown)})"


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _signal_process(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal a process we started, and its group when it leads one of its own.

    Called only while the process is not yet reaped, so its pid cannot have been reused."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)


def _kill_namespace_pids(netns: str) -> None:
    """SIGKILL whatever still lives in a namespace we created (escaped grandchildren)."""
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    pids = [int(word) for word in done.stdout.split() if word.isdigit()]
    for pid in pids:
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid) and not _zombie(pid)]
        if pids:
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
