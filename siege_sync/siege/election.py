"""Who coordinates now: the configured siège, or a stand-in while it is gone (DESIGN §4).

Owns the decision of one coordinator-capable node (``[node] coordinator = true``, its
certificate carrying the relay role) to run rounds or stand by. Every site ranks the
candidates the same way from its config (``ServiceConfig.coordinators``: the configured
siège, then stand-ins by priority, then site id). A stand-in checks the candidates ranked
above it (the gRPC health check, through discovery.py); when none has answered for
``takeover_after`` seconds it takes the role; as soon as one answers again it stands by, so
the configured siège takes the role back when it returns. There is no vote: the nodes that
reach each other reach the same conclusion, and nodes that do not (a partition) may both
coordinate — which only duplicates work, since safety never depends on the election (DESIGN
§3.6): every exchange is idempotent and every merge the same at every site.

The configured siège always holds the role. Must never touch data: it only says whether the
schedule may start rounds, and tells (log, report, email) when that changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from ..i18n import _, when
from ..node.mesh.daemon import Node

log = logging.getLogger(__name__)

RoleChange = Callable[[bool, str], None]  # (now coordinating, why)
STAND_BY_AFTER = 2  # consecutive checks a candidate above must answer before standing by


class Election:
    def __init__(self, node: Node, on_change: RoleChange,
                 clock: Callable[[], float] = time.monotonic) -> None:
        svc = node.service_cfg
        site = node.cfg.site
        self._node = node
        self._on_change = on_change
        self._clock = clock
        self.configured = svc.siege == site
        ranked = svc.coordinators(site)
        self.above = ranked[:ranked.index(site)] if site in ranked else ranked
        self.takeover_after = svc.takeover_after
        self.check_every = max(0.5, min(svc.takeover_after / 3, 10.0))
        self._active = self.configured
        self._since = datetime.now()
        # At start the siège counts as just seen: a stand-in that starts (or restarts)
        # waits takeover_after before it takes the role.
        self._last_seen = clock()
        self._answers = 0  # consecutive checks a candidate above answered
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="election", daemon=True)

    @property
    def active(self) -> bool:
        with self._lock:
            return self._active

    def describe(self) -> str:
        """In the language of the work in progress (siege-ctl's, for status)."""
        with self._lock:
            since = when(self._since)
            if self.configured:
                return _("the configured siège")
            if self._active:
                return _("stand-in since {since}: {sites} unreachable; the role goes back as "
                         "soon as one answers").format(since=since, sites=", ".join(self.above))
            return _("standing by since {since}: {site} coordinates").format(
                since=since, site=self.above[0] if self.above else "?")

    def start(self) -> None:
        if not self.configured:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping.wait(self.check_every):
            try:
                self.check()
            except Exception:  # the election must outlive a failed check
                log.exception("[%s] election check failed", self._node.cfg.site)

    def check(self) -> None:
        """One look at the candidates above this node; takes or gives up the role."""
        site = self._node.cfg.site
        answering = next((s for s in self.above
                          if self._node.addresses.reach(s).candidate is not None), None)
        now = self._clock()
        change: tuple[bool, str] | None = None
        with self._lock:
            if self._stopping.is_set():
                return  # the node is stopping: no role change on the way out
            if answering is None:
                self._answers = 0
                if not self._active and now - self._last_seen >= self.takeover_after:
                    self._active, self._since = True, datetime.now()
                    change = (True, f"{', '.join(self.above) or 'no site above'} unreachable "
                                    f"for {now - self._last_seen:.0f} s (takeover_after "
                                    f"{self.takeover_after:g} s): {site} stands in and runs "
                                    "the rounds")
            else:
                self._last_seen = now
                self._answers += 1
                # Two answers in a row: a siège that flickers up for one check does not
                # leave a gap of takeover_after with nobody coordinating.
                if self._active and self._answers >= STAND_BY_AFTER:
                    self._active, self._since = False, datetime.now()
                    change = (False, f"{answering} answers again and coordinates; {site} "
                                     "stands by")
        if change is not None:
            log.warning("[%s] role change: %s", site, change[1])
            self._on_change(*change)
