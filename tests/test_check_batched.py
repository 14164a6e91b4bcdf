"""Rows of a table with a CHECK that one site wrote are applied in blocks, like any other
rows (issue 19: the chaos run's shop, every table of which has a CHECK, applied each event as
its own statement, ~5x slower than plain inserts). Only a row whose columns several sites
wrote goes alone (its CHECK refusal falls back to the whole row: test_check_whole_row.py).

1. One site's transaction of 40 invoices (WIN1252 labels, NUMERIC amounts) reaches the
   siège in a few statements, and the rows are the origin's.
2. One of them breaks a CHECK the siège alone has: refused whatever block it went in, said
   as a constraint that differs between sites, nothing of the transaction applied.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.db.rowwrite import RowWriter
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import all_events
from tests.test_check_whole_row import invoice

ROWS = 40


def _rows(con) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, TOTAL, PAID, CAST(LABEL AS VARCHAR(40) CHARACTER SET OCTETS) "
                    "FROM INVOICE ORDER BY ID")
        out = cur.fetchall()
        cur.close()
    return out


def _send_batch(make_db, monkeypatch, siege_extra: str = ""):
    cons = {"lyon": make_db("lyon", ddl=invoice()),
            "siege": make_db("siege", ddl=invoice(siege_extra))}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    with transaction(cons["lyon"]) as tm:
        cur = tm.cursor()
        for n in range(1, ROWS + 1):
            cur.execute("INSERT INTO INVOICE (ID, TOTAL, PAID, LABEL) VALUES (?, ?, ?, ?)",
                        (n, Decimal(n) + Decimal("0.50"), Decimal(n), f"Facture n°{n} réglée "))
        cur.close()
    appliers["lyon"].apply([])
    bodies = all_events(cons["lyon"])
    blocks = []
    execute = RowWriter._execute

    def counted(self, sql: str) -> None:  # the real execution, counted
        blocks.append(sql)
        execute(self, sql)

    monkeypatch.setattr(RowWriter, "_execute", counted)
    result = appliers["siege"].apply(bodies)
    return cons, result, blocks


def test_one_sites_rows_of_a_check_table_go_in_blocks(make_db, monkeypatch):
    cons, result, blocks = _send_batch(make_db, monkeypatch)
    assert not result.refused, result.refused
    assert result.applied_events == ROWS
    assert _rows(cons["siege"]) == _rows(cons["lyon"])
    assert _rows(cons["siege"])[0][3] == "Facture n°1 réglée ".encode("cp1252")
    # One row a statement before: 40 (and more).
    assert len(blocks) <= 4, len(blocks)


@pytest.mark.parametrize("breaking", [1, ROWS // 2, ROWS])
def test_a_batched_row_a_check_here_refuses_holds_the_transaction(make_db, monkeypatch,
                                                                  breaking: int):
    cons, result, _ = _send_batch(
        make_db, monkeypatch, f", CONSTRAINT CK_NOT_{breaking} CHECK (ID <> {breaking})")
    assert len(result.refused) == 1 and "lyon#" in result.refused[0], result.refused
    assert f"INVOICE ({breaking})" in result.refused[0], result.refused
    assert "differs between sites" in result.refused[0]
    assert _rows(cons["siege"]) == [], "nothing of it applied"
