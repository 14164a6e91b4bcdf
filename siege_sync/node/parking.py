"""Parked transactions (``SYNC$PARKED``): an origin whose next transaction cannot be applied
here for a cause outside the data (DESIGN §3.5).

Owns the record of what is parked, since when, how often it was tried and why: one row per
origin, the transaction at the head of that origin's stream. It is retried at every exchange
(its sender sends it again); past ``LIMIT`` it is shown as waiting for an operator, who fixes
the cause (a missing table or column, a constraint that differs, a rewound site to resync).
The origin's later events wait behind it — they may depend on it — while every other origin
goes on. Parking never hides a row and never skips a transaction.

An origin whose next transaction waits for something still to come (another site's event it
names, a parent's insert, a BLOB's bytes) is recorded here too, its reason saying what it
waits for, so that a wait that lasts is seen in ``status`` and the round's report; it is
cleared as soon as the transaction applies.

Records in its own short transaction; must never touch the replicated tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from firebird.driver import Connection

from .capture import PARKED_TABLE
from .database import READ_COMMITTED_RW, transaction

LIMIT = timedelta(hours=24)


@dataclass(frozen=True)
class Parked:
    origin: str
    incarnation: int
    seq: int
    reason: str
    first_seen: datetime
    last_seen: datetime
    attempts: int

    def past_limit(self, now: datetime | None = None) -> bool:
        return (now or datetime.now()) - self.first_seen > LIMIT


def park(con: Connection, origin: str, incarnation: int, seq: int, reason: str) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT SEQ FROM {PARKED_TABLE} WHERE ORIGIN = ? AND INCARNATION = ?",
                    (origin, incarnation))
        row = cur.fetchone()
        if row is not None and int(row[0]) == seq:
            cur.execute(f"UPDATE {PARKED_TABLE} SET LAST_SEEN = CAST('NOW' AS TIMESTAMP), "
                        "ATTEMPTS = ATTEMPTS + 1, REASON = ? WHERE ORIGIN = ? AND "
                        "INCARNATION = ?", (reason[:2000], origin, incarnation))
        else:
            cur.execute(f"UPDATE OR INSERT INTO {PARKED_TABLE} (ORIGIN, INCARNATION, SEQ, "
                        "REASON, FIRST_SEEN, LAST_SEEN, ATTEMPTS) VALUES (?, ?, ?, ?, "
                        "CAST('NOW' AS TIMESTAMP), CAST('NOW' AS TIMESTAMP), 1) "
                        "MATCHING (ORIGIN, INCARNATION)", (origin, incarnation, seq,
                                                           reason[:2000]))
        cur.close()


def unpark(con: Connection, origins: set[tuple[str, int]]) -> None:
    if not origins:
        return
    with transaction(con) as tm:
        cur = tm.cursor()
        for origin, incarnation in sorted(origins):
            cur.execute(f"DELETE FROM {PARKED_TABLE} WHERE ORIGIN = ? AND INCARNATION = ?",
                        (origin, incarnation))
        cur.close()


def listing(con: Connection) -> list[Parked]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT ORIGIN, INCARNATION, SEQ, REASON, FIRST_SEEN, LAST_SEEN, ATTEMPTS "
                    f"FROM {PARKED_TABLE} ORDER BY FIRST_SEEN")
        out = [Parked(o, int(i), int(s), r, f, last, int(a))
               for o, i, s, r, f, last, a in cur.fetchall()]
        cur.close()
    return out
