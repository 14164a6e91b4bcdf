"""Zeroconf on the LAN: a site says where it listens, the others pick that up as a hint.

Owns the ``_siege-sync._tcp.local.`` service. ``Announcer`` publishes this site (instance
name = site id, TXT ``site=<id>`` and ``mesh=<mesh name>``, the port it listens on) and
withdraws it on close with a goodbye; ``Browser`` keeps a live map site id -> (address, port)
of the sites of the same mesh. Both bind to the interface addresses they are given, IPv4
only: never to every interface of the machine (a shop PC must not announce itself on the
guest Wi-Fi or a VPN).

What a Browser lists is where to try dialling first, nothing more: a peer that crashed
without its goodbye stays listed for many minutes (PTR TTL), and anyone on the LAN can
publish a record. Must never be taken as proof of life (that is the gRPC health check) nor of
identity (that is the peer's certificate, pinned on every channel by ``transport``). Must not
import from ``siege_sync.siege``: the coordinator role depends on the node, not the reverse.

Run as a program, it announces or browses until interrupted (diagnostics, and the
multi-host tests run it inside network namespaces)::

    python -m siege_sync.node.mesh.announce announce --site lyon --mesh acme --port 7443 \\
        --interface 192.168.1.20
    python -m siege_sync.node.mesh.announce browse --mesh acme --interface 192.168.1.30
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_siege-sync._tcp.local."
RESOLVE_TIMEOUT_S = 3.0  # a browser asks this long for a new service's SRV/TXT/A records
_TXT_MAX = 255  # one TXT string, "key=value", is at most 255 bytes (RFC 6763 §6.1)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class AnnounceError(Exception):
    """Zeroconf could not be opened on the given interfaces, or the site is already
    announced on this LAN by another live node."""


@dataclass(frozen=True)
class Announcement:
    """What a site publishes. ``interfaces`` are the IPv4 addresses it binds zeroconf to
    and advertises; ``port`` is its gRPC port."""

    site: str
    mesh: str
    port: int
    interfaces: tuple[str, ...]

    def __post_init__(self) -> None:
        check_site(self.site)
        check_mesh(self.mesh)
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port {self.port!r}: give the node's listening port (1-65535)")
        object.__setattr__(self, "interfaces", check_interfaces(self.interfaces))

    @property
    def service_name(self) -> str:
        return service_name(self.site)


@dataclass(frozen=True)
class Sighting:
    """One site as a Browser last saw it. ``address`` is the newest IPv4 address it
    advertised."""

    site: str
    mesh: str
    address: str
    port: int

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)


def service_name(site: str) -> str:
    return f"{site}.{SERVICE_TYPE}"


def check_site(site: str) -> str:
    # A site id becomes a DNS-SD instance label: one label (no dot), at most 63 bytes.
    if not isinstance(site, str) or not site or "." in site or len(site.encode()) > 63 \
            or any(ord(c) < 0x20 for c in site):
        raise ValueError(f"site {site!r}: zeroconf needs a site id of 1-63 bytes "
                         "without dots or control characters")
    return site


def check_mesh(mesh: str) -> str:
    if not isinstance(mesh, str) or not mesh or len(f"mesh={mesh}".encode()) > _TXT_MAX \
            or any(ord(c) < 0x20 for c in mesh):
        raise ValueError(f"mesh {mesh!r}: give the mesh name (1-250 bytes, no control "
                         "characters)")
    return mesh


def check_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    """The IPv4 addresses to bind zeroconf to, checked: explicit unicast addresses only."""
    if isinstance(interfaces, str):
        interfaces = [interfaces]
    out = []
    for text in interfaces:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            raise ValueError(f"interface {text!r}: give the IPv4 address of a local "
                             "interface (e.g. 192.168.1.20)") from None
        if address.is_unspecified or address.is_multicast or address == _BROADCAST:
            raise ValueError(f"interface {text}: zeroconf is bound to explicit interface "
                             "addresses, never to all of them or to a group")
        if str(address) not in out:
            out.append(str(address))
    if not out:
        raise ValueError("no interface given: zeroconf is bound to explicit interface "
                         "addresses, never to all of them")
    return tuple(out)


def parse_service(name: str, properties: Mapping[bytes, bytes | None],
                  addresses: Sequence[str], port: int | None) -> Sighting:
    """The Sighting a resolved record describes; ``ValueError`` saying what is malformed.

    The TXT ``site`` must be the instance name itself: a record cannot speak for a site
    other than the one it is named after."""
    if not name.endswith("." + SERVICE_TYPE):
        raise ValueError(f"not a {SERVICE_TYPE} name")
    instance = name[:-len(SERVICE_TYPE) - 1]
    values = {}
    for key in (b"site", b"mesh"):
        raw = properties.get(key)
        if not raw:
            raise ValueError(f"TXT has no {key.decode()}=")
        try:
            values[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"TXT {key.decode()}= is not UTF-8") from None
    site, mesh = values[b"site"], values[b"mesh"]
    if site != instance:
        raise ValueError(f"TXT site={site!r} but the service is named {instance!r}")
    if not port or not 0 < port < 65536:
        raise ValueError(f"port {port!r}")
    if not addresses:
        raise ValueError("no IPv4 address")
    return Sighting(site=site, mesh=mesh, address=addresses[0], port=port)


def _host_name(site: str) -> str:
    # The A records' owner name: one DNS label, unique per site (two ids that look alike
    # once lower-cased and stripped must not share a host name, or each would flush the
    # other's address from every cache).
    label = re.sub(r"[^a-z0-9-]", "-", site.lower())[:40].strip("-") or "site"
    digest = hashlib.sha256(site.encode()).hexdigest()[:8]
    return f"siege-{label}-{digest}.local."


ASK_FIRST_MS = 1500  # how long a starting node listens for another answering to its name


def _open(interfaces: tuple[str, ...]) -> Zeroconf:
    try:
        return Zeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise AnnounceError(f"cannot open zeroconf on {', '.join(interfaces)}: {exc} "
                            "(is each one the address of an interface of this machine?)"
                            ) from exc


class Announcer:
    """Publishes this site on the LAN while open; closing withdraws it (goodbye).

    ``start`` blocks about 3.5 s: it asks for its name by multicast (``ASK_FIRST_MS``), then
    zeroconf probes that no other live node already uses the name before claiming it."""

    def __init__(self, site: str, mesh: str, port: int, interfaces: Sequence[str]) -> None:
        self.announcement = Announcement(site, mesh, port, check_interfaces(interfaces))
        self._lock = threading.Lock()
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None

    def __enter__(self) -> Announcer:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def start(self) -> None:
        with self._lock:
            if self._zc is not None:
                return
            a = self.announcement
            info = ServiceInfo(
                SERVICE_TYPE,
                a.service_name,
                addresses=[ipaddress.IPv4Address(i).packed for i in a.interfaces],
                port=a.port,
                properties={"site": a.site, "mesh": a.mesh},
                server=_host_name(a.site),
            )
            zc = _open(a.interfaces)
            try:
                # Asked first, by multicast: zeroconf's own probe is answered by unicast,
                # which a second node on the same host may never receive (both listen on
                # port 5353; the kernel hands a unicast datagram to one of them).
                if zc.get_service_info(SERVICE_TYPE, a.service_name, timeout=ASK_FIRST_MS,
                                       question_type=DNSQuestionType.QM) is not None:
                    raise NonUniqueNameException
                # No renaming on conflict: a site has exactly one name, and two live nodes
                # claiming it is a misconfiguration to surface, not to paper over.
                zc.register_service(info, allow_name_change=False)
            except NonUniqueNameException:
                zc.close()
                raise AnnounceError(
                    f"site {a.site!r} is already announced on this LAN by another live node "
                    f"(two nodes configured as the same site?)") from None
            except BaseException:
                zc.close()
                raise
            self._zc, self._info = zc, info
            logger.info("announcing site %s (mesh %s) at %s port %d", a.site, a.mesh,
                        ", ".join(a.interfaces), a.port)

    def close(self) -> None:
        """Withdraw the announcement (goodbye) and close zeroconf. Idempotent."""
        with self._lock:
            zc, info = self._zc, self._info
            self._zc = self._info = None
        if zc is None or info is None:
            return
        try:
            zc.unregister_service(info)
        except Exception as exc:  # the goodbye is best effort: the address may be gone
            logger.warning("site %s: goodbye not sent: %s", self.announcement.site, exc)
        finally:
            zc.close()
        logger.info("site %s no longer announced", self.announcement.site)


class Browser:
    """The sites of one mesh that announce themselves on the LAN, kept up to date.

    Records of another mesh, or whose TXT is malformed, are ignored (logged at debug). Safe
    to read from any thread; zeroconf updates it from its own browser thread."""

    def __init__(self, mesh: str, interfaces: Sequence[str],
                 resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
        self.mesh = check_mesh(mesh)
        self.interfaces = check_interfaces(interfaces)
        self._resolve_timeout_ms = int(resolve_timeout_s * 1000)
        self._changed = threading.Condition()
        self._sites: dict[str, Sighting] = {}  # guarded by _changed
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def start(self) -> None:
        if self._zc is not None:
            return
        zc = _open(self.interfaces)
        try:
            self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_change])
        except BaseException:
            zc.close()
            raise
        self._zc = zc

    def close(self) -> None:
        browser, zc = self._browser, self._zc
        self._browser = self._zc = None
        if browser is not None:
            browser.cancel()
        if zc is not None:
            zc.close()

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Site id -> (address, port), as last announced."""
        with self._changed:
            return {site: s.endpoint for site, s in self._sites.items()}

    def sightings(self) -> dict[str, Sighting]:
        with self._changed:
            return dict(self._sites)

    def wait_for(self, site: str, timeout: float, *,
                 other_than: tuple[str, int] | None = None) -> tuple[str, int] | None:
        """Where ``site`` is announced, waiting up to ``timeout`` s for it to appear (or,
        with ``other_than``, to be announced anywhere else); None if it did not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                seen = self._sites.get(site)
                if seen is not None and seen.endpoint != other_than:
                    return seen.endpoint
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def wait_gone(self, site: str, timeout: float) -> bool:
        """Whether ``site`` is (or within ``timeout`` s becomes) absent from the map."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while site in self._sites:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # Called on zeroconf's browser thread (never its event loop), so resolving may block.
    # ServiceBrowser passes these four arguments by name.
    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._forget(name, "withdrawn")
            return
        info = zeroconf.get_service_info(service_type, name, timeout=self._resolve_timeout_ms)
        if info is None:
            logger.debug("zeroconf: %s did not resolve within %d ms; keeping what we had",
                         name, self._resolve_timeout_ms)
            return
        try:
            seen = parse_service(name, info.properties,
                                 info.parsed_addresses(IPVersion.V4Only), info.port)
        except ValueError as exc:
            logger.debug("zeroconf: ignoring %s: %s", name, exc)
            self._forget(name, "now malformed")
            return
        if seen.mesh != self.mesh:
            logger.debug("zeroconf: ignoring %s: mesh %r, not %r", name, seen.mesh, self.mesh)
            self._forget(name, "now of another mesh")
            return
        with self._changed:
            before = self._sites.get(seen.site)
            self._sites[seen.site] = seen
            self._changed.notify_all()
        if before != seen:
            logger.info("zeroconf: site %s announced at %s:%d", seen.site, seen.address,
                        seen.port)

    def _forget(self, name: str, why: str) -> None:
        site = name[:-len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else None
        with self._changed:
            if site is None or self._sites.pop(site, None) is None:
                return
            self._changed.notify_all()
        logger.info("zeroconf: site %s %s", site, why)


# -- as a program ----------------------------------------------------------------------------

def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siege_sync.node.mesh.announce",
                                     description="Announce a site, or watch the sites of a "
                                                 "mesh, on the LAN (zeroconf).")
    sub = parser.add_subparsers(dest="command", required=True)
    ann = sub.add_parser("announce", help="announce a site until interrupted")
    ann.add_argument("--site", required=True)
    ann.add_argument("--port", type=int, required=True)
    brw = sub.add_parser("browse", help="print the mesh's sites (JSON) whenever they change")
    for each in (ann, brw):
        each.add_argument("--mesh", required=True)
        each.add_argument("--interface", action="append", required=True,
                          help="IPv4 address of an interface to bind to (repeatable)")
        each.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    stop = _stop_on_signals()
    try:
        if args.command == "announce":
            with Announcer(args.site, args.mesh, args.port, args.interface) as announcer:
                a = announcer.announcement
                print(f"announced {a.site} at {','.join(a.interfaces)} port {a.port}",
                      flush=True)
                while not stop.wait(0.2):
                    pass
            print("withdrawn", flush=True)
        else:
            with Browser(args.mesh, args.interface) as browser:
                print("browsing", flush=True)
                last: dict[str, tuple[str, int]] | None = None
                while not stop.wait(0.05):
                    now = browser.addresses()
                    if now != last:
                        print(json.dumps(now, sort_keys=True), flush=True)
                        last = now
    except (AnnounceError, ValueError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
