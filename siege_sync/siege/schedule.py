"""The siège's schedule: rounds on an interval, at times of day, or continuously (back to
back, a short pause between), by itself.

Owns the timer thread of the coordinating node: it starts a round when one is due (unless an
operator's round is running — then the next one is due after it), sends the alerts the round
calls for, and stops promptly when the node stops. Must never run two rounds at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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
        self._thread = threading.Thread(target=self._loop, name="schedule", daemon=True)

    def start(self) -> None:
        if self._schedule.active:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        due = next_due(self._schedule, datetime.now())
        while due is not None:
            wait = max((due - datetime.now()).total_seconds(), 0.0)
            if self._stopping.wait(wait):
                return
            if not self._may_run():
                due = next_due(self._schedule, datetime.now())
                continue
            try:
                report = self._rounds.run("schedule")
                self._after_round(report)
            except RoundBusy:
                log.info("a round is already running; the scheduled one is skipped")
            except Exception:  # a round (or its alerts) must never kill the schedule
                log.exception("the scheduled round failed")
            due = next_due(self._schedule, datetime.now())
