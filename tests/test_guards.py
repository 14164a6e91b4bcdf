"""Guards in application triggers on real Firebird, with real nodes: a guard a vendor's
``CREATE OR ALTER TRIGGER`` dropped is noticed by every hello and round (status, exchange,
round report, email) with what fired unguarded meanwhile, and ``siege-node install`` puts
it back; ``analyse --repair`` writes are guarded like applied changes, and still travel."""

from __future__ import annotations

import datetime as dt

from siege_sync.node import capture
from siege_sync.node.database import transaction
from tests.test_analyse import _analyse
from tests.test_apply import run_sql
from tools.localmesh import LocalMesh, behind_the_triggers_back

# A vendor's table with the two kinds of trigger the guards are for: one stamping the row
# with this site's time, one keeping a history.
VENDOR_DDL = [
    "CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), UPDATED_AT TIMESTAMP)",
    "CREATE TABLE ITEM_HIST (ID INTEGER NOT NULL PRIMARY KEY, ITEM_ID INTEGER, "
    "OLD_A VARCHAR(40))",
    "CREATE SEQUENCE HIST_SEQ",
    """CREATE TRIGGER ITEM_STAMP FOR ITEM ACTIVE BEFORE UPDATE POSITION 0 AS
    BEGIN
      NEW.UPDATED_AT = CAST('NOW' AS TIMESTAMP);
    END""",
    """CREATE TRIGGER ITEM_HISTORY FOR ITEM ACTIVE AFTER UPDATE POSITION 1 AS
    BEGIN
      IF (NEW.A IS DISTINCT FROM OLD.A) THEN
        INSERT INTO ITEM_HIST (ID, ITEM_ID, OLD_A) VALUES (NEXT VALUE FOR HIST_SEQ, OLD.ID,
                                                           OLD.A);
    END""",
]
LONG_AGO = dt.datetime(2020, 1, 1, 8, 0)


def rows(con, sql: str) -> list[tuple]:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        found = cur.fetchall()
        cur.close()
    return found


def test_analyse_repair_does_not_fire_the_vendors_triggers_and_still_travels(tmp_path):
    """Three sites hold row 1 as the legacy tool left it; at lyon and nice it was edited
    behind the triggers' back (the vendor's triggers stamped it and kept a history, as they
    do). Repairs preferring the siège must write the siège's row exactly — not stamped with
    each site's own time, no history row — and still be captured as lyon's and nice's
    changes, which the exchanges carry."""
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False}, VENDOR_DDL)
    try:
        for con in mesh.cons.values():
            with behind_the_triggers_back(con):
                run_sql(con, "INSERT INTO ITEM (ID, A, UPDATED_AT) VALUES (1, 'right', ?)",
                        (LONG_AGO,))
        for site in ("lyon", "nice"):
            with behind_the_triggers_back(mesh.cons[site]):
                run_sql(mesh.cons[site], f"UPDATE ITEM SET A = 'drifted at {site}'")
                run_sql(mesh.cons[site], "DELETE FROM ITEM_HIST")
        report = _analyse(mesh, tables=["ITEM"], repair=True, prefer="siege")
        assert report.outcome == "repaired", report
        assert sorted(a.repaired for a in report.analysis) == [1, 1], report
        for site in ("lyon", "nice"):
            # Captured as this site's own change, waiting for the next exchange.
            assert capture.pending_entries(mesh.cons[site]) >= 1, site
        for _ in range(2):
            for site in ("lyon", "nice"):
                mesh.exchange("siege", site)
        for site, con in mesh.cons.items():
            assert rows(con, "SELECT ID, A, UPDATED_AT FROM ITEM") == \
                [(1, "right", LONG_AGO)], site
            assert rows(con, "SELECT COUNT(*) FROM ITEM_HIST") == [(0,)], site
            assert capture.pending_entries(con) == 0, site
        # The repairs travelled: the siège applied an event of each repaired site.
        siege_applied = rows(mesh.cons["siege"], "SELECT ORIGIN, APPLIED FROM SYNC$VECTOR")
        assert {o.strip() for o, n in siege_applied if n >= 1} >= {"lyon", "nice"}, \
            siege_applied
    finally:
        mesh.close()
