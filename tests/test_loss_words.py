"""A write lost to a later write of its own site (issue 17, item 7): the sequence that explains
it, and a record that says it in words an operator can follow.

Seen on Firebird's employee sample under a three-site random workload (``PROJ_DEPT_BUDGET …
siege/1#15 lost to siege/1#337``) and reproduced there (seed 2 of a workload of budget and
head-count edits): the siège writes a budget; lyon, not knowing it, writes the same budget
later (a higher stamp) and wins at the siège; the siège's user, seeing lyon's value, writes a
new one — which replaces lyon's knowingly, not the siège's first write, still a losing head.
The head standing now is the siège's own later write, so the record named it as the winner:
true by the registers, but it hides lyon's write, the one that beat the siège's. The record
must say "lyon/1#2 (concurrent), which siege/1#3 later overwrote", at every site.

The same happens to a whole life (an insert that lost to a concurrent insert, whose row the
losing site later deleted and inserted again), and — a false record, not only unclear
words — to an update whose own site later deleted the row while another value stood: the
delete named the value it saw, so the update was also put on record as one "the delete had
not seen" (its own site's!), a second record of a loss already on record as a column loss.
Rows and records are read with plain SELECTs.
"""

from __future__ import annotations

import re

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.model.clock import SkewedClock, SystemClock
from siege_sync.node.pipeline.apply import Applier
from siege_sync.node.pipeline.publish import Publisher
from tests.test_apply import exchange, run_sql

# Firebird's employee sample's PROJ_DEPT_BUDGET, without its references to other tables.
DDL = [
    "CREATE TABLE PROJ_DEPT_BUDGET (FISCAL_YEAR INTEGER NOT NULL CHECK (FISCAL_YEAR >= 1993), "
    "PROJ_ID CHAR(5) NOT NULL, DEPT_NO CHAR(3) NOT NULL, QUART_HEAD_CNT INTEGER [4], "
    "PROJECTED_BUDGET DECIMAL(12,2), PRIMARY KEY (FISCAL_YEAR, PROJ_ID, DEPT_NO))",
]
SITES = ("siege", "lyon", "nice")
KEY = "FISCAL_YEAR = 1994 AND PROJ_ID = 'HWRII' AND DEPT_NO = '670'"


def sites(make_db) -> tuple[dict, dict]:
    """Three sites; lyon's clock runs five seconds ahead, so that its write made after the
    siège's has the higher stamp whatever the machine's load (writes milliseconds apart at
    two sites are ordered by clock markers measured to a few milliseconds)."""
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    ahead = Publisher(cons["lyon"], "lyon", clock=SkewedClock(SystemClock(), 5_000_000))
    return cons, {name: Applier(con, name, ahead if name == "lyon" else None)
                  for name, con in cons.items()}


def everywhere(appliers: dict, cons: dict) -> None:
    for _ in range(2):
        for site in SITES[1:]:
            exchange(appliers, cons, site, "siege")
        for site in SITES[1:]:
            exchange(appliers, cons, "siege", site)


def on_record(con) -> list[tuple]:
    """SYNC$CONFLICTS as stored: kind, column, loser, winner."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT TRIM(KIND), TRIM(COL), TRIM(LOSER), TRIM(WINNER) "
                    "FROM SYNC$CONFLICTS ORDER BY 1, 2, 3")
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    return rows


def budgets(con) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT FISCAL_YEAR, PROJ_ID, DEPT_NO, PROJECTED_BUDGET "
                    "FROM PROJ_DEPT_BUDGET ORDER BY 1, 2, 3")
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    return rows


def test_a_write_that_lost_then_saw_its_own_site_overwrite_the_winner_says_so(make_db):
    cons, appliers = sites(make_db)
    run_sql(cons["siege"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                        "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 400000)")  # siege#1
    everywhere(appliers, cons)
    run_sql(cons["siege"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 410000 WHERE {KEY}")
    run_sql(cons["lyon"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 520000 WHERE {KEY}")
    exchange(appliers, cons, "lyon", "siege")  # lyon#1 beats siege#2 at the siège
    assert budgets(cons["siege"])[0][3] == 520000
    # The siège's user sees lyon's 520000 and writes over it: siege#3 names lyon#1.
    run_sql(cons["siege"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 530000 WHERE {KEY}")
    everywhere(appliers, cons)

    for site, con in cons.items():
        assert budgets(con) == [(1994, "HWRII", "670", 530000)], site
        # On record: the siège's first write, and the head standing now is its own later one.
        assert on_record(con) == [("column", "PROJECTED_BUDGET", "siege/1#2", "siege/1#3")], site
        (found,) = conflicts.listing(con)
        assert found.winner == "siege/1#3"  # the record's refs are unchanged
        assert found.lost_to == "lyon/1#1 (concurrent), which siege/1#3 later overwrote", site
        assert found.sentence == ("siege/1#2 (PROJECTED_BUDGET) lost to lyon/1#1 (concurrent), "
                                  "which siege/1#3 later overwrote")
    # Once retention purged the events, the words are plainer, and still true.
    run_sql(cons["nice"], "DELETE FROM SYNC$EVENTS")
    (found,) = conflicts.listing(cons["nice"])
    assert found.lost_to == ("siege/1#3, a later write of the same site that replaced another "
                             "site's value shown there, not this one (that value beat this "
                             "write; its events are purged here)")


def test_a_life_lost_to_an_insert_its_own_site_later_replaced_says_so(make_db):
    cons, appliers = sites(make_db)
    run_sql(cons["siege"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                        "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 400000)")  # siege#1
    run_sql(cons["lyon"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                       "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 700000)")  # lyon#1
    exchange(appliers, cons, "lyon", "siege")  # lyon's life beats the siège's
    assert budgets(cons["siege"])[0][3] == 700000
    # The siège deletes lyon's row and inserts its own again: siege#3 follows lyon's life.
    run_sql(cons["siege"], f"DELETE FROM PROJ_DEPT_BUDGET WHERE {KEY}")
    run_sql(cons["siege"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                        "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 450000)")
    everywhere(appliers, cons)

    for site, con in cons.items():
        assert budgets(con) == [(1994, "HWRII", "670", 450000)], site
        assert on_record(con) == [("generation", None, "siege/1#1", "siege/1#3")], site
        (found,) = conflicts.listing(con)
        assert found.lost_to == ("lyon/1#1, a concurrent insert of the same key; that row was "
                                 "later deleted and inserted again by siege/1#3"), site


def test_an_update_lost_before_its_own_site_deleted_the_row_is_on_record_once(make_db):
    cons, appliers = sites(make_db)
    run_sql(cons["siege"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                        "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 400000)")  # siege#1
    everywhere(appliers, cons)
    run_sql(cons["siege"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 410000 WHERE {KEY}")
    run_sql(cons["lyon"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 520000 WHERE {KEY}")
    exchange(appliers, cons, "lyon", "siege")  # lyon#1 beats siege#2 at the siège
    # The siège's user, seeing lyon's value, deletes the row (siege#3 names lyon#1): it had
    # siege#2 too, its own write, which had already lost to lyon#1.
    run_sql(cons["siege"], f"DELETE FROM PROJ_DEPT_BUDGET WHERE {KEY}")
    everywhere(appliers, cons)

    for site, con in cons.items():
        assert budgets(con) == [], site
        # siege#2 lost once, to lyon#1; the siège's own delete saw it: no second record
        # claiming "a delete of the row that had not seen this update".
        assert on_record(con) == [("column", "PROJECTED_BUDGET", "siege/1#2", "lyon/1#1")], site
        (found,) = conflicts.listing(con)
        assert found.lost_to == "lyon/1#1 (concurrent)", site


def test_the_operators_listing_says_what_the_loser_lost_to(make_db, tmp_path, capsys):
    from siege_sync.node.cli import main

    cons, appliers = sites(make_db)
    run_sql(cons["siege"], "INSERT INTO PROJ_DEPT_BUDGET (FISCAL_YEAR, PROJ_ID, DEPT_NO, "
                           "PROJECTED_BUDGET) VALUES (1994, 'HWRII', '670', 400000)")
    exchange(appliers, cons, "siege", "lyon")
    run_sql(cons["siege"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 410000 WHERE {KEY}")
    run_sql(cons["lyon"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 520000 WHERE {KEY}")
    exchange(appliers, cons, "lyon", "siege")
    run_sql(cons["siege"], f"UPDATE PROJ_DEPT_BUDGET SET PROJECTED_BUDGET = 530000 WHERE {KEY}")
    appliers["siege"].apply([])
    node = tmp_path / "siege.toml"
    node.write_text(f'site = "siege"\n[database]\ndsn = "{tmp_path / "siege.fdb"}"\n')
    assert main(["conflicts", "-c", str(node)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "PROJ_DEPT_BUDGET" in x]
    # who wrote the value set aside, when (the "changed" column), what it lost to
    assert re.search(r"siege/1#2  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  lyon/1#1 \(concurrent\), "
                     r"which siege/1#3 later overwrote", line), line
