"""Zeroconf announce/browse (siege_sync/node/mesh/announce.py) with real zeroconf.

On loopback in this process, and across network namespaces (tools/netns.py, needs root) with
the module run as a program inside each host. Every test uses a mesh name of its own, so
records of a parallel run or of another test on the same loopback never count.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from siege_sync.node.mesh.announce import (
    SERVICE_TYPE,
    AnnounceError,
    Announcer,
    Browser,
    Sighting,
    parse_service,
)
from tools.netns import Host, Lan, read_line

LOOPBACK = ["127.0.0.1"]
PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mesh() -> str:
    return f"test-{secrets.token_hex(4)}"


def unique(site: str) -> str:
    # Site ids of the loopback tests are unique too: an mDNS name is LAN-wide, whatever
    # the mesh.
    return f"{site}-{secrets.token_hex(3)}"


def test_announcer_is_seen_then_withdrawn(mesh: str) -> None:
    site = unique("lyon")
    with Browser(mesh, LOOPBACK) as browser:
        assert browser.addresses() == {}
        with Announcer(site, mesh, 7443, LOOPBACK):
            assert browser.wait_for(site, timeout=5) == ("127.0.0.1", 7443)
            assert browser.sightings()[site] == Sighting(site, mesh, "127.0.0.1", 7443)
        # The goodbye arrives at once: no waiting for a TTL.
        assert browser.wait_gone(site, timeout=2)
        assert browser.addresses() == {}


def test_records_of_another_mesh_or_malformed_are_ignored(mesh: str) -> None:
    ours, theirs, no_mesh, liar, victim = (
        unique(s) for s in ("ours", "theirs", "nomesh", "liar", "victim"))
    foreign = [
        (theirs, {"site": theirs, "mesh": "some-other-mesh"}),
        (no_mesh, {"site": no_mesh}),  # malformed: no mesh=
        (liar, {"site": victim, "mesh": mesh}),  # malformed: speaks for another site
    ]
    zc = Zeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    try:
        with Browser(mesh, LOOPBACK) as browser:
            infos = [ServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}",
                                 addresses=[bytes([127, 0, 0, 1])], port=9000,
                                 properties=txt, server=f"{name}.local.")
                     for name, txt in foreign]
            with ThreadPoolExecutor(len(infos)) as pool:
                list(pool.map(zc.register_service, infos))
            # Ours is announced after the foreign records: by the time the browser lists
            # it, it has already handled theirs.
            with Announcer(ours, mesh, 7443, LOOPBACK):
                assert browser.wait_for(ours, timeout=5) == ("127.0.0.1", 7443)
                time.sleep(0.3)
                assert browser.addresses() == {ours: ("127.0.0.1", 7443)}
    finally:
        zc.close()


def test_a_site_announced_twice_is_refused(mesh: str) -> None:
    site = unique("dup")
    with Announcer(site, mesh, 7443, LOOPBACK):
        with pytest.raises(AnnounceError, match="already announced on this LAN"):
            Announcer(site, mesh, 7444, LOOPBACK).start()


def test_bad_arguments_are_refused_clearly(mesh: str) -> None:
    with pytest.raises(ValueError, match="never to all of them"):
        Announcer("lyon", mesh, 7443, [])
    with pytest.raises(ValueError, match="never to all of them"):
        Browser(mesh, ["0.0.0.0"])
    with pytest.raises(ValueError, match="IPv4 address of a local interface"):
        Browser(mesh, ["eth0"])
    with pytest.raises(ValueError, match="without dots"):
        Announcer("lyon.shop", mesh, 7443, LOOPBACK)
    with pytest.raises(ValueError, match="listening port"):
        Announcer("lyon", mesh, 0, LOOPBACK)
    # 192.0.2.1 (documentation range) is on no interface here: refused when binding,
    # before anything is sent.
    with pytest.raises(AnnounceError, match="cannot open zeroconf on 192.0.2.1"):
        Browser(mesh, ["192.0.2.1"]).start()


@pytest.mark.parametrize(("name", "txt", "port", "why"), [
    ("lyon", {b"mesh": b"m"}, 7443, "no site="),
    ("lyon", {b"site": b"lyon", b"mesh": None}, 7443, "no mesh="),
    ("lyon", {b"site": b"lyon", b"mesh": b"\xff"}, 7443, "not UTF-8"),
    ("lyon", {b"site": b"nice", b"mesh": b"m"}, 7443, "named 'lyon'"),
    ("lyon", {b"site": b"lyon", b"mesh": b"m"}, 0, "port"),
])
def test_parse_service_names_what_is_malformed(name: str, txt: dict, port: int,
                                               why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_service(f"{name}.{SERVICE_TYPE}", txt, ["10.0.0.1"], port)
    good = parse_service(f"lyon.{SERVICE_TYPE}", {b"site": b"lyon", b"mesh": b"m"},
                         ["10.0.0.2", "10.0.0.1"], 7443)
    assert good == Sighting("lyon", "m", "10.0.0.2", 7443)


# -- across namespaces -------------------------------------------------------------------------

def _module(lan: Lan, host: Host, *args: str) -> subprocess.Popen:
    return lan.run(host, [PYTHON, "-m", "siege_sync.node.mesh.announce", *args],
                   env={"PYTHONPATH": str(REPO)}, cwd=REPO,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until(proc: subprocess.Popen, wanted: Callable[[dict], bool], timeout: float) -> dict:
    """The first map the browse process prints that satisfies ``wanted``."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        current = json.loads(read_line(proc, timeout=max(0.01, deadline - time.monotonic())))
        seen.append(current)
        if wanted(current):
            return current
    raise AssertionError(f"the browser never printed the wanted map; it printed {seen}")


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan() as lan:
        yield lan


def test_found_across_namespaces_and_after_a_new_address(lan: Lan, mesh: str) -> None:
    a, b = lan.add_host("a"), lan.add_host("b")
    browse = _module(lan, b, "browse", "--mesh", mesh, "--interface", b.address)
    assert read_line(browse, timeout=10) == "browsing"

    first = _module(lan, a, "announce", "--site", "lyon", "--mesh", mesh, "--port", "7443",
                    "--interface", a.address)
    assert read_line(first, timeout=10) == f"announced lyon at {a.address} port 7443"
    old = a.address
    assert _until(browse, lambda m: "lyon" in m, timeout=5) == {"lyon": [old, 7443]}

    # The address changes under the running node (a dynamic IP); the node then stops, its
    # goodbye cannot leave from an address that is gone, and it announces again from the
    # new one. The browser follows to the new address.
    new = lan.readdress(a)
    first.terminate()
    first.wait(timeout=10)
    second = _module(lan, a, "announce", "--site", "lyon", "--mesh", mesh, "--port", "7443",
                     "--interface", new)
    assert read_line(second, timeout=10) == f"announced lyon at {new} port 7443"
    assert _until(browse, lambda m: m.get("lyon") != [old, 7443],
                  timeout=5) == {"lyon": [new, 7443]}

    # A clean stop says goodbye across the bridge.
    second.terminate()
    assert second.wait(timeout=10) == 0
    assert read_line(second, timeout=2) == "withdrawn"
    assert _until(browse, lambda m: m == {}, timeout=3) == {}
