"""The join part of ``make bench``: ``siege-ctl join`` of a new site from a siège holding a
``--rows`` table (1,000,000 by default), against the engine's own copy in the same run:

* ``join_vs_gbak``: the join's time (snapshot, transfer over real mTLS on loopback through a
  byte-counting forwarder, checks, restore, identity, first exchange) ÷ a local backup and
  restore of the same database through the same services API (what gbak does);
* ``join_bytes_per_row``: bytes that crossed the line ÷ rows (gzip on the wire);
* ``join_vs_gbak_server`` (and ``join_seconds_server``, ``gbak_seconds_server``): the same
  with both databases served by a private Firebird server (tools/fbserver.py) — the siège's
  named ``inet://127.0.0.1:PORT//path``, the new site's ``localhost/PORT:/path`` — against
  what ``gbak -se`` does: backup and restore by that server, the backup file on the server
  (issue 27); ``gbak_streamed_seconds_server`` is that copy streamed to and from a file here.

Both nodes run in this process. Run alone:
``python -m tools.bench_join [--rows N] [--only embedded|server]``.
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

KEYS = ("join_vs_gbak", "join_bytes_per_row", "join_seconds", "gbak_seconds",
        "join_vs_gbak_server", "join_seconds_server", "gbak_seconds_server",
        "gbak_streamed_seconds_server")
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


def run(rows: int, only: str | None = None) -> dict:
    measured: dict = {}
    if only in (None, "embedded"):
        measured |= run_embedded(rows)
    if only in (None, "server"):
        measured |= run_server(rows)
    return measured


def server_copy(srv, spec, where) -> float:
    """What ``gbak -b -se`` then ``gbak -c -se`` do: backup and restore by the server, its
    backup file on the server (the engine's own copy, nothing through a client), seconds."""
    from siege_sync.node.db import dbserver

    copy, backup = where.beside("baseline.fdb"), srv.data_dir / "baseline.fbk"
    started = time.perf_counter()
    with dbserver.service_manager(where, spec) as mgr:
        mgr.database.backup(database=where.path, backup=str(backup))
        mgr.wait()
        mgr.database.restore(backup=str(backup), database=copy.path)
        mgr.wait()
    seconds = time.perf_counter() - started
    backup.unlink()
    dbserver.drop(copy, spec)
    return seconds


def server_streamed_copy(spec, where, folder: Path) -> float:
    """Backup and restore through the server's service manager, streamed to and from a
    file here (how a copy reaches another machine through Firebird alone), seconds."""
    from siege_sync.node.db import dbserver

    copy = where.beside("baseline.fdb")
    started = time.perf_counter()
    with open(folder / "baseline.fbk", "w+b") as buffer:
        dbserver.backup(where, spec, buffer)
        buffer.seek(0)
        dbserver.restore(copy, spec, buffer)
    seconds = time.perf_counter() - started
    (folder / "baseline.fbk").unlink()
    dbserver.drop(copy, spec)
    return seconds


def run_server(rows: int) -> dict:
    """The join with every database served by a private Firebird server."""
    import threading

    from siege_sync.node.db import dbserver
    from siege_sync.node.journal import capture
    from siege_sync.node.mesh.daemon import Awaiting, Node
    from siege_sync.node.model.config import parse
    from siege_sync.siege.join import Joiner
    from tools.fbserver import FirebirdServer
    from tools.localmesh import Pki, free_port, node_config

    with tempfile.TemporaryDirectory() as tmp, FirebirdServer(Path(tmp)) as srv:
        folder = Path(tmp)
        pki = Pki(folder)
        con = srv.create_database("siege", ddl=DDL)
        capture.install(con)
        fill(con, rows)
        con.close()
        spec = srv.spec("siege")
        where = dbserver.served(srv.dsn("siege"))
        gbak = server_copy(srv, spec, where)
        streamed = server_streamed_copy(spec, where, folder)
        print(f"join (server): backup + restore of {rows} rows by the server: {gbak:.1f} s; "
              f"streamed through its service manager: {streamed:.1f} s", flush=True)
        port, brest_port = free_port(), free_port()
        line = FaultyLine(brest_port)
        siege = Node(node_config(folder, "siege", srv.dsn("siege"),
                                 pki.site("siege", relay=True), port,
                                 {"brest": line.port}, user="SYSDBA",
                                 password=srv.password))
        brest = None
        try:
            siege.start()
            brest_cfg = parse({
                "site": "brest",
                "database": {"dsn": f"localhost/{srv.port}:{srv.path('brest')}",
                             "user": "SYSDBA", "password": srv.password},
                "node": {"listen": f"127.0.0.1:{brest_port}",
                         "bundle": str(pki.site("brest")), "siege": "siege"},
                "peers": {"siege": {"address": f"127.0.0.1:{port}"}}},
                folder / "brest.toml")
            started = time.perf_counter()
            waiting = Awaiting(brest_cfg)
            waiting.start()
            outcome: dict = {}
            phases: dict[str, float] = {}

            def progress(p) -> None:  # when each phase began, and when the transfer ended
                now = time.perf_counter() - started
                phases.setdefault(p.phase, now)
                if p.phase == "transfer" and p.bytes_total and p.bytes_done >= p.bytes_total:
                    phases.setdefault("sent", now)

            sender = threading.Thread(target=lambda: outcome.update(
                report=Joiner(siege, spool=folder).run("brest", progress)))
            sender.start()
            try:
                while not waiting.restorer.joined.wait(0.2):
                    if not sender.is_alive():
                        break
            finally:
                waiting.stop()
            if waiting.restorer.joined.is_set():
                brest = Node(brest_cfg)
                brest.start()
            sender.join(3600)
            seconds = time.perf_counter() - started
            report = outcome.get("report")
            if report is None or report.outcome != "joined":
                raise RuntimeError(f"the join through the server did not end joined: {report}")
            print(f"join (server): {seconds:.1f} s, {line.forwarded} bytes on the line; "
                  f"phases began at (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
                  + f"; {report.note}", flush=True)
            return {"join_vs_gbak_server": round(seconds / gbak, 2),
                    "join_seconds_server": round(seconds, 1),
                    "gbak_seconds_server": round(gbak, 1),
                    "gbak_streamed_seconds_server": round(streamed, 1)}
        finally:
            if brest is not None:
                brest.stop(grace=1)
            siege.stop(grace=1)
            line.close()


def run_embedded(rows: int) -> dict:
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
    parser.add_argument("--only", choices=("embedded", "server"))
    args = parser.parse_args()
    print(json.dumps(run(args.rows, args.only), sort_keys=True))


if __name__ == "__main__":
    main()
