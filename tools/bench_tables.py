"""The table-count part of ``make bench`` (issue 18): what 600 replicated tables cost.

* ``install_seconds_600_tables``: ``capture.install`` of a fresh 600-table database through
  a private Firebird server (image tables, capture triggers, grants, the DDL counter).
* ``publish_ms_one_change_600_tables``: one captured change among those 600 tables,
  published by a running node's ``Publisher`` (the one a daemon keeps), through the server:
  the cost of the table count to every publish. Median of ``repeat`` publishes.
  ``publish_ms_one_change_2_tables`` is the same on a two-table database (the baseline), and
  ``publish_ms_600_vs_2_tables`` their ratio; ``publish_ms_first_600_tables`` is the first
  publish of a fresh ``Publisher`` (schema read, statements prepared).

The schema is ERP-shaped but small per table (``shape``): 4–5 columns (text, NUMERIC, a text
BLOB), a third of the tables with an ON DELETE CASCADE foreign key to the previous table, a
BEFORE INSERT trigger on every fifth. ``tools/erpschema.py`` builds richer ones.

Run alone: ``python tools/bench_tables.py [--tables 600] [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))

from firebird.driver import Connection  # noqa: E402

from siege_sync.node.journal import capture  # noqa: E402
from siege_sync.node.pipeline.publish import Publisher  # noqa: E402

KEYS = ("install_seconds_600_tables", "publish_ms_one_change_600_tables",
        "publish_ms_one_change_2_tables", "publish_ms_600_vs_2_tables",
        "publish_ms_first_600_tables")


def shape(tables: int) -> list[str]:
    """DDL of ``tables`` small ERP-like tables (T0 … T<n-1>)."""
    ddl = []
    for i in range(tables):
        fk = (f", P INTEGER REFERENCES T{i - 1} (ID) ON DELETE CASCADE"
              if i % 3 and i else "")
        ddl.append(f"CREATE TABLE T{i} (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(30), "
                   f"AMT NUMERIC(15,2), NOTE BLOB SUB_TYPE 1{fk})")
        if i % 5 == 0:
            ddl.append(f"CREATE TRIGGER T{i}_BI FOR T{i} BEFORE INSERT AS BEGIN "
                       "NEW.V = COALESCE(NEW.V, 'x'); END")
    return ddl


def create(server: object, name: str, ddl: list[str]) -> Connection:
    """A database through ``server`` with ``ddl`` run in a few transactions (creating 600
    tables one commit each is not what is measured)."""
    con = server.create_database(name)  # type: ignore[attr-defined]
    for start in range(0, len(ddl), 50):
        for stmt in ddl[start:start + 50]:
            con.execute_immediate(stmt)
        con.commit()
    return con


def publish_ms(con: Connection, repeat: int) -> tuple[float, float]:
    """(first publish of a fresh Publisher, median of the next ``repeat``) in ms, each
    publishing one change to table T1 (which has a foreign key)."""
    publisher = Publisher(con, "bench")
    times = []
    for n in range(repeat + 1):
        con.execute_immediate(f"INSERT INTO T1 (ID, V) VALUES ({n + 1000}, 'x')"
                              if n % 2 == 0 else
                              f"UPDATE T1 SET V = 'y{n}' WHERE ID = {n + 999}")
        con.commit()
        started = time.perf_counter()
        result = publisher.publish()
        times.append((time.perf_counter() - started) * 1000)
        assert result.events == 1, result
    return times[0], statistics.median(times[1:])


def run(tables: int = 600, repeat: int = 15) -> dict[str, float]:
    from tools.fbserver import FirebirdServer

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, FirebirdServer(Path(tmp)) as server:
        one = create(server, "one", shape(2))
        capture.install(one)
        _first, out["publish_ms_one_change_2_tables"] = publish_ms(one, repeat)
        one.close()
        con = create(server, "many", shape(tables))
        started = time.perf_counter()
        capture.install(con)
        out["install_seconds_600_tables"] = round(time.perf_counter() - started, 1)
        first, warm = publish_ms(con, repeat)
        out["publish_ms_first_600_tables"] = round(first, 1)
        out["publish_ms_one_change_600_tables"] = round(warm, 1)
        out["publish_ms_one_change_2_tables"] = round(out["publish_ms_one_change_2_tables"], 1)
        out["publish_ms_600_vs_2_tables"] = round(warm / out["publish_ms_one_change_2_tables"], 2)
        con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(run(args.tables, args.repeat), flush=True)


if __name__ == "__main__":
    main()
