"""What capture costs the application, inserts and updates (embedded Firebird).

The insert figures are ``tools/bench.py``'s own (``capture_overhead_driver``,
``capture_overhead_engine``: executemany and a PSQL loop into a captured table against the
same table without capture, in the same process); this adds the update side, which capture
pays more for since an update's image keeps every column (DESIGN §3.1): one engine-side
UPDATE of every row of each table, median of ``--repeat``, as ``capture_overhead_update``
(captured time ÷ plain time − 1). Last line: JSON.

    python -m tools.bench_capture [--rows-driver N] [--rows-engine N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from siege_sync.node.db.database import transaction
from tests.fbdb import create_db
from tools import bench


def update_all(con, table: str) -> None:
    with transaction(con) as tm:
        tm.execute_immediate(f"UPDATE {table} SET CITY = 'Nice' || ID, QTY = QTY + 1")


def update_overhead(con, rows: int, repeat: int) -> float:
    ratios = []
    for r in range(repeat):
        bench.clear_log(con)
        for table in ("PLAIN", "CAPTURED"):
            bench.psql_inserts(con, table, 0, rows)
        # Alternate which table goes first so neither always pays for the other's garbage.
        order = ("PLAIN", "CAPTURED") if r % 2 else ("CAPTURED", "PLAIN")
        took = {t: bench.timed(lambda t=t: update_all(con, t)) for t in order}
        ratios.append(took["CAPTURED"] / took["PLAIN"] - 1)
    return round(statistics.median(ratios), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-driver", type=int, default=20_000)
    parser.add_argument("--rows-engine", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        con = create_db(Path(tmp) / "capture.fdb", ddl=bench.DDL)
        try:
            bench.setup(con)
            out = bench.overheads(con, args.rows_driver, args.rows_engine, args.repeat)
            out["capture_overhead_update"] = update_overhead(con, args.rows_engine,
                                                             args.repeat)
        finally:
            con.close()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
