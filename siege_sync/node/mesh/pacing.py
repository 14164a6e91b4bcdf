"""A bandwidth cap for one exchange: a shop's 2 Mbit/s line is also its till's line.

Owns pacing the batches an exchange sends or takes so that their bytes on the wire — gzip as
the channel sends them — stay under a rate averaged since the exchange began. Slowing the
reading of a pulled stream slows its sender too (HTTP/2 flow control), so one pacer serves
both directions. Must never drop or reorder a batch: it only waits.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable


class Pacer:
    def __init__(self, bits_per_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None,
                 stop: threading.Event | None = None) -> None:
        if bits_per_s <= 0:
            raise ValueError("a bandwidth cap must be > 0 bits/s")
        self._rate = bits_per_s / 8.0  # bytes/s
        self._clock = clock
        self._stop = stop
        self._sleep = sleep or (stop.wait if stop is not None else time.sleep)
        self._began = clock()
        self._bytes = 0
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, for reports and tests

    def wire_bytes(self, message: bytes) -> int:
        """What ``message`` costs on the wire with the channel's gzip (level 6, as gRPC)."""
        return len(gzip.compress(message, compresslevel=6))

    def after(self, message: bytes) -> None:
        """Count a message that went (or came) through; wait if ahead of the cap."""
        with self._lock:
            self._bytes += self.wire_bytes(message)
            due = self._began + self._bytes / self._rate
            wait = due - self._clock()
        if wait > 0 and not (self._stop is not None and self._stop.is_set()):
            self.waited += wait
            self._sleep(wait)
