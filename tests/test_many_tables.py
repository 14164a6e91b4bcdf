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
