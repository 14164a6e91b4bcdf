"""Reading captured changes: which committed transactions to publish next, and in what order.

Owns the gap-safe read of the captured changes (the image tables ``SYNC$I<n>``, one row per
change, plus capture failures in ``SYNC$LOG``). They are a queue: publishing deletes the rows it
turned into events, in the same transaction, so "not yet published" is exactly "still
there". The read runs in a SNAPSHOT transaction, which sees precisely the transactions committed
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

Writes nothing but ``delete_taken``, which the publisher calls inside its own transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from firebird.driver import Cursor

from ..db.database import StatementCache
from ..model.clock import Marker, local_us
from .capture import IMAGE_META, IMAGE_PREFIX, LOG_TABLE, OP_ERROR, OP_MARKER

Group = tuple[int, int]  # (era, tx_id): era 0 = restored from a backup, 1 = this life


@dataclass(slots=True)  # one per captured change: kept cheap to build
class LogEntry:
    log_id: int
    tx_id: int
    table_no: int
    op: str
    captured: datetime
    user: str | None
    address: str | None
    flags: int
    detail: str | None = None


@dataclass
class PlannedTx:
    """One committed source transaction chosen for publishing."""

    group: Group
    first_id: int
    last_id: int
    count: int
    tables: set[int] = field(default_factory=set)

    @property
    def tx_id(self) -> int:
        return self.group[1]


@dataclass
class Batch:
    """What one publish step takes: whole transactions, in publishing order."""

    transactions: list[PlannedTx]
    cutoff: int  # every taken entry has log_id <= cutoff
    straddlers: list[Group]  # visible groups with entries <= cutoff that were not taken
    markers: list[Marker]
    pending_groups: int  # visible groups in the log, taken or not
    restore_boundary: int | None = None

    @property
    def taken(self) -> set[Group]:
        return {tx.group for tx in self.transactions}

    @property
    def tables(self) -> set[int]:
        return {no for tx in self.transactions for no in tx.tables}



@dataclass(frozen=True)
class _Source:
    """Where captured rows are: an image table, or the log (capture failures)."""

    table: str
    id_col: str
    tx_col: str
    where: str  # extra condition, e.g. the op of log rows

    def era(self, boundary: int | None) -> str:
        return "1" if boundary is None else f"IIF({self.id_col} <= {int(boundary)}, 0, 1)"


def _image(number: int) -> _Source:
    return _Source(f"{IMAGE_PREFIX}{number}", "SYNC$ID", "SYNC$TX", "1 = 1")


_FAILURES = _Source(LOG_TABLE, "LOG_ID", "TX_ID", f"OP = '{OP_ERROR}'")
# A statement may hold at most 255 contexts ("Too many Contexts"), and each grouped SELECT
# takes two (its table and its grouping): measured, 141 selects in one UNION fail.
_UNION_TABLES = 100
# Straddling transactions one statement excludes at most (each adds a condition and one or
# two parameters to the reads and deletes of the taken rows).
_MAX_STRADDLERS = 200


def plan(cur: Cursor, max_entries: int, restore_boundary: int | None,
         tables: list[int], statements: StatementCache | None = None) -> Batch:
    """Choose the next whole transactions to publish, at most ``max_entries`` entries
    (at least one transaction however large), from the image tables numbered ``tables``.
    ``cur`` must belong to a SNAPSHOT transaction. ``statements``: where the grouped reads
    stay prepared between publishes (preparing them is most of their cost with hundreds of
    image tables; what they read is still exactly this snapshot's)."""
    selects = [
        f"SELECT {src.era(restore_boundary)}, {src.tx_col}, {no}, MIN({src.id_col}), "
        f"MAX({src.id_col}), COUNT(*) FROM {src.table} WHERE {src.where} GROUP BY 1, 2"
        for no, src in [(no, _image(no)) for no in tables]
    ]
    selects.append(
        f"SELECT {_FAILURES.era(restore_boundary)}, TX_ID, TBL_NO, MIN(LOG_ID), MAX(LOG_ID), "
        f"COUNT(*) FROM {LOG_TABLE} WHERE {_FAILURES.where} GROUP BY 1, 2, 3")
    found: list[tuple] = []
    for start in range(0, len(selects), _UNION_TABLES):
        sql = " UNION ALL ".join(selects[start:start + _UNION_TABLES])
        if statements is None:
            cur.execute(sql)
        else:
            statements.run(cur, sql)
        found.extend(cur.fetchall())
    groups: dict[Group, PlannedTx] = {}
    for era, tx, table_no, first, last, n in found:
        group = (int(era), int(tx))
        planned = groups.setdefault(group, PlannedTx(group, int(first), 0, 0))
        planned.first_id = min(planned.first_id, int(first))
        planned.last_id = max(planned.last_id, int(last))
        planned.count += n
        planned.tables.add(int(table_no))
    ordered = sorted(groups.values(), key=lambda p: p.last_id)
    taken: list[PlannedTx] = []
    total = 0
    for planned in ordered:
        if taken and total + planned.count > max_entries:
            break
        taken.append(planned)
        total += planned.count
    # Groups not taken whose entries start at or below the cutoff: their later entries are
    # beyond it, so their rows must be left alone this time. Each is a condition of every
    # read and delete of the taken rows: fewer transactions are taken when they would be
    # too many for one statement (many long transactions open at once).
    cutoff, straddlers = _straddlers(ordered, len(taken))
    while len(straddlers) > _MAX_STRADDLERS and len(taken) > 1:
        taken.pop()
        cutoff, straddlers = _straddlers(ordered, len(taken))
    return Batch(taken, cutoff, straddlers, _markers(cur), len(ordered), restore_boundary)


def _straddlers(ordered: list[PlannedTx], taken: int) -> tuple[int, list[Group]]:
    cutoff = ordered[taken - 1].last_id if taken else 0
    return cutoff, sorted(p.group for p in ordered[taken:] if p.first_id <= cutoff)


def _taken(batch: Batch, src: _Source) -> tuple[str, list[object]]:
    """SQL restricting ``src``'s rows to the taken transactions: at or below the cutoff, and
    not in a straddling group."""
    cond = f"{src.where} AND {src.id_col} <= ?"
    params: list[object] = [batch.cutoff]
    for era, tx in batch.straddlers:
        if batch.restore_boundary is None:
            cond += f" AND {src.tx_col} <> ?"
            params.append(tx)
        else:
            side = ">" if era == 1 else "<="
            cond += f" AND NOT ({src.tx_col} = ? AND {src.id_col} {side} ?)"
            params.extend([tx, batch.restore_boundary])
    return cond, params


def image_rows(cur: Cursor, batch: Batch, table_no: int,
               select_list: str) -> Iterator[tuple[Group, LogEntry, str, tuple]]:
    """The taken changes of one table, one fetch each: (group, entry, change mask, raw
    column values in image order). ``select_list`` reads the data columns."""
    src = _image(table_no)
    cond, params = _taken(batch, src)
    cur.execute(f"SELECT {src.era(batch.restore_boundary)}, {', '.join(IMAGE_META)}, "
                f"{select_list} FROM {src.table} I WHERE {cond}", params)
    width = len(IMAGE_META) + 1
    for row in cur:
        era, log_id, tx, op, captured, user, addr, flags, mask = row[:width]
        entry = LogEntry(int(log_id), int(tx), table_no, op, captured, user, addr,
                         int(flags or 0))
        yield (int(era), int(tx)), entry, mask or "", row[width:]


def error_entries(cur: Cursor, batch: Batch) -> list[LogEntry]:
    """Capture failures recorded by the triggers among the taken transactions."""
    cond, params = _taken(batch, _FAILURES)
    cur.execute("SELECT LOG_ID, TX_ID, TBL_NO, OP, CAPTURED, USR, ADDR, FLAGS, DETAIL "
                f"FROM {LOG_TABLE} WHERE {cond} ORDER BY LOG_ID", params)
    return [LogEntry(int(i), int(t), int(n), op, at, u, a, int(f or 0), d)
            for i, t, n, op, at, u, a, f, d in cur.fetchall()]


def delete_taken(cur: Cursor, batch: Batch) -> None:
    """Consume the taken rows (the publisher calls this in its publishing transaction)."""
    for src in [_image(no) for no in sorted(batch.tables)] + [_FAILURES]:
        cond, params = _taken(batch, src)
        cur.execute(f"DELETE FROM {src.table} WHERE {cond}", params)


def _markers(cur: Cursor) -> list[Marker]:
    cur.execute(
        f"SELECT LOG_ID, CAPTURED, UTC_US FROM {LOG_TABLE} WHERE OP = '{OP_MARKER}' "
        "ORDER BY LOG_ID"
    )
    return [Marker(int(i), int(utc) - local_us(at)) for i, at, utc in cur.fetchall()]
