"""Issue 17 item 5: a site restored from a backup publishes every change once.

Three sites (siege, lyon, nice) on real embedded Firebird, each with its real pipeline
(``Replica``: the chain check at every hello, publish before serving and applying, the
Applier), exchanging through the siège as the coordinator's rounds do. lyon's database is
backed up, lyon goes on (its changes reach both peers, nice edits lyon's row after it
received it), then the backup comes back — as a file copy (the disk's image) or through
gbak (a new creation date, transaction numbers from 1 again). lyon takes a new incarnation
and gets its old events back from the siège; the change it had captured before the backup
and published after it must not be published a second time (a second insert of the row
would start a newer life that beats the original and discards nice's later edit).

Checked by an independent SELECT at every site: nice's edit stands, the row exists once,
lyon's change made after the backup came back, its change made after the restore went out,
lyon's own edit of another column of that row, made on the restored copy, stands too, and
nothing is on record as a conflict.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from siege_sync.node.db.database import (
    READ_COMMITTED_RW,
    DatabaseSpec,
    open_connection,
    transaction,
)
from siege_sync.node.journal import capture
from siege_sync.node.mesh.replica import Replica
from siege_sync.node.model.config import NodeConfig
from siege_sync.proto import events_pb2
from tests.test_apply import all_events

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), B INTEGER)"]
SITES = ("siege", "lyon", "nice")


class Mesh:
    """Each site's database and pipeline; a restart opens both again."""

    def __init__(self, make_db, folder: Path, sites: tuple[str, ...] = SITES) -> None:
        self.folder = folder
        self.sites = sites
        self.cons = {name: make_db(name, ddl=DDL) for name in sites}
        for con in self.cons.values():
            capture.install(con)
        self.replicas = {name: self._replica(name) for name in sites}

    def path(self, site: str) -> Path:
        return self.folder / f"{site}.fdb"

    def _replica(self, site: str) -> Replica:
        return Replica(NodeConfig(site=site, database=DatabaseSpec(str(self.path(site)))),
                       self.cons[site])

    def stop(self, site: str) -> None:
        self.replicas[site].close()

    def start(self, site: str) -> None:
        self.cons[site] = open_connection(DatabaseSpec(str(self.path(site))))
        self.replicas[site] = self._replica(site)

    def exchange(self, site: str, peer: str) -> None:
        """What exchange.py does: hello both ways (the chain check), pull, then push."""
        mine, theirs = self.replicas[site], self.replicas[peer]
        theirs.meet(site, mine.identity().epoch, mine.vector(publish=False))
        proof, purged = theirs.proof_for(site, mine.vector(publish=False))  # (a reply)
        mine.meet(peer, theirs.identity().epoch, theirs.vector(publish=False), proof, purged)
        for src, dst in ((theirs, mine), (mine, theirs)):
            receiver = dst.receiver(src.site)
            try:
                for batch in src.outgoing(dst.vector()):
                    receiver.take(batch)
                receiver.finish()
                assert not receiver.refused, receiver.refused
            finally:
                receiver.close()

    def round(self) -> None:
        for _ in range(2):  # gather at the siège, then redistribute
            for site in self.sites[1:]:
                self.exchange(site, "siege")


def run_sql(con, sql: str, params: tuple = ()) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(sql, params)
        cur.close()


def select(con, sql: str) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        cur.close()
    return rows


def backup(mesh: Mesh, how: str, to: Path) -> None:
    mesh.stop("lyon")
    if how == "copy":
        shutil.copyfile(mesh.path("lyon"), to)
    else:
        subprocess.run(["gbak", "-b", str(mesh.path("lyon")), str(to)], check=True)
    mesh.start("lyon")


def restore(mesh: Mesh, how: str, source: Path) -> None:
    mesh.stop("lyon")
    if how == "copy":
        shutil.copyfile(source, mesh.path("lyon"))
    else:
        subprocess.run(["gbak", "-c", "-rep", str(source), str(mesh.path("lyon"))], check=True)
    mesh.start("lyon")


@pytest.mark.parametrize(("moment", "how"), [
    ("between-capture-and-publish", "copy"),
    ("between-capture-and-publish", "gbak"),
    ("between-publish-and-acknowledgement", "gbak"),
])
def test_a_restored_site_publishes_each_change_once(make_db, tmp_path, moment, how):
    mesh = Mesh(make_db, tmp_path)
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (0, 'lyon before', 0)")
    mesh.round()  # every chain confirmed, lyon's first event everywhere
    lyon = mesh.replicas["lyon"]
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (1, 'lyon original', 10)")
    if moment == "between-publish-and-acknowledgement":
        lyon.vector()  # published (lyon serves it from now on), no peer has it yet
    assert select(mesh.cons["lyon"], "SELECT ID FROM T ORDER BY ID") == [(0,), (1,)]
    backup(mesh, how, tmp_path / "lyon.backup")

    # lyon goes on: row 1 reaches both peers, nice edits it after receiving it, lyon
    # writes row 2 and receives nice's edit.
    mesh.round()
    assert select(mesh.cons["nice"], "SELECT ID, A FROM T WHERE ID = 1") == [
        (1, "lyon original")]
    run_sql(mesh.cons["nice"], "UPDATE T SET A = 'nice later edit' WHERE ID = 1")
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (2, 'lyon after the backup', 20)")
    mesh.round()
    for site in SITES:
        assert select(mesh.cons[site], "SELECT ID, A FROM T ORDER BY ID") == [
            (0, "lyon before"), (1, "nice later edit"), (2, "lyon after the backup")], site

    # lyon's disk dies; the backup comes back; its users go on before the node meets a peer
    # (they edit another column of row 1, as the restored copy shows it).
    restore(mesh, how, tmp_path / "lyon.backup")
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (3, 'lyon after the restore', 30)")
    run_sql(mesh.cons["lyon"], "UPDATE T SET B = 11 WHERE ID = 1")
    for _ in range(3):
        mesh.round()

    assert capture.get_state(mesh.cons["lyon"], "incarnation") == "2", "lyon was rewound"
    expected = [(0, "lyon before", 0), (1, "nice later edit", 11), (2, "lyon after the backup", 20),
                (3, "lyon after the restore", 30)]
    for site in SITES:
        assert select(mesh.cons[site], "SELECT ID, A, B FROM T ORDER BY ID") == expected, site
        assert select(mesh.cons[site], "SELECT COUNT(*) FROM SYNC$CONFLICTS") == [(0,)], site
    # lyon published row 1 once: one insert of it among every event the siège holds.
    inserts = [e for e in map(events_pb2.Event.FromString, all_events(mesh.cons["siege"]))
               if e.table == "T" and e.op == events_pb2.OP_INSERT and e.key[0].integer == 1]
    assert [(e.origin.site, e.origin.incarnation) for e in inserts] == [("lyon", 1)]
    assert capture.pending_entries(mesh.cons["lyon"]) == 0
    for site in SITES:
        mesh.stop(site)


def test_another_sites_change_of_a_restored_row_waits_for_the_restored_sites_events(
        make_db, tmp_path):
    """lyon's backup holds a captured transaction (a new row 5, and B of row 0) that lyon
    published after the backup; the siège had changed A of row 0 at the same time, and
    edits row 5 once it has it. Back from the backup, lyon receives the siège's events
    before its own older ones: the change of row 0 waits for them (lyon's restored change of
    that row is not published yet, and must not be published again) instead of stopping the
    siège's stream, and everything converges with each change published once."""
    mesh = Mesh(make_db, tmp_path, ("siege", "lyon"))
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (0, 'lyon before', 0)")
    mesh.round()
    with transaction(mesh.cons["lyon"]) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO T (ID, A, B) VALUES (5, 'lyon five', 50)")
        cur.execute("UPDATE T SET B = 1 WHERE ID = 0")
        cur.close()
    run_sql(mesh.cons["siege"], "UPDATE T SET A = 'siege edit' WHERE ID = 0")
    backup(mesh, "copy", tmp_path / "lyon.backup")
    mesh.round()
    run_sql(mesh.cons["siege"], "UPDATE T SET A = 'siege edits five' WHERE ID = 5")
    mesh.round()
    expected = [(0, "siege edit", 1), (5, "siege edits five", 50)]
    assert select(mesh.cons["lyon"], "SELECT ID, A, B FROM T ORDER BY ID") == expected

    restore(mesh, "copy", tmp_path / "lyon.backup")
    lyon, siege = mesh.replicas["lyon"], mesh.replicas["siege"]
    lyon.meet("siege", siege.identity().epoch, siege.vector(publish=False),
              *siege.proof_for("lyon", lyon.vector(publish=False)))
    siege_events = [b for b in all_events(mesh.cons["siege"])
                    if events_pb2.Event.FromString(b).origin.site == "siege"]
    first = lyon.apply(siege_events)
    assert not first.refused, first.refused
    assert any("restored from a copy" in reason for reason in first.waiting_for), first
    assert first.pending, "the siège's changes of lyon's restored rows wait"
    for _ in range(2):
        mesh.round()
    for site in mesh.sites:
        assert select(mesh.cons[site], "SELECT ID, A, B FROM T ORDER BY ID") == expected, site
        assert select(mesh.cons[site], "SELECT COUNT(*) FROM SYNC$CONFLICTS") == [(0,)], site
    lyon_inserts = [e for e in map(events_pb2.Event.FromString, all_events(mesh.cons["siege"]))
                    if e.origin.site == "lyon" and e.op == events_pb2.OP_INSERT]
    assert sorted(e.key[0].integer for e in lyon_inserts) == [0, 5]
    for site in mesh.sites:
        mesh.stop(site)
