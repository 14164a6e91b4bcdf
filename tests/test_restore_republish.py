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

from siege_sync.node import capture
from siege_sync.node.config import NodeConfig
from siege_sync.node.database import READ_COMMITTED_RW, DatabaseSpec, open_connection, transaction
from siege_sync.node.replica import Replica
from siege_sync.proto import events_pb2
from tests.test_apply import all_events

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40), B INTEGER)"]
SITES = ("siege", "lyon", "nice")


class Mesh:
    """Each site's database and pipeline; a restart opens both again."""

    def __init__(self, make_db, folder: Path) -> None:
        self.folder = folder
        self.cons = {name: make_db(name, ddl=DDL) for name in SITES}
        for con in self.cons.values():
            capture.install(con)
        self.replicas = {name: self._replica(name) for name in SITES}

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
        mine.meet(peer, theirs.identity().epoch, theirs.vector(publish=False))
        for src, dst in ((theirs, mine), (mine, theirs)):
            receiver = dst.receiver()
            try:
                for batch in src.outgoing(dst.vector()):
                    receiver.take(batch)
                assert not receiver.refused, receiver.refused
            finally:
                receiver.close()

    def round(self) -> None:
        for site in ("lyon", "nice"):
            self.exchange(site, "siege")
        for site in ("lyon", "nice"):
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
