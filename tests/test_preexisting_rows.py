"""Rows that predate install (issue 16 item 5, DESIGN §3.1): a shop's database holds years of
invoices before ``install``. A delete or update of such a row carries the values its origin
held, so that when DESIGN §3.5 brings the row back (another site added a line to it) it comes
back whole and equal at every site — never with NULLs, never stopping a site's stream on a
NOT NULL column. Three embedded sites; rows compared by an independent read of the tables.
"""

from __future__ import annotations

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import conflicts, exchange, run_sql

SITES = ("siege", "lyon", "nice")
DDL = [
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, "
    "CUSTOMER VARCHAR(40) CHARACTER SET UTF8 NOT NULL, TOTAL NUMERIC(12,2) NOT NULL, "
    "ISSUED DATE, NOTE VARCHAR(60) CHARACTER SET WIN1252, PAID BOOLEAN)",
    "CREATE TABLE INVOICE_LINE (ID INTEGER NOT NULL PRIMARY KEY, INVOICE_ID INTEGER NOT NULL "
    "REFERENCES INVOICE (ID), AMOUNT NUMERIC(12,2))",
    # Years of invoices before install, the same at every site (kept in step until now).
    "INSERT INTO INVOICE VALUES (1, 'Boulangerie Hélène', 1234.56, DATE '2019-03-14', "
    "'réglé par chèque', TRUE)",
    "INSERT INTO INVOICE VALUES (2, 'Café de la Gare', 99.90, DATE '2020-11-02', NULL, FALSE)",
]


def invoices(con) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, CUSTOMER, TOTAL, ISSUED, CAST(NOTE AS VARCHAR(60) CHARACTER SET "
                    "OCTETS), PAID FROM INVOICE ORDER BY ID")
        rows = cur.fetchall()
        cur.execute("SELECT ID, INVOICE_ID, AMOUNT FROM INVOICE_LINE ORDER BY ID")
        rows += cur.fetchall()
        cur.close()
    return rows


def adopted_mesh(make_db) -> tuple[dict, dict, list[tuple]]:
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    before = invoices(cons["siege"])
    return cons, {name: Applier(con, name) for name, con in cons.items()}, before


def settle(appliers: dict, cons: dict) -> None:
    """Rounds through the siège until quiet (exchange() fails on any refused stream)."""
    for _ in range(2):
        for site in SITES[1:]:
            exchange(appliers, cons, site, "siege")
        for site in SITES[1:]:
            exchange(appliers, cons, "siege", site)
    moved = sum(exchange(appliers, cons, a, b) for a in SITES for b in SITES if a != b)
    assert moved == 0, "not quiet"


def test_an_old_invoice_cancelled_while_a_shop_adds_a_line_comes_back_whole(make_db):
    cons, appliers, before = adopted_mesh(make_db)
    run_sql(cons["siege"], "DELETE FROM INVOICE WHERE ID = 1")  # head office cancels it
    run_sql(cons["lyon"], "INSERT INTO INVOICE_LINE VALUES (10, 1, 15.00)")  # lyon adds a line
    # nice hears of the delete first: it deletes the row, then must restore it from what
    # the delete carried (the row is no longer in its database).
    exchange(appliers, cons, "siege", "nice")
    assert [r[0] for r in invoices(cons["nice"])] == [2]
    exchange(appliers, cons, "lyon", "nice")
    settle(appliers, cons)
    expected = before[:2] + [(10, 1, before[0][2].__class__("15.00"))]
    for site in SITES:
        assert invoices(cons[site]) == expected, site
    # The delete lost to the line (kept by reference), on record at every site that saw it.
    assert conflicts(cons["siege"]) >= 1 and conflicts(cons["nice"]) >= 1


def test_an_old_invoice_edited_cancelled_and_given_a_line_concurrently_converges_whole(
        make_db):
    cons, appliers, before = adopted_mesh(make_db)
    run_sql(cons["lyon"], "UPDATE INVOICE SET NOTE = x'8172E967' WHERE ID = 2")  # WIN1252
    run_sql(cons["siege"], "DELETE FROM INVOICE WHERE ID = 2")
    run_sql(cons["nice"], "INSERT INTO INVOICE_LINE VALUES (20, 2, 9.90)")
    exchange(appliers, cons, "siege", "nice")
    exchange(appliers, cons, "nice", "lyon")
    exchange(appliers, cons, "siege", "lyon")
    settle(appliers, cons)
    rows = {site: invoices(cons[site]) for site in SITES}
    assert rows["siege"] == rows["lyon"] == rows["nice"]
    restored = [r for r in rows["siege"] if r[0] == 2 and len(r) == 6]
    # Whole: the customer, total and date it always had, and lyon's edit of the note.
    assert restored == [(2, "Café de la Gare", before[1][2], before[1][3], b"\x81r\xe9g",
                         False)]
