"""Serving the dashboard: 127.0.0.1 only, the address with its token, uvicorn.

Owns the listening socket — bound to the loopback address before anything is printed, so the
printed port is the one that serves (``--port 0``: any free one) — and the life of the
server and of the actions it started (ended when it stops: Ctrl-C, SIGTERM).

Must never listen on another interface: the address is not a parameter.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import uvicorn

from ...i18n import _
from ..reach import Target
from .access import FIELD, Access
from .actions import Actions
from .app import make_app

HOST = "127.0.0.1"


def serve(target: Target, port: int, language: str, ctl: list[str],
          say: Callable[[str], None] = print) -> int:
    """Serve until interrupted. ``ctl``: how to run ``siege-ctl`` with the same way to the
    siège (the actions' command line); ``say(url)``: told the address to open, once it
    listens."""
    access = Access()
    actions = Actions(ctl)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, _("{address}: {problem} — give another port with --port (0: "
                                   "any free one)").format(address=f"{HOST}:{port}",
                                                           problem=exc.strerror)) from None
    sock.listen(64)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(target, access, actions, language),
                                           log_level="warning", access_log=False,
                                           lifespan="off"))
    say(f"http://{HOST}:{bound}/?{FIELD}={access.token}")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        actions.close()
        sock.close()
    return 0
