"""Who holds the row an apply needs: the local transaction a write met, named for an operator.

A user who leaves a form open in the management software can keep a transaction, and its row
locks, open for hours. Firebird then refuses the apply's write with an update conflict naming
that transaction's number. If the same number blocks the write again after a wait, the
transaction is still open: the change must wait for it (apply.py), not fail, and not hold up
other sites' changes. This module reads the number from the error and describes its holder
from the monitoring tables (best effort: a node user who is not SYSDBA or the owner sees only
its own attachments there).

Must never end or disturb the holder: it only reads.
"""

from __future__ import annotations

import re

from firebird.driver import Connection, DatabaseError

from .database import READ_COMMITTED_RW, transaction

_NUMBER = re.compile(r"concurrent transaction number is (\d+)")


def transaction_number(exc: BaseException) -> int | None:
    """The number of the concurrent transaction an update conflict names, if any."""
    found = _NUMBER.search(str(exc))
    return int(found.group(1)) if found else None


def describe(con: Connection, number: int) -> str:
    """"transaction 123 (user APP, from 10.0.0.5, program caisse.exe, open since 08:12:03)",
    or just the number when the monitoring tables do not show it."""
    try:
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute("SELECT TRIM(a.MON$USER), a.MON$REMOTE_ADDRESS, a.MON$REMOTE_PROCESS, "
                        "t.MON$TIMESTAMP FROM MON$TRANSACTIONS t JOIN MON$ATTACHMENTS a "
                        "ON a.MON$ATTACHMENT_ID = t.MON$ATTACHMENT_ID "
                        "WHERE t.MON$TRANSACTION_ID = ?", (number,))
            row = cur.fetchone()
            cur.close()
    except DatabaseError:
        row = None
    if row is None:
        return f"transaction {number}"
    user, address, process, since = row
    parts = [f"user {user}"]
    if address:
        parts.append(f"from {address}")
    if process:
        parts.append(f"program {process.rsplit('/', 1)[-1]}")
    parts.append(f"open since {since:%Y-%m-%d %H:%M:%S}")
    return f"transaction {number} ({', '.join(parts)})"
