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

from firebird.driver import Connection, DatabaseError

from .capture import NEWS_EVENT
from .database import DatabaseSpec, DatabaseUnavailable, open_connection

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

    def _listen(self, con: Connection) -> None:
        with con.event_collector([NEWS_EVENT, _READY]) as collector:
            # The engine registers a listener asynchronously: commits just after ``begin``
            # go unheard. Listening is said once one of our own posts has come back.
            while not collector.wait(timeout=0).get(_READY, 0):
                if self._stopping.is_set():
                    return
                con.execute_immediate(f"EXECUTE BLOCK AS BEGIN POST_EVENT '{_READY}'; END")
                con.commit()
                collector.wait(timeout=WAKE_S)
            collector.flush()
            self.listening.set()
            quiet = 0.0
            while not self._stopping.is_set():
                heard = collector.wait(timeout=WAKE_S).get(NEWS_EVENT, 0)
                if not heard:
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
                collector.flush()  # (what came meanwhile is in what on_news will see)
                try:
                    self._on_news()
                except Exception:  # what news leads to must not stop the listening
                    log.exception("[%s] acting on committed changes failed", self._site)

    def _wait_after_failure(self, failures: int, exc: Exception) -> None:
        wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
        if failures == 0 or wait == RETRY_S[-1]:
            log.info("[%s] not listening for commits (%s); trying again in %.0f s; rounds "
                     "follow their schedule meanwhile", self._site,
                     " ".join(str(exc).split())[:200], wait)
        self._stopping.wait(wait)
