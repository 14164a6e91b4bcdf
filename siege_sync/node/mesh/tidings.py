"""Tidings for the sites that cannot be dialled (issue 22): "this node now holds changes of
other sites — exchange now", sent over one long-lived call instead of waiting for the
site's next ``dial_every``.

Owns both ends of ``SyncNode.Listen``:

* ``Bulletin``, on the serving node (any node; in practice the siège or a stand-in): the
  replica posts to it the sites whose changes it applied (heartbeats alone never count) and
  the daemon its own application's commits. Each ``Listen`` call waits on it (``wait``) and
  sends a ``Tidings`` when a site other than its caller posted since; posts that follow
  within ``COALESCE_S`` go in the same message. Posting never blocks.
* ``Listener``, on a site with ``outbound_only``: keeps one ``Listen`` call open to the
  first coordinator it reaches, calls ``on_tidings`` for each message with news, and calls
  again when a call ends (every ``CALL_S``, so a revoked certificate or a coordinator that
  changed is noticed) on the channel it keeps (no new TLS handshake); a broken call is made
  again with back-off, and the first message after a break counts as news (what was posted
  meanwhile is unknown). gRPC's keepalive pings (transport.py) break a call over a dead
  line within a minute.

Why a server stream and not a bidirectional one: nothing needs to flow up it — the site's
own commits make it exchange at once (daemon.on_commit), and the exchange is where its
changes travel.
Must never exchange or touch the database: what tidings lead to (an exchange now) is the
daemon's, and the periodic dial-out stays the fallback.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import grpc

from ...certs import Bundle
from ...proto import sync_pb2, sync_pb2_grpc
from . import transport

log = logging.getLogger(__name__)

CALL_S = 300  # how long one Listen call stays open; the listener then calls again
COALESCE_S = 0.1  # posts that follow the first within this go in one message
CHECK_S = 5.0  # how often a waiting call looks whether its caller is still there
RETRY_S = (1.0, 2.0, 5.0, 15.0, 30.0)  # back-off after a broken call


class Bulletin:
    """The sites whose changes this node applied, or committed itself, as numbered posts."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex  # a listener's mark means nothing to another bulletin
        self._cond = threading.Condition()
        self._posts = 0
        self._last: dict[str, int] = {}  # site -> number of its latest post
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def mark(self) -> int:
        """The number of the latest post."""
        with self._cond:
            return self._posts

    def post(self, sites: Iterable[str]) -> None:
        with self._cond:
            for site in sites:
                self._posts += 1
                self._last[site] = self._posts
            self._cond.notify_all()

    def wait(self, listener: str, since: int, timeout: float) -> tuple[int, list[str]]:
        """The sites other than ``listener`` that posted after post ``since``, waiting up to
        ``timeout`` seconds for one (and ``COALESCE_S`` more for those that follow); with
        the mark they reach. None within the time, or the bulletin closed: an empty list."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                if self._news(listener, since):
                    self._cond.wait(COALESCE_S)
                    return self._posts, self._news(listener, since)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._posts, []

    def close(self) -> None:
        """Every waiting call returns now (the node stops)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _news(self, listener: str, since: int) -> list[str]:
        return sorted(s for s, n in self._last.items() if n > since and s != listener)


Target = tuple[str, str]  # (coordinator site, address)


class Listener:
    """One thread listening to a coordinator for a site that cannot be dialled.

    ``targets()``: the coordinators to try, best first, with their addresses (the daemon's
    choice, the same as its dial-out's); ``bundle()``: this site's current certificates."""

    def __init__(self, site: str, targets: Callable[[], list[Target]],
                 bundle: Callable[[], Bundle], on_tidings: Callable[[], None],
                 call_s: int = CALL_S) -> None:
        self._site = site
        self._targets = targets
        self._bundle = bundle
        self._on_tidings = on_tidings
        self._call_s = call_s
        self._stopping = threading.Event()
        self._call: grpc.Future | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="listen", daemon=True)
        self.listening = threading.Event()  # set while a call is open
        self.heard_from: str | None = None  # the coordinator of the open call

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        failures = 0
        channel: tuple[Target, grpc.Channel] | None = None
        where = ("", 0)  # (bulletin, mark) reached by the last call
        try:
            while not self._stopping.is_set():
                target = next(iter(self._targets()), None)
                if target is None:
                    self._stopping.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                    failures += 1
                    continue
                if channel is None or channel[0] != target:
                    if channel is not None:
                        channel[1].close()
                    channel = (target, transport.channel(target[1], self._bundle(), target[0]))
                try:
                    began = time.monotonic()
                    where = self._listen(channel[1], target[0], where, broke=failures > 0)
                    if time.monotonic() - began < 1.0:
                        # Ended at once (its node stopping?): not called again in a loop.
                        self._stopping.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                        failures += 1
                    else:
                        failures = 0
                except grpc.RpcError as exc:
                    self.listening.clear()
                    if self._stopping.is_set():
                        return
                    log.info("[%s] listening to %s broke (%s); again in %.0f s", self._site,
                             target[0], exc.code().name if exc.code() else exc,
                             RETRY_S[min(failures, len(RETRY_S) - 1)])
                    channel[1].close()
                    channel = None
                    self._stopping.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                    failures += 1
        finally:
            self.listening.clear()
            if channel is not None:
                channel[1].close()

    def _listen(self, channel: grpc.Channel, coordinator: str, where: tuple[str, int],
                broke: bool) -> tuple[str, int]:
        """One call, until the coordinator ends it; where it stopped."""
        request = sync_pb2.ListenRequest(seconds=self._call_s, bulletin=where[0],
                                         after=where[1])
        call = sync_pb2_grpc.SyncNodeStub(channel).Listen(request, timeout=self._call_s + 30)
        with self._lock:
            self._call = call
        if self._stopping.is_set():
            call.cancel()
        first = True
        for tidings in call:
            where = (tidings.bulletin, tidings.mark)
            if first:
                self.heard_from = coordinator
                self.listening.set()
                log.info("[%s] listening to %s for news", self._site, coordinator)
            if tidings.from_sites or (first and broke):
                # After a break, what was posted meanwhile is unknown: one exchange tells.
                log.debug("[%s] %s has news from %s", self._site, coordinator,
                          ", ".join(tidings.from_sites) or "(after a break)")
                self._on_tidings()
            first = False
        self.listening.clear()
        return where
