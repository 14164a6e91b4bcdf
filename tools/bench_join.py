"""The join part of ``make bench``: ``siege-ctl join`` of a new site from a siège holding a
``--rows`` table (1,000,000 by default), against the engine's own copy in the same run:

* ``join_vs_gbak``: the join's time (snapshot, transfer over real mTLS on loopback through a
  byte-counting forwarder, checks, restore, identity, first exchange) ÷ a local backup and
  restore of the same database through the same services API (what gbak does);
* ``join_bytes_per_row``: bytes that crossed the line ÷ rows (gzip on the wire).

Both nodes run in this process (embedded databases). Run alone:
``python -m tools.bench_join [--rows N]``.
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firebird.driver import connect_server  # noqa: E402

from tests.test_apply import run_sql  # noqa: E402
from tools.faultline import FaultyLine  # noqa: E402
from tools.localmesh import LocalMesh, behind_the_triggers_back  # noqa: E402

KEYS = ("join_vs_gbak", "join_bytes_per_row", "join_seconds", "gbak_seconds")
DDL = ["CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), "
       "PRICE NUMERIC(12, 2), RATE DOUBLE PRECISION, QTY INTEGER)"]


def fill(con, rows: int) -> None:
    """``rows`` rows (a multiple of 1000), behind capture's back: the database as it is."""
    side = "(WITH RECURSIVE R (N) AS (SELECT 0 FROM RDB$DATABASE UNION ALL SELECT N + 1 " \
           "FROM R WHERE N < 999) SELECT N FROM R)"
    with behind_the_triggers_back(con):
        for block in range(rows // 1_000_000 + (1 if rows % 1_000_000 else 0)):
            limit = min(rows - block * 1_000_000, 1_000_000) // 1000
            run_sql(con, f"INSERT INTO ITEM SELECT {block * 1_000_000} + A.N * 1000 + B.N, "
                         "'item ' || (A.N * 1000 + B.N), (A.N * 1000 + B.N) / 100.0, "
                         "B.N / 7.0, A.N FROM " + side + " A CROSS JOIN " + side +
                         f" B WHERE A.N < {limit}")


def engine_copy(dsn: str, folder: Path) -> float:
    """Backup and restore through the services API (gbak's engine), seconds."""
    backup, copy = folder / "baseline.fbk", folder / "baseline.fdb"
    started = time.perf_counter()
    with connect_server("service_mgr", user="SYSDBA", password="") as srv:
        with open(backup, "wb") as out:
            srv.database.local_backup(database=dsn, backup_stream=out)
        with open(backup, "rb") as stream:
            srv.database.local_restore(backup_stream=stream, database=str(copy))
    seconds = time.perf_counter() - started
    backup.unlink()
    copy.unlink()
    return seconds


def run(rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mesh = LocalMesh(folder, {"siege": True}, DDL)
        line = None
        try:
            fill(mesh.cons["siege"], rows)
            gbak = engine_copy(mesh.nodes["siege"].cfg.database.dsn, folder)
            print(f"join: local backup + restore of {rows} rows: {gbak:.1f} s", flush=True)
            cfg, port = mesh.joining_site("brest")
            line = FaultyLine(port)
            mesh.set_peer("siege", "brest", line.port)
            started = time.perf_counter()
            report = mesh.join(cfg, spool=folder, timeout=3600)
            seconds = time.perf_counter() - started
            if report.outcome != "joined":
                raise RuntimeError(f"the join did not end joined: {report}")
            print(f"join: {seconds:.1f} s, {line.forwarded} bytes on the line; "
                  f"{report.note}", flush=True)
            return {"join_vs_gbak": round(seconds / gbak, 2),
                    "join_bytes_per_row": round(line.forwarded / rows, 1),
                    "join_seconds": round(seconds, 1), "gbak_seconds": round(gbak, 1)}
        finally:
            if line is not None:
                line.close()
            mesh.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(run(args.rows), sort_keys=True))


if __name__ == "__main__":
    main()
