"""Issue 17 item 6: a held transaction has a way out.

A site whose table carries an extra CHECK constraint (added outside the mesh) refuses another
site's change. Real Firebird, real nodes over real mTLS, a real SMTP server: `siege-node held`
(at that site) and `siege-ctl held` (the siège, every site) list it — origin, events, rows
and values, the database's own message, since when, what to do; the round's report (text,
HTML, PDF) and its email carry the same facts; `analyse` lists the key as held, not as a
difference, and `--repair` refuses it naming the held transaction; once the operator drops
the constraint, `held --retry` applies it, the list is empty and the sites converge."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from siege_sync.node import cli as node_cli
from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import parking
from siege_sync.siege.ctl import main as ctl_main
from tests.test_alerts import smtp  # noqa: F401 (the fixture)
from tests.test_apply import run_sql
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, QTY INTEGER, NOTE VARCHAR(40))"]


@pytest.fixture
def mesh(tmp_path, smtp):  # noqa: F811 (the fixture)
    inbox, alerts = smtp
    m = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False}, DDL,
                  siege_settings={"alerts": {**alerts, "every_minutes": 0,
                                             "disk_free_mb": 0}})
    m.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{m.ports["siege"]}"\nsiege = "siege"\nbundle = "bundles/ops"\n')
    # nice's own config file, as its operator has it (siege-node held --config nice.toml).
    peers = "".join(f'[peers.{p}]\naddress = "127.0.0.1:{m.ports[p]}"\n'
                    for p in ("siege", "lyon"))
    (tmp_path / "nice.toml").write_text(
        f'site = "nice"\n[database]\ndsn = "{tmp_path / "nice.fdb"}"\n'
        f'[node]\nlisten = "127.0.0.1:{m.ports["nice"]}"\n'
        f'bundle = "{tmp_path / "bundles" / "nice"}"\nsiege = "siege"\n{peers}')
    m.inbox = inbox
    yield m
    m.close()


def ctl_process(mesh, *args: str) -> subprocess.CompletedProcess:
    """`siege-ctl` as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                           str(mesh.folder / "siege-ctl.toml"), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def ctl(mesh, capsys):
    """`siege-ctl`'s own main, in this process (a new interpreter costs seconds each)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = ctl_main(["--config", str(mesh.folder / "siege-ctl.toml"), *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


def node_held(mesh, capsys, *args: str) -> tuple[int, str, str]:
    """`siege-node held` at nice — in this process: its embedded database is open here."""
    capsys.readouterr()
    code = node_cli.main(["held", "--config", str(mesh.folder / "nice.toml"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(con) -> list[tuple]:
    """An independent read of the application's table."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, QTY, NOTE FROM ITEM ORDER BY ID")
        found = [tuple(r) for r in cur.fetchall()]
        cur.close()
    return found


def assert_facts(text: str) -> None:
    """What an operator must read about the held transaction, wherever it is shown."""
    assert "REFUSED at nice: lyon's transaction lyon#" in text, text
    assert "QTY_SMALL" in text, "the database's own message"  # the constraint's name
    assert "update ITEM key 1: QTY = 500, NOTE = 'big order'" in text, "rows and values"
    assert "since 20" in text and "attempt" in text, "since when, attempts"
    assert "what to do:" in text and "drop or change it at nice" in text, text
    assert "held --retry" in text, text


def test_a_refused_transaction_is_shown_everywhere_and_retried_once_fixed(mesh, capsys,
                                                                           ctl):
    lyon, nice = mesh.cons["lyon"], mesh.cons["nice"]
    run_sql(lyon, "INSERT INTO ITEM (ID, QTY, NOTE) VALUES (1, 5, 'small')")
    assert ctl("manual").returncode == 0
    assert rows(nice) == [(1, 5, "small")]

    # nice's operator adds a constraint outside the mesh; lyon writes what it refuses, then
    # a later transaction that waits behind it at nice.
    run_sql(nice, "ALTER TABLE ITEM ADD CONSTRAINT QTY_SMALL CHECK (QTY < 100)")
    run_sql(lyon, "UPDATE ITEM SET QTY = 500, NOTE = 'big order' WHERE ID = 1")
    run_sql(lyon, "INSERT INTO ITEM (ID, QTY, NOTE) VALUES (2, 7, 'later')")
    sent = len(mesh.inbox.messages)
    round_ = ctl("manual")
    assert "Held transactions" in round_.stdout, round_.stdout
    assert_facts(round_.stdout)
    assert rows(nice) == [(1, 5, "small")], "nothing of lyon's later work is applied at nice"
    assert rows(mesh.cons["siege"])[0] == (1, 500, "big order")

    # At the site: its own database, the rows from the siège's log.
    code, out, err = node_held(mesh, capsys)
    assert code == 1, out + err
    assert "1 refused by this database" in out and "0 waiting" in out, out
    assert_facts(out)
    # At the siège: every site.
    listed = ctl_process(mesh, "held")
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert "1 refused by a database" in listed.stdout, listed.stdout
    assert_facts(listed.stdout)
    assert "REFUSED at lyon" not in listed.stdout and "at siege" not in listed.stdout
    assert re.search(r"behind it: \d+ later changes? of lyon waits? at nice", listed.stdout), \
        listed.stdout

    # The stored report, as text, HTML and PDF; and its email.
    report_id = re.search(r"^report (\d+): ", round_.stdout, re.M).group(1)
    shown = ctl("report", "show", report_id)
    assert_facts(shown.stdout)
    page, pdf = mesh.folder / "round.html", mesh.folder / "round.pdf"
    assert ctl("report", "show", report_id, "--html", str(page),
               "--pdf", str(pdf)).returncode == 0
    assert_facts(page.read_text().replace("&#x27;", "'"))
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1500
    # The round's one email lists it among its alerts, its facts under the list.
    bodies = [m.get_payload(decode=True).decode("utf-8") for m in mesh.inbox.messages[sent:]]
    mails = [b for b in bodies if "- a transaction of lyon REFUSED at nice" in b]
    assert len(mails) == 1, [m["Subject"] for m in mesh.inbox.messages[sent:]]
    assert_facts(mails[0])

    # analyse: key 1 is held at nice, not a difference; --repair refuses it, naming it.
    found = ctl("analyse", "--table", "ITEM", "--site", "nice")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "HELD" in found.stdout and "DIFFERENCES" not in found.stdout, found.stdout
    assert "nice ITEM: key 1: touched by lyon#" in found.stdout, found.stdout
    # lyon's later insert waits behind it at nice: pending, not a difference either.
    assert re.search(r"nice ITEM: key 2: touched by lyon#\d+, waiting at nice behind lyon#",
                     found.stdout), found.stdout
    assert "Differing rows" not in found.stdout, found.stdout
    fixed = ctl("analyse", "--table", "ITEM", "--site", "nice", "--repair",
                "--prefer", "siege")
    assert "key 1: touched by lyon#" in fixed.stdout and "NOT repaired" in fixed.stdout, \
        fixed.stdout
    assert rows(nice) == [(1, 5, "small")], "the held row was not repaired over"

    # Retrying before the cause is fixed: still held, one attempt more, said so.
    again = ctl("held", "--retry")
    assert again.returncode == 1 and "still refused" in again.stdout, again.stdout

    # The operator drops the constraint; the retry applies it and the list is empty.
    run_sql(nice, "ALTER TABLE ITEM DROP CONSTRAINT QTY_SMALL")
    retried = ctl("held", "--retry")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "APPLIED now" in retried.stdout, retried.stdout
    assert "no transaction is held at any site" in retried.stdout, retried.stdout
    code, out, _err = node_held(mesh, capsys)
    assert code == 0 and "no transaction is held here" in out, out
    assert ctl("manual").returncode == 0
    expected = [(1, 500, "big order"), (2, 7, "later")]
    for site, con in mesh.cons.items():
        assert rows(con) == expected, site


def test_a_site_that_dials_in_says_what_it_holds_and_retries_through_its_own_node(
        mesh, capsys, ctl):
    lyon, nice = mesh.cons["lyon"], mesh.cons["nice"]
    run_sql(nice, "ALTER TABLE ITEM ADD CONSTRAINT QTY_SMALL CHECK (QTY < 100)")
    run_sql(lyon, "INSERT INTO ITEM (ID, QTY, NOTE) VALUES (1, 500, 'big order')")
    ctl("manual")
    # From now on nice cannot be dialled (CGNAT): it announced so, as its node does.
    mesh.nodes["siege"].addresses.record_announce("nice", f"127.0.0.1:{mesh.ports['nice']}",
                                                  True)
    unknown = ctl("held")
    assert "not asked: nice dials in and cannot be asked" in unknown.stdout, unknown.stdout
    assert unknown.returncode == 1
    code, out, _err = node_held(mesh, capsys)  # nice tells the siège what it holds
    assert code == 1 and "insert ITEM key 1: ID = 1, QTY = 500, NOTE = 'big order'" in out, out
    told = ctl("held")
    assert "REFUSED at nice: lyon's transaction lyon#" in told.stdout, told.stdout
    assert "as nice said at 20" in told.stdout and "QTY_SMALL" in told.stdout, told.stdout
    retry = ctl("held", "--retry")
    assert "nice dials in and cannot be dialled" in retry.stdout, retry.stdout
    assert "siege-node held --retry` at nice" in retry.stdout, retry.stdout

    code, out, _err = node_held(mesh, capsys, "--retry")
    assert code == 1 and "still refused" in out and "insert ITEM key 1" in out, out
    run_sql(nice, "ALTER TABLE ITEM DROP CONSTRAINT QTY_SMALL")
    code, out, err = node_held(mesh, capsys, "--retry")
    assert code == 0 and "APPLIED now" in out and "no transaction is held here" in out, \
        out + err
    assert rows(nice) == [(1, 500, "big order")]


def test_held_at_the_siege_itself_is_described_from_its_origin(mesh, ctl):
    siege = mesh.cons["siege"]
    run_sql(siege, "ALTER TABLE ITEM ADD CONSTRAINT QTY_SMALL CHECK (QTY < 100)")
    run_sql(mesh.cons["lyon"], "INSERT INTO ITEM (ID, QTY, NOTE) VALUES (1, 500, 'big')")
    ctl("manual")
    listed = ctl("held")
    assert "REFUSED at siege: lyon's transaction lyon#" in listed.stdout, listed.stdout
    # The siège stores only what it applied: the row comes from lyon itself.
    assert "insert ITEM key 1: ID = 1, QTY = 500, NOTE = 'big'" in listed.stdout, listed.stdout
    assert "QTY_SMALL" in listed.stdout and "drop or change it at siege" in listed.stdout
    run_sql(siege, "ALTER TABLE ITEM DROP CONSTRAINT QTY_SMALL")
    retried = ctl("held", "--retry")
    assert "exchanged with lyon" in retried.stdout and "APPLIED now" in retried.stdout, \
        retried.stdout
    assert retried.returncode == 0 and rows(siege) == [(1, 500, "big")]


def test_operator_mistakes_are_said_without_a_traceback(mesh, tmp_path, ctl):
    unknown = ctl("held", "--site", "paris")  # a traceback would fail the test here
    assert unknown.returncode == 2 and "paris" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr
    gone = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--address",
                           "127.0.0.1:1", "--siege", "siege", "--bundle",
                           str(tmp_path / "bundles" / "ops"), "--timeout", "3", "held"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and "UNAVAILABLE" in gone.stderr, gone.stderr
    assert "Traceback" not in gone.stderr


def test_waiting_and_refused_are_said_apart():
    waits = "lyon#4 waits: it changes ITEM (1) as nice#2 (incarnation 1) left it, which ..."
    refused = ("applying lyon#3 (a transaction of 1 changes, table ITEM) failed: Operation "
               "violates CHECK constraint QTY_SMALL on view or table ITEM. Nothing of it was "
               "applied; it and the later events of that site wait")
    assert parking.state_of(waits) == parking.WAITING
    assert parking.state_of(refused) == parking.REFUSED
    assert parking.database_message(refused) == ("Operation violates CHECK constraint "
                                                 "QTY_SMALL on view or table ITEM")
    assert "applies by itself" in parking.what_to_do("nice", "lyon", waits)
    assert "drop or change it at nice" in parking.what_to_do("nice", "lyon", refused)
