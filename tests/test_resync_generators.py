"""A resynced shop numbers its next invoice after its last one (``operations/sequences.py``;
chaos seed 322): the siège's copy held the siège's generator values, so lyon's invoice
numbers were handed out again and its own ``UNIQUE (SITE, NUM)`` refused its next invoices.
Real parts: embedded Firebird, nodes on mTLS loopback, the services API's backup and
restore."""

from __future__ import annotations

from pathlib import Path

from siege_sync.node.db.database import DatabaseSpec, open_connection
from tests.test_apply import run_sql
from tests.test_kept_delete import _rows
from tools.localmesh import LocalMesh

DDL = ["CREATE SEQUENCE G_NUM",
       "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, "
       "SITE VARCHAR(20) CHARACTER SET UTF8 NOT NULL, NUM INTEGER NOT NULL, "
       "CLIENT VARCHAR(40) CHARACTER SET WIN1252, TOTAL NUMERIC(15, 2), "
       "CONSTRAINT INVOICE_NUMBER UNIQUE (SITE, NUM))"]


def test_a_resynced_shop_numbers_its_next_invoice_after_its_last(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False}, DDL)
    try:
        for n, client in enumerate(("Zoé", "Héloïse  ", "Müller & Söhne"), start=1):
            run_sql(mesh.cons["lyon"], "INSERT INTO INVOICE VALUES (?, 'lyon', NEXT VALUE FOR "
                    "G_NUM, ?, ?)", (2_000_000 + n, client, n * 10.5))
        run_sql(mesh.cons["siege"], "INSERT INTO INVOICE VALUES (1, 'siege', NEXT VALUE FOR "
                "G_NUM, 'Ana Lúcia', 7.25)")
        reply = mesh.exchange("siege", "lyon")
        assert not reply.problems, reply.problems

        lyon_cfg = mesh.nodes["lyon"].cfg
        mesh.nodes["lyon"].stop(grace=1)
        mesh.cons["lyon"].close()
        report = mesh.join(lyon_cfg, resync=True)
        assert report.outcome == "resynced", report
        assert "G_NUM 1 -> 3" in report.note, report.note

        lyon = open_connection(DatabaseSpec(str(lyon_cfg.database.dsn)))
        mesh.cons["lyon"] = lyon
        run_sql(lyon, "INSERT INTO INVOICE VALUES (2000004, 'lyon', NEXT VALUE FOR G_NUM, "
                "'Çava', 1.00)")
        assert _rows(lyon, "SELECT SITE, NUM FROM INVOICE ORDER BY SITE, NUM") == [
            ("lyon", 1), ("lyon", 2), ("lyon", 3), ("lyon", 4), ("siege", 1)]
        reply = mesh.exchange("siege", "lyon")
        assert not reply.problems, reply.problems
        assert _rows(mesh.cons["siege"], "SELECT ID, NUM FROM INVOICE WHERE SITE = 'lyon' "
                     "ORDER BY NUM") == [(2000001, 1), (2000002, 2), (2000003, 3), (2000004, 4)]
    finally:
        mesh.close()
