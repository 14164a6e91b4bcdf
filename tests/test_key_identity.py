"""A row's identity is the engine's equality of its key (DESIGN §3.1, issue 16 item 2).

Keys the engine calls equal — case and accents under a ``*_CI_AI`` or WIN_PTBR collation,
trailing blanks under PAD SPACE — are one row for the registers: inserted at two sites they
are an insert/insert conflict (one winner everywhere, the loser on record), and the winner's
key bytes end up at every site. Checked on real embedded Firebird with three sites, reading
the application's table through a CAST to OCTETS (no codec of ours involved); and the
normalization itself is compared with the engine's own ``=`` over generated keys.
"""

from __future__ import annotations

import random
import unicodedata

import pytest

from siege_sync.node.db.collation import identity_value
from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.db.schema import Collation, ColumnType, introspect
from siege_sync.node.journal import capture
from siege_sync.node.model import registers
from siege_sync.node.pipeline.apply import Applier
from siege_sync.proto import values_pb2
from tests.test_apply import exchange, run_sql

Value = values_pb2.Value
SITES = ("siege", "lyon", "nice")


def rows(con, sql: str) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        out = cur.fetchall()
        cur.close()
    return out


def conflicts_at(con) -> list[tuple]:
    return rows(con, "SELECT KIND FROM SYNC$CONFLICTS")


def three_sites(make_db, ddl: list[str]) -> tuple[dict, dict]:
    cons = {name: make_db(name, ddl=ddl) for name in SITES}
    for con in cons.values():
        capture.install(con)
    return cons, {name: Applier(con, name) for name, con in cons.items()}


def rounds(appliers: dict, cons: dict, n: int = 1) -> None:
    """Coordinator rounds: gather at the siège, then redistribute."""
    for _ in range(n):
        for site in SITES[1:]:
            exchange(appliers, cons, site, "siege")
        for site in SITES[1:]:
            exchange(appliers, cons, "siege", site)


def converge_on_one_row(make_db, ddl: list[str], insert: str, first: tuple, second: tuple,
                        read: str) -> list[tuple]:
    """lyon inserts ``first``, nice ``second`` (engine-equal keys in other bytes), then the
    mesh syncs. Returns the one row every site holds (as ``read`` shows it)."""
    cons, appliers = three_sites(make_db, ddl)
    run_sql(cons["lyon"], insert, first)
    appliers["lyon"].apply([])  # published first: the lower stamp
    run_sql(cons["nice"], insert, second)
    rounds(appliers, cons)
    held = {site: rows(con, read) for site, con in cons.items()}
    assert held["lyon"] == held["siege"] == held["nice"], held
    assert len(held["siege"]) == 1, held["siege"]
    kinds = [k.strip() if isinstance(k, str) else k for (k,) in conflicts_at(cons["siege"])]
    assert kinds, "the losing insert is on record at the relaying siège"
    moved = sum(exchange(appliers, cons, a, b) for a in SITES for b in SITES if a != b)
    assert moved == 0
    return held["siege"]


def test_helene_and_HELENE_inserted_at_two_sites_in_a_unicode_ci_ai_key_are_one_row(make_db):
    ddl = ["CREATE TABLE CLIENT (NOM VARCHAR(20) CHARACTER SET UTF8 NOT NULL PRIMARY KEY "
           "COLLATE UNICODE_CI_AI, VILLE VARCHAR(20) CHARACTER SET UTF8)"]
    row = converge_on_one_row(
        make_db, ddl, "INSERT INTO CLIENT (NOM, VILLE) VALUES (?, ?)",
        ("Hélène", "Lyon"), ("HELENE ", "Nice"),
        "SELECT CAST(NOM AS VARCHAR(80) CHARACTER SET OCTETS), VILLE FROM CLIENT")
    assert row == [(b"HELENE ", "Nice")]  # nice's insert, the later one, wins whole


def test_jose_and_JOSE_in_a_win1252_win_ptbr_key_are_one_row(make_db):
    ddl = ["CREATE TABLE CLIENT (CODE VARCHAR(12) CHARACTER SET WIN1252 NOT NULL PRIMARY KEY "
           "COLLATE WIN_PTBR, NOM VARCHAR(30) CHARACTER SET WIN1252)"]
    row = converge_on_one_row(
        make_db, ddl, "INSERT INTO CLIENT (CODE, NOM) VALUES (?, ?)",
        ("JOSÉ", "lyon"), ("josé  ", "nice"),
        "SELECT CAST(CODE AS VARCHAR(12) CHARACTER SET OCTETS), NOM FROM CLIENT")
    assert row == [("josé  ".encode("cp1252"), "nice")]


def test_trailing_blanks_in_a_plain_utf8_key_are_one_row(make_db):
    ddl = ["CREATE TABLE ARTICLE (REF VARCHAR(10) CHARACTER SET UTF8 NOT NULL PRIMARY KEY, "
           "PRIX INTEGER)"]
    row = converge_on_one_row(
        make_db, ddl, "INSERT INTO ARTICLE (REF, PRIX) VALUES (?, ?)",
        ("abc  ", 1), ("abc", 2),
        "SELECT CAST(REF AS VARCHAR(10) CHARACTER SET OCTETS), PRIX FROM ARTICLE")
    assert row == [(b"abc", 2)]


def test_the_site_holding_the_losing_bytes_rewrites_the_key_when_nothing_else_differs(
        make_db):
    """Only the key's bytes differ between the two inserts: the losing site still rewrites
    its key, and its order row keeps pointing at the client (the engine compares the
    reference by the collation too)."""
    ddl = ["CREATE TABLE CLIENT (NOM VARCHAR(20) CHARACTER SET UTF8 NOT NULL PRIMARY KEY "
           "COLLATE UNICODE_CI, VILLE VARCHAR(20))",
           "CREATE TABLE CMD (ID INTEGER NOT NULL PRIMARY KEY, CLIENT VARCHAR(20) CHARACTER "
           "SET UTF8 REFERENCES CLIENT COLLATE UNICODE_CI)"]
    cons, appliers = three_sites(make_db, ddl)
    run_sql(cons["nice"], "INSERT INTO CLIENT (NOM, VILLE) VALUES ('dupont', 'Paris')")
    run_sql(cons["nice"], "INSERT INTO CMD (ID, CLIENT) VALUES (1, 'dupont')")
    appliers["nice"].apply([])  # published first: the lower stamp, it loses
    run_sql(cons["lyon"], "INSERT INTO CLIENT (NOM, VILLE) VALUES ('DUPONT', 'Paris')")
    # lyon's insert reaches the siège first, then nice's.
    exchange(appliers, cons, "lyon", "siege")
    exchange(appliers, cons, "nice", "siege")
    rounds(appliers, cons)
    read = ("SELECT CAST(NOM AS VARCHAR(80) CHARACTER SET OCTETS), VILLE, CAST(c.CLIENT AS "
            "VARCHAR(80) CHARACTER SET OCTETS) FROM CLIENT LEFT JOIN CMD c ON c.CLIENT = NOM")
    held = {site: rows(con, read) for site, con in cons.items()}
    assert held == {site: [(b"DUPONT", "Paris", b"dupont")] for site in SITES}, held
    assert conflicts_at(cons["siege"])


def test_case_insensitive_key_changes_stay_one_row_after_the_conflict(make_db):
    """After the conflict, an update and a delete at the losing site reach the winner's
    row (found by identity, whatever bytes the event names)."""
    ddl = ["CREATE TABLE CLIENT (NOM VARCHAR(20) CHARACTER SET UTF8 NOT NULL PRIMARY KEY "
           "COLLATE UNICODE_CI_AI, VILLE VARCHAR(20))"]
    cons, appliers = three_sites(make_db, ddl)
    run_sql(cons["lyon"], "INSERT INTO CLIENT (NOM, VILLE) VALUES ('Ève', 'Lyon')")
    appliers["lyon"].apply([])
    run_sql(cons["nice"], "INSERT INTO CLIENT (NOM, VILLE) VALUES ('EVE', 'Nice')")
    rounds(appliers, cons)
    run_sql(cons["lyon"], "UPDATE CLIENT SET VILLE = 'Lyon 2' WHERE NOM = 'eve'")
    rounds(appliers, cons)
    read = "SELECT CAST(NOM AS VARCHAR(80) CHARACTER SET OCTETS), VILLE FROM CLIENT"
    assert {s: rows(c, read) for s, c in cons.items()} == {
        s: [(b"EVE", "Lyon 2")] for s in SITES}
    run_sql(cons["siege"], "DELETE FROM CLIENT WHERE NOM = 'ève'")
    rounds(appliers, cons)
    assert {s: rows(c, read) for s, c in cons.items()} == {s: [] for s in SITES}


# --- the normalization against the engine ----------------------------------------------------

def test_identity_is_unchanged_for_integers_and_binary_text_without_trailing_blanks():
    integer = ColumnType(8)
    text = ColumnType(37, length=80, char_length=20, charset="UTF8")
    key = [Value(integer=7), Value(text="Hélène")]
    assert registers.key_identity(key, [integer, text]) == registers.key_hash(key)
    assert registers.key_identity(key, None) == registers.key_hash(key)
    padded = [Value(integer=7), Value(text="Hélène  ")]
    assert registers.key_identity(padded, [integer, text]) == registers.key_hash(key)


def test_collations_are_read_and_the_default_one_keeps_the_fingerprint(make_db):
    con = make_db("s", ddl=[
        "CREATE DOMAIN D_CI AS VARCHAR(10) CHARACTER SET UTF8 COLLATE UNICODE_CI",
        "CREATE TABLE T (A VARCHAR(10) CHARACTER SET UTF8 NOT NULL PRIMARY KEY, "
        "B D_CI, C D_CI COLLATE UNICODE, D VARCHAR(5) CHARACTER SET WIN1252 COLLATE WIN_PTBR, "
        "E INTEGER)"])
    table = introspect(con).tables["T"]
    got = {c.name: c.type.collation for c in table.columns}
    assert got["A"] is None and got["E"] is None
    assert got["B"] == Collation("UNICODE_CI", True, True, False, "UNICODE")
    assert got["C"] is not None and got["C"].name == "UNICODE"
    assert not got["C"].case_insensitive
    assert got["D"] == Collation("WIN_PTBR", True, True, True)
    assert "COLL-VERSION" not in got["B"].attributes  # differs between ICU builds
    # What the fingerprint hashed before collations were read: unchanged for A and E.
    assert "collation" not in repr(table.column("A").type)


ALPHABET_UTF8 = ("aAbBcCeEéÉèÈêËëçÇiIïÎoOôÖøØuUüÛnNñÑsSßẞæÆœŒåÅıİyŸÿđĐłŁðÐħ"
                 "ǆǅǄﬁＡ①²·-'. 0\t\u00ad\u200b\u0301\u0327")
ALPHABET_WIN1252 = bytes(b for b in range(0x20, 0x100)).decode("cp1252", "replace").replace(
    "\ufffd", "")


def variants(rng: random.Random, base: str) -> list[str]:
    stripped = "".join(c for c in unicodedata.normalize("NFD", base)
                       if not unicodedata.combining(c))
    out = [base, base.upper(), base.lower(), base.casefold(), stripped, stripped.upper(),
           base + " " * rng.randint(1, 3), unicodedata.normalize("NFD", base),
           base.swapcase() + " "]
    return out


def generated(rng: random.Random, alphabet: str, count: int, fits) -> list[str]:
    found: dict[str, None] = {}
    while len(found) < count:
        base = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        if not any(c.isalnum() for c in base):
            continue  # keys of blanks and ignorables only: Firebird is not even transitive
        for s in variants(rng, base):
            if fits(s):
                found[s] = None
    return list(found)


@pytest.mark.parametrize("charset,collation", [
    ("UTF8", None), ("UTF8", "UNICODE"), ("UTF8", "UNICODE_CI"), ("UTF8", "UNICODE_CI_AI"),
    ("UTF8", "UCS_BASIC"), ("WIN1252", None), ("WIN1252", "WIN_PTBR"),
    ("WIN1252", "PXW_INTL"), ("NONE", None), ("OCTETS", None),
])
def test_normalized_equality_is_the_engines_equality(make_db, charset, collation):
    """Property: over many generated keys (case, accents, ß, ligatures, trailing blanks,
    ignorable characters), two keys have one identity iff the engine's ``=`` calls them
    equal in such a column."""
    rng = random.Random(f"{charset}{collation}")
    collate = f" COLLATE {collation}" if collation else ""
    con = make_db("p", ddl=[f"CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, "
                            f"K VARCHAR(16) CHARACTER SET {charset}{collate})"])
    ctype = introspect(con).tables["T"].column("K").type
    codec = "utf-8" if charset == "UTF8" else "cp1252"
    if charset == "UTF8":
        keys = [s.encode() for s in generated(rng, ALPHABET_UTF8, 300,
                                              lambda s: len(s) <= 16)]
    else:
        keys = [s.encode(codec) for s in generated(
            rng, ALPHABET_WIN1252, 300, lambda s: len(s) <= 16 and _encodes(s, codec))]
        # Bytes WIN1252 leaves undefined, and NUL (OCTETS pads with it, NONE does not).
        keys += [k[:1] + bytes([rng.choice(b"\x81\x8d\x8f\x90\x9d")]) + k[1:]
                 for k in keys[:60]]
        keys += [k + b"\0" for k in keys[:40]] + [k + b"\0\0" for k in keys[40:60]]
    keys = list(dict.fromkeys(k for k in keys if len(k) <= 16))
    with transaction(con) as tm:
        cur = tm.cursor()
        for i, k in enumerate(keys):
            cur.execute("INSERT INTO T (ID, K) VALUES (?, CAST(? AS VARCHAR(16) CHARACTER SET "
                        "OCTETS))", (i, k))
        cur.execute("SELECT a.ID, b.ID FROM T a JOIN T b ON a.K = b.K WHERE a.ID < b.ID")
        engine = set(cur.fetchall())
        cur.close()

    def ident(data: bytes) -> bytes:
        if charset in ("NONE", "OCTETS"):
            return identity_value(ctype, Value(octets=data)).SerializeToString()
        octets = identity_value(ctype, Value(octets=data)).SerializeToString()
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            return octets
        # However the value travels (text, or its stored bytes), one identity.
        assert identity_value(ctype, Value(text=text)).SerializeToString() == octets, data
        return octets

    ids = [ident(k) for k in keys]
    mine = {(a, b) for a in range(len(keys)) for b in range(a + 1, len(keys))
            if ids[a] == ids[b]}
    show = lambda pairs: sorted((keys[a], keys[b]) for a, b in pairs)[:20]  # noqa: E731
    assert not mine - engine, f"one identity, the engine tells apart: {show(mine - engine)}"
    assert not engine - mine, f"engine-equal, two identities: {show(engine - mine)}"
    assert len(engine) > 50 or collation in (None, "UCS_BASIC", "PXW_INTL")


def _encodes(s: str, codec: str) -> bool:
    try:
        s.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def test_an_install_before_collations_counted_moves_its_registers_to_the_identity(make_db):
    """Registers stored under the exact key's hash (a CHAR's padding, a case-insensitive
    key) move to the row's identity; keys whose identity did not change stay."""
    from siege_sync.node.db import values

    con = make_db("old", ddl=[
        "CREATE TABLE C (K CHAR(6) CHARACTER SET UTF8 NOT NULL PRIMARY KEY, V INTEGER)",
        "CREATE TABLE U (K VARCHAR(9) CHARACTER SET UTF8 NOT NULL PRIMARY KEY "
        "COLLATE UNICODE_CI_AI, V INTEGER)",
        "CREATE TABLE N (K INTEGER NOT NULL PRIMARY KEY, V INTEGER)"])
    capture.install(con)
    for sql in ("INSERT INTO C VALUES ('ab', 1)", "INSERT INTO U VALUES ('Éric', 1)",
                "INSERT INTO U VALUES ('zoe', 2)", "INSERT INTO N VALUES (5, 1)"):
        run_sql(con, sql)
    Applier(con, "old").apply([])  # published: registers under the identity
    schema = introspect(con)
    numbers = {name: no for no, (name, _k) in capture.table_registry(con).items()}

    def keys(name: str) -> list[list]:
        table = schema.tables[name]
        exprs = ", ".join(values.select_expr(c, 3) for c in table.key_columns)
        return [[values.encode(c.type, v) for c, v in zip(table.key_columns, row, strict=True)]
                for row in rows(con, f"SELECT {exprs} FROM {name}")]

    with transaction(con) as tm:  # as an install before collations counted stored them
        cur = tm.cursor()
        for name in ("C", "U", "N"):
            for key in keys(name):
                cur.execute("UPDATE SYNC$ROWS SET KEY_HASH = ? WHERE TBL_NO = ? AND "
                            "KEY_HASH = ?", (registers.key_hash(key), numbers[name],
                                             registers.key_identity(key, schema.tables[name])))
        cur.close()
    with transaction(con) as tm:
        cur = tm.cursor()
        moved = {name: registers.rekey(cur, numbers[name], schema.tables[name], 3)
                 for name in ("C", "U", "N")}
        cur.close()
    assert moved == {"C": 1, "U": 1, "N": 0}  # 'zoe' and 5 are their own identity
    for name in ("C", "U", "N"):
        for key in keys(name):
            ident = registers.key_identity(key, schema.tables[name]).hex()
            found = rows(con, f"SELECT COUNT(*) FROM SYNC$ROWS WHERE TBL_NO = {numbers[name]} "
                              f"AND KEY_HASH = x'{ident}'")
            assert found == [(1,)], (name, key)
