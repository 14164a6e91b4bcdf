"""Whose database this is, and which node serves it: one site, one node at a time.

Owns two checks a node makes before it touches a database:

* ``check_site``: a database serves one site of one mesh. The first node to serve it
  records them (``SYNC$STATE`` site, mesh); ``run`` and ``install`` refuse a config that
  names another (a config pointing at another site's database would publish that
  database's changes under this site's name and numbers, or move its generators).
* ``occupy``: one node per database. The node marks its own attachment (a ``USER_SESSION``
  context variable, ``MARK``, saying which process on which machine since when), and
  Firebird shows every attachment's context variables in ``MON$CONTEXT_VARIABLES``: a node
  that finds an older attachment carrying the mark — another node, on this machine or
  another, through the same server — refuses to start, saying who holds it. Two starting at
  once: the older attachment wins. The mark lives as long as the attachment, so a killed
  node leaves nothing to clear by hand (the server drops a dead client's attachment).
  Why not a row lock held by an open transaction: it would hold back Firebird's garbage
  collection for the node's whole life.

Must never write the application's tables, nor keep a transaction open.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from firebird.driver import Connection

from ..db.database import READ_COMMITTED_RW, transaction
from . import capture

MARK = "SIEGE_SYNC_NODE"  # the context variable a serving node's attachment carries


class Occupied(Exception):
    """The database is not this node's to serve (the message says why and what to do)."""


def check_site(con: Connection, site: str, mesh: str | None, dsn: str, where: str,
               record: bool = True) -> None:
    """``site`` (of ``mesh``; None: not checked) may serve this database; recorded the first
    time when ``record``."""
    if not capture.is_installed(con):
        return  # no node ever served it (install first, then run, records it)
    wanted = {"site": site, "mesh": mesh} if mesh is not None else {"site": site}
    recorded = {name: capture.get_state(con, name) for name in ("site", "mesh")}
    if any(recorded[name] not in (None, value) for name, value in wanted.items()):
        raise Occupied(
            f"{dsn} is the database of site {recorded['site']!r} of mesh "
            f"{recorded['mesh']!r} (its node recorded that), but this node is site "
            f"{site!r}{f' of mesh {mesh!r}' if mesh else ''} ({where}): point [database] "
            "dsn at this site's own database. Nothing was changed. If that database really "
            "is to become this site's, it must join as a new site (its unsynced changes "
            "would otherwise be lost): ask for a resync of this site from the siège")
    if record:
        for name, value in wanted.items():
            if recorded[name] is None:
                capture.set_state(con, name, value)


def occupy(con: Connection, site: str, dsn: str) -> None:
    """Mark ``con`` as the node serving this database; Occupied when an older attachment
    already carries the mark."""
    who = f"site {site}, process {os.getpid()} on {socket.gethostname()}, since " \
          f"{datetime.now():%Y-%m-%d %H:%M:%S}"
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute("SELECT RDB$SET_CONTEXT('USER_SESSION', ?, ?) FROM RDB$DATABASE",
                        (MARK, who))
            cur.fetchall()
            cur.execute("SELECT MON$ATTACHMENT_ID, MON$VARIABLE_VALUE "
                        "FROM MON$CONTEXT_VARIABLES WHERE MON$VARIABLE_NAME = ? "
                        "AND MON$ATTACHMENT_ID < CURRENT_CONNECTION "
                        "ORDER BY MON$ATTACHMENT_ID", (MARK,))
            older = cur.fetchall()
        finally:
            cur.close()
    if older:
        raise Occupied(
            f"another node already serves {dsn} ({older[0][1]}): one node per database — "
            "two would publish the same changes twice and apply each other's. Stop the "
            "other one (or, if it was killed, wait until the Firebird server drops its "
            "connection), then start this one")
