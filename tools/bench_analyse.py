"""The analyse part of ``make bench``: a table of ``--rows`` rows (1,000,000 by default) at
three sites (``siege-node run`` processes, databases on a private Firebird server), the same
everywhere but for 10 scattered differences at lyon made behind the triggers' back;
``siege-ctl analyse --site lyon`` (the siège's Analyse call, over real mTLS on loopback)
against two baselines of the same run:

* ``analyse_bytes_ratio``: bytes of range digests and rows that crossed the mesh ÷ the
  table's bytes (its rows as the sync encodes them; aim ≤ 0.01);
* ``analyse_time_vs_scan``: the analysis's time ÷ one local full-table SELECT of every
  column at the siège.

Also checks that exactly the 10 differences were found (``analyse_found``). Run alone:
``python -m tools.bench_analyse [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siege_sync.node.db.database import SNAPSHOT_RW, transaction  # noqa: E402
from siege_sync.node.db.schema import introspect  # noqa: E402
from siege_sync.node.journal import ranges
from siege_sync.proto import coordinator_pb2, coordinator_pb2_grpc  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402
from tools.localmesh import ProcessMesh, behind_the_triggers_back  # noqa: E402

KEYS = ("analyse_bytes_ratio", "analyse_time_vs_scan", "analyse_seconds", "analyse_found")
DDL = ["CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), "
       "PRICE NUMERIC(12, 2), RATE DOUBLE PRECISION, QTY INTEGER)"]
DIFFERENCES = 10


def _sql(con, sql: str) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        cur.close()


def _fill(con, rows: int) -> None:
    _sql(con, f"""EXECUTE BLOCK AS DECLARE I INTEGER = 0; BEGIN
        WHILE (I < {rows}) DO BEGIN
          INSERT INTO ITEM (ID, A, PRICE, RATE, QTY) VALUES (:I * 3, 'item number ' || :I,
            :I * 1.25, :I / 7e0, MOD(:I, 97));
          I = I + 1;
        END END""")


def _scan_seconds(con) -> float:
    started = time.perf_counter()
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, A, PRICE, RATE, QTY FROM ITEM")
        for _row in cur:
            pass
        cur.close()
    return time.perf_counter() - started


def _table_bytes(con, rows: int) -> float:
    """The table's rows as the sync encodes them, from a sample of 2,000 rows."""
    from siege_sync.proto import sync_pb2

    table = introspect(con).tables["ITEM"]
    sample = ranges.rows(con, table, None, None, 2_000) if rows <= 2_000 else None
    if sample is None:
        hi = [ranges.values.encode(table.key_columns[0].type, 3 * 1_999)]
        sample = ranges.rows(con, table, None, hi, 2_000)
    size = 0
    for row in sample:
        image = sync_pb2.RowImage(hash=row.hash)
        image.key.values.extend(row.key)
        for name, value in row.columns.items():
            image.columns.add(column=name, value=value)
        size += image.ByteSize()
    return size / len(sample) * rows


def run(rows: int) -> dict:
    """Three ``siege-node run`` processes on a private Firebird server (each node its own
    process, as on its own machine); lyon compared with the siège."""
    with tempfile.TemporaryDirectory(prefix="siege-bench-analyse-") as tmp, \
            FirebirdServer(Path(tmp) / "fb") as server:
        (Path(tmp) / "mesh").mkdir()
        mesh = ProcessMesh(server, Path(tmp) / "mesh", DDL)
        try:
            for con in mesh.cons.values():
                with behind_the_triggers_back(con):
                    _fill(con, rows)
            lyon = mesh.cons["lyon"]
            step = rows // DIFFERENCES
            with behind_the_triggers_back(lyon):
                for n in range(DIFFERENCES):  # scattered over the key space
                    key = 3 * (n * step + step // 2)
                    if n % 3 == 0:
                        _sql(lyon, f"DELETE FROM ITEM WHERE ID = {key}")
                    elif n % 3 == 1:
                        _sql(lyon, f"UPDATE ITEM SET PRICE = PRICE + 0.01 WHERE ID = {key}")
                    else:
                        _sql(lyon, f"INSERT INTO ITEM (ID, A) VALUES ({key + 1}, 'added')")
            siege = mesh.cons["siege"]
            scan = _scan_seconds(siege)
            table_bytes = _table_bytes(siege, rows)
            ch, _ = mesh.stub("siege")
            with ch:
                stub = coordinator_pb2_grpc.CoordinatorStub(ch)
                started = time.perf_counter()
                report = None
                for event in stub.Analyse(coordinator_pb2.AnalyseRequest(
                        tables=["ITEM"], sites=["lyon"]), timeout=3600):
                    if event.HasField("done"):
                        report = event.done
                seconds = time.perf_counter() - started
        finally:
            mesh.close()
    assert report is not None
    found = sum(a.missing + a.extra + a.different for a in report.analysis)
    moved = sum(a.bytes_moved for a in report.analysis)
    return {"analyse_bytes_ratio": round(moved / table_bytes, 5),
            "analyse_time_vs_scan": round(seconds / scan, 2),
            "analyse_seconds": round(seconds, 1),
            "analyse_found": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(run(args.rows), sort_keys=True))


if __name__ == "__main__":
    main()
