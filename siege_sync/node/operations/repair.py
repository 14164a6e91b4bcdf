"""Repairs ordered by ``siege-ctl analyse --repair``: make rows what the preferred site holds.

Rows that drifted behind the triggers' back (a restore, a manual fix with triggers off) have
no version the merge could compare, so an operator names the site that is right. Here the
node writes that site's rows as **local writes**: the capture triggers record them and the
next round carries them everywhere like any change, knowingly overwriting what this site
held. They are guarded exactly like applied changes (``SYNC$APPLY`` is set, to a value that
is no table number, so the capture triggers still record them): a vendor's trigger that
stamps ``UPDATED_AT = 'NOW'`` would otherwise give each repaired row this site's own time,
and the rows would differ again. Before a row is overwritten or deleted, each value it loses
is put on record in ``SYNC$CONFLICTS`` (kind ``analyse``), so ``conflicts --reapply`` can
bring it back.

One transaction per request: all its fixes are written, or none. A fix names the row's hash
as it was compared; a row changed since (a user's newer work) is left alone and counted.
Must never write a value it cannot write exactly: a large BLOB known only by its hash, and
not stored here, is refused with what to do. A large BLOB a row loses is kept in
``SYNC$BLOBS`` by its hash, as any large BLOB the sync stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firebird.driver import Connection, Cursor

from ...proto import sync_pb2, values_pb2
from ..db import values
from ..db.database import quote, transaction
from ..db.guard import APPLY_CONTEXT, REPAIR_CONTEXT
from ..db.schema import Table
from ..journal import conflicts
from ..journal.capture import table_registry
from ..journal.digest import hash_encoded
from ..journal.storage import DatabaseBlobStore


class RepairError(Exception):
    pass


@dataclass(frozen=True)
class RepairDone:
    written: int
    recorded: int
    changed: int  # rows no longer as compared (a user's newer work): left alone


def repair(con: Connection, site: str, table: Table, prefer: str,
           fixes: Sequence[sync_pb2.RowFix]) -> RepairDone:
    numbers = {name: no for no, (name, _k) in table_registry(con).items()}
    if table.name not in numbers:
        raise RepairError(f"{table.name} is not replicated here")
    d = con.sql_dialect
    keys = table.key_columns
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c in keys)
    cols = ", ".join(values.select_expr(c, d) for c in table.columns)
    written = recorded = changed = 0
    names = [c.name.encode() for c in table.columns]
    with transaction(con) as tm:
        cur = tm.cursor()
        store = DatabaseBlobStore(tm)
        try:
            # Fetched: a SELECT's expressions are evaluated only when its row is fetched.
            cur.execute(f"SELECT RDB$SET_CONTEXT('USER_TRANSACTION', '{APPLY_CONTEXT}', "
                        f"'{REPAIR_CONTEXT}') FROM RDB$DATABASE")
            cur.fetchone()
            for fix in fixes:
                key = list(fix.key.values)
                if len(key) != len(keys):
                    raise RepairError(f"{table.name}: a key of {len(key)} values for "
                                      f"{len(keys)} key columns")
                params = [values.decode(c.type, v) for c, v in zip(keys, key, strict=True)]
                cur.execute(f"SELECT {cols} FROM {quote(table.name, d)} WHERE {where}", params)
                row = cur.fetchone()
                wanted = {cv.column: cv.value for cv in fix.columns}
                held = None if row is None else {
                    c.name: values.encode(c.type, _read(v), store)
                    for c, v in zip(table.columns, row, strict=True)}
                now = b"" if held is None else hash_encoded(names, list(held.values()))
                if now != fix.expect:
                    changed += 1  # written since it was compared: never overwrite unseen
                    continue
                if held is not None:
                    for name, value in held.items():
                        if fix.remove or _differs(value, wanted.get(name)):
                            _record(cur, numbers[table.name], key, name, value, site, prefer)
                            recorded += 1
                if fix.remove:
                    cur.execute(f"DELETE FROM {quote(table.name, d)} WHERE {where}", params)
                else:
                    _write(cur, d, table, wanted, store)
                written += 1
        finally:
            cur.close()
    return RepairDone(written, recorded, changed)


def _read(raw: object) -> object:
    if hasattr(raw, "read"):
        reader = raw
        raw = reader.read()  # type: ignore[attr-defined]
        reader.close()  # type: ignore[attr-defined]
    return raw


def _differs(a: values_pb2.Value, b: values_pb2.Value | None) -> bool:
    return b is None or a.SerializeToString(deterministic=True) != \
        b.SerializeToString(deterministic=True)


def _write(cur: Cursor, d: int, table: Table, wanted: dict[str, values_pb2.Value],
           store: DatabaseBlobStore) -> None:
    missing = [c.name for c in table.columns if c.name not in wanted]
    if missing:
        raise RepairError(f"{table.name}: the preferred row lacks columns {missing} (do the "
                          "sites' schemas differ?)")
    params = []
    for c in table.columns:
        value = wanted[c.name]
        if value.WhichOneof("kind") == "blob" and not store.has(value.blob.sha256):
            raise RepairError(f"{table.name}.{c.name}: a BLOB of {value.blob.length} bytes is "
                              "known here by its hash only; repair that row by saving it "
                              "again at the preferred site (the sync then carries it)")
        params.append(values.decode(c.type, value, store))
    names = ", ".join(quote(c.name, d) for c in table.columns)
    marks = ", ".join(values.param_expr(c) for c in table.columns)
    key = ", ".join(quote(c.name, d) for c in table.key_columns)
    cur.execute(f"UPDATE OR INSERT INTO {quote(table.name, d)} ({names}) VALUES ({marks}) "
                f"MATCHING ({key})", params)


def _record(cur: Cursor, number: int, key: list[values_pb2.Value], column: str,
            value: values_pb2.Value, site: str, prefer: str) -> None:
    conflicts.record_overwritten(cur, number, key, column, value, kind="analyse",
                                 loser=f"{site} (drifted)",
                                 winner=f"{prefer} (preferred by an operator)")
