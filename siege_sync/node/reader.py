"""Reading captured changes: which committed transactions to publish next, and in what order.

Owns the gap-safe read of ``SYNC$LOG``. The log is a queue: publishing deletes the entries it
turned into events, in the same transaction, so "not yet published" is exactly "still in the
log". The read runs in a SNAPSHOT transaction, which sees precisely the transactions committed
before it started, each one whole. Consequences (DESIGN §3.2, by construction rather than
by gap bookkeeping):

* a transaction that commits a lower log id after higher ones were read is simply still in
  the log at the next read: nothing is skipped;
* a rolled-back transaction leaves no rows, so there is no hole to wait for;
* a limbo (2PC) or long open transaction is invisible until it commits, and holds back only
  its own rows;
* transactions are ordered by their **largest** log id: if T1 and T2 write the same row, the
  later writer waited for the earlier one's commit, so its last id is the larger one.

A gbak restore renumbers transactions from 1: entries restored from the backup are kept apart
from new ones by ``era`` (the log id boundary recorded when the restore was detected).

Must never write: the publisher owns every change to the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from firebird.driver import Cursor

from .capture import LOG_TABLE, OP_ERROR, OP_MARKER
from .clock import Marker, local_us

Group = tuple[int, int]  # (era, tx_id): era 0 = restored from a backup, 1 = this life


@dataclass(frozen=True)
class LogEntry:
    log_id: int
    tx_id: int
    table_no: int
    op: str
    captured: datetime
    user: str | None
    address: str | None
    flags: int
    detail: str | None


@dataclass
class CapturedTx:
    """One committed source transaction's entries, in log id order."""

    group: Group
    entries: list[LogEntry] = field(default_factory=list)

    @property
    def tx_id(self) -> int:
        return self.group[1]

    @property
    def last_id(self) -> int:
        return self.entries[-1].log_id


@dataclass
class Batch:
    """What one publish step takes: whole transactions, in publishing order."""

    transactions: list[CapturedTx]
    cutoff: int  # every taken entry has log_id <= cutoff
    straddlers: list[Group]  # visible groups with entries <= cutoff that were not taken
    markers: list[Marker]
    pending_groups: int  # visible groups in the log, taken or not
    restore_boundary: int | None = None


def _era_expr(boundary: int | None) -> str:
    return "1" if boundary is None else f"IIF(LOG_ID <= {int(boundary)}, 0, 1)"


def plan(cur: Cursor, max_entries: int, restore_boundary: int | None) -> Batch:
    """Choose the next whole transactions to publish, at most ``max_entries`` entries
    (at least one transaction however large). ``cur`` must belong to a SNAPSHOT transaction."""
    era = _era_expr(restore_boundary)
    cur.execute(
        f"SELECT {era} AS ERA, TX_ID, MAX(LOG_ID), COUNT(*) FROM {LOG_TABLE} "
        f"WHERE OP <> '{OP_MARKER}' GROUP BY 1, 2 ORDER BY 3"
    )
    groups = [((int(e), int(t)), int(last), n) for e, t, last, n in cur.fetchall()]
    taken: list[Group] = []
    total = 0
    cutoff = 0
    for group, last, n in groups:
        if taken and total + n > max_entries:
            break
        taken.append(group)
        total += n
        cutoff = last
    taken_set = set(taken)
    markers = _markers(cur)
    if not taken:
        return Batch([], 0, [], markers, 0, restore_boundary)
    cur.execute(
        f"SELECT LOG_ID, TX_ID, TBL_NO, OP, CAPTURED, USR, ADDR, FLAGS, DETAIL, {era} "
        f"FROM {LOG_TABLE} WHERE LOG_ID <= ? AND OP <> '{OP_MARKER}' ORDER BY LOG_ID",
        (cutoff,),
    )
    by_group: dict[Group, CapturedTx] = {g: CapturedTx(g) for g in taken}
    straddlers: set[Group] = set()
    for log_id, tx, tbl, op, captured, user, addr, flags, detail, e in cur:
        group = (int(e), int(tx))
        if group not in taken_set:
            straddlers.add(group)
            continue
        by_group[group].entries.append(
            LogEntry(int(log_id), int(tx), int(tbl), op, captured, user, addr,
                     int(flags or 0), detail)
        )
    return Batch(
        transactions=[by_group[g] for g in taken],
        cutoff=cutoff,
        straddlers=sorted(straddlers),
        markers=markers,
        pending_groups=len(groups),
        restore_boundary=restore_boundary,
    )


def _markers(cur: Cursor) -> list[Marker]:
    cur.execute(
        f"SELECT LOG_ID, CAPTURED, UTC_US FROM {LOG_TABLE} WHERE OP = '{OP_MARKER}' "
        "ORDER BY LOG_ID"
    )
    return [Marker(int(i), int(utc) - local_us(at)) for i, at, utc in cur.fetchall()]


def errors_in(batch: Batch) -> list[LogEntry]:
    return [e for tx in batch.transactions for e in tx.entries if e.op == OP_ERROR]
