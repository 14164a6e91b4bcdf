"""Digests of a table's rows by primary-key range, and the rows of a range: what
``siege-ctl analyse`` compares between sites without moving the tables.

A range is ``(lo, hi]`` in the primary key's order as Firebird sorts it (``lo`` absent: from
the first row; ``hi`` absent: to the last). The engine decides what falls in a range — every
range is a SQL predicate on the key, never a comparison made in Python — so two sites with
different collations or Python's own ordering cannot disagree about where a row belongs.

A range's digest is the order-independent sum of its rows' hashes (``digest.row_hash``: every
value read exactly, a DOUBLE by its bits), so it is bit-exact. Tables are streamed, never
loaded. Read-only: this module never writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from firebird.driver import Connection, Cursor

from ...proto import values_pb2
from ..db import values
from ..db.database import SNAPSHOT_RW, quote, transaction
from ..db.schema import Table
from .digest import MOD, HashOnly, hash_encoded, row_hash

Key = Sequence[values_pb2.Value]


class RangeError(Exception):
    pass


@dataclass(frozen=True)
class RangeDigest:
    hi: list[values_pb2.Value] | None  # the range's upper bound (None: to the last row)
    rows: int
    digest: bytes  # 32 bytes


@dataclass(frozen=True)
class Row:
    key: list[values_pb2.Value]
    hash: bytes
    columns: dict[str, values_pb2.Value]


def _bound(table: Table, con: Connection, key: Key, op: str) -> tuple[str, list[object]]:
    """``(k1, k2, ...) op (v1, v2, ...)`` in lexicographic order, spelt out (Firebird 3 has
    no row-value comparison): (k1 < v1) OR (k1 = v1 AND k2 < v2) ... with the last term's
    comparison inclusive for ``<=`` / ``>=``."""
    cols = table.key_columns
    if len(key) != len(cols):
        raise RangeError(f"{table.name}: a bound of {len(key)} values for a key of "
                         f"{len(cols)} columns")
    strict = op[0]
    params_all = [values.decode(c.type, v) for c, v in zip(cols, key, strict=True)]
    terms: list[str] = []
    params: list[object] = []
    for i in range(len(cols)):
        last = i == len(cols) - 1
        parts = [f"{quote(c.name, con.sql_dialect)} = {values.param_expr(c)}"
                 for c in cols[:i]]
        parts.append(f"{quote(cols[i].name, con.sql_dialect)} {op if last else strict} "
                     f"{values.param_expr(cols[i])}")
        terms.append("(" + " AND ".join(parts) + ")")
        params += params_all[:i + 1]
    return "(" + " OR ".join(terms) + ")", params


def _where(table: Table, con: Connection, lo: Key | None, hi: Key | None
           ) -> tuple[str, list[object]]:
    clauses, params = [], []
    if lo is not None:
        sql, p = _bound(table, con, lo, ">")
        clauses.append(sql)
        params += p
    if hi is not None:
        sql, p = _bound(table, con, hi, "<=")
        clauses.append(sql)
        params += p
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _order(table: Table, con: Connection) -> str:
    return ", ".join(quote(c.name, con.sql_dialect) for c in table.key_columns)


def split(con: Connection, table: Table, lo: Key | None, hi: Key | None, parts: int
          ) -> list[list[values_pb2.Value] | None]:
    """Upper bounds cutting ``(lo, hi]`` into at most ``parts`` ranges of about equal row
    counts here; the last bound is ``hi``. Reads only the key column(s)."""
    where, params = _where(table, con, lo, hi)
    name = quote(table.name, con.sql_dialect)
    cols = table.key_columns
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT COUNT(*) FROM {name}{where}", params)
            count = int(cur.fetchone()[0])
            step = max(-(-count // max(parts, 1)), 1)
            bounds: list[list[values_pb2.Value] | None] = []
            exprs = ", ".join(values.select_expr(c, con.sql_dialect) for c in cols)
            cur.execute(f"SELECT {exprs} FROM {name}{where} ORDER BY {_order(table, con)}",
                        params)
            for n, row in enumerate(cur, start=1):
                if n % step == 0 and n < count:
                    bounds.append([values.encode(c.type, v) for c, v in
                                   zip(cols, row, strict=True)])
        finally:
            cur.close()
    bounds.append(list(hi) if hi is not None else None)
    return bounds


def digests(con: Connection, table: Table, lo: Key | None,
            bounds: Sequence[Key | None]) -> list[RangeDigest]:
    """The digest of each range ``(lo, b1], (b1, b2], ...`` (a bound None: to the last row),
    in one snapshot."""
    out: list[RangeDigest] = []
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            low = lo
            for hi in bounds:
                count, total = 0, 0
                for row in _read(cur, con, table, low, hi):
                    total = (total + int.from_bytes(row, "big")) % MOD
                    count += 1
                out.append(RangeDigest(list(hi) if hi is not None else None, count,
                                       total.to_bytes(32, "big")))
                if hi is None:
                    break
                low = hi
        finally:
            cur.close()
    return out


def _read(cur: Cursor, con: Connection, table: Table, lo: Key | None, hi: Key | None
          ) -> Iterator[bytes]:
    where, params = _where(table, con, lo, hi)
    exprs = ", ".join(values.select_expr(c, con.sql_dialect) for c in table.columns)
    cur.execute(f"SELECT {exprs} FROM {quote(table.name, con.sql_dialect)}{where}", params)
    names = [c.name.encode() for c in table.columns]
    types = [c.type for c in table.columns]
    sink = HashOnly()
    for row in cur:
        yield row_hash(names, types, row, sink)


def rows(con: Connection, table: Table, lo: Key | None, hi: Key | None,
         limit: int, keys: Sequence[Key] = ()) -> list[Row]:
    """The rows of ``(lo, hi]`` (or, given ``keys``, those of them that exist) with their
    hashes and values (large BLOBs by reference: length and sha256), at most ``limit``
    (RangeError beyond: drill down further)."""
    if keys:
        out: list[Row] = []
        for key in keys:
            out += _rows(con, table, *_exactly(table, con, key), limit)
        return out
    return _rows(con, table, *_where(table, con, lo, hi), limit)


def _exactly(table: Table, con: Connection, key: Key) -> tuple[str, list[object]]:
    cols = table.key_columns
    if len(key) != len(cols):
        raise RangeError(f"{table.name}: a key of {len(key)} values for {len(cols)} columns")
    where = " AND ".join(f"{quote(c.name, con.sql_dialect)} = {values.param_expr(c)}"
                         for c in cols)
    return f" WHERE {where}", [values.decode(c.type, v) for c, v in zip(cols, key,
                                                                         strict=True)]


def _rows(con: Connection, table: Table, where: str, params: list[object],
          limit: int) -> list[Row]:
    exprs = ", ".join(values.select_expr(c, con.sql_dialect) for c in table.columns)
    names = [c.name.encode() for c in table.columns]
    types = [c.type for c in table.columns]
    key_at = [i for i, c in enumerate(table.columns) if c.name in table.primary_key]
    order = {name: n for n, name in enumerate(table.primary_key)}
    key_at.sort(key=lambda i: order[table.columns[i].name])
    sink = HashOnly()
    out: list[Row] = []
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT {exprs} FROM {quote(table.name, con.sql_dialect)}{where}",
                        params)
            for row in cur:
                if len(out) >= limit:
                    raise RangeError(f"{table.name}: more than {limit} rows in the range")
                encoded = [values.encode(t, v, sink) for t, v in zip(types, row, strict=True)]
                out.append(Row([encoded[i] for i in key_at], hash_encoded(names, encoded),
                               {c.name: v for c, v in zip(table.columns, encoded,
                                                          strict=True)}))
        finally:
            cur.close()
    return out
