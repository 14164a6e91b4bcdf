from siege_sync.node.db.schema import introspect


def test_dialect_detected(make_db):
    con1 = make_db("d1", dialect=1, ddl=["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY)"])
    con3 = make_db("d3", dialect=3, ddl=["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY)"])
    assert con1.sql_dialect == 1 and con3.sql_dialect == 3
    assert list(introspect(con1).tables) == ["T"]
