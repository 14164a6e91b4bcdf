"""``siege-ctl join``: a new site gets a copy of the siège's database over the mesh while
every site keeps working and syncing, takes its own identity, and converges; a transfer cut
midway resumes from what the site holds. Real parts: embedded Firebird, nodes on mTLS
loopback, the services API's backup and restore."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import grpc
import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.mesh.daemon import Awaiting, Node
from siege_sync.siege import reports
from siege_sync.siege.join import Joiner, JoinRefused
from tests.test_apply import run_sql
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(40))",
       "CREATE SEQUENCE GEN_T"]
SITES = {"siege": True, "lyon": False, "nice": False}


class Writer:
    """A site's application writing all the time: own rows (journaled) and shared ones."""

    def __init__(self, dsn: str | DatabaseSpec, base: int, seed: int) -> None:
        """``dsn``: an embedded path, or the spec of a database on a server."""
        self.spec = dsn if isinstance(dsn, DatabaseSpec) else DatabaseSpec(dsn)
        self.base, self.rng = base, random.Random(seed)
        self.journal: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        con = open_connection(self.spec)
        try:
            n = 0
            while not self._stop.is_set():
                key = self.base + (n if self.rng.random() < 0.6 or not self.journal
                                   else self.rng.randrange(n))
                value = f"v{self.rng.randrange(10**9)}"
                # Rolled back explicitly on a conflict: the driver's transaction manager
                # commits what was done when it is closed (its default action), and the
                # journal would miss a write the database holds.
                tm = con.transaction_manager()
                try:
                    tm.begin()
                    cur = tm.cursor()
                    cur.execute("UPDATE OR INSERT INTO T (ID, V) VALUES (?, ?) "
                                "MATCHING (ID)", (key, value))
                    cur.execute("UPDATE T SET V = ? WHERE ID = ?",
                                (value, self.rng.randrange(1, 20)))
                    cur.close()
                    tm.commit()
                    self.journal[key] = value
                    n = max(n, key - self.base + 1)
                except DatabaseError as exc:
                    if tm.is_active():
                        tm.rollback()
                    assert "conflict" in str(exc) or "deadlock" in str(exc), exc
                finally:
                    tm.close()
                time.sleep(0.02)
        finally:
            con.close()


def new_site(mesh: LocalMesh, tmp_path: Path, site: str) -> tuple[object, int]:
    return mesh.joining_site(site, {"GEN_T": {"start": 4_000_000}})


def sync_all(mesh: LocalMesh, sites: list[str], passes: int = 3) -> None:
    for _ in range(passes):
        for site in sites:
            mesh.exchange("siege", site)


def digests(mesh: LocalMesh, cons: dict) -> set[str]:
    return {table_digest(con, introspect(con).tables["T"]).digest for con in cons.values()}


def test_a_site_joins_while_everyone_works_and_converges(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, SITES, DDL)
    writers: list[Writer] = []
    try:
        for key in range(1, 20):
            run_sql(mesh.cons["siege"], f"INSERT INTO T VALUES ({key}, 'shared')")
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (100, 'lyon before')")
        sync_all(mesh, ["lyon", "nice"])
        cfg, _port = new_site(mesh, tmp_path, "brest")
        writers = [Writer(mesh.nodes[s].cfg.database.dsn, base, n) for n, (s, base) in
                   enumerate((("siege", 1_000_000), ("lyon", 2_000_000),
                              ("nice", 3_000_000)))]
        stop_rounds = threading.Event()

        def rounds() -> None:  # the other sites keep syncing during the join
            while not stop_rounds.is_set():
                sync_all(mesh, ["lyon", "nice"], passes=1)

        syncing = threading.Thread(target=rounds, daemon=True)
        syncing.start()
        progress: list = []
        report = mesh.join(cfg, progress=progress.append)
        assert report.outcome == "joined", report
        assert {p.phase for p in progress} >= {"snapshot", "transfer", "sync", "done"}
        time.sleep(1)
        for w in writers:
            w.stop()
        stop_rounds.set()
        syncing.join(60)
        sync_all(mesh, ["lyon", "nice", "brest"], passes=4)

        brest = open_connection(DatabaseSpec(str(tmp_path / "brest.fdb")))
        cons = {**mesh.cons, "brest": brest}
        try:
            assert len(digests(mesh, cons)) == 1, "brest differs from the mesh"
            for w in writers:  # nothing written during the copy is lost anywhere
                for key, value in w.journal.items():
                    with brest.transaction_manager() as tm:
                        tm.begin()
                        cur = tm.cursor()
                        cur.execute("SELECT V FROM T WHERE ID = ?", (key,))
                        assert cur.fetchone() == (value,), (key, value)
                        tm.commit()
            # Its own identity: its own site, a fresh epoch and log; its key range.
            assert capture.get_state(brest, "site") == "brest"
            assert capture.get_state(brest, "epoch") != capture.get_state(
                mesh.cons["siege"], "epoch")
            assert capture.get_state(brest, "joined_from").startswith("siege@")
            run_sql(brest, "INSERT INTO T VALUES (NEXT VALUE FOR GEN_T, 'brest own')")
            sync_all(mesh, ["brest", "lyon", "nice"], passes=2)
            assert len(digests(mesh, cons)) == 1
            with brest.transaction_manager() as tm:
                tm.begin()
                cur = tm.cursor()
                cur.execute("SELECT ID FROM T WHERE V = 'brest own'")
                assert cur.fetchone()[0] >= 4_000_000, "brest's keys in its own range"
                tm.commit()
        finally:
            brest.close()
        with mesh.nodes["siege"].replica.database() as con:
            assert any(r.trigger == "join" for r in reports.listing(con))
    finally:
        for w in writers:
            w.stop()
        mesh.close()


def test_a_join_cut_mid_transfer_resumes_where_the_site_stopped(tmp_path: Path) -> None:
    from tools.faultline import FaultyLine
    from tools.localmesh import behind_the_triggers_back

    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False}, DDL)
    line = None
    try:
        with behind_the_triggers_back(mesh.cons["siege"]):  # a large database, quickly
            run_sql(mesh.cons["siege"],
                    "INSERT INTO T SELECT A.N * 1000 + B.N, 'row ' || (A.N * 1000 + B.N) "
                    "|| ' of a larger database' FROM (WITH RECURSIVE R (N) AS (SELECT 1 "
                    "FROM RDB$DATABASE UNION ALL SELECT N + 1 FROM R WHERE N < 300) SELECT N "
                    "FROM R) A CROSS JOIN (WITH RECURSIVE R (N) AS (SELECT 1 FROM "
                    "RDB$DATABASE UNION ALL SELECT N + 1 FROM R WHERE N < 300) SELECT N FROM "
                    "R) B")
        cfg, port = new_site(mesh, tmp_path, "brest")
        line = FaultyLine(port)
        mesh.set_peer("siege", "brest", line.port)
        waiting = Awaiting(cfg)
        waiting.start()
        # A copy carries the whole database: only the configured siège may send one.
        from siege_sync.certs import load_bundle
        from siege_sync.node.mesh.transport import channel
        from siege_sync.proto import sync_pb2, sync_pb2_grpc

        with channel(f"127.0.0.1:{port}", load_bundle(mesh.pki.site("nantes", relay=True)),
                     "brest") as ch:
            with pytest.raises(grpc.RpcError) as refused:
                sync_pb2_grpc.SyncNodeStub(ch).Restore(iter([sync_pb2.SnapshotChunk(
                    join_id="x", source="nantes", total=1, sha256=b"0" * 32, data=b"x")]),
                    timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only the configured siège" in refused.value.details()
        cuts: list[int] = []

        def progress(p) -> None:  # the line breaks once, 3 MiB into the transfer
            if p.phase == "transfer" and p.bytes_done >= 3 << 20 and not cuts:
                cuts.append(line.cut())

        report = mesh.join(cfg, progress=progress, waiting=waiting)
        assert cuts and cuts[0] >= 1, "the line was never cut"
        assert report.outcome == "joined" and "resumed after a cut at byte" in report.note, \
            report.note
        resumed = int(report.note.split("resumed after a cut at byte ")[1].split(",")[0]
                      .replace("\u202f", "").split()[0].replace(",", ""))
        assert resumed > 0, "the transfer started again from zero"
        brest = open_connection(DatabaseSpec(str(tmp_path / "brest.fdb")))
        try:
            assert digests(mesh, {"siege": mesh.cons["siege"], "brest": brest}) == \
                digests(mesh, {"siege": mesh.cons["siege"]})
        finally:
            brest.close()
    finally:
        if line is not None:
            line.close()
        mesh.close()


def test_adopting_sites_kept_in_step_by_another_tool(tmp_path: Path) -> None:
    """Three databases the legacy tool kept identical, capture installed where they stand:
    `siege-ctl adopt` proves every table equal and syncing goes on from there with no copy;
    one row that differs is listed with what to do."""
    from tests.test_siege import ctl
    from tools.localmesh import behind_the_triggers_back

    mesh = LocalMesh(tmp_path, SITES, DDL)
    mesh.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
        'bundle = "bundles/ops"\n')
    try:
        for con in mesh.cons.values():  # what the legacy tool left: the same rows
            with behind_the_triggers_back(con):
                for key in range(1, 200):
                    run_sql(con, f"INSERT INTO T VALUES ({key}, 'kept by the old tool {key}')")
        done = ctl(mesh, "adopt")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ADOPTED" in done.stdout and "adopted" in done.stdout
        run_sql(mesh.cons["nice"], "UPDATE T SET V = 'changed after adoption' WHERE ID = 7")
        sync_all(mesh, ["lyon", "nice"])
        assert len(digests(mesh, mesh.cons)) == 1, "syncing goes on from the adopted state"

        with behind_the_triggers_back(mesh.cons["lyon"]):
            run_sql(mesh.cons["lyon"], "UPDATE T SET V = 'the old tool missed this' "
                                       "WHERE ID = 42")
        done = ctl(mesh, "adopt")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "DIFFERENCES" in done.stdout and "42" in done.stdout
        assert "analyse --repair --prefer SITE" in done.stdout
    finally:
        mesh.close()


def test_a_replaced_database_is_refused_until_resync_then_converges_its_work_on_record(
        tmp_path: Path) -> None:
    """lyon's PC is replaced and its database put back from an old backup (a new database
    for the mesh: a new epoch); its users work on it. The siège refuses it until
    `siege-ctl resync lyon`; then lyon holds the mesh's rows, what its users wrote meanwhile
    is on record as losing versions (not thrown away), its old database is kept beside, and
    it syncs again under a new incarnation; a site that met the old database takes the new
    one too, told by the siège."""
    from firebird.driver import SrvRestoreFlag, connect_server

    from siege_sync.node.journal import conflicts

    mesh = LocalMesh(tmp_path, SITES, DDL)
    try:
        for key in range(1, 6):
            run_sql(mesh.cons["siege"], f"INSERT INTO T VALUES ({key}, 'from the siege')")
        sync_all(mesh, ["lyon", "nice"])
        lyon_cfg = mesh.nodes["lyon"].cfg
        path = Path(lyon_cfg.database.dsn)
        old_backup = tmp_path / "lyon-old.fbk"
        with connect_server("service_mgr", user="SYSDBA", password="") as srv, \
                open(old_backup, "wb") as out:
            srv.database.local_backup(database=str(path), backup_stream=out)
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (10, 'lyon, synced')")
        sync_all(mesh, ["lyon", "nice"])
        # nice meets lyon's database directly (as a stand-in siège coordinating it would).
        met = mesh.exchange("nice", "lyon")
        assert not met.problems, met

        # The replacement PC: the old backup put back, a new database for the mesh.
        mesh.nodes["lyon"].stop(grace=1)
        mesh.cons["lyon"].close()
        with connect_server("service_mgr", user="SYSDBA", password="") as srv, \
                open(old_backup, "rb") as stream:
            srv.database.local_restore(backup_stream=stream, database=str(path),
                                       flags=SrvRestoreFlag.REPLACE)
        mesh.cons["lyon"] = open_connection(DatabaseSpec(str(path)))
        capture.set_state(mesh.cons["lyon"], "epoch", "a-new-database")
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (20, 'lyon, after the restore')")
        run_sql(mesh.cons["lyon"], "UPDATE T SET V = 'lyon edits row 1' WHERE ID = 1")
        mesh.cons["lyon"].close()
        mesh.nodes["lyon"] = Node(lyon_cfg)
        mesh.nodes["lyon"].start()
        refused = mesh.exchange("siege", "lyon")
        assert any("siege-ctl resync lyon" in p for p in refused.problems), refused
        with pytest.raises(JoinRefused, match="siege-ctl resync lyon"):
            Joiner(mesh.nodes["siege"]).run("lyon", lambda p: None)  # not a new site

        mesh.nodes["lyon"].stop(grace=1)
        report = mesh.join(lyon_cfg, resync=True)
        assert report.trigger == "resync" and report.outcome == "resynced", report
        mesh.cons["lyon"] = open_connection(DatabaseSpec(str(path)))
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (30, 'lyon, after the resync')")
        sync_all(mesh, ["lyon", "nice"])
        assert len(digests(mesh, mesh.cons)) == 1, "lyon converges with the mesh"
        # The siège's hellos told nice lyon's new epoch: it does not refuse the new database.
        met = mesh.exchange("nice", "lyon")
        assert not met.problems, met
        lyon = mesh.cons["lyon"]
        # A new incarnation: above every one of lyon the mesh holds (the restored copy took
        # none: the siège refused its changed database, so it never showed lyon the proof
        # a new incarnation needs — issue 20).
        now = int(capture.get_state(lyon, "incarnation"))
        older = {inc for (site, inc) in mesh.nodes["siege"].replica.vector(publish=False).seqs
                 if site == "lyon" and inc != now}
        assert older and now > max(older), (now, older)
        on_record = [c for c in conflicts.listing(lyon) if c.kind == "resync"]
        shown = {(c.key[0].integer, c.column, c.value.text if c.value else None)
                 for c in on_record}
        assert (20, "V", "lyon, after the restore") in shown, shown
        assert (1, "V", "lyon edits row 1") in shown, shown
        assert list(tmp_path.glob("lyon.before-resync-*.fdb")), "the old database is kept"
        with lyon.transaction_manager() as tm:
            tm.begin()
            cur = tm.cursor()
            cur.execute("SELECT ID FROM T ORDER BY ID")
            assert [r[0] for r in cur.fetchall()] == [1, 2, 3, 4, 5, 10, 30]
            tm.commit()
    finally:
        mesh.close()


def test_a_joined_site_points_rows_back_when_a_unique_clash_ends(tmp_path: Path) -> None:
    """A customer registered at two shops at once (one tax id), each with invoices: the
    later keeps the id, the other's invoices point at it (on record) — and back to their own
    customer once the clash ends, at a site that joined in between too (its copy keeps the
    records the merge reads back: issue 19, found by the chaos run's join)."""
    ddl = ["CREATE TABLE P (ID INTEGER NOT NULL PRIMARY KEY, CODE VARCHAR(10), "
           "CONSTRAINT P_CODE UNIQUE (CODE))",
           "CREATE TABLE C (ID INTEGER NOT NULL PRIMARY KEY, PID INTEGER REFERENCES P (ID))"]
    mesh = LocalMesh(tmp_path, SITES, ddl)
    try:
        run_sql(mesh.cons["lyon"], "INSERT INTO P VALUES (1, 'X')")
        run_sql(mesh.cons["lyon"], "INSERT INTO C VALUES (10, 1)")
        time.sleep(0.02)
        run_sql(mesh.cons["nice"], "INSERT INTO P VALUES (2, 'X')")
        run_sql(mesh.cons["nice"], "INSERT INTO C VALUES (20, 2)")
        sync_all(mesh, ["lyon", "nice"])
        cfg, _port = mesh.joining_site("vannes")
        report = mesh.join(cfg)
        assert report.outcome == "joined", report
        mesh.cons["vannes"] = open_connection(DatabaseSpec(cfg.database.dsn))
        run_sql(mesh.cons["nice"], "UPDATE P SET CODE = 'Y' WHERE ID = 2")  # the clash ends
        sync_all(mesh, ["lyon", "nice", "vannes"])
        for site, con in mesh.cons.items():
            with con.transaction_manager() as tm:
                tm.begin()
                cur = tm.cursor()
                cur.execute("SELECT ID, PID FROM C ORDER BY ID")
                assert cur.fetchall() == [(10, 1), (20, 2)], site
                tm.commit()
    finally:
        mesh.close()
