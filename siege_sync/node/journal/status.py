"""What a node can tell an operator: backlog, open transactions, errors, counters, what it
applied from other sites, losing versions on record.

Owns the read-only status queries of one site's database. Must never change anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from firebird.driver import Connection

from ..db.database import READ_COMMITTED_RW, transaction
from . import parking
from .capture import CONFLICTS_TABLE, STATE_TABLE, VECTOR_TABLE, is_installed, pending_entries
from .parking import Parked


@dataclass(frozen=True)
class OpenTransaction:
    tx_id: int
    started: datetime
    user: str
    address: str | None
    attachment_id: int


@dataclass
class CaptureStatus:
    installed: bool
    pending_entries: int = 0  # committed, captured, not yet published
    open_transactions: list[OpenTransaction] = field(default_factory=list)
    limbo_transactions: list[int] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    applied: dict[tuple[str, int], int] = field(default_factory=dict)  # other origins
    conflicts: int = 0  # losing versions on record
    awaiting_decision: int = 0  # of which, in `manual` tables, not decided yet
    parked: list[Parked] = field(default_factory=list)

    @property
    def published_seq(self) -> int:
        return int(self.state.get("seq", "0"))

    @property
    def capture_errors(self) -> int:
        return int(self.state.get("capture_errors", "0"))


def capture_status(con: Connection) -> CaptureStatus:
    if not is_installed(con):
        return CaptureStatus(installed=False)
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE}")
            state = dict(cur.fetchall())
            # Another transaction may hold captured rows we cannot see yet: list them all,
            # oldest first, with who and from where, so a forgotten one can be found.
            cur.execute(
                "SELECT t.MON$TRANSACTION_ID, t.MON$TIMESTAMP, a.MON$USER, "
                "a.MON$REMOTE_ADDRESS, a.MON$ATTACHMENT_ID FROM MON$TRANSACTIONS t "
                "JOIN MON$ATTACHMENTS a ON a.MON$ATTACHMENT_ID = t.MON$ATTACHMENT_ID "
                "WHERE t.MON$ATTACHMENT_ID <> CURRENT_CONNECTION ORDER BY t.MON$TIMESTAMP")
            open_txs = [OpenTransaction(int(t), ts, (u or "").strip(), addr, int(a))
                        for t, ts, u, addr, a in cur.fetchall()]
            cur.execute("SELECT RDB$TRANSACTION_ID FROM RDB$TRANSACTIONS "
                        "WHERE RDB$TRANSACTION_STATE = 1")
            limbo = [int(r[0]) for r in cur.fetchall()]
            cur.execute(f"SELECT ORIGIN, INCARNATION, APPLIED FROM {VECTOR_TABLE} "
                        "ORDER BY ORIGIN, INCARNATION")
            applied = {(o, int(i)): int(a) for o, i, a in cur.fetchall()}
            cur.execute(f"SELECT COUNT(*), SUM(COALESCE(DECIDE, 0)) FROM {CONFLICTS_TABLE}")
            n_conflicts, n_decide = cur.fetchone()
        finally:
            cur.close()
    return CaptureStatus(True, pending_entries(con), open_txs, limbo, state, applied,
                         int(n_conflicts or 0), int(n_decide or 0), parking.listing(con))
