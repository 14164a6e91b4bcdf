"""Guards in application triggers on real Firebird, with real nodes: a guard a vendor's
``CREATE OR ALTER TRIGGER`` dropped is noticed by every hello and round (status, exchange,
round report, email) with what fired unguarded meanwhile, and ``siege-node install`` puts
it back; ``analyse --repair`` writes are guarded like applied changes, and still travel."""

from __future__ import annotations

import argparse
import datetime as dt

from siege_sync.node import cli
from siege_sync.node.db import guard
from siege_sync.node.db.database import transaction
from siege_sync.node.journal import capture
from tests.test_alerts import smtp  # noqa: F401 (a fixture: a real SMTP server)
from tests.test_analyse import _analyse
from tests.test_apply import run_sql
from tests.test_siege import ctl
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


# History rows keyed by a UUID, as vendors do: a history row written twice (once at the
# origin, once more where the change is applied unguarded) is two rows everywhere.
HISTORY_DDL = [
    "CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40))",
    "CREATE TABLE ITEM_HIST (ID CHAR(16) CHARACTER SET OCTETS NOT NULL PRIMARY KEY, "
    "ITEM_ID INTEGER, OLD_A VARCHAR(40))",
]
HISTORY_TRIGGER = """CREATE OR ALTER TRIGGER ITEM_HISTORY FOR ITEM ACTIVE AFTER UPDATE
POSITION 1 AS
BEGIN
  IF (NEW.A IS DISTINCT FROM OLD.A) THEN
    INSERT INTO ITEM_HIST (ID, ITEM_ID, OLD_A) VALUES (GEN_UUID(), OLD.ID, OLD.A);
END"""


def trigger_source(con, name: str) -> str:
    ((source,),) = rows(con, "SELECT RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS "
                             f"WHERE RDB$TRIGGER_NAME = '{name}'")
    return source


def test_a_guard_lost_to_a_vendor_upgrade_is_reported_and_install_restores_it(
        tmp_path, smtp, capsys):  # noqa: F811 (the fixture)
    """lyon's vendor upgrade re-creates its history trigger (CREATE OR ALTER): the guard is
    gone, and the siège's edit applied at lyon writes a second history row that travels
    everywhere. The round's report says which trigger lost its guard at which site and which
    tables its applies touched, an email goes out, both status views say it; `siege-node
    install` at lyon puts the guard back, says what happened meanwhile, and the next edit
    is written to the history once."""
    inbox, alerts = smtp
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False},
                     [*HISTORY_DDL, HISTORY_TRIGGER],
                     siege_settings={"alerts": {**alerts, "every_minutes": 0,
                                                "disk_free_mb": 0}})
    mesh.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
        'bundle = "bundles/ops"\n')
    lyon = mesh.cons["lyon"]
    try:
        run_sql(mesh.cons["siege"], "INSERT INTO ITEM (ID, A) VALUES (1, 'first')")
        first = ctl(mesh, "manual")
        assert first.returncode == 0 and "guard" not in first.stdout.lower(), first.stdout
        assert guard.is_guarded(trigger_source(lyon, "ITEM_HISTORY"))

        run_sql(lyon, HISTORY_TRIGGER)  # the vendor's upgrade script at lyon
        run_sql(mesh.cons["siege"], "UPDATE ITEM SET A = 'second' WHERE ID = 1")
        lost = ctl(mesh, "manual")
        # The guard is lost: lyon wrote a second history row for the siège's one edit, and
        # it travels (what the report must make visible; nice gets it by the next round, as
        # the round exchanges with lyon and nice at once).
        for site in ("siege", "lyon"):
            assert rows(mesh.cons[site], "SELECT COUNT(*) FROM ITEM_HIST") == [(2,)], site
        assert "guard LOST in trigger ITEM_HISTORY on ITEM" in lost.stdout, lost.stdout
        assert "ITEM_HIST 1 row(s)" in lost.stdout, lost.stdout
        assert "lyon: guard LOST" in lost.stdout and "nice: guard" not in lost.stdout
        subjects = [m["Subject"] for m in inbox.messages]
        assert any("lyon: application triggers lost their guard" in s for s in subjects), \
            subjects
        status = ctl(mesh, "status")
        assert status.returncode == 1 and "lyon: WARNING: guard LOST in trigger " \
            "ITEM_HISTORY" in status.stdout, status.stdout

        cfg = mesh.nodes["lyon"].cfg
        capsys.readouterr()
        assert cli.cmd_status(cfg, lyon, argparse.Namespace()) == 0
        assert "WARNING: guard LOST in trigger ITEM_HISTORY" in capsys.readouterr().out
        assert cli.cmd_install(cfg, lyon, argparse.Namespace()) == 0
        said = capsys.readouterr().out
        assert "guard RESTORED in trigger ITEM_HISTORY on ITEM" in said, said
        assert "ITEM_HIST 1 row(s)" in said, said
        assert guard.is_guarded(trigger_source(lyon, "ITEM_HISTORY"))

        run_sql(mesh.cons["siege"], "UPDATE ITEM SET A = 'third' WHERE ID = 1")
        restored = ctl(mesh, "manual")
        assert restored.returncode == 0 and "guard" not in restored.stdout.lower(), \
            restored.stdout
        for site, con in mesh.cons.items():
            assert rows(con, "SELECT COUNT(*) FROM ITEM_HIST") == [(3,)], site
            assert rows(con, "SELECT A FROM ITEM") == [("third",)], site
    finally:
        mesh.close()
