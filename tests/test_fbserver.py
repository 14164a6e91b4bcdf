"""The private Firebird server of tools/fbserver.py: real server processes, real connections."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from firebird.driver import DatabaseError

from tools.fbserver import (
    LOG_NAME,
    SYSTEM_LOG_DIR,
    SYSTEM_ROOT,
    FirebirdServer,
    FirebirdServerError,
    close_quietly,
)

REPO = Path(__file__).resolve().parent.parent
LOST_CONNECTION = {335544726, 335544727}  # error reading / writing data from the connection


def server_pids(root: Path) -> list[int]:
    """Processes whose environment names this private root (the server, nothing else)."""
    needle = b"FIREBIRD=" + str(root).encode() + b"\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remote_info(con) -> tuple[str, str, int]:
    cur = con.cursor()
    try:
        cur.execute("SELECT MON$REMOTE_PROTOCOL, MON$REMOTE_ADDRESS, MON$REMOTE_PID "
                    "FROM MON$ATTACHMENTS WHERE MON$ATTACHMENT_ID = CURRENT_CONNECTION")
        return cur.fetchone()
    finally:
        cur.close()


def select_all(con, sql: str) -> list[tuple]:
    cur = con.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


def test_write_and_read_through_the_server(tmp_path: Path) -> None:
    with FirebirdServer(tmp_path) as srv:
        pid = srv.pid
        assert pid and srv.port and srv.port != 3050
        assert srv.dsn("site") == f"inet://127.0.0.1:{srv.port}/{srv.data_dir}/site.fdb"
        con = srv.create_database(
            "site", ddl=["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, S VARCHAR(20))"])
        con.execute_immediate("INSERT INTO T VALUES (1, 'über')")
        con.commit()
        assert select_all(con, "SELECT ID, S FROM T") == [(1, "über")]

        protocol, address, remote_pid = remote_info(con)
        assert protocol.startswith("TCP")
        assert address.startswith("127.0.0.1/")
        assert remote_pid == os.getpid()

        # the file is the server's: in its data folder, owned by user firebird
        db = srv.data_dir / "site.fdb"
        assert db.exists() and db.stat().st_uid == srv.data_dir.stat().st_uid != 0
        # the server runs as firebird from the private root, and is the process we started
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {str(db.stat().st_uid)}
        assert server_pids(srv.root_dir) == [pid]
        # the private conf, never the system's
        conf = (srv.root_dir / "firebird.conf").read_text()
        assert f"RemoteServicePort = {srv.port}\n" in conf
        assert "RemoteBindAddress = 127.0.0.1\n" in conf
        assert f"SecurityDatabase = {srv.root_dir.parent / 'system'}" in conf
        assert (srv.root_dir / "firebird.conf").resolve() != SYSTEM_ROOT / "firebird.conf"
    assert not alive(pid)


def test_win1252_columns_keep_every_byte(fb_server: FirebirdServer) -> None:
    """WIN1252 (like ISO8859_1, WIN1250...) lives in the fbintl module, which the server loads
    through its private root; reached through a symlink it yielded nothing and WIN1252 was
    "not installed". The five codes WIN1252 leaves undefined must survive as they are."""
    accents = "Crème brûlée, Ñandú, Œuvre, 50 €"
    raw = accents.encode("cp1252") + b" \x81\x8d\x8f\x90\x9d"
    con = fb_server.create_database("win1252-bytes", ddl=[
        "CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, "
        "S VARCHAR(60) CHARACTER SET WIN1252 COLLATE PXW_INTL)"])
    con.execute_immediate(f"INSERT INTO T VALUES (1, '{accents}')")
    con.execute_immediate(f"INSERT INTO T VALUES (2, x'{raw.hex()}')")
    con.commit()
    assert select_all(con, "SELECT S FROM T WHERE ID = 1") == [(accents,)]
    assert select_all(con, "SELECT CAST(S AS VARCHAR(60) CHARACTER SET OCTETS) FROM T "
                           "ORDER BY ID") == [(accents.encode("cp1252"),), (raw,)]


def test_restart_breaks_old_connections_new_ones_work(tmp_path: Path) -> None:
    with FirebirdServer(tmp_path) as srv:
        con = srv.create_database("r", ddl=["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY)"])
        con.execute_immediate("INSERT INTO T VALUES (7)")
        con.commit()
        old_pid, port = srv.pid, srv.port

        srv.restart()

        assert srv.port == port and srv.pid != old_pid and not alive(old_pid)
        with pytest.raises(DatabaseError) as err:
            select_all(con, "SELECT ID FROM T")
        assert err.value.sqlcode == -902
        assert LOST_CONNECTION & set(err.value.gds_codes)
        close_quietly([con])

        con2 = srv.connect("r")
        assert select_all(con2, "SELECT ID FROM T") == [(7,)]
        assert remote_info(con2)[1].startswith("127.0.0.1/")


def test_stopped_server_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    srv = FirebirdServer(tmp_path)
    srv.start()
    pid, root, base = srv.pid, srv.root_dir, srv.layout.base
    con = srv.create_database("s")
    srv.stop()
    assert srv.pid is None and not alive(pid) and server_pids(root) == []
    assert 0.0 < srv.stop_seconds < 10
    with pytest.raises(DatabaseError):
        select_all(con, "SELECT 1 FROM RDB$DATABASE")
    # nobody listens on the port any more: connecting fails as "server down"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", srv.port)) != 0
    srv.close()
    if base.parent != tmp_path:  # pytest's tmp_path is 0700: the tree lived in /tmp
        assert not base.exists() and not (tmp_path / "fbserver").exists()


@pytest.fixture
def open_workdir() -> Iterator[Path]:
    """A folder user firebird can enter (pytest's tmp_path cannot be entered)."""
    path = Path(tempfile.mkdtemp(prefix="fbserver-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_open_workdir_keeps_databases_for_the_next_server(open_workdir: Path) -> None:
    with FirebirdServer(open_workdir, password="first") as srv:
        assert srv.data_dir == open_workdir / "fbserver" / "data"
        con = srv.create_database("keep", ddl=["CREATE TABLE T (ID INTEGER)"])
        con.execute_immediate("INSERT INTO T VALUES (5)")
        con.commit()
        # a second server on the same folder is refused while the first runs
        with pytest.raises(FirebirdServerError, match="another Firebird server"):
            FirebirdServer(open_workdir).start()
    assert (open_workdir / "fbserver" / "data" / "keep.fdb").exists()
    with FirebirdServer(open_workdir, password="second") as srv:
        con = srv.connect("keep")
        assert select_all(con, "SELECT ID FROM T") == [(5,)]


def test_two_servers_side_by_side(tmp_path: Path) -> None:
    with FirebirdServer(tmp_path / "a") as a, FirebirdServer(tmp_path / "b") as b:
        assert a.port != b.port and a.data_dir != b.data_dir
        ca = a.create_database("x", ddl=["CREATE TABLE T (ID INTEGER)"])
        cb = b.create_database("x", ddl=["CREATE TABLE U (ID INTEGER)"])
        assert select_all(ca, "SELECT COUNT(*) FROM T") == [(0,)]
        assert select_all(cb, "SELECT COUNT(*) FROM U") == [(0,)]
        # each one has its own SYSDBA password
        with pytest.raises(DatabaseError):
            from firebird.driver import connect

            connect(a.dsn("x"), user="SYSDBA", password=b.password, charset="UTF8")


CLIENT = """
import sys
from firebird.driver import connect
con = connect(sys.argv[1], user="SYSDBA", password=sys.argv[2], charset="UTF8")
cur = con.cursor()
cur.execute("SELECT ID FROM T")
print(cur.fetchall())
cur.close()
con.close()
"""


@pytest.mark.parametrize("client_env", ["clean", "private-root", "wirecrypt-disabled"])
def test_client_needs_no_special_environment(tmp_path: Path, client_env: str) -> None:
    with FirebirdServer(tmp_path / "srv") as srv:
        con = srv.create_database("c", ddl=["CREATE TABLE T (ID INTEGER)"])
        con.execute_immediate("INSERT INTO T VALUES (42)")
        con.commit()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        if client_env == "private-root":  # reads the server's own firebird.conf
            env["FIREBIRD"] = str(srv.root_dir)
        elif client_env == "wirecrypt-disabled":  # a client conf the server must still accept
            root = tmp_path / "client-root"
            root.mkdir()
            for src in SYSTEM_ROOT.iterdir():
                if src.name != "firebird.conf":
                    (root / src.name).symlink_to(src)
            (root / "firebird.conf").write_text("WireCrypt = Disabled\n")
            env["FIREBIRD"] = str(root)
        out = subprocess.run([sys.executable, "-c", CLIENT, srv.dsn("c"), srv.password],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
                             check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[(42,)]"


def test_without_private_log_the_server_still_works(tmp_path: Path) -> None:
    # the way it runs where mount namespaces are not allowed (unprivileged containers)
    with FirebirdServer(tmp_path, private_log=False) as srv:
        assert srv.log_path == SYSTEM_LOG_DIR / LOG_NAME
        con = srv.create_database("n", ddl=["CREATE TABLE T (ID INTEGER)"])
        assert select_all(con, "SELECT COUNT(*) FROM T") == [(0,)]
        pid = srv.pid
    assert not alive(pid)


def test_failed_start_shows_the_log_and_leaves_no_process(tmp_path: Path) -> None:
    srv = FirebirdServer(tmp_path, extra_config={"AuthServer": "NoSuchPlugin"}, start_timeout=20)
    with pytest.raises(FirebirdServerError) as err:
        srv.start()
    message = str(err.value)
    assert "--- server log" in message
    if srv.log_path.parent != SYSTEM_LOG_DIR:  # private log: the server's complaint is there
        assert "NoSuchPlugin" in message or "plugin" in message.lower(), message
    assert srv.pid is None and server_pids(srv.root_dir) == []
    srv.close()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        srv = FirebirdServer(tmp_path, port=s.getsockname()[1])
        with pytest.raises(FirebirdServerError, match="in use by another process"):
            srv.start()
        # Nothing of it stays running (a helper of the private root may take a moment to
        # exit on a loaded machine: seen once in CI).
        deadline = time.monotonic() + 10
        while server_pids(srv.root_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server_pids(srv.root_dir) == []
        srv.close()


def test_settings_that_keep_it_private_cannot_be_overridden(tmp_path: Path) -> None:
    for key in ("SecurityDatabase", "remoteserviceport", "RemoteBindAddress", "ServerMode"):
        with pytest.raises(ValueError, match="tool owns them"):
            FirebirdServer(tmp_path, extra_config={key: "x"})


def test_not_root_is_a_loud_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(FirebirdServerError, match="must run as root"):
        FirebirdServer(tmp_path)


def test_command_line_runs_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.fbserver", "--workdir", str(tmp_path), "--password", "pw1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = proc.stdout.readline()
            assert line, f"exited early: {lines} {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.strip())
        pid = int(lines[0].split()[3])
        prefix = next(line for line in lines if line.startswith("DSN prefix:")).split()[2]
        assert prefix.startswith("inet://127.0.0.1:") and "password: pw1" in "\n".join(lines)
        data_dir = Path(next(line for line in lines if line.startswith("data dir:")).split()[2])
        from tests.fbdb import create_db

        con = create_db(data_dir / "m.fdb", dsn=prefix + str(data_dir / "m.fdb"),
                        password="pw1")
        assert select_all(con, "SELECT 1 FROM RDB$DATABASE") == [(1,)]
        con.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not alive(pid)
        if not str(data_dir).startswith(str(tmp_path)):  # a /tmp tree of its own: removed
            assert not data_dir.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_start_and_stop_are_quick(tmp_path: Path) -> None:
    srv = FirebirdServer(tmp_path)
    began = time.monotonic()
    srv.start()
    first = time.monotonic() - began  # includes building the root and setting the password
    try:
        srv.restart()
    finally:
        srv.close()
    assert first < 10 and srv.start_seconds < 10 and srv.stop_seconds < 10
