"""Losing versions on record (``SYNC$CONFLICTS``): recording, listing, re-applying by hand.

Owns the record of every version that lost a merge (DESIGN §3.3): which row, what kind of
loss, the losing write and its value, what it lost to. A record's identity is the same at
every site (a hash of table, key and the loss's identity), so sites that merged the same
events hold the same records. Re-applying a losing version is an ordinary local write of its
values: the capture trigger records it, and it travels as a new event that knowingly
overwrites the current value everywhere — nothing is changed behind the merge's back.

``record`` runs inside the applier's transaction; the others open their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from firebird.driver import Connection, Cursor

from ..proto import values_pb2
from . import registers, values
from .capture import CONFLICTS_TABLE, table_registry
from .database import READ_COMMITTED_RW, quote, transaction
from .merge import EventId, Loss, LossKind
from .schema import Table, introspect


class ConflictError(Exception):
    pass


@dataclass(frozen=True)
class Conflict:
    ident: str  # hex; its first 12 characters name it for an operator
    table: str
    key: list[values_pb2.Value]
    kind: str
    generation: str
    loser: str
    column: str | None
    value: values_pb2.Value | None
    winner: str | None
    recorded: datetime
    reapplied: datetime | None
    awaiting_decision: bool = False  # a `manual` table: the lww value stands until decided

    @property
    def short_id(self) -> str:
        return self.ident[:12]


def _ref(eid: EventId) -> str:
    return f"{eid.site}/{eid.incarnation}#{eid.seq}"


def _ident(number: int, row: bytes, loss: Loss) -> bytes:
    kind, gen, loser, column = loss.identity
    return hashlib.sha256(f"{number}|{row.hex()}|{kind.value}|{_ref(gen)}|{_ref(loser)}|"
                          f"{column}".encode()).digest()


def record(cur: Cursor, number: int, key: Sequence[values_pb2.Value], row: bytes,
           new: set[Loss], retracted: set[Loss], decide: bool = False) -> None:
    """Put new losses on record; drop those the registers no longer hold (a losing head its
    own origin later overwrote knowingly). ``row`` is the row's identity
    (``registers.key_identity``): a loss is the same record whichever engine-equal spelling of
    the key the event at hand carries (``key``, kept for showing and re-applying)."""
    kdata = registers.key_data(key)
    khash = row
    for loss in retracted:
        cur.execute(f"DELETE FROM {CONFLICTS_TABLE} WHERE IDENT = ?",
                    (_ident(number, row, loss),))
    for loss in new:
        cur.execute(
            f"UPDATE OR INSERT INTO {CONFLICTS_TABLE} (IDENT, TBL_NO, KEY_HASH, KEY_DATA, KIND, "
            "GEN, LOSER, COL, WINNER, VAL, DECIDE, RECORDED) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, CAST('NOW' AS TIMESTAMP)) MATCHING (IDENT)",
            (_ident(number, row, loss), number, khash, kdata, loss.kind.value,
             _ref(loss.generation), _ref(loss.loser), loss.column, _ref(loss.winner),
             loss.value, 1 if decide else 0))


def record_overwritten(cur: Cursor, number: int, key: Sequence[values_pb2.Value],
                       column: str | None, value: values_pb2.Value | None, kind: str,
                       loser: str, winner: str) -> None:
    """Put on record a value that was replaced outside the merge — by an operator's repair
    (kind ``analyse``) or a resync (kind ``resync``) — so that it can be read and written
    again (``reapply``). ``column`` None: the row's removal (a delete) was what lost."""
    kdata = registers.key_data(list(key))
    body = value.SerializeToString(deterministic=True) if value is not None else None
    ident = hashlib.sha256(f"{kind}|{number}|{kdata.hex()}|{column}|"
                           f"{(body or b'').hex()}|{loser}|{winner}".encode()).digest()
    cur.execute(
        f"UPDATE OR INSERT INTO {CONFLICTS_TABLE} (IDENT, TBL_NO, KEY_HASH, KEY_DATA, KIND, "
        "GEN, LOSER, COL, WINNER, VAL, DECIDE, RECORDED) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, 0, CAST('NOW' AS TIMESTAMP)) MATCHING (IDENT)",
        (ident, number, hashlib.sha256(kdata).digest(), kdata, kind, kind, loser, column,
         winner, body))


def listing(con: Connection, table: str | None = None) -> list[Conflict]:
    names = {no: name for no, (name, _k) in table_registry(con).items()}
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT IDENT, TBL_NO, KEY_DATA, KIND, GEN, LOSER, COL, VAL, WINNER, "
                        f"RECORDED, REAPPLIED, DECIDE FROM {CONFLICTS_TABLE} "
                        "ORDER BY RECORDED, IDENT")
            out = []
            for ident, no, kdata, kind, gen, loser, col, val, winner, at, again, decide in cur:
                if hasattr(val, "read"):
                    blob = val
                    val = blob.read()
                    blob.close()
                name = names.get(no, f"#{no}")
                if table is not None and name != table:
                    continue
                out.append(Conflict(ident.hex(), name, registers.key_values(kdata or b""),
                                    kind, gen, loser, col,
                                    values_pb2.Value.FromString(val) if val else None,
                                    winner, at, again, bool(decide)))
            return out
        finally:
            cur.close()


def find(con: Connection, short_id: str) -> Conflict:
    found = [c for c in listing(con) if c.ident.startswith(short_id.lower())]
    if not found:
        raise ConflictError(f"no conflict {short_id!r}; `siege-node conflicts` lists them")
    if len(found) > 1:
        raise ConflictError(f"{short_id!r} names {len(found)} conflicts; give more characters")
    return found[0]


def reapply(con: Connection, short_id: str) -> Conflict:
    """Write a losing column value back as a new local change (which then wins knowingly
    everywhere). Whole lost lives are restored column by column the same way."""
    conflict = find(con, short_id)
    if conflict.kind == LossKind.REPARENTED.value:
        raise ConflictError(
            f"conflict {conflict.short_id}: this row references {conflict.column} of a row "
            f"whose life it was written for ({conflict.generation}) lost to another insert of "
            f"the same key ({conflict.winner}); nothing was overwritten. Point it at the right "
            "row, or delete it, at any site")
    if conflict.column is None or conflict.value is None:
        raise ConflictError(
            f"conflict {conflict.short_id} is a whole row that lost to another insert of the "
            "same key; re-apply its columns one by one from the losing site's values")
    table = introspect(con).tables.get(conflict.table)
    if table is None:
        raise ConflictError(f"table {conflict.table} is not replicated here any more")
    _write(con, table, conflict)
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"UPDATE {CONFLICTS_TABLE} SET REAPPLIED = CAST('NOW' AS TIMESTAMP), "
                    "DECIDE = 0 WHERE IDENT = ?", (bytes.fromhex(conflict.ident),))
        cur.close()
    return conflict


def _write(con: Connection, table: Table, conflict: Conflict) -> None:
    assert conflict.column is not None and conflict.value is not None
    d = con.sql_dialect
    key_cols = table.key_columns
    column = table.column(conflict.column)
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c in key_cols)
    key_params = [values.decode(c.type, v) for c, v in zip(key_cols, conflict.key, strict=True)]
    value = values.decode(column.type, conflict.value)
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"UPDATE {quote(table.name, d)} SET {quote(column.name, d)} = "
                        f"{values.param_expr(column)} WHERE {where}", [value, *key_params])
            if cur.affected_rows == 0:
                # The row died (its update lost to a delete): bring it back with the key and
                # the losing value; the insert travels like any other.
                names = [quote(c.name, d) for c in key_cols] + [quote(column.name, d)]
                marks = [values.param_expr(c) for c in key_cols] + [values.param_expr(column)]
                cur.execute(f"INSERT INTO {quote(table.name, d)} ({', '.join(names)}) "
                            f"VALUES ({', '.join(marks)})", [*key_params, value])
        finally:
            cur.close()


def current_value(con: Connection, conflict: Conflict) -> values_pb2.Value | None:
    """What the row holds now in the losing version's column (None: no such row or column
    any more) — the winning side, to show next to the loser."""
    if conflict.column is None:
        return None
    table = introspect(con, only=conflict.table).tables.get(conflict.table)
    if table is None or conflict.column not in {c.name for c in table.columns}:
        return None
    d = con.sql_dialect
    column = table.column(conflict.column)
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}"
                         for c in table.key_columns)
    params = [values.decode(c.type, v) for c, v in zip(table.key_columns, conflict.key,
                                                       strict=True)]
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT {values.select_expr(column, d)} FROM {quote(table.name, d)} "
                        f"WHERE {where}", params)
            row = cur.fetchone()
            if row is None:
                return None
            raw = row[0]
            if hasattr(raw, "read"):
                reader = raw
                raw = reader.read()
                reader.close()
            return values.encode(column.type, raw) if not (
                isinstance(raw, bytes | str) and len(raw) >= values.LARGE_BLOB) else None
        finally:
            cur.close()
