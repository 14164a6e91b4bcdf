"""Tells the service manager when the node serves and when it stops (systemd's notify protocol).

Owns the few datagrams a ``Type=notify`` unit (``deploy/siege-node@.service``) waits for:
``READY=1`` once the node listens — so ``systemctl start`` returns only when the node answers,
and a join's waiting node is ready to receive the siège's copy —, ``STATUS=`` lines an operator
reads in ``systemctl status``, and ``STOPPING=1`` when it drains.

Must never fail the node: without ``NOTIFY_SOCKET`` (a node started by hand, a test) every
call does nothing, and a socket that refuses the datagram is only logged.
"""

from __future__ import annotations

import logging
import os
import socket

NOTIFY_SOCKET = "NOTIFY_SOCKET"

log = logging.getLogger(__name__)


def notify(*fields: str) -> None:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) to the service manager, if there is one."""
    where = os.environ.get(NOTIFY_SOCKET)
    if not where or not fields:
        return
    # An abstract socket is given with a leading "@", sent with a leading NUL.
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode("utf-8"), address)
    except OSError as exc:
        log.warning("could not tell the service manager %s (%s): %s", fields, where, exc)
