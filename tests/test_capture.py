"""Introspection, capture objects and capture triggers on real embedded Firebird databases."""

from __future__ import annotations

import pytest
from firebird.driver import Connection, Isolation, tpb

from siege_sync.node.db import guard
from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.db.schema import TableSelection, introspect
from siege_sync.node.journal import capture

APP_DDL = [
    'CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(40), '
    'CITY VARCHAR(30), BALANCE NUMERIC(18,2), DOUBLED COMPUTED BY (BALANCE * 2))',
    'CREATE TABLE "Order Line" ("Order" INTEGER NOT NULL, "Line" SMALLINT NOT NULL, '
    '"Label" VARCHAR(20), PRIMARY KEY ("Order", "Line"))',
    "CREATE TABLE NOKEY (X INTEGER)",
    "CREATE VIEW V_CUST AS SELECT ID, NAME FROM CUSTOMER",
    "CREATE GLOBAL TEMPORARY TABLE TMP (ID INTEGER NOT NULL PRIMARY KEY)",
    "CREATE TABLE HISTORY (ID INTEGER NOT NULL PRIMARY KEY, WHAT VARCHAR(40))",
    "CREATE SEQUENCE GEN_CUST",
    "CREATE SEQUENCE GEN_HIST",
    "CREATE TRIGGER CUST_BI FOR CUSTOMER ACTIVE BEFORE INSERT POSITION 0 AS BEGIN "
    "IF (NEW.ID IS NULL) THEN NEW.ID = GEN_ID(GEN_CUST, 1); END",
    # An application trigger keeping history: it must not fire again for applied changes.
    "CREATE TRIGGER CUST_HIST FOR CUSTOMER ACTIVE AFTER UPDATE POSITION 5 AS "
    "DECLARE S VARCHAR(10) = 'BEGIN'; /* BEGIN in a comment */ BEGIN "
    "INSERT INTO HISTORY (ID, WHAT) VALUES (NEXT VALUE FOR GEN_HIST, "
    "CASE WHEN NEW.NAME IS NULL THEN 'cleared' ELSE 'renamed ' || NEW.NAME END); END",
]


def _fetch(con: Connection, sql: str) -> list[tuple]:
    with con.transaction_manager() as tm:
        cur = tm.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        cur.close()
        tm.commit()
    return rows


def log_rows(con: Connection) -> list[tuple]:
    """Every captured change and capture failure, in log id order: (op, table no, user,
    flags)."""
    parts = [f"SELECT SYNC$ID, SYNC$OP, {no}, SYNC$USR, SYNC$FLAGS FROM SYNC$I{no}"
             for no in capture.image_tables(con)]
    parts.append("SELECT LOG_ID, OP, TBL_NO, USR, FLAGS FROM SYNC$LOG WHERE OP = 'E'")
    return [row[1:] for row in sorted(_fetch(con, " UNION ALL ".join(parts)))]


def image_rows(con: Connection, number: int) -> list[tuple]:
    """(id, change mask, data columns ...) of one image table."""
    return [(r[0], r[7], *r[8:]) for r in _fetch(con, f"SELECT * FROM SYNC$I{number} "
                                                      "ORDER BY SYNC$ID")]


def run(con: Connection, sql: str, params: tuple = (), isolation: bytes | None = None) -> None:
    tm = con.transaction_manager(default_tpb=isolation) if isolation else con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    cur.execute(sql, params)
    cur.close()
    tm.commit()
    tm.close()


def table_no(con: Connection, name: str) -> int:
    return {n: no for no, (n, _k) in capture.table_registry(con).items()}[name]


def test_introspection_selects_and_refuses(make_db):
    con = make_db(ddl=APP_DDL)
    schema = introspect(con)
    assert set(schema.tables) == {"CUSTOMER", "Order Line", "HISTORY"}
    assert [c.name for c in schema.tables["CUSTOMER"].columns] == ["ID", "NAME", "CITY",
                                                                    "BALANCE"]
    assert schema.tables["Order Line"].primary_key == ("Order", "Line")
    refused = {r.table: r.reason for r in schema.refused}
    assert "no primary key" in refused["NOKEY"] and "exclude" in refused["NOKEY"]
    assert "temporary" in refused["TMP"]
    assert schema.key_generators["CUSTOMER"] == ["GEN_CUST"]
    assert introspect(con, TableSelection(exclude=("HIST*",))).tables.keys() == {
        "CUSTOMER", "Order Line"}
    assert introspect(con, TableSelection(include=("CUSTOMER",))).tables.keys() == {"CUSTOMER"}
    capture.install(con)
    assert set(introspect(con).tables) == {"CUSTOMER", "Order Line", "HISTORY"}


def test_dialect1_numeric_key_stored_as_double(make_db):
    con = make_db("d1", dialect=1, ddl=[
        "CREATE TABLE ART (CODE NUMERIC(15,2) NOT NULL PRIMARY KEY, PRICE NUMERIC(15,2), "
        "CREATED DATE, LABEL VARCHAR(20))"])
    table = introspect(con).tables["ART"]
    assert table.column("CODE").type.field_type == 27 and table.column("CODE").type.scale == -2
    capture.install(con)
    run(con, "INSERT INTO ART (CODE, PRICE, CREATED, LABEL) VALUES (12.34, 0.1, 'NOW', 'x')")
    run(con, "UPDATE ART SET PRICE = 0.2 WHERE CODE = 12.34")
    assert [r[0] for r in log_rows(con)] == ["I", "U"]
    rows = image_rows(con, table_no(con, "ART"))
    assert rows[0][2] == 12.34 and rows[0][1] == "1111"
    assert rows[1][1] == "0100" and rows[1][2] == 12.34 and rows[1][3] == 0.2


def test_install_is_idempotent_and_upgrades(make_db):
    con = make_db(ddl=APP_DDL)
    first = capture.install(con)
    assert "SYNC$LOG" in first.created and "CUST_HIST" in first.guarded
    again = capture.install(con)
    assert again.created == [] and again.guarded == [] and again.upgraded == []
    run(con, "INSERT INTO CUSTOMER (ID, NAME) VALUES (1, 'old')")
    # A schema change: the image gains the column at its end; old entries keep their mask.
    con.execute_immediate("ALTER TABLE CUSTOMER ADD EMAIL VARCHAR(60)")
    con.commit()
    up = capture.install(con)
    assert any("CUSTOMER" in u for u in up.upgraded)
    run(con, "UPDATE CUSTOMER SET EMAIL = 'a@b.c' WHERE ID = 1")
    rows = image_rows(con, table_no(con, "CUSTOMER"))
    assert rows[0][1] == "1111" and rows[1][1] == "00001" and rows[1][-1] == "a@b.c"


def test_a_database_installed_before_a_column_of_the_nodes_tables_gets_it(make_db):
    """A node's own table that gained a column since (SYNC$CONFLICTS.CHANGED_US: when the
    losing write was made): install and every start of the node add it, once."""
    con = make_db(ddl=APP_DDL)
    capture.install(con)
    con.execute_immediate("ALTER TABLE SYNC$CONFLICTS DROP CHANGED_US")
    con.commit()
    assert capture.upgrade_core(con) == ["SYNC$CONFLICTS.CHANGED_US"]
    assert capture.upgrade_core(con) == []
    con.execute_immediate("ALTER TABLE SYNC$CONFLICTS DROP CHANGED_US")
    con.commit()
    assert "SYNC$CONFLICTS.CHANGED_US" in capture.install(con).created
    cur = con.cursor()
    cur.execute("SELECT CHANGED_US FROM SYNC$CONFLICTS")
    assert cur.fetchall() == []
    cur.close()


def test_capture_as_ordinary_user_in_both_isolations(make_db, tmp_path):
    con = make_db(ddl=APP_DDL + ["GRANT ALL ON CUSTOMER TO CLERK",
                                 "GRANT USAGE ON SEQUENCE GEN_CUST TO CLERK",
                                 "GRANT USAGE ON SEQUENCE GEN_HIST TO CLERK",
                                 "GRANT ALL ON HISTORY TO CLERK"])
    capture.install(con)
    con.close()
    # Embedded attachments take the user name without a password, and privileges apply.
    app = open_connection(DatabaseSpec(str(tmp_path / "site.fdb"), user="CLERK"))
    try:
        with pytest.raises(Exception, match="no permission"):
            run(app, "SELECT * FROM SYNC$LOG")
        for iso in (tpb(Isolation.SNAPSHOT), tpb(Isolation.READ_COMMITTED_RECORD_VERSION)):
            run(app, "INSERT INTO CUSTOMER (NAME, CITY) VALUES ('Ana', 'Lyon')", isolation=iso)
            run(app, "UPDATE CUSTOMER SET CITY = 'Nice' WHERE NAME = 'Ana'", isolation=iso)
            run(app, "DELETE FROM CUSTOMER WHERE NAME = 'Ana'", isolation=iso)
    finally:
        app.close()
    con = open_connection(DatabaseSpec(str(tmp_path / "site.fdb")))
    rows = log_rows(con)
    cust = table_no(con, "CUSTOMER")
    assert [(op, user) for op, no, user, _f in rows if no == cust] == [
        ("I", "CLERK"), ("U", "CLERK"), ("D", "CLERK")] * 2
    con.close()


def test_noop_update_is_not_logged_and_key_change_is_delete_insert(make_db):
    con = make_db(ddl=APP_DDL)
    capture.install(con, fire=["CUST_HIST"])
    cust = table_no(con, "CUSTOMER")
    run(con, "INSERT INTO CUSTOMER (ID, NAME, CITY, BALANCE) VALUES (1, 'Ana', 'Lyon', 1.5)")
    run(con, "UPDATE CUSTOMER SET NAME = NAME, CITY = 'Lyon', BALANCE = 1.50")  # no change
    run(con, "UPDATE CUSTOMER SET CITY = 'Nice'")
    run(con, "UPDATE CUSTOMER SET ID = 2")
    ops = [op for op, no, *_ in log_rows(con) if no == cust]
    assert ops == ["I", "U", "D", "I"]
    rows = image_rows(con, cust)
    # An update: the mask says what changed; the image holds every column's new value (for
    # a row its registers do not know, the publisher sends the unwritten ones as its prior).
    assert rows[1][1] == "0010" and rows[1][4] == "Nice" and rows[1][3] == "Ana"
    # A delete: the mask names the old key; the image is the whole old row.
    assert rows[2][1] == "1000" and rows[2][2:5] == (1, "Ana", "Nice")
    assert rows[3][1] == "1111" and rows[3][2:] == (2, "Ana", "Nice", rows[0][-1])


def test_guards_skip_applied_changes_and_uninstall_removes_exactly_ours(make_db):
    con = make_db(ddl=APP_DDL)

    def objects() -> dict[str, set]:
        out = {}
        for what, sql in (("rel", "SELECT RDB$RELATION_NAME FROM RDB$RELATIONS"),
                          ("trg", "SELECT RDB$TRIGGER_NAME || RDB$TRIGGER_SOURCE FROM "
                                  "RDB$TRIGGERS WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0"),
                          ("gen", "SELECT RDB$GENERATOR_NAME FROM RDB$GENERATORS")):
            with con.transaction_manager() as tm:
                cur = tm.cursor()
                cur.execute(sql)
                out[what] = {r[0].strip() for r in cur.fetchall()}
                cur.close()
                tm.commit()
        return out

    before = objects()
    capture.install(con)
    run(con, "INSERT INTO CUSTOMER (ID, NAME) VALUES (1, 'a')")
    run(con, "UPDATE CUSTOMER SET NAME = 'b'")
    assert len(image_rows(con, table_no(con, "HISTORY"))) == 1  # the trigger still fires

    # As the applier does: the guard makes the history trigger skip; capture flags the rows.
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    cur.execute(f"SELECT RDB$SET_CONTEXT('USER_TRANSACTION', '{guard.APPLY_CONTEXT}', 'x') "
                "FROM RDB$DATABASE")
    cur.fetchone()  # the function runs when the row is fetched
    cur.execute("UPDATE CUSTOMER SET NAME = 'c'")
    cur.close()
    tm.commit()
    tm.close()
    assert len(image_rows(con, table_no(con, "HISTORY"))) == 1
    assert log_rows(con)[-1][3] & capture.FLAG_DURING_APPLY

    with pytest.raises(capture.InstallError, match="not published"):
        capture.uninstall(con)
    capture.uninstall(con, force=True)
    assert objects() == before


@pytest.mark.parametrize(("source", "body_begin"), [
    ("AS BEGIN NEW.X = 1; END", "AS BEGIN"),
    ("AS\nDECLARE V INTEGER;\nBEGIN\n  V = CASE WHEN 1=1 THEN 2 END;\n  "
     "IF (V = 2) THEN BEGIN NEW.X = 'END'; END\nEND", "AS\nDECLARE V INTEGER;\nBEGIN"),
    ("AS\nDECLARE PROCEDURE P AS BEGIN END\n-- BEGIN here is a comment\nBEGIN NEW.\"BEGIN\" = 1;"
     " END", "AS\nDECLARE PROCEDURE P AS BEGIN END\n-- BEGIN here is a comment\nBEGIN"),
])
def test_guard_goes_after_the_body_begin_and_comes_out_exactly(source, body_begin):
    guarded = guard.add_guard(source)
    assert guarded.startswith(body_begin)
    assert guarded[len(body_begin):].lstrip().startswith(guard.GUARD)
    assert guard.add_guard(guarded) == guarded
    assert guard.remove_guard(guarded) == source


def test_an_update_between_minus_zero_and_zero_is_captured(make_db):
    """-0.0 equals 0.0 by value but not by its bits, which is what travels: a DOUBLE or
    FLOAT set from one to the other is a change (found by the chaos oracle, issue 19: the
    sites kept 0.0 and -0.0 for ever, nothing on record)."""
    con = make_db(ddl=["CREATE TABLE Z (ID INTEGER NOT NULL PRIMARY KEY, D DOUBLE PRECISION, "
                       "F FLOAT)"])
    capture.install(con)
    run(con, "INSERT INTO Z (ID, D, F) VALUES (1, ?, ?)", (-0.0, 0.0))
    run(con, "UPDATE Z SET D = ?", (0.0,))
    run(con, "UPDATE Z SET F = ?", (-0.0,))
    run(con, "UPDATE Z SET D = ?, F = ?", (0.0, -0.0))  # no change at all: not logged
    assert [op for op, *_ in log_rows(con)] == ["I", "U", "U"]
    masks = [row[1] for row in image_rows(con, table_no(con, "Z"))]
    assert masks[1:] == ["010", "001"]


def test_capture_failure_never_fails_the_application(make_db):
    con = make_db(ddl=APP_DDL)
    capture.install(con)
    # The vendor widens a column without going through siege-node: the image is too narrow.
    con.execute_immediate("ALTER TABLE CUSTOMER ALTER NAME TYPE VARCHAR(200)")
    con.commit()
    run(con, "INSERT INTO CUSTOMER (ID, NAME) VALUES (7, ?)", ("x" * 150,))
    ops = [op for op, *_ in log_rows(con)]
    assert ops[-1] == capture.OP_ERROR  # recorded, loudly; the customer's row is saved
    assert "capture failed" in _fetch(con, "SELECT DETAIL FROM SYNC$LOG WHERE OP = 'E'")[0][0]
    assert _fetch(con, "SELECT COUNT(*) FROM CUSTOMER WHERE ID = 7") == [(1,)]


def test_generator_range(make_db):
    from siege_sync.node.model.config import GeneratorRange

    con = make_db(ddl=APP_DDL)
    report = capture.install(con, generators=[GeneratorRange("GEN_CUST", 2_000_000, 2_999_999)])
    assert "moved" in report.generators[0]
    run(con, "INSERT INTO CUSTOMER (NAME) VALUES ('n')")
    with con.transaction_manager() as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID FROM CUSTOMER")
        assert cur.fetchone()[0] == 2_000_000
        cur.close()
        tm.commit()
    # Never moved backwards.
    report = capture.install(con, generators=[GeneratorRange("GEN_CUST", 1000)])
    assert "inside" in report.generators[0]
    with pytest.raises(capture.InstallError, match="does not exist"):
        capture.install(con, generators=[GeneratorRange("NOPE", 1)])


def test_a_generator_starts_past_the_site_s_keys_that_came_back_in_a_copy(make_db):
    """After a join or resync the database is the siège's copy: its generator is the
    siège's, but this site's own rows came back in it. The generator must start past them,
    not at the range start (the application's inserts failed on the primary key after a
    resync: found by the chaos run, issue 19)."""
    from siege_sync.node.model.config import GeneratorRange

    con = make_db(ddl=APP_DDL)
    for key in (2_000_000, 2_000_007, 3_500_000):  # this site's two, another site's one
        run(con, "INSERT INTO CUSTOMER (ID, NAME) VALUES (?, 'déjà là')", (key,))
    report = capture.install(con, generators=[GeneratorRange("GEN_CUST", 2_000_000,
                                                             2_999_999)])
    assert "past its keys in use (up to 2000007)" in report.generators[0], report.generators
    run(con, "INSERT INTO CUSTOMER (NAME) VALUES ('nouveau')")  # no primary-key clash
    with con.transaction_manager() as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID FROM CUSTOMER WHERE NAME = 'nouveau'")
        assert cur.fetchone()[0] == 2_000_008
        cur.close()
        tm.commit()


def test_a_long_state_value_is_kept_whole_and_replaced_whole(make_db):
    """Vectors of a large mesh outgrow one SYNC$STATE row (VARCHAR(4000)): the value is
    split in parts written in one transaction, and read back whole; a shorter value
    replaces it and leaves no part behind."""
    con = make_db()
    capture.install(con)
    long = "".join(chr(ord("a") + i % 26) for i in range(3 * capture.STATE_PART + 17))
    capture.set_long_state(con, "retention_snapshot", long)
    assert capture.get_long_state(con, "retention_snapshot") == long
    capture.set_long_state(con, "retention_snapshot", "short")
    assert capture.get_long_state(con, "retention_snapshot") == "short"
    assert [n for n in capture.state_names(con) if n.startswith("retention_snapshot")] == \
        ["retention_snapshot"]
    capture.set_long_state(con, "retention_snapshot", "parts:looks like a header")
    assert capture.get_long_state(con, "retention_snapshot") == "parts:looks like a header"
    assert capture.get_long_state(con, "absent") is None
