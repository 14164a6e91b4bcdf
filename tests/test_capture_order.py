"""An application trigger that updates the row it just inserted (issue 16 item 6, DESIGN
§3.1): its update is logged before the insert (the capture trigger runs last), yet the row
must arrive as the origin holds it. Two embedded sites; rows read from the application's
table.
"""

from __future__ import annotations

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import conflicts, exchange, run_sql

DDL = [
    "CREATE TABLE ORDERS (ID INTEGER NOT NULL PRIMARY KEY, CUSTOMER VARCHAR(30), "
    "REF VARCHAR(20), STATUS VARCHAR(10))",
    # The vendor numbers each order once it exists, and marks it new.
    "CREATE TRIGGER ORDERS_AI FOR ORDERS AFTER INSERT POSITION 0 AS BEGIN "
    "UPDATE ORDERS SET REF = 'ORD-' || NEW.ID, STATUS = 'new' WHERE ID = NEW.ID; END",
]


def orders(con) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, CUSTOMER, REF, STATUS FROM ORDERS ORDER BY ID")
        rows = cur.fetchall()
        cur.close()
    return rows


def test_a_row_an_after_insert_trigger_updates_arrives_as_its_origin_holds_it(make_db):
    cons = {name: make_db(name, ddl=DDL) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con)  # the trigger is guarded: it does not fire for applied rows
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    run_sql(cons["lyon"], "INSERT INTO ORDERS (ID, CUSTOMER) VALUES (7, 'Dupont')")
    with transaction(cons["lyon"]) as tm:  # and one re-inserted in one transaction
        cur = tm.cursor()
        cur.execute("DELETE FROM ORDERS WHERE ID = 7")
        cur.execute("INSERT INTO ORDERS (ID, CUSTOMER) VALUES (7, 'Durand')")
        cur.execute("INSERT INTO ORDERS (ID, CUSTOMER) VALUES (8, 'Martin')")
        cur.close()
    assert orders(cons["lyon"]) == [(7, "Durand", "ORD-7", "new"), (8, "Martin", "ORD-8", "new")]
    exchange(appliers, cons, "lyon", "siege")
    exchange(appliers, cons, "siege", "lyon")
    assert orders(cons["siege"]) == orders(cons["lyon"])
    assert conflicts(cons["siege"]) == conflicts(cons["lyon"]) == 0
