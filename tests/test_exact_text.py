"""Exact means bytes (DESIGN §3.1, issue 16 items 1 and 3): text is captured, carried, written
and digested as the bytes the column stores — never through its collation, never through a
UTF-8 transliteration. Two embedded sites; every check reads the application's own table
through a CAST to OCTETS, independently of the node's codec.
"""

from __future__ import annotations

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import exchange, run_sql

DDL = [
    "CREATE TABLE CLIENT (CODE VARCHAR(12) CHARACTER SET UTF8 NOT NULL PRIMARY KEY "
    "COLLATE UNICODE_CI_AI, NOM VARCHAR(30) CHARACTER SET UTF8 COLLATE UNICODE_CI_AI, "
    "VILLE CHAR(8) CHARACTER SET WIN1252 COLLATE WIN_PTBR, "
    "LIBELLE VARCHAR(20) CHARACTER SET WIN1252, REF VARCHAR(10) CHARACTER SET NONE, "
    "NOTE BLOB SUB_TYPE TEXT CHARACTER SET UTF8 COLLATE UNICODE_CI)",
]
COLUMNS = {  # column -> its bytes as stored (OCTETS of the column's own length)
    "CODE": "VARCHAR(48)", "NOM": "VARCHAR(120)", "VILLE": "CHAR(8)",
    "LIBELLE": "VARCHAR(20)", "REF": "VARCHAR(10)",
}


def stored(con) -> list[tuple]:
    """Every row's stored bytes, read by the engine itself (no codec of ours involved)."""
    exprs = ", ".join(f"CAST({c} AS {t} CHARACTER SET OCTETS)" for c, t in COLUMNS.items())
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT {exprs}, CAST(SUBSTRING(NOTE FROM 1 FOR 200) AS VARCHAR(800) "
                    "CHARACTER SET OCTETS) FROM CLIENT ORDER BY 1")
        rows = cur.fetchall()
        cur.close()
    return rows


def captured(con) -> int:
    number = {name: no for no, (name, _k) in capture.table_registry(con).items()}["CLIENT"]
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT COUNT(*) FROM SYNC$I{number}")
        n = cur.fetchone()[0]
        cur.close()
    return n


def two_sites(make_db) -> tuple[dict, dict]:
    cons = {name: make_db(name, ddl=DDL) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con)
    return cons, {name: Applier(con, name) for name, con in cons.items()}


def test_case_accent_and_trailing_blank_fixes_are_captured_and_reach_every_site(make_db):
    cons, appliers = two_sites(make_db)
    run_sql(cons["siege"], "INSERT INTO CLIENT VALUES ('dup01', 'Hélène Dupont', 'Lyon', "
                           "'abc', 'r1', 'Crème brûlée')")
    exchange(appliers, cons, "siege", "lyon")
    assert stored(cons["lyon"]) == stored(cons["siege"])
    # Each of these the collation (or PAD SPACE) calls equal: the old code captured none.
    fixes = ["UPDATE CLIENT SET NOM = 'helene dupont'", "UPDATE CLIENT SET LIBELLE = 'abc  '",
             "UPDATE CLIENT SET VILLE = 'LYON'", "UPDATE CLIENT SET NOTE = 'CRÈME BRÛLÉE'",
             "UPDATE CLIENT SET REF = 'r1 '"]
    for sql in fixes:
        before = captured(cons["siege"])
        run_sql(cons["siege"], sql)
        assert captured(cons["siege"]) == before + 1, f"not captured: {sql}"
    # A save that changes no byte is still not captured (applications re-save whole rows).
    before = captured(cons["siege"])
    run_sql(cons["siege"], "UPDATE CLIENT SET NOM = NOM, LIBELLE = LIBELLE, VILLE = VILLE, "
                           "NOTE = NOTE, REF = REF, CODE = CODE")
    assert captured(cons["siege"]) == before
    exchange(appliers, cons, "siege", "lyon")
    rows = stored(cons["lyon"])
    assert rows == stored(cons["siege"])
    assert rows == [(b"dup01", b"helene dupont", b"LYON    ", b"abc  ", b"r1 ",
                     "CRÈME BRÛLÉE".encode())]


def test_a_key_changed_only_in_case_is_a_new_key_at_every_site(make_db):
    cons, appliers = two_sites(make_db)
    run_sql(cons["siege"], "INSERT INTO CLIENT (CODE, NOM) VALUES ('abc', 'x')")
    exchange(appliers, cons, "siege", "lyon")
    run_sql(cons["siege"], "UPDATE CLIENT SET CODE = 'ABC'")  # engine-equal, other bytes
    exchange(appliers, cons, "siege", "lyon")
    assert [r[:2] for r in stored(cons["lyon"])] == [(b"ABC", b"x")]
    assert stored(cons["lyon"]) == stored(cons["siege"])


def test_win1252_bytes_the_charset_leaves_undefined_travel_exactly_and_analyse_sees_them(
        make_db):
    cons, appliers = two_sites(make_db)
    # 0x81 0x8D 0x8F 0x90 0x9D are undefined in WIN1252 (a UTF-8 read turns each into NUL);
    # 0xE9 is é, 0x80 the euro sign.
    run_sql(cons["siege"], "INSERT INTO CLIENT (CODE, VILLE, LIBELLE) VALUES ('w1', "
                           "x'818D8F909D', x'4380E9818D8F909D4E')")
    exchange(appliers, cons, "siege", "lyon")
    assert stored(cons["lyon"]) == stored(cons["siege"])
    assert stored(cons["lyon"])[0][2:4] == (b"\x81\x8d\x8f\x90\x9d   ",
                                            b"C\x80\xe9\x81\x8d\x8f\x90\x9dN")
    # An edit of one undefined byte into another is a change, carried exactly.
    run_sql(cons["siege"], "UPDATE CLIENT SET LIBELLE = x'4380E98D818F909D4E'")
    exchange(appliers, cons, "siege", "lyon")
    assert stored(cons["lyon"])[0][3] == b"C\x80\xe9\x8d\x81\x8f\x90\x9dN"

    # analyse digests the bytes as stored: a drift hidden from a UTF-8 read is found.
    table = introspect(cons["siege"]).tables["CLIENT"]
    assert table_digest(cons["lyon"], table) == table_digest(cons["siege"], table)
    with transaction(cons["lyon"]) as tm:  # behind the sync's back: the row drifts
        cur = tm.cursor()
        cur.execute("SELECT RDB$SET_CONTEXT('USER_TRANSACTION', 'SYNC$APPLY', '1') "
                    "FROM RDB$DATABASE")
        cur.fetchall()
        cur.execute("UPDATE CLIENT SET LIBELLE = x'4380E9818D8F909D4E'")
        cur.close()
    assert table_digest(cons["lyon"], table) != table_digest(cons["siege"], table)


def test_single_byte_text_keys_find_their_row_through_the_collation(make_db):
    ddl = ["CREATE TABLE VILLE (NOM VARCHAR(20) CHARACTER SET WIN1252 NOT NULL PRIMARY KEY "
           "COLLATE WIN_PTBR, CP VARCHAR(5))"]
    cons = {name: make_db(name, ddl=ddl) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    run_sql(cons["siege"], "INSERT INTO VILLE VALUES (x'4F726CE9616E73', '45000')")  # Orléans
    exchange(appliers, cons, "siege", "lyon")
    run_sql(cons["siege"], "UPDATE VILLE SET CP = '45100'")
    run_sql(cons["siege"], "INSERT INTO VILLE VALUES (x'4E8D6D6573', '30000')")  # N\x8dmes
    exchange(appliers, cons, "siege", "lyon")
    run_sql(cons["siege"], "DELETE FROM VILLE WHERE CP = '30000'")
    exchange(appliers, cons, "siege", "lyon")
    with transaction(cons["lyon"], READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT CAST(NOM AS VARCHAR(20) CHARACTER SET OCTETS), CP FROM VILLE")
        rows = cur.fetchall()
        cur.close()
    assert rows == [(b"Orl\xe9ans", "45100")]
