"""A TCP proxy for tests: forwards to a target and cuts every connection once it has carried
``cut_after`` bytes in the chosen direction (a line that drops mid-stream)."""

from __future__ import annotations

import socket
import threading
from typing import Literal


class CuttingProxy:
    def __init__(self, target_port: int, cut_after: int | None,
                 direction: Literal["up", "down"] = "down") -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.direction = direction
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            budget = [self.cut_after]
            up, down = self.direction == "up", self.direction == "down"
            threading.Thread(target=self._pump, args=(client, upstream, budget if up else None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client,
                                                      budget if down else None),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: list[int | None] | None
              ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if budget is not None and budget[0] is not None:
                    if len(data) >= budget[0]:
                        dst.sendall(data[:budget[0]])
                        self.cuts += 1
                        break
                    budget[0] -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()
