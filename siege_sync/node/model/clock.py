"""Time: the node's injectable UTC clock, clock markers, and hybrid-logical-clock stamps.

Capture triggers record the engine's local wall time (``'NOW'``; Firebird 3 has no time
zones). To turn those into UTC across DST changes and clock jumps, the node writes *clock
markers* into the log: one row holding the engine's local time and the node's UTC time read
in the same statement. Each entry is converted by the nearest marker below it (log ids order
both).

A stamp is fixed when an event is published and never altered: the larger of the capture time
in UTC, the node's last stamp + 1 (and, with the apply side, the row's stamp + 1), so stamps
are monotonic per node and per row even when the wall clock goes backwards.

This module must never read the wall clock outside ``SystemClock`` (``FileSkewedClock`` reads
the monotonic clock only to pace its file reads): tests and the fault injector skew time by
swapping the clock.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

_EPOCH = datetime(1970, 1, 1)


class Clock(Protocol):
    def utc_now_us(self) -> int:
        """Microseconds since the Unix epoch, UTC."""
        ...


@dataclass(frozen=True)
class SystemClock:
    def utc_now_us(self) -> int:
        return time.time_ns() // 1000


@dataclass
class SkewedClock:
    """Another clock shifted by ``offset_us`` (settable: a clock set forwards or back)."""

    base: Clock
    offset_us: int = 0

    def utc_now_us(self) -> int:
        return self.base.utc_now_us() + self.offset_us


@dataclass
class FileSkewedClock:
    """Another clock shifted by the seconds written in ``path`` (fault injection: a site's
    clock set forwards or back while its node runs). The file is read at most once a second;
    a missing or unreadable file keeps the last skew."""

    base: Clock
    path: Path
    offset_us: int = 0
    _read_at: float = -1.0

    def utc_now_us(self) -> int:
        now = time.monotonic()
        if now - self._read_at >= 1.0:
            self._read_at = now
            try:
                self.offset_us = int(float(self.path.read_text().strip() or 0) * 1_000_000)
            except (OSError, ValueError):
                pass
        return self.base.utc_now_us() + self.offset_us


def local_us(moment: datetime) -> int:
    """A naive local timestamp as microseconds since 1970-01-01 00:00 local."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Marker:
    log_id: int
    offset_us: int  # UTC minus engine-local time, as measured when the marker was written


class MarkerTable:
    """Converts captured local times to UTC by the nearest marker below each log id."""

    def __init__(self, markers: list[Marker]) -> None:
        self._markers = sorted(markers, key=lambda m: m.log_id)
        self._ids = [m.log_id for m in self._markers]

    def __bool__(self) -> bool:
        return bool(self._markers)

    def offset_for(self, log_id: int) -> int:
        if not self._markers:
            raise LookupError("no clock marker")
        i = bisect.bisect_right(self._ids, log_id) - 1
        # An entry older than every kept marker takes the oldest one: the best estimate left.
        return self._markers[max(i, 0)].offset_us

    def to_utc_us(self, log_id: int, captured: datetime) -> int:
        return local_us(captured) + self.offset_for(log_id)


@dataclass
class StampIssuer:
    """Hands out hybrid-logical-clock stamps, strictly increasing for this node."""

    last: int = 0

    def issue(self, captured_utc_us: int, row_stamp: int | None = None) -> int:
        stamp = max(captured_utc_us, self.last + 1)
        if row_stamp is not None:
            stamp = max(stamp, row_stamp + 1)
        self.last = stamp
        return stamp
