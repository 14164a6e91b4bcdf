"""A faulty line between two nodes, for the chaos runs: a TCP forwarder on loopback that can
cut every connection it carries, or stall them (a black hole: bytes stop flowing both ways
and nothing is closed — what a dead router or a saturated uplink looks like) and later
resume or cut them.

What it must never do: change a byte it forwards (a cut or a stall is the only fault), or
listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time


class FaultyLine:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        # One gate per direction: "up" (caller -> target) and "down" (target -> caller).
        self._flowing = {"up": threading.Event(), "down": threading.Event()}
        for gate in self._flowing.values():
            gate.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.forwarded = 0  # bytes carried, both ways (the benchmarks' wire bytes)
        self.last_carried = 0.0  # time.monotonic() of the last bytes carried (0: never)
        threading.Thread(target=self._accept, daemon=True, name="faultline").start()

    # --- faults ------------------------------------------------------------------------

    def cut(self) -> int:
        """Close every connection now (both ends see a reset); returns how many."""
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        for s in victims:
            _close(s)
        return len(victims) // 2

    def stall(self, direction: str | None = None) -> None:
        """Stop forwarding (nothing is closed; new connections are accepted and hang).
        ``direction``: "up" (caller to target) or "down" (target to caller) stalls that
        way only — a half-dead line; None stalls both."""
        for way in (direction,) if direction else ("up", "down"):
            self._flowing[way].clear()

    def resume(self) -> None:
        for gate in self._flowing.values():
            gate.set()

    @property
    def stalled(self) -> bool:
        return not all(gate.is_set() for gate in self._flowing.values())

    @property
    def connections(self) -> int:
        """Connections open through it now."""
        with self._lock:
            return len(self._open) // 2

    def carried_within(self, seconds: float) -> bool:
        """Whether bytes went through in the last ``seconds`` (work in flight on it)."""
        return bool(self.last_carried) and time.monotonic() - self.last_carried <= seconds

    def close(self) -> None:
        self._closed = True
        self.resume()
        _close(self._listener)
        self.cut()

    # --- forwarding ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)  # the node behind is down: the caller sees a refused line
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing[way].wait()  # a stall holds the bytes, as a black hole would
                dst.sendall(data)
                with self._lock:
                    self.forwarded += len(data)
                    self.last_carried = time.monotonic()
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
