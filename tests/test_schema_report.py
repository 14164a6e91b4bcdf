"""What the node says about a schema (issue 18, items 2, 4 and 5): foreign keys between
replicated tables and tables left out, database-level triggers, global temporary tables,
tables without a key; and a fingerprint that sees NOT NULL, defaults, CHECKs and foreign
keys' actions — without calling an older install's fingerprint a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from siege_sync.node.cli import main
from siege_sync.node.db import guard
from siege_sync.node.db.schema import (
    FINGERPRINT_VERSION,
    Schema,
    TableSelection,
    fingerprint_version,
    fingerprints_comparable,
    introspect,
    normalised_source,
)
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.apply import Applier
from siege_sync.node.pipeline.publish import Publisher
from tests.test_apply import all_events

BASE = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(40), "
    "RATE NUMERIC(9,2))",
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, CUSTOMER INTEGER "
    "REFERENCES CUSTOMER (ID), TOTAL NUMERIC(15,2))",
]
# Each differs from BASE in one rule only: the old fingerprint saw none of them.
VARIANTS = {
    "not null": [BASE[0].replace("NAME VARCHAR(40)", "NAME VARCHAR(40) NOT NULL"), BASE[1]],
    "default": [BASE[0].replace("RATE NUMERIC(9,2)", "RATE NUMERIC(9,2) DEFAULT 0"), BASE[1]],
    "check": [BASE[0], BASE[1].replace("TOTAL NUMERIC(15,2)",
                                       "TOTAL NUMERIC(15,2) CHECK (TOTAL >= 0)")],
    "on delete cascade": [BASE[0], BASE[1].replace("(ID)", "(ID) ON DELETE CASCADE")],
    "on update set null": [BASE[0], BASE[1].replace("(ID)", "(ID) ON UPDATE SET NULL")],
    "domain not null": ["CREATE DOMAIN D_NAME AS VARCHAR(40) NOT NULL",
                        BASE[0].replace("NAME VARCHAR(40)", "NAME D_NAME"), BASE[1]],
    "domain default": ["CREATE DOMAIN D_NAME AS VARCHAR(40) DEFAULT 'x'",
                       BASE[0].replace("NAME VARCHAR(40)", "NAME D_NAME"), BASE[1]],
}
# The same rules written otherwise: other layout and case, named or unnamed constraints,
# created in another order (the engine's INTEG_nn / CHECK_nn names differ), a domain
# without rules, NO ACTION spelt out (Firebird stores RESTRICT when it is not).
SAME = {
    "base": BASE,
    "base, written otherwise": [
        "CREATE DOMAIN D_PLAIN AS VARCHAR(40)",
        "create table CUSTOMER (id integer not null, name D_PLAIN, rate numeric(9,2), "
        "constraint PK_CUSTOMER primary key (id))",
        "CREATE TABLE INVOICE (ID INTEGER NOT NULL, CUSTOMER INTEGER, TOTAL NUMERIC(15,2), "
        "CONSTRAINT PK_INV PRIMARY KEY (ID), CONSTRAINT FK_CUST FOREIGN KEY (CUSTOMER) "
        "REFERENCES CUSTOMER (ID) ON DELETE NO ACTION ON UPDATE NO ACTION)"],
    "check": [BASE[0], BASE[1].replace("TOTAL NUMERIC(15,2)",
                                       "TOTAL NUMERIC(15,2) CHECK (TOTAL >= 0)")],
    "check, written otherwise": [
        "CREATE TABLE UNUSED (ID INTEGER NOT NULL PRIMARY KEY, CHECK (ID > 0))",  # shifts
        "DROP TABLE UNUSED",  # the engine's CHECK_nn and INTEG_nn numbering
        BASE[0], BASE[1].replace("TOTAL NUMERIC(15,2)", "TOTAL NUMERIC(15,2), "
                                 "CONSTRAINT POSITIVE CHECK (  total>=0 /* never negative */)")],
}


def fingerprints(make_db, schemas: dict[str, list[str]], prefix: str) -> dict[str, Schema]:
    out = {}
    for i, (name, ddl) in enumerate(schemas.items()):
        con = make_db(f"{prefix}{i}", ddl=ddl)
        out[name] = introspect(con)
        con.close()
    return out


def test_the_fingerprint_sees_not_null_defaults_checks_and_foreign_key_actions(make_db):
    base = fingerprints(make_db, {"base": BASE}, "b")["base"]
    variants = fingerprints(make_db, VARIANTS, "v")
    got = {name: s.fingerprint() for name, s in variants.items()}
    for name, fp in got.items():
        assert fp != base.fingerprint(), f"{name}: same fingerprint as the base schema"
    # A NOT NULL counts as the column's effective rule, on the column or on its domain.
    assert got.pop("domain not null") == got["not null"]
    assert len(set(got.values())) == len(got)  # the others differ from one another too
    # The older form saw none of these differences (what this item fixes).
    assert {s.fingerprint_v1() for s in variants.values()} == {base.fingerprint_v1()}
    assert all(fingerprint_version(fp) == FINGERPRINT_VERSION for fp in got.values())


def test_the_same_schema_written_otherwise_has_the_same_fingerprint(make_db):
    got = fingerprints(make_db, SAME, "s")
    assert got["base"].fingerprint() == got["base, written otherwise"].fingerprint()
    assert got["check"].fingerprint() == got["check, written otherwise"].fingerprint()
    assert got["check"].fingerprint() != got["base"].fingerprint()
    assert got["check"].tables["INVOICE"].checks == ("CHECK(TOTAL>=0)",)
    assert normalised_source("DEFAULT  'a  b'  ") == "DEFAULT'a  b'"  # literals kept
    assert normalised_source("default null") is None


def test_fingerprint_values_are_pinned(make_db):
    """Every site's recorded fingerprint is compared with ones computed later, by other node
    versions: a change of either form calls every site CHANGED, or all of them different.
    The older form's value is what the node before version 2 computed for this schema."""
    schema = introspect(make_db("pinned", ddl=ERP))
    assert schema.fingerprint_v1() == "87facc6389e3eda9"
    assert schema.fingerprint() == "v2-2bed17d8fac6773b"


def test_fingerprints_of_different_forms_are_not_compared():
    assert fingerprint_version("0123456789abcdef") == 1
    assert not fingerprints_comparable("0123456789abcdef", f"v{FINGERPRINT_VERSION}-0123")
    assert fingerprints_comparable("v2-aa", "v2-bb") and fingerprints_comparable("", "v2-aa")


def node_config(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'site = "lyon"\n[database]\ndsn = "{tmp_path / "site.fdb"}"\n{body}',
                    encoding="utf-8")
    return path


def test_status_compares_an_older_install_s_fingerprint_in_its_own_form(make_db, tmp_path,
                                                                         capsys):
    """A site installed by a node before this change recorded the old form: status must not
    call it CHANGED because the algorithm changed, and must still see a real change."""
    con = make_db("site", ddl=BASE)
    capture.install(con)
    capture.set_state(con, "schema_fingerprint", introspect(con).fingerprint_v1())
    cfg = node_config(tmp_path)
    assert main(["status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "CHANGED" not in out and "unchanged since install" in out, out
    con.execute_immediate("ALTER TABLE CUSTOMER ADD CITY VARCHAR(20)")
    con.commit()
    assert main(["status", "-c", str(cfg)]) == 0
    assert "CHANGED since install" in capsys.readouterr().out
    capture.install(con)  # records this version's form
    assert fingerprint_version(capture.get_state(con, "schema_fingerprint") or "") == 2
    assert main(["status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "CHANGED" not in out and "unchanged" not in out, out
    con.execute_immediate("ALTER TABLE CUSTOMER ALTER COLUMN RATE SET DEFAULT 1")
    con.commit()
    assert main(["status", "-c", str(cfg)]) == 0
    assert "CHANGED since install" in capsys.readouterr().out  # a default alone is seen


ERP = [
    "CREATE TABLE SHOP (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20))",
    "CREATE TABLE PRODUCT (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(30))",
    "CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, SHOP INTEGER REFERENCES SHOP (ID), "
    "PRODUCT INTEGER REFERENCES PRODUCT (ID))",
    "CREATE TABLE SHELF (ID INTEGER NOT NULL PRIMARY KEY, "
    "PRODUCT INTEGER REFERENCES PRODUCT (ID) ON DELETE CASCADE)",
    "CREATE TABLE SCRATCH (PRODUCT INTEGER REFERENCES PRODUCT (ID))",  # no key
    "CREATE GLOBAL TEMPORARY TABLE TMP_BASKET (ID INTEGER) ON COMMIT DELETE ROWS",
    "CREATE TABLE AUDIT_LOG (ID INTEGER NOT NULL PRIMARY KEY, WHAT VARCHAR(40))",
    "CREATE SEQUENCE GEN_AUDIT",
    "CREATE PROCEDURE LOG_LOGIN AS BEGIN "
    "INSERT INTO AUDIT_LOG (ID, WHAT) VALUES (NEXT VALUE FOR GEN_AUDIT, 'login'); END",
    # Conditions that never hold: the report reads what they can write, not what they did.
    "CREATE TRIGGER ON_LOGIN ACTIVE ON CONNECT AS BEGIN "
    "IF (RDB$GET_CONTEXT('USER_SESSION', 'NEVER') IS NOT NULL) THEN "
    "EXECUTE PROCEDURE LOG_LOGIN; END",
    "CREATE TRIGGER ON_COMMIT_AUDIT ACTIVE ON TRANSACTION COMMIT AS BEGIN "
    "IF (RDB$GET_CONTEXT('USER_SESSION', 'NEVER') IS NOT NULL) THEN "
    "UPDATE AUDIT_LOG SET WHAT = 'commit' WHERE ID = 0; END",
    "CREATE TRIGGER ON_START ACTIVE ON TRANSACTION START AS BEGIN END",
    "CREATE TRIGGER DDL_WATCH ACTIVE AFTER CREATE TABLE OR ALTER TRIGGER AS BEGIN END",
    "CREATE TRIGGER ANY_DDL INACTIVE BEFORE ANY DDL STATEMENT AS BEGIN END",
]


def test_introspection_finds_the_edge_and_the_database_triggers(make_db):
    con = make_db("erp", ddl=ERP)
    schema = introspect(con, TableSelection(exclude=("SHOP", "SHELF")))
    crossing = {(c.key.table, c.key.parent): c for c in schema.crossings}
    assert set(crossing) == {("SALE", "SHOP"), ("SHELF", "PRODUCT"), ("SCRATCH", "PRODUCT")}
    assert crossing[("SALE", "SHOP")].parent_left_out
    assert "held" in crossing[("SALE", "SHOP")].meaning()
    assert "no primary key" in crossing[("SCRATCH", "PRODUCT")].why
    assert crossing[("SHELF", "PRODUCT")].key.on_delete == "CASCADE"
    triggers = {t.name: t for t in schema.database_triggers}
    assert {n: t.event for n, t in triggers.items()} == {
        "ON_LOGIN": "ON CONNECT", "ON_COMMIT_AUDIT": "ON TRANSACTION COMMIT",
        "ON_START": "ON TRANSACTION START",
        "DDL_WATCH": "AFTER CREATE TABLE OR ALTER TRIGGER",
        "ANY_DDL": "BEFORE ANY DDL STATEMENT"}
    assert triggers["ON_LOGIN"].writes == ("AUDIT_LOG",)  # through its procedure
    assert triggers["ON_COMMIT_AUDIT"].writes == ("AUDIT_LOG",)
    assert triggers["ON_COMMIT_AUDIT"].guardable and not triggers["ON_LOGIN"].guardable
    assert [n for n, t in triggers.items() if t.needs_attention()] == [
        "ON_LOGIN", "ON_COMMIT_AUDIT"]
    assert not triggers["ON_COMMIT_AUDIT"].needs_attention(fires=True)
    guarded = guard.add_guard(triggers["ON_COMMIT_AUDIT"].source or "")
    con.execute_immediate(f"ALTER TRIGGER ON_COMMIT_AUDIT {guarded}")
    con.commit()
    again = {t.name: t for t in introspect(con).database_triggers}["ON_COMMIT_AUDIT"]
    assert not again.needs_attention() and again.effect().startswith("guarded")
    assert not introspect(con, TableSelection(exclude=("AUDIT_LOG",))).database_triggers[
        0].writes  # a table that is not replicated is nobody's business here
    refused = {r.table: r for r in schema.refused}
    assert refused["TMP_BASKET"].temporary and "never replicated" in refused["TMP_BASKET"].reason
    assert not refused["SCRATCH"].temporary
    assert 'exclude = ["SCRATCH"]' in refused["SCRATCH"].reason
    assert "ADD PRIMARY KEY" in refused["SCRATCH"].reason


def test_tables_and_install_say_it_all(make_db, tmp_path, capsys):
    make_db("site", ddl=ERP).close()
    cfg = node_config(tmp_path, '[tables]\nexclude = ["SHOP", "SHELF"]\n')
    assert main(["tables", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    edge = out.split("Foreign keys between replicated tables and tables that are not:")[1]
    assert "SALE (SHOP) REFERENCES SHOP (ID)" in edge
    assert "SHELF (PRODUCT) REFERENCES PRODUCT (ID) ON DELETE CASCADE" in edge
    assert "SCRATCH (PRODUCT) REFERENCES PRODUCT (ID)" in edge
    assert "does not exist" in edge and "add it to [tables]" in edge
    assert "Never replicated: global temporary tables" in out and "TMP_BASKET" in out
    assert "SCRATCH: no primary key" in out and "TMP_BASKET:" not in out
    dbt = out.split("Database triggers")[1]
    assert "ON_COMMIT_AUDIT  ON TRANSACTION COMMIT" in dbt
    assert "WARNING: ON_COMMIT_AUDIT: it writes replicated tables (AUDIT_LOG)" in dbt
    assert "SYNC$APPLY" in dbt and "never stops travelling" in dbt
    assert "WARNING: ON_LOGIN:" in dbt and "cannot be guarded" in dbt
    assert "ON_START: writes no replicated table" in dbt
    assert "DDL_WATCH: fires for the node's own DDL" in dbt
    assert "ANY_DDL: inactive" in dbt
    assert main(["install", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: foreign key" in out and "SALE (SHOP) REFERENCES SHOP (ID)" in out
    assert out.count("crosses the edge of what is replicated") == 3
    assert "NOT replicated: TMP_BASKET: global temporary table: never replicated" in out
    assert "WARNING: database trigger ON_COMMIT_AUDIT (ON TRANSACTION COMMIT)" in out
    assert "WARNING: database trigger ON_LOGIN (ON CONNECT)" in out
    assert "ON_START" not in out and "DDL_WATCH" not in out  # nothing to do about them


def test_a_commit_trigger_sees_the_apply_mark_so_a_guard_works(make_db):
    """Why `tables` says an ON TRANSACTION COMMIT trigger can be guarded like a table
    trigger: at the commit of a transaction the node applies, ``SYNC$APPLY`` is still set."""
    ddl = ["CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, TOTAL NUMERIC(9,2))",
           "CREATE TABLE SEEN (MARK VARCHAR(20))",
           # (a write at the commit of a read-only transaction, the node's publish, fails)
           "CREATE TRIGGER AT_COMMIT ON TRANSACTION COMMIT AS BEGIN "
           "IF (RDB$GET_CONTEXT('SYSTEM', 'READ_ONLY') = 'FALSE') THEN "
           "INSERT INTO SEEN (MARK) VALUES (RDB$GET_CONTEXT('USER_TRANSACTION', "
           f"'{guard.APPLY_CONTEXT}')); END"]
    cons = {name: make_db(name, ddl=ddl) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con, TableSelection(exclude=("SEEN",)))

    def marks(con) -> int:
        cur = con.cursor()
        cur.execute("SELECT COUNT(*) FROM SEEN WHERE MARK IS NOT NULL")
        found = cur.fetchone()[0]
        cur.close()
        con.commit()
        return found

    lyon, siege = cons["lyon"], cons["siege"]
    lyon.execute_immediate("INSERT INTO SALE (ID, TOTAL) VALUES (1, 9.5)")
    lyon.commit()
    assert Publisher(lyon, "lyon").publish().events == 1
    assert marks(siege) == 0
    assert Applier(siege, "siege").apply(all_events(lyon)).applied_events == 1
    assert marks(siege) == 1  # the applied transaction's commit fired it, marked
    cur = siege.cursor()
    cur.execute("SELECT RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = "
                "'AT_COMMIT'")
    source = cur.fetchone()[0]
    cur.close()
    siege.commit()
    siege.execute_immediate(f"ALTER TRIGGER AT_COMMIT {guard.add_guard(source)}")
    siege.commit()
    lyon.execute_immediate("INSERT INTO SALE (ID, TOTAL) VALUES (2, 1.25)")
    lyon.commit()
    assert Publisher(lyon, "lyon").publish().events == 1
    assert Applier(siege, "siege").apply(all_events(lyon)).applied_events == 1
    assert marks(siege) == 1  # guarded: the second apply's commit skipped it


@pytest.mark.parametrize("rule", ["", " ON DELETE CASCADE"])
def test_a_delete_meeting_rows_of_a_table_left_out_is_kept_as_the_report_says(make_db, rule):
    """What `tables` says of a replicated parent whose child table is left out: a delete
    from another site meeting local child rows keeps the parent here, whatever the rule."""
    ddl = ["CREATE TABLE PRODUCT (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20))",
           "CREATE TABLE SHELF (ID INTEGER NOT NULL PRIMARY KEY, "
           f"PRODUCT INTEGER REFERENCES PRODUCT (ID){rule})",
           "INSERT INTO PRODUCT (ID, NAME) VALUES (1, 'Crème brûlée')"]
    cons = {name: make_db(name, ddl=ddl) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con, TableSelection(exclude=("SHELF",)))
    crossing = introspect(cons["siege"], TableSelection(exclude=("SHELF",))).crossings[0]
    assert "is kept here" in crossing.meaning()
    cons["siege"].execute_immediate("INSERT INTO SHELF (ID, PRODUCT) VALUES (7, 1)")
    cons["siege"].commit()
    cons["lyon"].execute_immediate("DELETE FROM PRODUCT WHERE ID = 1")
    cons["lyon"].commit()
    assert Publisher(cons["lyon"], "lyon").publish().events == 1
    result = Applier(cons["siege"], "siege").apply(all_events(cons["lyon"]))
    assert not result.refused, result.refused
    cur = cons["siege"].cursor()
    cur.execute("SELECT P.NAME, S.ID FROM PRODUCT P LEFT JOIN SHELF S ON S.PRODUCT = P.ID")
    assert cur.fetchall() == [("Crème brûlée", 7)]
    cur.close()


def test_install_guards_a_commit_trigger_that_writes_replicated_tables(make_db):
    """An ON TRANSACTION COMMIT trigger writing replicated tables sees the node's mark at the
    commit of an applied transaction (test above): install guards it like a table trigger,
    and uninstall takes the guard out; ON CONNECT cannot see the mark and is left alone."""
    con = make_db("erp", ddl=ERP)
    assert "ON_COMMIT_AUDIT" in capture.install(con).guarded
    found = {t.name: t for t in introspect(con).database_triggers}
    assert guard.is_guarded(found["ON_COMMIT_AUDIT"].source or "")
    assert not guard.is_guarded(found["ON_LOGIN"].source or "")
    assert "guard in ON_COMMIT_AUDIT" in capture.uninstall(con)
    found = {t.name: t for t in introspect(con).database_triggers}
    assert not guard.is_guarded(found["ON_COMMIT_AUDIT"].source or "")
