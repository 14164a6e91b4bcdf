"""The chaos run's shop and oracle (issue 19 items 3 and 4) on real databases, no nodes.

1. Three embedded sites hold the shop's rows before install, run the shop's application and
   are merged by the node's own applier until quiet, with a concurrent pair on a customer's
   name whose winner the journal's times make certain: the oracle finds nothing. Then each
   defect it exists to find is made behind the merge's back, one at a time, and must be
   found as what it is: a row lost, a row diverged, a loser off the record, a history row
   duplicated, the wrong winner.
2. The shop's application runs as an ordinary user (embedded: authorized as that user),
   capture installed: ~50 transactions (and a held one) without a capture failure, all journaled,
   and the oracle agrees with the one site's tables.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db.database import DatabaseSpec, open_connection, transaction
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.pipeline.apply import Applier
from siege_sync.proto import values_pb2
from tests.test_apply import exchange
from tools.chaos import oracle, shop

SITES = ("siege", "lyon", "nice")


def _converge(appliers: dict, cons: dict) -> None:
    """Rounds (the siège gathers, then redistributes) until two in a row move nothing: a
    rolled-back transaction's hole in the log is closed by a later publish than the one
    that met it."""
    quiet = 0
    for _ in range(10):
        moved = sum(exchange(appliers, cons, s, "siege") for s in SITES[1:])
        moved += sum(exchange(appliers, cons, "siege", s) for s in SITES[1:])
        quiet = quiet + 1 if not moved else 0
        if quiet == 2:
            return
    raise AssertionError("the sites did not go quiet")


def _journaled_update(journal: shop.Journal, site: str, con, key: int, column: str,
                      value: bytes) -> None:
    """An application's update of a customer's WIN1252 text column, journaled as the shop
    journals (the value it replaced read by RETURNING OLD)."""
    began = time.time()
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"UPDATE CUSTOMER SET {column} = CAST(? AS VARCHAR(60) CHARACTER SET "
                    f"OCTETS) WHERE ID = ? RETURNING CAST(OLD.{column} AS VARCHAR(60) "
                    "CHARACTER SET OCTETS)", (value, key))
        (old,) = cur.fetchone()
        cur.close()
    journal.record([shop.Write(site, "CUSTOMER", key, shop.UPDATE, {column: value},
                               {column: old}, began, time.time(), 0.0, journal.next_tx())])


def _sql(con, sql: str, params: tuple = ()) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(sql, params)
        cur.close()


def test_the_oracle_finds_nothing_in_a_real_merge_and_each_defect_made_behind_its_back(
        make_db, tmp_path: Path):
    journal = shop.Journal()
    cons, appliers, apps = {}, {}, {}
    for n, site in enumerate(SITES):
        cons[site] = make_db(site, ddl=shop.SCHEMA)
        shop.before_install(cons[site], site, random.Random(n), journal)
        capture.install(cons[site], generators=shop.generator_ranges(n))
        appliers[site] = Applier(cons[site], site)
        path = str(tmp_path / f"{site}.fdb")
        apps[site] = shop.Shop(site, lambda p=path: open_connection(DatabaseSpec(p)),
                               random.Random(f"app-{site}"), journal, lambda: 0.0,
                               large_blobs=False)
    rng = random.Random(19)
    failures = []
    for _ in range(36):
        site = rng.choice(SITES)
        if rng.random() < 0.7:
            failures += apps[site].transaction().failures
        else:
            other = "siege" if site != "siege" else rng.choice(SITES[1:])
            exchange(appliers, cons, *rng.choice([(site, other), (other, site)]))
    _converge(appliers, cons)
    # A concurrent pair: nice renames customer 5 well after lyon did, before lyon's arrives.
    _journaled_update(journal, "lyon", cons["lyon"], 5, "NAME", b"Lyon \x81\x8d ")
    time.sleep(0.6)  # beyond the oracle's margin: nice's stamp is certainly the higher
    _journaled_update(journal, "nice", cons["nice"], 5, "NAME", b"Nice \xe9t\xe9")
    # A contact only lyon ever writes.
    with transaction(cons["lyon"]) as tm:
        cur = tm.cursor()
        began = time.time()
        cur.execute("INSERT INTO CONTACT (CUSTOMER_ID, NAME, PHONE, MAIN) VALUES (7, "
                    "x'4ac9', x'2b3333', TRUE) RETURNING ID")
        (contact,) = cur.fetchone()
        cur.close()
    journal.record([shop.Write("lyon", "CONTACT", contact, shop.INSERT,
                               {"ID": contact, "CUSTOMER_ID": 7, "NAME": b"J\xc9",
                                "PHONE": b"+33", "MAIN": True}, {}, began, time.time(), 0.0,
                               journal.next_tx())])
    _converge(appliers, cons)
    for app in apps.values():
        app.close()
    assert not failures

    def findings() -> oracle.Findings:
        path = {s: str(tmp_path / f"{s}.fdb") for s in SITES}

        def losers(site: str, table: str) -> list:
            con = open_connection(DatabaseSpec(path[site]))
            try:
                return conflicts.listing(con, table)
            finally:
                con.close()

        return oracle.check(journal, lambda s: open_connection(DatabaseSpec(path[s])),
                            list(SITES), losers)

    clean = findings()
    assert clean.total == 0, "\n".join(clean.problems[:25])
    assert clean.checked["rows"] > 50 and clean.checked["history markers"] > 3
    assert any(c.column == "NAME" for c in conflicts.listing(cons["siege"], "CUSTOMER"))

    def after(kind: str, where: str) -> None:
        found = findings()
        assert getattr(found, kind) >= 1, (kind, found.problems[:10])
        assert any(p.startswith(kind) and where in p for p in found.problems), found.problems

    # Each defect, made at every site (so that only the one meant shows), one at a time.
    for con in cons.values():
        _sql(con, "DELETE FROM CONTACT WHERE ID = ?", (contact,))
    after("lost", f"CONTACT {contact}")
    _sql(cons["nice"], "UPDATE CUSTOMER SET CITY = 'Nantes' WHERE ID = 7")
    after("diverged", "CUSTOMER 7")
    _sql(cons["nice"], "UPDATE CUSTOMER SET CITY = (SELECT CITY FROM CUSTOMER WHERE ID = 8) "
                       "WHERE ID = 7")  # no longer a row the sites disagree on...
    # lyon's name on record, but another value of it: its own loss is off the record.
    other = values_pb2.Value(octets=b"Lyon autre").SerializeToString()
    for con in cons.values():
        _sql(con, "UPDATE SYNC$CONFLICTS SET VAL = ? WHERE COL = 'NAME' AND LOSER STARTING "
                  "WITH 'lyon/'", (other,))
    after("unrecorded", "CUSTOMER 5.NAME")
    for con in cons.values():
        _sql(con, "INSERT INTO HISTORY (ID, INVOICE_ID, OP, AMOUNT, MARKER, STAMPED) "
                  "SELECT FIRST 1 ID + 1, INVOICE_ID, OP, AMOUNT, MARKER, STAMPED FROM HISTORY "
                  "ORDER BY ID DESC")
    after("duplicated", "HISTORY marker")
    for con in cons.values():
        _sql(con, "UPDATE CUSTOMER SET NAME = x'4c796f6e20818d20' WHERE ID = 5")
    after("wrong_winner", "CUSTOMER 5.NAME")


def test_the_shop_runs_as_an_ordinary_user_and_journals_what_it_commits(make_db,
                                                                      tmp_path: Path):
    """Embedded, the engine still authorizes the user it is given: the application user
    holds only the grants an application has (``shop.grants`` and ``SCHEMA``'s sequence
    grants), never the sync's objects."""
    con = make_db("shop", ddl=shop.SCHEMA)
    journal = shop.Journal()
    shop.before_install(con, "lyon", random.Random(1), journal)
    capture.install(con, generators=shop.generator_ranges(1))
    for grant in shop.grants("SHOP_APP"):
        _sql(con, grant)
    con.close()
    before = len(journal)
    path = str(tmp_path / "shop.fdb")
    app = shop.Shop("lyon", lambda: open_connection(DatabaseSpec(path, user="SHOP_APP")),
                    random.Random(7), journal, lambda: 0.0)
    outcomes = []
    try:
        for n in range(50):
            if n == 10:
                app.hold()
            outcomes.append(app.transaction())
            if n == 30:
                outcomes.append(app.release(commit=True))
    finally:
        app.close()
    assert [f for o in outcomes for f in o.failures] == []
    committed = [o for o in outcomes if o.committed]
    assert len(committed) >= 35
    assert len(journal) - before >= sum(o.events for o in committed) > 50
    assert {w.table for w in journal.writes()} >= {"CUSTOMER", "INVOICE", "INVOICE_LINE"}

    def losers(_site: str, table: str) -> list:
        c = open_connection(DatabaseSpec(path))
        try:
            return conflicts.listing(c, table)
        finally:
            c.close()

    found = oracle.check(journal, lambda _s: open_connection(DatabaseSpec(path)), ["lyon"],
                         losers)
    assert found.total == 0, "\n".join(found.problems[:25])
    # Not SYSDBA: the sync's own tables are not the application's to read.
    denied = open_connection(DatabaseSpec(path, user="SHOP_APP"))
    try:
        with pytest.raises(DatabaseError, match="no permission"):
            _sql(denied, "SELECT COUNT(*) FROM SYNC$CONFLICTS")
    finally:
        denied.close()


def test_a_record_names_its_loser_site_whoever_wrote_it():
    """The merge names an event, a resync and an analyse their own way: each names its site
    (the oracle read a resync's records as nobody's: chaos seed 5 called the writes a resync
    put on record lost)."""
    assert [oracle.loser_site(x) for x in (
        "lyon/1#5", "lyon#117 (not synced before the resync)", "lyon (drifted)")] == \
        ["lyon"] * 3


def test_a_hidden_row_and_a_moved_reference_are_on_record_for_every_writer():
    """Chaos seed 4: a customer hidden by a UNIQUE clash had been edited by three sites,
    and an invoice's reference to it, written by an update at another site than the one
    that inserted the invoice, was re-pointed to the winner. Both records are the row's (the
    loser they name is the row's insert), so they name every site's writes there — and a
    column loss still names only its own site's."""
    clash = oracle._Record("lyon", None, "unique-clash")
    assert clash.names("nice", "NAME", b"x") and clash.names("siege", None, b"x")
    moved = oracle._Record("lyon", "CUSTOMER_ID", "reparented")
    assert moved.names("nice", "CUSTOMER_ID", 5) and not moved.names("nice", "TOTAL", 5)
    column = oracle._Record("lyon", "NAME", "column", b"x")
    assert column.names("lyon", "NAME", b"x") and not column.names("nice", "NAME", b"x")


def test_a_value_saved_again_through_a_whole_row_fall_back_is_on_record_under_the_saver():
    """Chaos seeds 313 and 321: the siège wrote a customer's city; lyon showed it through a
    CHECK's whole-row fall-back and its user edited another column, so lyon's node wrote the
    city again as lyon's write, which lost later: on record as lyon's loss of that value. It
    counts for the siège's write of that value in a CHECK table, never in another table, nor
    for another value."""
    records = {oracle._Record("lyon", "CITY", "column", b"\xc5\x81\xc3\xb3d\xc5\xba-ec0024")}
    assert oracle.resaved("CUSTOMER", records, "CITY", b"\xc5\x81\xc3\xb3d\xc5\xba-ec0024")
    assert not oracle.resaved("CUSTOMER", records, "CITY", b"Z\xc3\xbcrich")
    assert not oracle.resaved("CUSTOMER", records, "NAME", b"\xc5\x81\xc3\xb3d\xc5\xba-ec0024")
    assert "INVOICE" not in shop.CHECK_SPANS
    assert not oracle.resaved("INVOICE", records, "CITY", b"\xc5\x81\xc3\xb3d\xc5\xba-ec0024")

