"""The siège's rounds driven through ``siege-ctl`` (a real process, an admin certificate):
a round with every site, a round with a site down (partial, reported, caught up next round),
``stop`` mid-round (nothing half applied, the next round completes), reports listed and
shown, the connection test."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from tests.test_apply import run_sql
from tests.test_capture_random import snapshot
from tests.test_mesh import publish, transaction_of
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), B INTEGER)"]
SITES = {"siege": True, "lyon": False, "nice": False}


def mesh_with(tmp_path, siege_settings: dict | None = None) -> LocalMesh:
    """The three sites, the siège with ``siege_settings``, and a siege-ctl.toml for them."""
    m = LocalMesh(tmp_path, SITES, DDL, siege_settings=siege_settings)
    m.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{m.ports["siege"]}"\nsiege = "siege"\nbundle = "bundles/ops"\n')
    return m


@pytest.fixture
def mesh(tmp_path):
    m = mesh_with(tmp_path)
    yield m
    m.close()


def ctl(mesh, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                           str(mesh.folder / "siege-ctl.toml"), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_manual_round_brings_every_site_to_the_same_data(mesh):
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'lyon')")
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (2, 'nice')")
    done = ctl(mesh, "manual")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMPLETE" in done.stdout and "report 1" in done.stdout
    assert "gather" in done.stdout and "redistribute" in done.stdout
    states = [snapshot(con) for con in mesh.cons.values()]
    assert states[0] == states[1] == states[2] and len(states[0]) == 2
    listed = ctl(mesh, "report", "list")
    assert listed.returncode == 0 and "complete" in listed.stdout and "2/2" in listed.stdout
    shown = ctl(mesh, "report", "show", "1")
    assert shown.returncode == 0 and "lyon" in shown.stdout and "nice" in shown.stdout


def test_a_site_down_makes_a_partial_round_and_catches_up_next_time(mesh):
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'lyon')")
    mesh.nodes["nice"].stop(grace=1)
    done = ctl(mesh, "manual")
    assert done.returncode == 1 and "PARTIAL" in done.stdout
    assert "nice" in done.stdout and "did NOT complete" in done.stdout
    test = ctl(mesh, "test")
    assert test.returncode == 1 and "NO" in test.stdout and "not reachable" in test.stdout
    from siege_sync.node.mesh.daemon import Node

    mesh.nodes["nice"] = Node(mesh.nodes["nice"].cfg)
    mesh.nodes["nice"].start()
    again = ctl(mesh, "manual")
    assert again.returncode == 0, again.stdout
    assert snapshot(mesh.cons["nice"]) == snapshot(mesh.cons["lyon"])
    test = ctl(mesh, "test")
    assert test.returncode == 0, test.stdout
    assert test.stdout.count("match") == 3 and "ok" in test.stdout  # the siège too
    siege_row = next(line for line in test.stdout.splitlines() if line.startswith("siege"))
    assert siege_row.startswith("siege (siège)") and "this node" in siege_row


@pytest.fixture
def capped(tmp_path):
    """The mesh, lyon's exchanges capped at 1 Mbit/s: a round takes long enough to stop."""
    m = mesh_with(tmp_path, {"bandwidth": [{"site": "lyon", "kbit": 1000}]})
    yield m
    m.close()


def test_stop_mid_round_leaves_nothing_half_applied(capped):
    from siege_sync.certs import load_bundle
    from siege_sync.node.mesh.transport import channel
    from siege_sync.proto import coordinator_pb2, coordinator_pb2_grpc
    from tools.netns import read_line

    mesh = capped
    for t in range(30):  # thirty transactions of a hundred rows: many batches to stop between
        with transaction_of(mesh.cons["lyon"]) as cur:
            for i in range(100):
                cur.execute("INSERT INTO T (ID, A, B) VALUES (?, 'bulk', ?)", (t * 100 + i, t))
    proc = subprocess.Popen([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                             str(mesh.folder / "siege-ctl.toml"), "manual"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = read_line(proc, timeout=60)
    assert "running" in first, first
    ch = channel(f"127.0.0.1:{mesh.ports['siege']}",
                 load_bundle(mesh.pki.folder / "bundles" / "ops"), "siege")
    with ch:
        reply = coordinator_pb2_grpc.CoordinatorStub(ch).Stop(coordinator_pb2.StopRequest(),
                                                               timeout=10)
    out, err = proc.communicate(timeout=120)
    assert reply.was_running
    assert proc.returncode == 1 and "STOPPED" in out, out + err
    # What arrived is whole source transactions: a hundred rows per transaction number.
    got = snapshot(mesh.cons["siege"])
    assert len(got) % 100 == 0 and len(got) < 3000
    again = ctl(mesh, "manual")
    assert again.returncode == 0, again.stdout
    assert snapshot(mesh.cons["siege"]) == snapshot(mesh.cons["lyon"])
    assert "stopped" in ctl(mesh, "report", "list").stdout


def test_siege_ctl_explains_its_mistakes(mesh, tmp_path):
    done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--address",
                           "127.0.0.1:1", "--siege", "siege", "--bundle",
                           str(mesh.pki.folder / "bundles" / "ops"), "report", "list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is the siège's node running" in done.stderr
    done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                           str(tmp_path / "nope.toml"), "test"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "no such file" in done.stderr
    # A site certificate is not an admin certificate.
    done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--address",
                           f"127.0.0.1:{mesh.ports['siege']}", "--siege", "siege",
                           "--bundle", str(mesh.pki.folder / "bundles" / "lyon"),
                           "report", "list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "PERMISSION_DENIED" in done.stderr


def test_a_site_whose_capture_is_broken_is_reported_silent(mesh):
    run_sql(mesh.cons["nice"], "ALTER TRIGGER SYNC$TR0 INACTIVE")  # its heartbeat's capture
    done = ctl(mesh, "manual")
    assert done.returncode == 1 and "PARTIAL" in done.stdout
    assert "reachable but silent" in done.stdout and "nice" in done.stdout
    run_sql(mesh.cons["nice"], "ALTER TRIGGER SYNC$TR0 ACTIVE")
    assert ctl(mesh, "manual").returncode == 0


def test_status_shows_each_sites_last_sync_and_what_is_pending(mesh):
    never = ctl(mesh, "status")
    assert never.returncode == 0 and never.stdout.count("never") == 2
    assert "siège role: siege" in never.stdout
    assert ctl(mesh, "manual").returncode == 0
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'not yet at the siège')")
    publish(mesh, "lyon")
    done = ctl(mesh, "status")
    assert done.returncode == 0, done.stdout
    lyon = next(line for line in done.stdout.splitlines() if line.startswith("lyon"))
    assert "never" not in lyon and " 1 " in f" {lyon} "
    mesh.nodes["nice"].stop(grace=1)
    down = ctl(mesh, "status")
    assert down.returncode == 1 and "NO" in down.stdout
    assert "nice: nice not reachable: configured" in down.stdout


def test_a_report_prints_as_html_and_as_a_pdf_a_person_can_read(mesh, tmp_path):
    import pypdfium2

    mesh.nodes["nice"].stop(grace=1)
    assert ctl(mesh, "manual").returncode == 1
    html_file, pdf_file = tmp_path / "r.html", tmp_path / "r.pdf"
    done = ctl(mesh, "report", "show", "1", "--html", str(html_file), "--pdf", str(pdf_file))
    assert done.returncode == 0, done.stderr
    page_html = html_file.read_text()
    assert "PARTIAL" in page_html and "nice" in page_html and "did NOT complete" in page_html
    pdf = pypdfium2.PdfDocument(str(pdf_file))
    text = pdf[0].get_textpage().get_text_range()
    assert "Sync 1: PARTIAL" in text and "lyon" in text and "nice" in text
    assert "did NOT complete" in text.replace("\r\n", " ").replace("\n", " ")
    image = pdf[0].render(scale=1).to_pil()  # the page renders: a person can look at it
    image.save(tmp_path / "r.png")
    assert image.size[0] > 500 and len(image.getcolors(maxcolors=1 << 16) or [0, 0, 0]) > 2


def test_conflicts_are_listed_with_both_sides_and_reapplied_by_hand(mesh):
    import time as _time

    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (1, 'start')")
    assert ctl(mesh, "manual").returncode == 0
    run_sql(mesh.cons["lyon"], "UPDATE T SET A = 'lyon wrote' WHERE ID = 1")
    _time.sleep(0.01)
    run_sql(mesh.cons["nice"], "UPDATE T SET A = 'nice wrote later' WHERE ID = 1")
    assert ctl(mesh, "manual").returncode == 0
    listed = ctl(mesh, "conflicts")
    assert listed.returncode == 0 and "lyon wrote" in listed.stdout
    assert "nice wrote later" in listed.stdout  # the winning side, shown next to it
    ident = listed.stdout.splitlines()[2].split()[0]
    again = ctl(mesh, "conflicts", "--reapply", ident)
    assert again.returncode == 0 and f"re-applied {ident}" in again.stdout
    assert ctl(mesh, "manual").returncode == 0
    for con in mesh.cons.values():
        assert snapshot(con)[("T", next(iter(snapshot(con)))[1])]["A"].endswith(b"lyon wrote")


def test_conflicts_read_on_one_line_each_and_are_marked_seen(mesh):
    """A text with line breaks and a tab, listed on one line with its key's column name;
    ``--ack`` marks one seen: kept on record, left out until ``--all``; ``--ack-before``
    marks every earlier one; a wrong id or date is said, exit 2."""
    import time as _time

    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (1, 'start')")
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (2, 'start')")
    assert ctl(mesh, "manual").returncode == 0
    written = {datetime.now().strftime("%Y-%m-%d %H:%M")}
    for key in (1, 2):
        run_sql(mesh.cons["lyon"], f"UPDATE T SET A = 'lyon\nligne 2\tfin' WHERE ID = {key}")
        _time.sleep(0.02)
        run_sql(mesh.cons["nice"], f"UPDATE T SET A = 'nice wrote later' WHERE ID = {key}")
    assert ctl(mesh, "manual").returncode == 0
    listed = ctl(mesh, "conflicts")
    rows = listed.stdout.splitlines()[2:]
    assert len(rows) == 2, listed.stdout  # one line per record
    assert "ID=1" in rows[0] and "'lyon\\nligne 2\\tfin'" in rows[0], listed.stdout
    # When lyon wrote the losing value, in this machine's local time (issue 24 item 2).
    written.add(datetime.now().strftime("%Y-%m-%d %H:%M"))
    assert any("lyon/1#" in rows[0] and minute in rows[0] for minute in written), rows[0]
    assert "changed" in listed.stdout.splitlines()[0]
    first = rows[0].split()[0]
    seen = ctl(mesh, "conflicts", "--ack", first)
    assert seen.returncode == 0 and "1 change set aside marked seen" in seen.stdout
    assert first not in seen.stdout.split("marked seen", 1)[1]
    assert "1 seen left out: --all lists it" in seen.stdout
    everything = ctl(mesh, "conflicts", "--all")
    assert first in everything.stdout and "seen" in everything.stdout
    tomorrow = (datetime.now() + timedelta(days=1)).date().isoformat()
    before = ctl(mesh, "conflicts", "--ack-before", tomorrow)
    assert "1 change set aside marked seen" in before.stdout, before.stdout
    assert "no change set aside on record" in before.stdout
    assert len(ctl(mesh, "conflicts", "--all").stdout.splitlines()) == 4  # kept on record
    wrong = ctl(mesh, "conflicts", "--ack", "ffffffffffff")
    assert wrong.returncode == 2 and "no change set aside 'ffffffffffff'" in wrong.stderr
    bad = ctl(mesh, "conflicts", "--ack-before", "next tuesday")
    assert bad.returncode == 2 and "not a date" in bad.stderr and "Traceback" not in bad.stderr


def stored_segments(con) -> int:
    from tests.test_apply import count

    return count(con, "SYNC$EVENTS")


def test_rounds_purge_what_every_site_holds_and_nothing_else(mesh):
    for i in range(3):
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (?, 'x')", (i,))
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (3, 'siege')")

    publish(mesh, "lyon")
    assert stored_segments(mesh.cons["lyon"]) > 0
    # The round brings everything everywhere, then asks every site what it holds: what all
    # hold is no longer needed for relaying.
    assert ctl(mesh, "manual").returncode == 0
    assert all(stored_segments(c) == 0 for c in mesh.cons.values()), \
        [stored_segments(c) for c in mesh.cons.values()]
    shown = ctl(mesh, "report", "show", "1")
    assert "purged everywhere: " in shown.stdout and "purged everywhere: 0" not in shown.stdout
    # Life goes on after a purge: new events flow (the siège's own too: its chain is checked
    # against peers whose last event of it is purged everywhere), old rows stay.
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (10, 'after')")
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (11, 'siege after')")
    for _ in range(2):
        done = ctl(mesh, "manual")
        assert done.returncode == 0, done.stdout
    states = [snapshot(c) for c in mesh.cons.values()]
    assert states[0] == states[1] == states[2] and len(states[0]) == 6


def first_stored(con, origin: str) -> int | None:
    """The first sequence number of ``origin`` still stored there (None: none stored)."""
    from siege_sync.node.db.database import READ_COMMITTED_RW, transaction

    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT MIN(FIRST_SEQ) FROM SYNC$EVENTS WHERE ORIGIN = ?", (origin,))
        first = cur.fetchone()[0]
        cur.close()
    return first


def dialling_in(mesh, site: str):
    """``site``'s node, made one that cannot be dialled (it told the siège so)."""
    import dataclasses

    from tests.test_election import until

    book = mesh.nodes["siege"].addresses
    node = mesh.nodes[site]
    # Its announcement at start comes first (it may have met the siège restarting: then
    # it would come only at the next announce period, so it is made again here).
    if book.announced(site) is None:
        node.announce(mesh.ports[site])
    until(lambda: book.announced(site) is not None)
    node.service_cfg = dataclasses.replace(node.service_cfg, outbound_only=True)
    assert node.announce(mesh.ports[site]), f"{site} told the siège it dials out only"
    until(lambda: book.announced(site).dials_out_only)
    return node


def test_a_site_that_dials_in_with_broken_capture_is_reported_silent(mesh):
    """No round calls lyon to ask for a heartbeat: it writes one before each exchange it
    starts. Once its capture breaks, its heartbeat stops changing while it keeps saying
    hello, and the siège's rounds report it silent."""
    from siege_sync.siege.rounds import SILENT_AFTER_HELLOS

    lyon = dialling_in(mesh, "lyon")
    for _ in range(2):
        lyon.dial_out()
        done = ctl(mesh, "manual")
        assert done.returncode == 0 and "dials in" in done.stdout, done.stdout
    run_sql(mesh.cons["lyon"], "ALTER TRIGGER SYNC$TR0 INACTIVE")  # its heartbeat's capture
    outcomes = []
    for _ in range(SILENT_AFTER_HELLOS):
        lyon.dial_out()
        outcomes.append(ctl(mesh, "manual"))
    assert [o.returncode for o in outcomes[:-1]] == [0] * (SILENT_AFTER_HELLOS - 1)
    assert outcomes[-1].returncode == 1, outcomes[-1].stdout
    assert "heartbeat has not changed" in outcomes[-1].stdout
    run_sql(mesh.cons["lyon"], "ALTER TRIGGER SYNC$TR0 ACTIVE")
    lyon.dial_out()
    assert ctl(mesh, "manual").returncode == 0
    # status does not try to dial it either: it shows its last exchange.
    status = ctl(mesh, "status")
    row = next(line for line in status.stdout.splitlines() if line.startswith("lyon"))
    assert "yes, dials in" in row and "never" not in row, status.stdout
    assert status.returncode == 0, status.stdout
    # Nor does the connection test: it judges lyon on what its last hello said.
    test = ctl(mesh, "test")
    row = next(line for line in test.stdout.splitlines() if line.startswith("lyon"))
    assert "dials in" in row and "match" in row and "lyon" in row[4:], test.stdout
    assert test.returncode == 0, test.stdout


def test_a_site_that_dials_in_takes_part_in_the_purge(mesh):
    """lyon cannot be dialled: the siège counts what lyon's last hello said it holds (never
    more), and lyon follows the order when it next dials in. Without this, one such site
    would stop every purge and the logs would grow for ever."""
    lyon = dialling_in(mesh, "lyon")
    for i in range(3):
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (?, 'lyon')", (i,))
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (10, 'siege')")
    reply = lyon.dial_out()  # its three rows and its heartbeat go (the heartbeat not counted)
    assert reply is not None and not reply.problems and reply.pushed_events == 3, reply
    done = ctl(mesh, "manual")
    assert done.returncode == 0 and "dials in" in done.stdout, done.stdout
    # lyon's first hello said it held nothing (its chain was not confirmed, so nothing was
    # published yet): nothing is purged, the siège's first event stays everywhere.
    assert all(first_stored(c, "siege") == 1 for c in mesh.cons.values())
    assert first_stored(mesh.cons["siege"], "lyon") == 1
    lyon.dial_out()  # its hello says it holds everything above
    assert ctl(mesh, "manual").returncode == 0
    # lyon's rows (#1-3) and first heartbeat (#4) are gone; the heartbeat it wrote for
    # this exchange (#5) was published after its hello: it stays.
    assert first_stored(mesh.cons["siege"], "lyon") == 5
    assert first_stored(mesh.cons["nice"], "lyon") == 5
    assert first_stored(mesh.cons["lyon"], "lyon") == 1, "the siège cannot purge lyon itself"
    lyon.dial_out()  # it asks for the order and follows it
    for con in mesh.cons.values():
        assert first_stored(con, "lyon") == 5 and first_stored(con, "siege") != 1
    states = [snapshot(con) for con in mesh.cons.values()]
    assert states[0] == states[1] == states[2] and len(states[0]) == 4
    # Life goes on after the purge, both ways.
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (20, 'lyon after')")
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (21, 'nice after')")
    lyon.dial_out()
    assert ctl(mesh, "manual").returncode == 0
    lyon.dial_out()
    states = [snapshot(con) for con in mesh.cons.values()]
    assert states[0] == states[1] == states[2] and len(states[0]) == 6


def test_a_purge_order_is_followed_only_from_a_coordinator(mesh):
    """A site asks the coordinator it dials for the last purge order: one kept by a node
    whose certificate lacks the relay role is not followed (the Purge call refuses it too)."""
    from siege_sync.proto import sync_pb2

    assert ctl(mesh, "manual").returncode == 0
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'lyon')")
    assert not mesh.exchange("siege", "lyon").problems  # stored at lyon, not purged yet
    lyon = mesh.nodes["lyon"]
    order = sync_pb2.PurgeRequest(
        applied_everywhere=lyon.replica.vector(publish=False).to_proto())
    stored = first_stored(mesh.cons["lyon"], "lyon")
    assert stored is not None
    mesh.nodes["nice"].replica.keep_purge_order(order)
    lyon.follow_purge_order("nice")
    assert first_stored(mesh.cons["lyon"], "lyon") == stored, "nice may not order a purge"
    mesh.nodes["siege"].replica.keep_purge_order(order)
    lyon.follow_purge_order("siege")
    assert first_stored(mesh.cons["lyon"], "lyon") is None


def test_a_copy_sent_to_a_site_that_dials_in_holds_the_purge_until_it_next_says_hello(mesh):
    """The siège cannot dial lyon to sync it after a join or resync: the purge waits for a
    hello of lyon's new database (its last hello spoke of the one the copy replaced)."""
    from datetime import datetime

    from siege_sync.node.journal import capture

    lyon = dialling_in(mesh, "lyon")
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (1, 'nice')")
    assert ctl(mesh, "manual").returncode == 0  # the siège gathers nice's row
    lyon.dial_out()
    lyon.dial_out()  # lyon's hello says it holds nice's row
    # What `siege-ctl resync lyon` leaves: the mark, the new database's epoch at the siège
    # and at lyon (a stand-in for the copy itself, which test_join covers).
    siege = mesh.nodes["siege"].replica
    siege.write_state("joining:lyon", datetime.now().isoformat())
    siege.write_state("epoch:lyon", "the copy's epoch")
    capture.set_state(mesh.cons["lyon"], "epoch", "the copy's epoch")
    assert ctl(mesh, "manual").returncode == 0
    assert first_stored(mesh.cons["siege"], "nice") == 1, "held back for lyon's copy"
    assert siege.read_state("joining:lyon") != ""
    lyon.dial_out()
    assert ctl(mesh, "manual").returncode == 0
    assert siege.read_state("joining:lyon") == ""
    assert first_stored(mesh.cons["siege"], "nice") != 1


def test_a_site_down_holds_back_the_purge_until_it_lags_too_long(tmp_path, monkeypatch):
    from datetime import datetime, timedelta

    from siege_sync.siege import purge as purge_module

    class Later(datetime):
        """The purge's clock, moved ahead by the test (no sleeping past the lag limit)."""

        ahead = timedelta(0)

        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + cls.ahead

    monkeypatch.setattr(purge_module, "datetime", Later)
    m = mesh_with(tmp_path, {"retention_lag_days": 1})
    try:
        run_sql(m.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'x')")
        assert ctl(m, "manual").returncode == 0
        m.nodes["nice"].stop(grace=1)
        ctl(m, "manual")
        assert stored_segments(m.cons["siege"]) > 0, "nice is down: nothing purged"
        Later.ahead = timedelta(days=1, hours=1)  # past the lag limit, as the purge sees it
        done = ctl(m, "manual")
        assert "will need a resync" in done.stdout
        assert stored_segments(m.cons["siege"]) == 0, "nice no longer holds it back"
    finally:
        m.close()


def test_a_decommissioned_site_is_left_out_of_rounds(mesh):
    done = ctl(mesh, "decommission", "nice")
    assert done.returncode == 0 and "revoke" in done.stdout
    mesh.nodes["nice"].stop(grace=1)
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'x')")
    again = ctl(mesh, "manual")
    assert again.returncode == 0 and "COMPLETE" in again.stdout and "nice" not in again.stdout
    # status says so (not "unreachable"), and its exit code does not count it.
    status = ctl(mesh, "status")
    nice = next(line for line in status.stdout.splitlines() if line.startswith("nice"))
    assert "decommissioned 20" in nice and "NO" not in nice, status.stdout
    assert status.returncode == 0, status.stdout
    bad = ctl(mesh, "decommission", "paris")
    assert bad.returncode == 2 and "not a site" in bad.stderr


def test_status_says_when_the_next_scheduled_sync_runs(tmp_path):
    for name in ("hourly", "by-hand"):
        (tmp_path / name).mkdir()
    hourly = mesh_with(tmp_path / "hourly", {"interval_minutes": 60})
    try:
        status = ctl(hourly, "status")
        found = re.search(r"next scheduled sync: (\S+ \S+)", status.stdout)
        assert found, status.stdout
        due = datetime.fromisoformat(found.group(1))
        assert timedelta(minutes=58) < due - datetime.now() <= timedelta(minutes=60)
    finally:
        hourly.close()
    by_hand = mesh_with(tmp_path / "by-hand")
    try:
        assert "no sync scheduled: they run by hand" in ctl(by_hand, "status").stdout
    finally:
        by_hand.close()
