"""Wake on commit: the node hears its application commit changes (issue 22).

Owns ``CommitWatch``: a thread with its own connection to the site's database, listening for
the Firebird event the capture triggers post for the application's changes
(``capture.NEWS_EVENT``; the engine delivers it once per committed transaction, never for a
rolled-back one, and never for the node's own writes or heartbeats). When it hears one it
waits ``debounce`` seconds for the commits that follow (a busy shop commits many), then
calls ``on_news`` once for all of them. A lost connection (a restarted Firebird server) is
opened again with back-off; while it is down nothing is heard and the node falls back on
its schedule, as before this existed.

Must never read or write the node's tables, nor decide what news leads to: the daemon does
(daemon.py: a coordinator's round, a note to the coordinators, an early dial-out).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from ctypes import memmove, pointer

from firebird.driver import Connection, DatabaseError, fbapi

from ..db.database import DatabaseSpec, DatabaseUnavailable, open_connection
from .capture import NEWS_EVENT

log = logging.getLogger(__name__)

_READY = "SIEGE$LISTENING"  # posted by the watch itself: its listener is registered
DEBOUNCE_S = 0.1  # commits that follow within this are one piece of news
ALIVE_CHECK_S = 15.0  # a dead connection hears nothing: checked this often while quiet
WAKE_S = 0.25  # how long a stop may wait for the listening thread
RETRY_S = (1.0, 2.0, 5.0, 15.0, 30.0)  # back-off between attempts to listen again


class CommitWatch:
    def __init__(self, site: str, spec: DatabaseSpec, on_news: Callable[[], None],
                 debounce: float = DEBOUNCE_S) -> None:
        self._site = site
        self._spec = spec
        self._on_news = on_news
        self._debounce = debounce
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="commit-watch", daemon=True)
        self.listening = threading.Event()  # set while a listener is registered
        self._registrations: tuple[_Registration, ...] = ()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=ALIVE_CHECK_S + 5)

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                con = open_connection(self._spec)
            except DatabaseUnavailable as exc:
                self._wait_after_failure(failures, exc)
                failures += 1
                continue
            try:
                self._listen(con)
                failures = 0
            except DatabaseError as exc:
                self._wait_after_failure(failures, exc)
                failures += 1
            finally:
                self.listening.clear()
                try:
                    con.close()
                except DatabaseError:
                    pass  # (the connection is already gone)
                self._registrations = ()

    def _listen(self, con: Connection) -> None:
        # Kept referenced until the connection is closed (``_loop``): the client library may
        # call a registration back until then, even after it was cancelled.
        news = _Registration(con, NEWS_EVENT)
        self._registrations = (news,)
        ready = _Registration(con, _READY)
        self._registrations = (news, ready)
        try:
            # The engine registers interest asynchronously: commits just after it go
            # unheard. Listening is said once one of our own posts has come back.
            while not ready.take(WAKE_S):
                if self._stopping.is_set():
                    return
                con.execute_immediate(f"EXECUTE BLOCK AS BEGIN POST_EVENT '{_READY}'; END")
                con.commit()
            news.take(0)  # (a commit meanwhile: the node is starting, it publishes anyway)
            self.listening.set()
            quiet = 0.0
            while not self._stopping.is_set():
                if not news.take(WAKE_S):
                    quiet += WAKE_S
                    if quiet >= ALIVE_CHECK_S:
                        quiet = 0.0
                        with con.cursor() as cur:  # raises when the server went away
                            cur.execute("SELECT 1 FROM RDB$DATABASE")
                            cur.fetchone()
                        con.commit()
                    continue
                quiet = 0.0
                if self._stopping.wait(self._debounce):
                    return
                while news.take(0.02):
                    pass  # (what came meanwhile is in what on_news will see)
                try:
                    self._on_news()
                except Exception:  # what news leads to must not stop the listening
                    log.exception("[%s] acting on committed changes failed", self._site)
        finally:
            news.cancel()
            ready.cancel()

    def _wait_after_failure(self, failures: int, exc: Exception) -> None:
        wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
        if failures == 0 or wait == RETRY_S[-1]:
            log.info("[%s] not listening for commits (%s); trying again in %.0f s; rounds "
                     "follow their schedule meanwhile", self._site,
                     " ".join(str(exc).split())[:200], wait)
        self._stopping.wait(wait)


class _Registration:
    """Interest in one Firebird event on one attachment, with the client library's own calls
    (``isc_que_events``): the library calls back from its thread when the event was posted
    (and once at registration); ``take`` counts and registers again, in the caller's thread.

    Not firebird-driver's ``EventCollector``: its queue compares two plain objects when two
    notifications wait (TypeError in its thread, then SIGABRT when the connection closes), and
    it frees its callback while the library may still call it. Here the callback lives as long
    as the registration, which the watch keeps until the connection is closed. Uses the
    driver's ``_get_handle`` (the attachment's old-API handle, which these calls need).
    """

    def __init__(self, con: Connection, name: str) -> None:
        self._api = fbapi.get_api()
        self._handle = con._get_handle()  # noqa: SLF001 - see the class docstring
        self._status = fbapi.ISC_STATUS_ARRAY(0)
        self._event_buf = pointer(fbapi.ISC_UCHAR(0))
        self._result_buf = pointer(fbapi.ISC_UCHAR(0))
        self._length = self._api.isc_event_block(pointer(self._event_buf),
                                                 pointer(self._result_buf), name.encode())
        self._id = fbapi.ISC_LONG(0)
        self._counts = fbapi.RESULT_VECTOR(0)
        self._delivered = threading.Event()
        self._first = True  # the library's first call reports the registration, not a post
        self._callback = fbapi.ISC_EVENT_CALLBACK(self._on_delivery)
        self._queued = False
        self._queue()

    def _on_delivery(self, result, length, updated) -> None:  # noqa: ANN001 - ctypes
        memmove(result, updated, length)
        self._delivered.set()

    def _queue(self) -> None:
        self._api.isc_que_events(self._status, self._handle, self._id, self._length,
                                 self._event_buf, self._callback, self._result_buf)
        if fbapi.db_api_error(self._status):
            raise fbapi.exception_from_status(DatabaseError, self._status,
                                              "listening for database events")
        self._queued = True

    def take(self, timeout: float) -> bool:
        """Whether the event was posted since the last call (waits up to ``timeout``)."""
        if not self._delivered.wait(timeout):
            return False
        self._delivered.clear()
        self._queued = False
        self._api.isc_event_counts(self._counts, self._length, self._event_buf,
                                   self._result_buf)
        self._queue()
        if self._first:
            self._first = False
            return self.take(0)
        return self._counts[0] > 0

    def cancel(self) -> None:
        if self._queued:
            self._queued = False
            self._api.isc_cancel_events(self._status, self._handle, self._id)
