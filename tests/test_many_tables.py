"""Schemas of real ERPs have hundreds of tables (issue 18, first part): publishing reads every
image table's pending transactions in UNIONs of grouped SELECTs, and Firebird takes at most
255 contexts in one statement (each grouped SELECT takes two). With 140 replicated tables one
UNION failed with "Too many Contexts" and the site published nothing, ever."""

from __future__ import annotations

from siege_sync.node import capture
from siege_sync.node.publish import Publisher

TABLES = 140


def test_a_site_with_more_tables_than_one_statement_takes_publishes_them_all(make_db):
    con = make_db("erp", ddl=[f"CREATE TABLE T{i} (ID INTEGER NOT NULL PRIMARY KEY, "
                              "V VARCHAR(10))" for i in range(TABLES)])
    capture.install(con)
    for i in range(TABLES):
        con.execute_immediate(f"INSERT INTO T{i} (ID, V) VALUES ({i}, 'row')")
    con.commit()
    result = Publisher(con, "erp").publish()
    assert result.events == TABLES
    assert capture.pending_entries(con) == 0


def test_a_foreign_key_to_a_table_left_out_publishes_and_applies(make_db):
    """A replicated table referencing one that `[tables] exclude` leaves out (each site keeps
    its own rows there): publish crashed with a KeyError traceback and published nothing."""
    from siege_sync.node.apply import Applier
    from siege_sync.node.schema import TableSelection
    from tests.test_apply import all_events

    ddl = ["CREATE TABLE SHOP_PARAMS (ID INTEGER NOT NULL PRIMARY KEY)",
           "CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, "
           "PARAMS INTEGER REFERENCES SHOP_PARAMS (ID))",
           "INSERT INTO SHOP_PARAMS (ID) VALUES (1)"]
    cons = {name: make_db(name, ddl=ddl) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con, TableSelection(exclude=("SHOP_PARAMS",)))
    cons["lyon"].execute_immediate("INSERT INTO SALE (ID, PARAMS) VALUES (10, 1)")
    cons["lyon"].commit()
    assert Publisher(cons["lyon"], "lyon").publish().events == 1
    result = Applier(cons["siege"], "siege").apply(all_events(cons["lyon"]))
    assert result.applied_events == 1 and not result.refused, result
    cur = cons["siege"].cursor()
    cur.execute("SELECT ID, PARAMS FROM SALE")
    assert cur.fetchall() == [(10, 1)]
    cur.close()
