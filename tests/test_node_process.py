"""Three ``siege-node run`` processes, databases through a real Firebird server, random
workloads, exchanges in a ring and at random, started by ``siege-node exchange`` and by an
admin over mTLS → identical digests; SIGTERM stops each node cleanly."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import grpc
import pytest

from siege_sync.proto import sync_pb2
from tests.test_apply import run_sql
from tools.localmesh import ProcessMesh, free_port

DDL = ["CREATE TABLE ITEMS (ID INTEGER NOT NULL PRIMARY KEY, LABEL VARCHAR(30), "
       "PRICE NUMERIC(12,2), NOTE BLOB SUB_TYPE TEXT)"]
SITES = ("siege", "lyon", "nice")


def admin_stub(mesh: ProcessMesh, site: str):
    return mesh.stub(site)


@pytest.fixture
def processes(fb_server, tmp_path):
    mesh = ProcessMesh(fb_server, tmp_path, DDL)
    try:
        yield mesh
    finally:
        mesh.close()


def exchange_by_cli(config: str, peer: str) -> str:
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", "exchange", "--config",
                           config, "--with", peer], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_three_node_processes_converge_and_stop_cleanly(processes):
    mesh = processes
    cons, procs, configs = mesh.cons, mesh.procs, mesh.configs
    rng = random.Random(7)
    for step in range(24):
        site = rng.choice(SITES)
        if step % 3 != 2:
            k = rng.randint(1, 10)
            run_sql(cons[site],
                    "UPDATE OR INSERT INTO ITEMS (ID, LABEL, PRICE, NOTE) VALUES (?, ?, ?, ?)",
                    (k, f"{site} {step}", rng.randint(0, 99999) / 100,
                     "note " * rng.randint(0, 50)))
        elif rng.random() < 0.5:
            a, b = rng.sample(SITES, 2)
            ch, stub = admin_stub(mesh, a)
            with ch:
                reply = stub.Exchange(sync_pb2.ExchangeRequest(peer=b), timeout=60)
            assert not reply.problems, reply.problems
        else:
            out = exchange_by_cli(configs[site], "siege" if site != "siege" else "lyon")
            assert "applied here" in out
    for _ in range(2):  # a ring, twice: siege -> lyon -> nice -> siege
        for a, b in (("siege", "lyon"), ("lyon", "nice"), ("nice", "siege")):
            exchange_by_cli(configs[a], b)
    digests = set()
    for site in SITES:
        ch, stub = admin_stub(mesh, site)
        with ch:
            status = stub.Status(sync_pb2.StatusRequest(digests=True), timeout=30)
        digests.add(tuple((d.table, d.digest, d.rows) for d in status.digests))
    assert len(digests) == 1, digests
    assert next(iter(digests))[0][2] > 0
    for site, proc in procs.items():
        proc.send_signal(signal.SIGTERM)
        said = mesh.logs[site]  # (the node's log: ProcessMesh writes it to a file)
        assert proc.wait(timeout=30) == 0, f"{site}: {said.read_text()[-2000:]}"
        assert f"site={site}" in said.read_text()


def test_run_refuses_a_bundle_of_another_site_clearly(processes, tmp_path):
    mesh = processes
    configs = mesh.configs
    text = open(configs["lyon"]).read().replace(
        str(mesh.pki.folder / "bundles" / "lyon"), str(mesh.pki.folder / "bundles" / "nice"))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text)
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", "run", "--config",
                           str(wrong)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "belongs to site 'nice'" in done.stderr and "own bundle" in done.stderr


def test_a_node_killed_mid_exchange_loses_nothing_and_applies_nothing_twice(processes):
    mesh = processes
    cons, procs, configs = mesh.cons, mesh.procs, mesh.configs
    journal: dict[int, str] = {}  # the test's own record of every committed row
    for t in range(40):
        rows = [(1000 * t + i, f"lyon {t}.{i}") for i in range(100)]
        with transaction_of(cons["lyon"]) as cur:
            for key, label in rows:
                cur.execute("INSERT INTO ITEMS (ID, LABEL, PRICE) VALUES (?, ?, 1)", (key, label))
        journal.update(rows)
    import threading

    def exchange_in_background() -> None:
        ch, stub = admin_stub(mesh, "siege")
        with ch:
            try:
                stub.Exchange(sync_pb2.ExchangeRequest(peer="lyon"), timeout=120)
            except grpc.RpcError:
                pass  # killed under it

    def applied_from_lyon() -> int:
        # Read from the siège's database itself, not through its node's Status: Status waits
        # for the node's pipeline, so it could first answer once every batch was in.
        with transaction_of(cons["siege"]) as cur:
            cur.execute("SELECT MAX(APPLIED) FROM SYNC$VECTOR WHERE ORIGIN = 'lyon' "
                        "AND INCARNATION = 1")
            return int(cur.fetchone()[0] or 0)

    runner = threading.Thread(target=exchange_in_background)
    runner.start()
    deadline = time.monotonic() + 60
    while applied_from_lyon() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    partly = applied_from_lyon()
    procs["siege"].kill()  # kill -9, in the middle of applying lyon's batches
    assert 0 < partly < 4000, partly
    procs["siege"].wait()
    runner.join(60)
    mesh.start("siege")
    for _ in range(2):
        for site in ("lyon", "nice"):
            exchange_by_cli(configs["siege"], site)
    for site in SITES:
        with transaction_of(cons[site]) as cur:
            cur.execute("SELECT ID, LABEL FROM ITEMS")
            held = dict(cur.fetchall())
        assert held == journal, f"{site}: {len(held)} rows, {len(journal)} committed"
    ch, stub = admin_stub(mesh, "siege")
    with ch:
        status = stub.Status(sync_pb2.StatusRequest(), timeout=30)
    applied = {(o.site, o.incarnation): o.seq for o in status.applied.origins}
    assert applied[("lyon", 1)] == 4000, "every event applied once, none twice"


def transaction_of(con):
    from tests.test_mesh import transaction_of as inner

    return inner(con)


def test_the_siege_as_processes_a_site_down_is_partial_emailed_and_caught_up(fb_server,
                                                                             tmp_path):
    """Everything through the console scripts: three `siege-node run` processes, the siège
    with alerts to a real SMTP server, `siege-ctl manual` and `report list`."""
    from tests.test_alerts import Inbox, tls_files

    cert, key = tls_files(tmp_path)
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port, tls_context=ctx,
                      require_starttls=True, auth_require_tls=True,
                      authenticator=lambda *a: AuthResult(success=True, handled=False))
    smtp.start()
    alerts = (f'\n[siege.alerts]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\n'
              f'user = "alerts"\npassword = "x"\nsender = "siege@example.net"\n'
              f'to = ["it@example.net"]\nca_file = "{cert}"\n')
    mesh = None
    try:
        mesh = ProcessMesh(fb_server, tmp_path, DDL, siege_toml=alerts)
        cons, procs = mesh.cons, mesh.procs
        (tmp_path / "siege-ctl.toml").write_text(
            f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
            'bundle = "bundles/ops"\n')

        def ctl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                                   str(tmp_path / "siege-ctl.toml"), *args],
                                  capture_output=True, text=True, timeout=120)

        run_sql(cons["lyon"], "INSERT INTO ITEMS (ID, LABEL) VALUES (1, 'lyon')")
        assert ctl("manual").returncode == 0
        procs["nice"].send_signal(signal.SIGTERM)
        assert procs["nice"].wait(timeout=30) == 0
        run_sql(cons["lyon"], "INSERT INTO ITEMS (ID, LABEL) VALUES (2, 'while nice is down')")
        partial = ctl("manual")
        assert partial.returncode == 1 and "PARTIAL" in partial.stdout
        deadline = time.monotonic() + 20
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inbox.messages and "PARTIAL" in inbox.messages[0]["Subject"]
        mesh.start("nice")
        caught_up = ctl("manual")
        assert caught_up.returncode == 0, caught_up.stdout
        with transaction_of(cons["nice"]) as cur:
            cur.execute("SELECT ID FROM ITEMS ORDER BY ID")
            assert [r[0] for r in cur.fetchall()] == [1, 2]
        listed = ctl("report", "list")
        assert [line.split()[6] for line in listed.stdout.splitlines()[2:]] == [
            "complete", "partial", "complete"]
    finally:
        if mesh is not None:
            mesh.close()
        smtp.stop()
