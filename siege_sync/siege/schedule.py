"""The siège's schedule: rounds on an interval, at times of day, or continuously (back to
back, a short pause between), by itself.

Owns the timer thread of the coordinating node: it starts a round when one is due (unless an
operator's round is running — then the next one is due after it), sends the alerts the round
calls for, and stops promptly when the node stops. Must never run two rounds at once.

In continuous mode a site's news (``news``: its application committed changes, node/journal/news.py)
cuts the pause short: a round for the sites with news starts at once (``Rounds.run(news=)``:
it gathers from them and redistributes to all). News that comes during a round is kept for
the next, so a busy shop makes rounds back to back, never more than one at a time; the
scheduled round still comes after each pause.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from ..proto import coordinator_pb2
from .rounds import RoundBusy, Rounds
from .settings import Schedule

log = logging.getLogger(__name__)


def next_due(schedule: Schedule, after: datetime) -> datetime | None:
    if schedule.continuous:
        return after + timedelta(seconds=schedule.pause_seconds)
    if schedule.interval_minutes is not None:
        return after + timedelta(minutes=schedule.interval_minutes)
    candidates = []
    for day in (0, 1):
        for at in schedule.times:
            moment = datetime.combine(after.date() + timedelta(days=day), at)
            if moment > after:
                candidates.append(moment)
    return min(candidates) if candidates else None


class Scheduler:
    def __init__(self, rounds: Rounds, schedule: Schedule,
                 after_round: Callable[[coordinator_pb2.RoundReport], None],
                 may_run: Callable[[], bool] = lambda: True) -> None:
        """``may_run``: whether this node coordinates now (a stand-in standing by does
        not; election.py)."""
        self._rounds = rounds
        self._schedule = schedule
        self._after_round = after_round
        self._may_run = may_run
        self._stopping = threading.Event()
        self._woken = threading.Event()  # news came (or the node stops)
        self._news: set[str] = set()
        self._news_lock = threading.Lock()
        self._due: datetime | None = None  # the next scheduled round (None: none planned)
        self._thread = threading.Thread(target=self._loop, name="schedule", daemon=True)

    @property
    def continuous(self) -> bool:
        return self._schedule.continuous

    @property
    def next_round(self) -> datetime | None:
        """When the next scheduled round starts (``siege-ctl status``); None without a
        schedule, or while this node does not coordinate."""
        return self._due if self._thread.is_alive() and self._may_run() else None

    def start(self) -> None:
        if self._schedule.active:
            self._thread.start()

    def news(self, site: str) -> bool:
        """``site`` committed changes: whether a round with it follows now (only in
        continuous mode, while this node coordinates)."""
        if not (self._schedule.continuous and self._thread.is_alive() and self._may_run()):
            return False
        with self._news_lock:
            self._news.add(site)
        self._woken.set()
        return True

    def _take_news(self) -> set[str]:
        with self._news_lock:
            news, self._news = self._news, set()
            self._woken.clear()
        return news

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        due = next_due(self._schedule, datetime.now())
        while due is not None:
            self._due = due
            wait = max((due - datetime.now()).total_seconds(), 0.0)
            self._woken.wait(wait)
            if self._stopping.is_set():
                return
            news = self._take_news()
            if not self._may_run():
                due = next_due(self._schedule, datetime.now())
                continue
            if news and datetime.now() < due:
                self._round("news", news)  # the pause goes on after it
                continue
            self._round("schedule")
            due = next_due(self._schedule, datetime.now())

    def _round(self, trigger: str, news: Collection[str] | None = None) -> None:
        try:
            report = self._rounds.run(trigger, news=news)
            self._after_round(report)
        except RoundBusy:
            if news:
                with self._news_lock:  # for the round after the operator's
                    self._news |= set(news)
                self._stopping.wait(0.5)
                self._woken.set()
            else:
                log.info("a round is already running; the scheduled one is skipped")
        except Exception:  # a round (or its alerts) must never kill the schedule
            log.exception("the %s round failed", trigger)
