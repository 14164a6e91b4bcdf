"""``siege-node upgrade``: a vendor script that adds, drops and widens columns and adds a
table — which Firebird refuses while capture triggers use the columns — runs through the
node, nothing captured is lost, capture works on the new schema, a replaced application
trigger is guarded again; a failing script leaves capture installed and says so; other
connections make it refuse before anything changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.publish import Publisher
from tests.test_apply import all_events, run_sql

DDL = [
    "CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10), OLD_COL INTEGER)",
    "CREATE TABLE STAMPED (ID INTEGER NOT NULL PRIMARY KEY, STAMP TIMESTAMP)",
    "CREATE TRIGGER STAMPED_BI FOR STAMPED BEFORE INSERT AS BEGIN "
    "NEW.STAMP = CURRENT_TIMESTAMP; END",
]
SCRIPT = """
ALTER TABLE T ADD NEW_COL INTEGER;
ALTER TABLE T DROP OLD_COL;
ALTER TABLE T ALTER A TYPE VARCHAR(40);
CREATE TABLE U (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(10));
SET TERM ^ ;
CREATE OR ALTER TRIGGER STAMPED_BI FOR STAMPED BEFORE INSERT AS BEGIN
  NEW.STAMP = CAST('NOW' AS TIMESTAMP);
END^
SET TERM ; ^
COMMIT;
"""


@pytest.fixture
def site(make_db, tmp_path):
    con = make_db(ddl=DDL)
    capture.install(con)
    run_sql(con, "INSERT INTO T (ID, A, OLD_COL) VALUES (1, 'before', 7)")  # pending
    con.close()
    (tmp_path / "script.sql").write_text(SCRIPT)
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'site = "lyon"\n[database]\ndsn = "{tmp_path / "site.fdb"}"\n')
    return tmp_path


def node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siege_sync.node.cli", *args],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def isql(script: Path, dsn: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["isql-fb", "-q", "-bail", "-i", str(script), str(dsn)],
                          capture_output=True, text=True, env={**os.environ, "ISC_USER": "SYSDBA"},
                          timeout=120)


def test_the_vendor_script_fails_on_capture_triggers_without_the_node(site):
    """Why `upgrade` exists: Firebird refuses the DROP COLUMN while a trigger uses it."""
    done = isql(site / "script.sql", site / "site.fdb")
    assert done.returncode != 0 and "OLD_COL" in done.stdout + done.stderr


def test_an_upgrade_runs_through_the_node_and_capture_follows_the_new_schema(site):
    done = node("upgrade", "--config", str(site / "node.toml"), "--script",
                str(site / "script.sql"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "1 captured changes published before the upgrade" in out
    for line in ("table added: U", "column added: T.NEW_COL", "column dropped: T.OLD_COL",
                 "column retyped: T.A: VARCHAR(10)"):
        assert line in out, out
    con = open_connection(DatabaseSpec(str(site / "site.fdb")))
    try:
        run_sql(con, "INSERT INTO T (ID, A, NEW_COL) VALUES (2, 'a longer value after', 9)")
        run_sql(con, "INSERT INTO U (ID, V) VALUES (1, 'new table')")
        assert capture.pending_entries(con) == 2, "both captured on the new schema"
        published = Publisher(con, "lyon").publish().events
        assert published == 2
    finally:
        con.close()
    # The script replaced the application's trigger (its guard with it): guarded again.
    tables = node("tables", "--config", str(site / "node.toml"))
    assert "STAMPED_BI" in tables.stdout and "guarded" in tables.stdout, tables.stdout


def test_a_failing_script_leaves_the_old_schema_captured_and_says_so(site):
    """isql commits each DDL statement, and vendor scripts commit along the way: the column
    the script added before failing would stay. The node restores the backup it took just
    before, so the database is as it was, and capture works on it."""
    (site / "bad.sql").write_text("ALTER TABLE T ADD X INTEGER;\nCOMMIT;\n"
                                  "UPDATE T SET A = 'half done';\nCOMMIT;\n"
                                  "ALTER TABLE NO_SUCH_TABLE ADD Y INTEGER;\nCOMMIT;\n")
    done = node("upgrade", "--config", str(site / "node.toml"), "--script", str(site / "bad.sql"),
                "--backup-dir", str(site))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stderr and "NO_SUCH_TABLE" in done.stderr
    assert "restored as it was before the upgrade" in done.stderr, done.stderr
    assert "capture is reinstalled" in done.stderr and "Traceback" not in done.stderr
    assert not list(site.glob("siege-upgrade-*")), "the backup is removed once restored"
    con = open_connection(DatabaseSpec(str(site / "site.fdb")))
    try:
        columns = [c.name for c in introspect(con).tables["T"].columns]
        assert columns == ["ID", "A", "OLD_COL"], "the old schema, not half the new one"
        assert capture.pending_entries(con) == 0, "published before the upgrade"
        with con.transaction_manager() as tm:
            cur = tm.cursor()
            cur.execute("SELECT ID, A, OLD_COL FROM T")
            assert cur.fetchall() == [(1, "before", 7)], "the rows as they were"
            tm.commit()
        run_sql(con, "INSERT INTO T (ID, A) VALUES (3, 'captured')")
        assert capture.pending_entries(con) == 1
        assert len(all_events(con)) == 1, "the change published before stays"
    finally:
        con.close()


def test_application_users_cannot_connect_while_capture_steps_aside(site):
    """The database is shut down to its owner for the whole upgrade: an application user
    connecting mid-upgrade (here from inside the vendor's upgrader) is refused — its changes
    would not be captured — while the upgrader, as SYSDBA, works; afterwards users can."""
    probe = site / "probe.py"
    probe.write_text("""
import os, sys
from firebird.driver import connect
dsn = os.environ["SIEGE_SYNC_DSN"]
try:
    connect(dsn, user="SHOP").close()
    print("application user got in")
    sys.exit(3)
except Exception as exc:
    print("refused:", exc)
con = connect(dsn, user=os.environ["ISC_USER"])
con.execute_immediate("ALTER TABLE T ADD Z INTEGER")
con.commit()
con.close()
""")
    done = node("upgrade", "--config", str(site / "node.toml"), "--", sys.executable,
                str(probe))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "column added: T.Z" in done.stdout
    from firebird.driver import connect
    connect(str(site / "site.fdb"), user="SHOP").close()  # online again


def test_the_vendors_own_upgrader_command_gets_the_database(site):
    done = node("upgrade", "--config", str(site / "node.toml"), "--", "sh", "-c",
                f'isql-fb -q -bail -i {site / "script.sql"} "$SIEGE_SYNC_DSN"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "column dropped: T.OLD_COL" in done.stdout


def test_other_connections_make_it_refuse_before_changing_anything(fb_server, tmp_path):
    """Through a real server (embedded databases admit one process): an application still
    attached would write uncaptured while capture steps aside."""
    import uuid

    name = f"upg{uuid.uuid4().hex[:6]}"
    con = fb_server.create_database(name, ddl=DDL)
    capture.install(con)
    run_sql(con, "INSERT INTO T (ID, A, OLD_COL) VALUES (1, 'before', 7)")
    (tmp_path / "script.sql").write_text(SCRIPT)
    (tmp_path / "db.pw").write_text(fb_server.password)
    (tmp_path / "db.pw").chmod(0o600)
    (tmp_path / "node.toml").write_text(
        f'site = "lyon"\n[database]\ndsn = "{fb_server.dsn(name)}"\nuser = "SYSDBA"\n'
        'password_file = "db.pw"\n')
    try:
        done = node("upgrade", "--config", str(tmp_path / "node.toml"), "--script",
                    str(tmp_path / "script.sql"))
        assert done.returncode == 2 and "other connections are attached" in done.stderr, \
            done.stdout + done.stderr
        assert "Nothing was changed" in done.stderr
        assert capture.pending_entries(con) == 1, "the pending change is still there"
    finally:
        con.close()
    done = node("upgrade", "--config", str(tmp_path / "node.toml"), "--script",
                str(tmp_path / "script.sql"))
    assert done.returncode == 0, done.stdout + done.stderr
