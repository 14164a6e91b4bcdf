"""A site that needs a resync says so everywhere (issue 27, item 3): lyon is put back from a
backup older than events the mesh has purged since; it kept running with nothing said but a
line of the round report. Now the round report carries the commands to run, an alert email
goes out, ``siege-ctl status`` shows it first, and lyon's own node logs it and keeps it in its
database for ``siege-node status``; the resync is titled as one and points at where lyon's
unsent writes are on record, and every one of those signs is gone after it. Real parts:
embedded Firebird, nodes on mTLS loopback, a real SMTP server (tests/test_alerts.py)."""

from __future__ import annotations

import logging
from email.header import decode_header, make_header
from pathlib import Path

from firebird.driver import SrvRestoreFlag

from siege_sync.node.db import dbserver
from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.journal import conflicts
from siege_sync.node.mesh.daemon import Node
from siege_sync.node.mesh.upstream import NEEDS_RESYNC
from siege_sync.proto import coordinator_pb2
from siege_sync.siege.meshstatus import mesh_status
from tests.test_alerts import smtp  # noqa: F401 (the fixture)
from tests.test_apply import run_sql
from tests.test_join import DDL, digests
from tools.localmesh import LocalMesh

SITES = {"siege": True, "lyon": False, "nice": False}


def subjects(inbox) -> list[str]:
    return [str(make_header(decode_header(m["Subject"]))) for m in inbox.messages]


def test_a_site_restored_behind_a_purge_says_it_needs_a_resync(
        tmp_path: Path, smtp, caplog) -> None:  # noqa: F811 (the fixture)
    inbox, alerts = smtp
    mesh = LocalMesh(tmp_path, SITES, DDL,
                     siege_settings={"alerts": {**alerts, "every_minutes": 0}})
    role = mesh.nodes["siege"].roles[0]
    try:
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (1, 'lyon first')")
        assert role.rounds.run("manual").outcome == "complete"
        lyon_cfg = mesh.nodes["lyon"].cfg
        path = Path(lyon_cfg.database.dsn)
        where = dbserver.served(str(path))
        backup = tmp_path / "lyon-old.fbk"
        with open(backup, "wb") as out:
            dbserver.backup(where, DatabaseSpec(str(path)), out)
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (2, 'lyon second')")
        run_sql(mesh.cons["siege"], "INSERT INTO T VALUES (3, 'siege later')")
        for _ in range(2):  # complete rounds: what every site applied is purged everywhere
            assert role.rounds.run("manual").outcome == "complete"

        # lyon's PC is put back from the older backup; its node starts again as before.
        mesh.nodes["lyon"].stop(grace=1)
        mesh.cons["lyon"].close()
        with dbserver.service_manager(where, DatabaseSpec(str(path))) as srv, \
                open(backup, "rb") as stream:
            srv.database.local_restore(backup_stream=stream, database=str(path),
                                       flags=SrvRestoreFlag.REPLACE)
        mesh.cons["lyon"] = open_connection(DatabaseSpec(str(path)))
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (20, 'lyon, unsent')")
        mesh.nodes["lyon"] = Node(lyon_cfg)
        mesh.nodes["lyon"].start()

        report = role.rounds.run("manual")
        role.after_round(report)
        lyon = next(s for s in report.sites if s.site == "lyon")
        todo = [e for e in lyon.errors if "lyon NEEDS A RESYNC" in e]
        assert todo and "siege-node resync --config FILE" in todo[0] \
            and "siege-ctl resync lyon" in todo[0], list(lyon.errors)
        # Listed among the alerts of the round's one email.
        bodies = [m.get_payload(decode=True).decode("utf-8") for m in inbox.messages]
        assert any("\n- lyon NEEDS A RESYNC" in f"\n{b}" for b in bodies), subjects(inbox)
        status = mesh_status(mesh.nodes["siege"], role.rounds)
        shown = next(s for s in status.sites if s.site == "lyon")
        assert shown.problem.startswith("lyon NEEDS A RESYNC"), shown.problem
        with caplog.at_level(logging.ERROR):
            reason = mesh.nodes["lyon"].check_resync()
        assert "purged mesh-wide" in reason and "siege-ctl resync lyon" in reason
        assert "THIS SITE NEEDS A RESYNC" in caplog.text
        assert mesh.nodes["lyon"].replica.read_state(NEEDS_RESYNC) == reason
        assert mesh.nodes["nice"].check_resync() == ""  # nice is whole
        # A transaction of lyon held at nice names lyon's resync: nice itself needs none.
        held_at_nice = coordinator_pb2.SiteReport(site="nice", outcome="failed", errors=[
            "at nice: lyon went back to an older copy of its database: nothing of it "
            "applies any more anywhere; rebuild it with `siege-ctl resync lyon`"])
        role.rounds._needs_resync(held_at_nice)
        assert not any("NEEDS A RESYNC" in e for e in held_at_nice.errors)

        mesh.nodes["lyon"].stop(grace=1)
        mesh.cons["lyon"].close()
        report = mesh.join(lyon_cfg, resync=True)
        assert report.outcome == "resynced", report
        assert "siege-node conflicts" in report.note and "siege-ctl conflicts" not in \
            report.note, report.note
        mesh.cons["lyon"] = open_connection(DatabaseSpec(str(path)))
        assert role.rounds.run("manual").outcome == "complete"
        assert len(digests(mesh, mesh.cons)) == 1
        shown = next(s for s in mesh_status(mesh.nodes["siege"], role.rounds).sites
                     if s.site == "lyon")
        assert "NEEDS A RESYNC" not in shown.problem, shown.problem
        assert mesh.nodes["lyon"].check_resync() == ""
        on_record = {(c.key[0].integer, c.value.text if c.value else None)
                     for c in conflicts.listing(mesh.cons["lyon"]) if c.kind == "resync"}
        assert (20, "lyon, unsent") in on_record, on_record
    finally:
        mesh.close()
