"""Where a peer can be reached now: sites sit behind dynamic addresses (DESIGN §4).

Owns the addresses of the peers, from three sources tried in this order:

1. **configured** — ``[peers.X] address``: a fixed address or a DDNS host name. It is handed
   to gRPC as a name, and every exchange opens a new channel, so the name is resolved again
   at every connection (the system resolver's cache follows the record's TTL);
2. **announced** — the address a peer last announced: a node calls ``Announce`` on the
   coordinators with its listen port, and they record the address the call came from
   (``record_announce``), in the database (it survives a restart);
3. **zeroconf** — what the LAN browser saw (``announce.Browser``), a hint only.

``reach`` tries them in order and takes the first that answers the gRPC health check over
mutual TLS with the peer's own certificate (the channel pins the site id): a record in the
mDNS cache or a stale announcement is never taken as proof of life. Must never choose an
address without that check, nor import from ``siege_sync.siege``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from firebird.driver import DatabaseError

from ...certs import Bundle
from ..db.database import DatabaseUnavailable
from ..model.config import ServiceConfig
from ..model.vector import Vector
from . import transport
from .announce import Browser
from .replica import Replica

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0
_ANNOUNCED = "announced:"  # + site: "host:port|dials out only (0/1)|UTC seconds"


@dataclass(frozen=True)
class Candidate:
    source: str  # "configured", "announced" or "zeroconf"
    address: str  # host:port


@dataclass(frozen=True)
class Announced:
    address: str
    dials_out_only: bool
    at: float  # UTC seconds


@dataclass(frozen=True)
class Greeted:
    """What a site said in a hello here: all the coordinator learns of a site it cannot
    dial (purge.py counts ``held``; ``siege-ctl test`` shows the rest, rounds report a
    refusal)."""

    held: Vector  # what it had applied then: a lower bound of what it holds now
    epoch: str  # of the database that said it (a resync replaces the database)
    node_version: str
    schema_fingerprint: str
    cert_not_after: datetime  # of the certificate it presented
    clock_offset_us: int  # its clock minus ours, one way (its send time, our receipt)
    at: float  # UTC seconds
    # Its merge policies differ from ours: why, naming tables and both sides' policies
    # (service.py refuses its Pull and Push until they agree). "" when they agree.
    refused: str = ""


@dataclass
class DialIns:
    """What a site moved in the exchanges it started (it cannot be dialled), since the last
    time a round took the count."""

    events_in: int = 0  # it pushed here
    events_out: int = 0  # it pulled from here
    last: float | None = None  # UTC seconds of its last exchange
    greeted: Greeted | None = None  # its last hello here
    hellos: int = 0  # its hellos here since this node started (never reset)


@dataclass
class Reached:
    """The outcome of ``reach``: the candidate that answered, and what was tried."""

    candidate: Candidate | None
    tried: list[str]

    def explain(self, site: str) -> str:
        if not self.tried:
            return (f"no address known for {site}: give [peers.{site}] address (fixed or "
                    "DDNS), or let it announce itself (its [node] announce_every) or be seen "
                    "on the LAN ([node] lan at both)")
        return f"{site} not reachable: " + "; ".join(self.tried)


class AddressBook:
    def __init__(self, site: str, service: Callable[[], ServiceConfig],
                 replica: Replica | None, bundle: Callable[[], Bundle],
                 browser: Browser | None = None) -> None:
        """``service`` and ``bundle`` are read at each call: the config's peers may be
        replaced (tests) and certificates rotate without a restart. ``replica``: None for a
        node waiting to join (no database: announcements are neither kept nor used)."""
        self._site = site
        self._service = service
        self._replica = replica
        self._bundle = bundle
        self.browser = browser
        self._lock = threading.Lock()
        self._last: dict[str, Candidate] = {}  # the last address that answered, per site
        self._dialins: dict[str, DialIns] = {}
        self._recorded: dict[str, tuple[str, float]] = {}  # site -> (news, when written)

    def candidates(self, site: str) -> list[Candidate]:
        out: list[Candidate] = []
        peer = self._service().peers.get(site)
        if peer is not None and peer.address:
            out.append(Candidate("configured", peer.address))
        announced = self.announced(site)
        if announced is not None:
            out.append(Candidate("announced", announced.address))
        if self.browser is not None:
            seen = self.browser.addresses().get(site)
            if seen is not None:
                out.append(Candidate("zeroconf", f"{seen[0]}:{seen[1]}"))
        unique: list[Candidate] = []
        for c in out:
            if all(c.address != u.address for u in unique):
                unique.append(c)
        return unique

    def reach(self, site: str, timeout: float = CHECK_TIMEOUT_S) -> Reached:
        tried: list[str] = []
        for candidate in self.candidates(site):
            problem = self.check(site, candidate.address, timeout)
            if problem is None:
                with self._lock:
                    if self._last.get(site) != candidate:
                        log.info("[%s] %s reached at %s (%s)", self._site, site,
                                 candidate.address, candidate.source)
                    self._last[site] = candidate
                return Reached(candidate, tried)
            tried.append(f"{candidate.source} {candidate.address}: {problem}")
        return Reached(None, tried)

    def last(self, site: str) -> Candidate | None:
        with self._lock:
            return self._last.get(site)

    def check(self, site: str, address: str, timeout: float = CHECK_TIMEOUT_S) -> str | None:
        """None when the node of ``site`` answers the health check at ``address``."""
        return transport.health_check(address, self._bundle(), site, timeout)

    # --- sites that dial in -----------------------------------------------------------------

    def note_traffic(self, site: str, events_in: int, events_out: int) -> None:
        with self._lock:
            seen = self._dialins.setdefault(site, DialIns())
            seen.events_in += events_in
            seen.events_out += events_out
            seen.last = time.time()

    def note_hello(self, site: str, greeted: Greeted) -> None:
        """A site's hello here: for a site that dials in, all the coordinator learns."""
        with self._lock:
            seen = self._dialins.setdefault(site, DialIns())
            seen.greeted = greeted
            seen.hellos += 1

    def dialled_in(self, site: str) -> DialIns:
        """What is known of a site's own exchanges here (a copy; nothing is reset)."""
        with self._lock:
            return dataclasses.replace(self._dialins.get(site) or DialIns())

    def take_traffic(self, site: str) -> DialIns:
        """The counts since the last call (which resets them); the last contact stays."""
        with self._lock:
            seen = self._dialins.setdefault(site, DialIns())
            out = dataclasses.replace(seen)
            seen.events_in = seen.events_out = 0
            return out

    # --- announcements ---------------------------------------------------------------------

    def record_announce(self, site: str, address: str, dials_out_only: bool) -> None:
        if self._replica is None:
            return
        now = time.time()
        with self._lock:
            # The same news within a minute is not written again: a site calling in a loop
            # must not keep the database (and a gRPC worker) busy.
            if self._recorded.get(site, ("", 0.0))[0] == f"{address}|{dials_out_only}" \
                    and now - self._recorded[site][1] < 60:
                return
            self._recorded[site] = (f"{address}|{dials_out_only}", now)
        self._replica.write_state(_ANNOUNCED + site,
                                  f"{address}|{int(dials_out_only)}|{now:.0f}")

    def announced(self, site: str) -> Announced | None:
        if self._replica is None:
            return None
        try:
            value = self._replica.read_state(_ANNOUNCED + site)
        except (DatabaseError, DatabaseUnavailable) as exc:  # a hint: the others may do
            log.warning("[%s] announced address of %s unknown now: %s", self._site, site,
                        " ".join(str(exc).split()))
            return None
        if not value:
            return None
        address, _, rest = value.partition("|")
        flag, _, at = rest.partition("|")
        return Announced(address, flag == "1", float(at or 0))
