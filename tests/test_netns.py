"""The namespace harness (tools/netns.py): real namespaces, real sockets, real nftables.

Each host namespace has its own port space, so the fixed port below never collides with
anything on the machine. Needs root: without it these tests fail with the harness's own
message, they do not skip.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.netns import HarnessError, Host, Lan, list_namespaces, read_line, require_netns

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
PORT = 7000
CONNECT_TIMEOUT_S = 1.0  # a dropped SYN is retried after 1 s: a blocked dial fails by then

# Answers each connection with "<peer address> <what it read, upper-cased>".
ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, peer = s.accept()
    with c:
        c.sendall(peer[0].encode() + b" " + c.recv(100).upper())
"""

# Prints the server's answer, or "unreachable: <why>" and exits 1.
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        c.sendall(b"hello")
        print(c.recv(100).decode())
except OSError as exc:
    print("unreachable:", exc)
    sys.exit(1)
"""

MULTICAST_RECEIVER = """
import socket, struct, sys
group, port, local = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(local))
s.settimeout(5)
print("ready", flush=True)
data, peer = s.recvfrom(100)
print(peer[0], data.decode(), flush=True)
"""

# No IP_MULTICAST_IF: the datagrams follow the host's multicast route.
MULTICAST_SENDER = """
import socket, sys, time
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(100):
    s.sendto(b"ping", (group, port))
    time.sleep(0.05)
"""


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan() as lan:
        yield lan


def serve(lan: Lan, host: Host, bind: str = "0.0.0.0") -> subprocess.Popen:
    proc = lan.run(host, [PYTHON, "-c", ECHO_SERVER, bind, str(PORT)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert read_line(proc, timeout=5) == "ready"
    return proc


def dial(lan: Lan, source: Host, address: str) -> str:
    """What the server at address answers, or "unreachable: ..." ."""
    done = lan.call(source, [PYTHON, "-c", CLIENT, address, str(PORT), str(CONNECT_TIMEOUT_S)],
                    check=False)
    return done.stdout.strip()


def test_require_netns_passes_as_root() -> None:
    require_netns()


def test_require_netns_says_why_when_not_root() -> None:
    # Privileges are dropped after the imports: the interpreter's own files may sit where
    # an unprivileged user cannot read them.
    script = ("import os; from tools.netns import require_netns; "
              "os.setgroups([]); os.setgid(65534); os.setuid(65534); require_netns()")
    done = subprocess.run([PYTHON, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode != 0
    assert "multi-host tests need root and ip netns: running as uid 65534" in done.stderr


def test_two_hosts_talk_across_the_bridge(lan: Lan) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    assert a.address != b.address
    assert a.address in {"10.77.0.1", "10.77.0.2"}
    serve(lan, b, bind=b.address)
    # The server saw a's own address: the connection crossed the bridge, not some loopback.
    assert dial(lan, a, b.address) == f"{a.address} HELLO"
    # Loopback is up inside every host.
    serve(lan, a, bind="127.0.0.1")
    assert dial(lan, a, "127.0.0.1") == "127.0.0.1 HELLO"


def test_multicast_reaches_every_other_host(lan: Lan) -> None:
    a, b, c = lan.add_host("a"), lan.add_host("b"), lan.add_host("c")
    group, port = "239.77.0.1", "5400"
    receivers = []
    for host in (b, c):
        proc = lan.run(host, [PYTHON, "-c", MULTICAST_RECEIVER, group, port, host.address],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert read_line(proc, timeout=5) == "ready"
        receivers.append(proc)
    lan.run(a, [PYTHON, "-c", MULTICAST_SENDER, group, port], stderr=subprocess.PIPE)
    for proc in receivers:
        assert read_line(proc, timeout=6) == f"{a.address} ping"


def test_readdress_moves_the_host(lan: Lan) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    old = b.address
    serve(lan, b)
    assert dial(lan, a, old) == f"{a.address} HELLO"

    new = lan.readdress(b)
    assert new != old and b.address == new
    assert dial(lan, a, new) == f"{a.address} HELLO"
    assert dial(lan, a, old).startswith("unreachable")
    # b dials out from its new address.
    serve(lan, a)
    assert dial(lan, b, a.address) == f"{new} HELLO"

    chosen = lan.readdress(b, "10.77.0.200")
    assert chosen == b.address == "10.77.0.200"
    assert dial(lan, a, chosen) == f"{a.address} HELLO"
    with pytest.raises(ValueError, match="already used"):
        lan.readdress(b, a.address)
    with pytest.raises(ValueError, match="not a host address"):
        lan.readdress(b, "192.168.1.5")


def test_inbound_blocked_host_can_still_dial_out(lan: Lan) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    serve(lan, a)
    serve(lan, b)
    assert dial(lan, a, b.address) == f"{a.address} HELLO"  # control: open without the block

    with lan.inbound_blocked(b):
        started = time.monotonic()
        assert dial(lan, a, b.address).startswith("unreachable: timed out")
        # Dropped, not refused: the dialler waits out its timeout, as behind a real NAT.
        assert time.monotonic() - started >= CONNECT_TIMEOUT_S * 0.9
        assert dial(lan, b, a.address) == f"{b.address} HELLO"
        # Its own loopback still works.
        assert dial(lan, b, "127.0.0.1") == "127.0.0.1 HELLO"

    assert dial(lan, a, b.address) == f"{a.address} HELLO"


def test_disconnect_and_reconnect(lan: Lan) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    serve(lan, b)
    lan.disconnect(b)
    assert dial(lan, a, b.address).startswith("unreachable")
    assert dial(lan, b, a.address).startswith("unreachable")
    lan.reconnect(b)
    assert dial(lan, a, b.address) == f"{a.address} HELLO"


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A grandchild in a session of its own: out of reach of a process-group kill.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         start_new_session=True)
print(os.getpid(), child.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_teardown_ends_processes_and_deletes_namespaces() -> None:
    with Lan(term_grace_s=0.5) as lan:
        a = lan.add_host("a")
        lan.add_host("b")
        names = [lan.bridge_netns, *(h.netns for h in lan.hosts.values())]
        assert set(names) <= set(list_namespaces())
        stubborn = lan.run(a, [PYTHON, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
        pids = [int(word) for word in read_line(stubborn, timeout=5).split()]
        assert all(_running(pid) for pid in pids)
    assert not set(names) & set(list_namespaces())
    assert not any(_running(pid) for pid in pids)
    with pytest.raises(HarnessError, match="closed"):
        lan.add_host("c")


def test_teardown_after_a_failure_midway() -> None:
    with pytest.raises(RuntimeError, match="test failed here"), Lan() as lan:
        lan.add_host("a")
        names = [lan.bridge_netns, lan.hosts["a"].netns]
        raise RuntimeError("test failed here")
    assert not set(names) & set(list_namespaces())


def test_bad_host_names_are_refused(lan: Lan) -> None:
    lan.add_host("a")
    with pytest.raises(ValueError, match="already exists"):
        lan.add_host("a")
    with pytest.raises(ValueError, match="1-10 lowercase"):
        lan.add_host("much-too-long-name")
    with pytest.raises(ValueError, match="no host 'zz'"):
        lan.disconnect("zz")


def test_read_line_returns_lines_printed_together(lan: Lan) -> None:
    a = lan.add_host("a")
    script = "import time; print('one'); print('two', flush=True); time.sleep(30)"
    proc = lan.run(a, [PYTHON, "-c", script], stdout=subprocess.PIPE, text=True)
    # Both lines reach the pipe in one write: the second must not be lost in a buffer.
    assert read_line(proc, timeout=5) == "one"
    assert read_line(proc, timeout=1) == "two"
    with pytest.raises(HarnessError, match="printed no line within 0.2 s"):
        read_line(proc, timeout=0.2)
