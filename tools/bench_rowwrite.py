"""Rows per second of the row-writing paths (a measurement, not a test: nothing is asserted).

``.venv/bin/python -m tools.bench_rowwrite [--rows 20000] [--repeat 3]``

A new embedded Firebird 3 database for every path and run, with a 10-column table
(INTEGER key, INTEGER, BIGINT, NUMERIC(15,2), DOUBLE, two VARCHARs, TIMESTAMP, BOOLEAN, a small
text BLOB). Each path writes the same ``--rows`` rows, given as ``values_pb2.Value``s as apply
has them, with ``UPDATE OR INSERT ... MATCHING (ID)`` into the empty table (inserts) and then
again over the existing rows (updates), each phase one committed transaction. Printed: the
median rows/s of ``--repeat`` runs per path and phase.

* ``executemany``: the driver's ``executemany`` of the parameterized statement, parameters
  decoded beforehand (the driver's own cost only);
* ``param+decode``: the same plus ``values.decode`` per value, as ``Applier._write_row`` does;
* ``RowWriter``: :class:`siege_sync.node.db.rowwrite.RowWriter` ``upsert`` from the Values
  (literal generation included), one ``set_context`` first;
* ``RowWriter i/u``: the same with ``insert`` (empty table) / ``update`` (existing rows),
  for a caller that knows whether each row exists.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# A private lock folder: only this process opens its database, and sharing the folder with
# other Firebird processes (test runs that kill servers) once left this benchmark waiting
# forever inside the engine.
os.environ["FIREBIRD_LOCK"] = tempfile.mkdtemp(prefix="bench-rowwrite-lock-")
atexit.register(shutil.rmtree, os.environ["FIREBIRD_LOCK"], ignore_errors=True)

from firebird.driver import Connection  # noqa: E402

from siege_sync.node.db import values  # noqa: E402
from siege_sync.node.db.database import StatementCache, quote  # noqa: E402
from siege_sync.node.db.rowwrite import RowWriter  # noqa: E402
from siege_sync.node.db.schema import Table, introspect  # noqa: E402
from siege_sync.proto import values_pb2  # noqa: E402
from tests.fbdb import create_db  # noqa: E402

DDL = ("CREATE TABLE BENCH (ID INTEGER NOT NULL PRIMARY KEY, QTY INTEGER, BIGN BIGINT, "
       "PRICE NUMERIC(15,2), RATE DOUBLE PRECISION, CODE VARCHAR(20), "
       "NAME VARCHAR(60) CHARACTER SET UTF8, STAMPED TIMESTAMP, FLAG BOOLEAN, "
       "NOTE BLOB SUB_TYPE TEXT CHARACTER SET UTF8)")

Row = tuple[list[values_pb2.Value], dict[str, values_pb2.Value]]


def make_rows(table: Table, n: int, salt: int) -> list[Row]:
    col = table.column
    base = dt.datetime(2026, 11, 30, 12, 0, 0)
    rows = []
    for i in range(n):
        py = {"QTY": i + salt, "BIGN": i * 1_000_003 + salt, "PRICE": Decimal(i + salt) / 100,
              "RATE": (i + salt) / 7, "CODE": f"C{i}", "NAME": f"name of {i} é'{salt}",
              "STAMPED": base + dt.timedelta(seconds=i, microseconds=salt * 100),
              "FLAG": i % 2 == 0, "NOTE": f"a small note {i} {salt}"}
        rows.append(([values.encode(col("ID").type, i)],
                     {k: values.encode(col(k).type, v) for k, v in py.items()}))
    return rows


def upsert_sql(table: Table) -> str:
    names = ", ".join(quote(c.name) for c in table.columns)
    marks = ", ".join(values.param_expr(c) for c in table.columns)
    return f"UPDATE OR INSERT INTO BENCH ({names}) VALUES ({marks}) MATCHING (\"ID\")"


def decoded(table: Table, rows: list[Row]) -> list[list[object]]:
    return [[values.decode(c.type, key[0] if c.name == "ID" else cols[c.name])
             for c in table.columns] for key, cols in rows]


def run_executemany(con: Connection, table: Table, rows: list[Row]) -> float:
    params = decoded(table, rows)
    cur = con.cursor()
    t0 = time.perf_counter()
    cur.executemany(upsert_sql(table), params)
    elapsed = time.perf_counter() - t0
    cur.close()
    return elapsed


def run_param_decode(con: Connection, table: Table, rows: list[Row]) -> float:
    cur = con.cursor()
    cache = StatementCache()
    sql = upsert_sql(table)
    t0 = time.perf_counter()
    for params in decoded(table, rows):
        cache.run(cur, sql, params)
    elapsed = time.perf_counter() - t0
    cache.close()
    cur.close()
    return elapsed


def run_rowwriter(con: Connection, table: Table, rows: list[Row]) -> float:
    cur = con.cursor()
    cache = StatementCache()
    t0 = time.perf_counter()
    w = RowWriter(cur, con.sql_dialect, cache)
    w.set_context("SYNC$APPLY", "1")
    for key, cols in rows:
        w.upsert(table, key, cols)
    w.flush()
    elapsed = time.perf_counter() - t0
    cache.close()
    cur.close()
    return elapsed


def run_rowwriter_known(con: Connection, table: Table, rows: list[Row]) -> float:
    """RowWriter.insert into the empty table, RowWriter.update over existing rows: what a
    caller that knows whether the row exists can use."""
    cur = con.cursor()
    cur.execute("SELECT COUNT(*) FROM BENCH")
    existing = cur.fetchone()[0] > 0
    cache = StatementCache()
    t0 = time.perf_counter()
    w = RowWriter(cur, con.sql_dialect, cache)
    w.set_context("SYNC$APPLY", "1")
    write = w.update if existing else w.insert
    for key, cols in rows:
        write(table, key, cols)
    w.flush()
    elapsed = time.perf_counter() - t0
    cache.close()
    cur.close()
    return elapsed


PATHS: dict[str, Callable[[Connection, Table, list[Row]], float]] = {
    "executemany": run_executemany,
    "param+decode": run_param_decode,
    "RowWriter": run_rowwriter,
    "RowWriter i/u": run_rowwriter_known,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            for n, (name, fn) in enumerate(PATHS.items()):
                # a new database for every path and run: no old versions, no DDL in between
                path = Path(tmp) / f"bench{run}-{n}.fdb"
                con = create_db(path, ddl=[DDL])
                try:
                    table = introspect(con).tables["BENCH"]
                    for phase, salt in (("insert", 0), ("update", 1)):
                        rows = make_rows(table, args.rows, salt)
                        con.begin()
                        elapsed = fn(con, table, rows)
                        con.commit()
                        results.setdefault(name, {}).setdefault(phase, []).append(
                            len(rows) / elapsed)
                finally:
                    con.close()
                path.unlink()
    print(f"{args.rows} rows, 10 columns, embedded, median of {args.repeat} (rows/s):")
    for name, phases in results.items():
        print(f"  {name:<14}" + "  ".join(
            f"{phase} {statistics.median(v):>9,.0f}" for phase, v in phases.items()))

if __name__ == "__main__":
    main()
