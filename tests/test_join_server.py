"""Join and resync where every site's database is served by a Firebird server (issue 27):
the siège's snapshot goes through its server's services API while the application writes
there; the new site restores through its own server (``siege-node join`` as a process, a
``host/port:/path`` DSN) and takes part; a site put back from an old backup is resynced
through its server as if that server were another machine of the LAN (the copy moved into
place by backup and restore, never renamed), while another site keeps writing and syncing;
its unsent writes are on record there. Real parts: the private test server
(tools/fbserver.py), ``siege-node`` processes and in-process nodes on mTLS loopback."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from siege_sync.certs import load_bundle
from siege_sync.node.db import dbserver
from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.mesh.daemon import Awaiting
from siege_sync.node.mesh.transport import channel
from siege_sync.node.model import config
from siege_sync.proto import coordinator_pb2, coordinator_pb2_grpc
from tests.test_apply import run_sql
from tests.test_join import DDL, Writer
from tools.localmesh import ProcessMesh, free_port


def coordinator(mesh: ProcessMesh):
    ch = channel(f"127.0.0.1:{mesh.ports['siege']}",
                 load_bundle(mesh.pki.folder / "bundles" / "ops"), "siege")
    return ch, coordinator_pb2_grpc.CoordinatorStub(ch)


def join(mesh: ProcessMesh, site: str, resync: bool = False) -> coordinator_pb2.RoundReport:
    """``siege-ctl join|resync SITE``: the Join call, its report."""
    ch, stub = coordinator(mesh)
    with ch:
        report = None
        for event in stub.Join(coordinator_pb2.JoinRequest(site=site, resync=resync),
                               timeout=300):
            if event.HasField("done"):
                report = event.done
    assert report is not None
    return report


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def as_sysdba(mesh: ProcessMesh, site: str) -> DatabaseSpec:
    return DatabaseSpec(mesh.dsns[site], user="SYSDBA", password=mesh.server.password)


def digest(con) -> str:
    return table_digest(con, introspect(con).tables["T"]).digest


def rows(con) -> dict[int, str]:
    with con.transaction_manager() as tm:
        tm.begin()
        cur = tm.cursor()
        cur.execute("SELECT ID, V FROM T")
        found = dict(cur.fetchall())
        cur.close()
        tm.commit()
    return found


def sync(mesh: ProcessMesh, sites: list[str], passes: int = 2) -> None:
    for _ in range(passes):
        for site in sites:
            assert mesh.exchange_checked(site) >= 0, f"the exchange with {site} failed"


def test_join_and_resync_with_every_database_served(fb_server, tmp_path: Path) -> None:
    mesh = ProcessMesh(fb_server, tmp_path, DDL)
    spec = DatabaseSpec("", user="SYSDBA", password=fb_server.password)
    brest_proc = None
    writers: list[Writer] = []
    try:
        for key in range(1, 6):
            run_sql(mesh.cons["siege"], f"INSERT INTO T VALUES ({key}, 'from the siège é')")
        sync(mesh, ["lyon", "nice"])

        # --- a new site joins: its database on the server, named host/port:/path ---------
        brest_port = free_port()
        brest_path = fb_server.path("brest")
        brest_dsn = f"localhost/{fb_server.port}:{brest_path}"
        (tmp_path / "brest.toml").write_text(
            f'site = "brest"\n[database]\ndsn = "{brest_dsn}"\nuser = "SYSDBA"\n'
            f'password_file = "db.pw"\n[node]\nlisten = "127.0.0.1:{brest_port}"\n'
            f'bundle = "{mesh.pki.site("brest")}"\nsiege = "siege"\n'
            f'[peers.siege]\naddress = "127.0.0.1:{mesh.ports["siege"]}"\n'
            '[generators.GEN_T]\nstart = 4000000\n')
        siege_toml = Path(mesh.configs["siege"])
        siege_toml.write_text(siege_toml.read_text().replace(
            "[peers.lyon]", f'[peers.brest]\naddress = "127.0.0.1:{brest_port}"\n[peers.lyon]'))
        mesh.kill("siege")  # [peers] is read at start
        mesh.start("siege")
        brest_proc = subprocess.Popen(
            [sys.executable, "-m", "siege_sync.node.cli", "join", "--config",
             str(tmp_path / "brest.toml")], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
        writers = [Writer(as_sysdba(mesh, "siege"), 1_000_000, 1)]
        wait_listening(brest_port, brest_proc)
        stop = threading.Event()

        def rounds(sites: list[str]) -> None:  # the other sites keep syncing meanwhile
            while not stop.is_set():
                for site in sites:
                    mesh.exchange(site)
                time.sleep(0.2)

        syncing = threading.Thread(target=rounds, args=(["lyon", "nice"],), daemon=True)
        syncing.start()
        report = join(mesh, "brest")
        assert report.outcome == "joined", report
        writers[0].stop()
        stop.set()
        syncing.join(60)
        assert brest_proc.poll() is None, brest_proc.stderr.read().decode()
        mesh.ports["brest"] = brest_port
        sync(mesh, ["lyon", "nice", "brest"], passes=3)
        brest = open_connection(DatabaseSpec(brest_dsn, user="SYSDBA",
                                             password=fb_server.password))
        try:
            assert capture.get_state(brest, "site") == "brest"
            held = rows(brest)
            for key, value in writers[0].journal.items():  # written during the snapshot
                assert held.get(key) == value, (key, value)
            assert len(writers[0].journal) > 5, "the application barely wrote during the join"
            run_sql(brest, "INSERT INTO T VALUES (NEXT VALUE FOR GEN_T, 'brest takes part')")
            sync(mesh, ["brest", "lyon", "nice"], passes=2)
            assert len({digest(c) for c in (*mesh.cons.values(), brest)}) == 1
            assert "brest takes part" in rows(mesh.cons["nice"]).values()
        finally:
            brest.close()

        # --- lyon is put back from an old backup: resynced through its server --------------
        lyon = dbserver.served(mesh.dsns["lyon"])
        old_backup = io.BytesIO()
        dbserver.backup(lyon, spec, old_backup)
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (100, 'lyon, synced')")
        sync(mesh, ["lyon"])
        mesh.kill("lyon")
        mesh.cons["lyon"].close()
        dbserver.drop(lyon, spec)
        old_backup.seek(0)
        dbserver.restore(lyon, spec, old_backup)
        app = mesh.cons["lyon"] = mesh.open_as_sysdba("lyon")
        capture.set_state(app, "epoch", "a-new-database")  # a new database for the mesh
        run_sql(app, "INSERT INTO T VALUES (200, 'lyon, after the restore ç')")
        run_sql(app, "UPDATE T SET V = 'lyon edits row 1' WHERE ID = 1")
        app.close()

        lyon_cfg = config.load(Path(mesh.configs["lyon"]))
        waiting = Awaiting(lyon_cfg, resync=True, by_server=True)  # as if on another machine
        waiting.start()
        writers.append(Writer(as_sysdba(mesh, "nice"), 3_000_000, 3))
        stop.clear()
        outcome: dict = {}

        def resync() -> None:
            outcome["report"] = join(mesh, "lyon", resync=True)

        syncing = threading.Thread(target=rounds, args=(["nice", "brest"],), daemon=True)
        syncing.start()
        sender = threading.Thread(target=resync, daemon=True)
        sender.start()
        try:
            assert waiting.restorer.joined.wait(120), "lyon never restored the copy"
        finally:
            waiting.stop()
        mesh.start("lyon")  # `siege-node resync` goes on serving as the site
        sender.join(180)
        writers[1].stop()
        stop.set()
        syncing.join(60)
        report = outcome["report"]
        assert report.trigger == "resync" and report.outcome == "resynced", report
        assert "siege-node conflicts" in report.note and "copied by the server" in report.note
        aside = report.note.split("its old database kept as ")[1].split(" (")[0]
        assert dbserver.exists(lyon.at(aside), spec), "the old database is kept on the server"

        mesh.cons["lyon"] = mesh.open_as_sysdba("lyon")
        sync(mesh, ["lyon", "nice", "brest"], passes=3)
        brest = open_connection(DatabaseSpec(brest_dsn, user="SYSDBA",
                                             password=fb_server.password))
        try:
            assert len({digest(c) for c in (*mesh.cons.values(), brest)}) == 1
        finally:
            brest.close()
        held = rows(mesh.cons["lyon"])
        assert held[100] == "lyon, synced" and 200 not in held
        for key, value in writers[1].journal.items():
            assert held.get(key) == value, (key, value)
        on_record = {(c.key[0].integer, c.column, c.value.text if c.value else None)
                     for c in conflicts.listing(mesh.cons["lyon"]) if c.kind == "resync"}
        assert (200, "V", "lyon, after the restore ç") in on_record, on_record
        assert (1, "V", "lyon edits row 1") in on_record, on_record
    finally:
        for w in writers:
            w.stop()
        if brest_proc is not None and brest_proc.poll() is None:
            brest_proc.send_signal(signal.SIGKILL)
            brest_proc.wait()
        mesh.close()


def test_dsn_forms_name_the_server_and_the_path() -> None:
    cases = {
        "/srv/shop.fdb": ("", "/srv/shop.fdb", "service_mgr"),
        r"C:\Shop\shop.fdb": ("", r"C:\Shop\shop.fdb", "service_mgr"),
        "localhost:/srv/shop.fdb": ("localhost", "/srv/shop.fdb", "localhost:service_mgr"),
        "backoffice/3051:C:\\Shop\\shop.fdb": ("backoffice", "C:\\Shop\\shop.fdb",
                                               "backoffice/3051:service_mgr"),
        "inet://10.0.0.5:3050//srv/shop.fdb": ("10.0.0.5", "/srv/shop.fdb",
                                               "inet://10.0.0.5:3050/service_mgr"),
        "inet://[::1]:3050/shop": ("::1", "shop", "inet://[::1]:3050/service_mgr"),
        "[::1]/3050:/srv/shop.fdb": ("[::1]", "/srv/shop.fdb", "[::1]/3050:service_mgr"),
    }
    for dsn, (host, path, service) in cases.items():
        where = dbserver.served(dsn)
        assert (where.host, where.path, where.service) == (host, path, service), dsn
        assert where.prefix + where.path == dsn
    aside = dbserver.served("backoffice/3051:C:\\Shop\\shop.fdb").beside("shop.old.fdb")
    assert aside.dsn == "backoffice/3051:C:\\Shop\\shop.old.fdb"
    assert not dbserver.served("backoffice:/x.fdb").on_this_machine
    assert dbserver.served("localhost/3051:/x.fdb").on_this_machine


def test_a_move_through_the_server_cut_midway_is_finished_at_the_next_start(
        fb_server, tmp_path: Path) -> None:
    """The node stopped while the server moved a resync's copy into place: the old database
    already copied aside and dropped, a restore at the path cut short (its database shut
    down, half made). The next start drops that, restores the prepared copy at the path and
    forgets the move; the old database stays aside."""
    from siege_sync.node.operations.join import _PLACING, Restorer

    spec = DatabaseSpec("", user="SYSDBA", password=fb_server.password)
    name = f"shop{os.getpid()}"
    path = fb_server.path(name)
    where = dbserver.served(fb_server.dsn(name))
    fresh, aside = where.beside(f"{name}.fdb.copy-new"), where.beside(f"{name}.before.fdb")
    for target, epoch in ((fresh, "the copy"), (aside, "the old one")):
        con = fb_server.create_database(Path(target.path), ddl=DDL)
        capture.install(con)
        capture.set_state(con, "epoch", epoch)
        run_sql(con, "INSERT INTO T VALUES (1, 'déjà vu')")
        con.close()
    backup = io.BytesIO()
    dbserver.backup(fresh, spec, backup)
    half = io.BytesIO(backup.getvalue()[: len(backup.getvalue()) // 2])
    try:
        dbserver.restore(where, spec, half)
        raise AssertionError("a truncated backup restored")
    except dbserver.ServerWorkError:
        pass
    assert path.exists(), "a cut restore leaves its database (shut down)"
    cfg = config.parse({"site": "lyon", "database": {
        "dsn": where.dsn, "user": "SYSDBA", "password": fb_server.password}},
        tmp_path / "lyon.toml")
    (tmp_path / f"{name}.fdb{_PLACING}").write_text(f"{fresh.path}\n{aside.path}\n")
    assert Restorer(cfg, "acme", resync=True, by_server=True).resume()
    con = open_connection(where.spec(spec))
    try:
        assert capture.get_state(con, "epoch") == "the copy"
        assert rows(con) == {1: "déjà vu"}
    finally:
        con.close()
    assert not dbserver.exists(fresh, spec) and dbserver.exists(aside, spec)
    assert not (tmp_path / f"{name}.fdb{_PLACING}").exists()


def test_a_streamed_snapshot_is_restored_as_it_arrives_and_a_damaged_one_dropped(
        make_db, tmp_path: Path) -> None:
    """The siège sends the snapshot while its server writes it: the size and sha256 come
    with the last chunk. The site restores as the bytes arrive, into ``.copy-new`` only; a
    snapshot whose bytes do not match its sha256 leaves nothing: no copy, no database."""
    import hashlib

    from siege_sync.node.operations.join import JoinError, Restorer
    from siege_sync.proto import sync_pb2

    source = make_db("siege", ddl=DDL)
    capture.install(source)
    capture.set_state(source, "site", "siege")
    run_sql(source, "INSERT INTO T VALUES (1, 'à la carte')")
    source.close()
    backup = io.BytesIO()
    dbserver.backup(dbserver.served(str(tmp_path / "siege.fdb")), DatabaseSpec(""), backup)
    data = backup.getvalue()

    def chunks(join_id: str, sha: bytes):
        for offset in range(0, len(data), 1 << 16):
            yield sync_pb2.SnapshotChunk(join_id=join_id, offset=offset, source="siege",
                                         data=data[offset:offset + (1 << 16)])
        yield sync_pb2.SnapshotChunk(join_id=join_id, offset=len(data), total=len(data),
                                     sha256=sha)

    cfg = config.parse({"site": "brest", "database": {"dsn": str(tmp_path / "brest.fdb")}},
                       tmp_path / "brest.toml")
    restorer = Restorer(cfg, "acme")
    try:
        restorer.receive(chunks("damaged", hashlib.sha256(b"not it").digest()))
        raise AssertionError("a damaged snapshot was taken")
    except JoinError as exc:
        assert "sha256 does not match" in str(exc)
    assert not list(tmp_path.glob("brest.fdb*")), list(tmp_path.glob("brest.fdb*"))
    reply = restorer.receive(chunks("whole", hashlib.sha256(data).digest()))
    assert reply.joined and restorer.joined.is_set()
    con = open_connection(DatabaseSpec(str(tmp_path / "brest.fdb")))
    try:
        assert capture.get_state(con, "site") == "brest" and rows(con) == {1: "à la carte"}
    finally:
        con.close()
    assert not list(tmp_path.glob("brest.fdb.*")), "nothing left beside the database"


def test_join_refuses_a_database_its_server_already_holds(fb_server, tmp_path: Path) -> None:
    """`siege-node join` asks the server the DSN names: an existing database is refused
    (exit 2, what to do instead), never overwritten."""
    from tools.localmesh import Pki

    name = f"held{os.getpid()}"
    fb_server.create_database(name, ddl=DDL).close()
    bundle = Pki(tmp_path).site("brest")
    (tmp_path / "db.pw").write_text(fb_server.password)
    (tmp_path / "db.pw").chmod(0o600)
    (tmp_path / "brest.toml").write_text(
        f'site = "brest"\n[database]\ndsn = "localhost/{fb_server.port}:'
        f'{fb_server.path(name)}"\nuser = "SYSDBA"\npassword_file = "db.pw"\n'
        f'[node]\nlisten = "127.0.0.1:{free_port()}"\nbundle = "{bundle}"\nsiege = "siege"\n'
        '[peers.siege]\n')
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", "join", "--config",
                           str(tmp_path / "brest.toml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "exists: a site joins only into a database that does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_of_this_machine_writes_the_backup_and_leaves_nothing_beside_it(
        fb_server, tmp_path: Path) -> None:
    """A join's snapshot of a database served on this machine is written by the server to a
    file beside the database, read here as it grows (three times faster than the service
    manager's stream): the bytes restore to the same rows and no file stays beside the
    database. A server of another machine, or an alias, is streamed instead (False)."""
    name = f"byserver{os.getpid()}"
    con = fb_server.create_database(name, ddl=DDL)
    with con.transaction_manager() as tm:
        tm.begin()
        cur = tm.cursor()
        cur.executemany("INSERT INTO T VALUES (?, ?)",
                        [(n, f"café n° {n}  ") for n in range(1, 5001)])
        cur.close()
        tm.commit()
    expected = rows(con)
    con.close()
    spec, where = fb_server.spec(name), dbserver.served(fb_server.dsn(name))
    out = io.BytesIO()
    assert dbserver.backup_by_server(where, spec, out)
    assert not [p.name for p in Path(where.path).parent.glob(f"{name}.fdb.*")], \
        "the server's backup file was left beside the database"
    copy = where.beside(f"{name}-copy.fdb")
    out.seek(0)
    dbserver.restore(copy, spec, out)
    try:
        restored = open_connection(copy.spec(spec))
        try:
            assert rows(restored) == expected and len(expected) == 5000
        finally:
            restored.close()
    finally:
        dbserver.drop(copy, spec)
    elsewhere = dbserver.served(f"192.0.2.7/3050:{where.path}")
    assert not dbserver.backup_by_server(elsewhere, spec, io.BytesIO())
    alias = dbserver.served(f"localhost/{fb_server.port}:{name}")
    assert not dbserver.backup_by_server(alias, spec, io.BytesIO())
