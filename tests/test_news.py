"""Wake on commit (issue 22): the application's commits reach the other sites without
waiting for the siège's pause.

1. ``CommitWatch`` on a real database hears the application's committed changes — once for
   commits that follow each other closely — and nothing for a rolled-back transaction, the
   node's own apply, or a heartbeat.
2. Three ``siege-node run`` processes on a Firebird server, the siège in continuous mode
   with a pause of ten minutes: a shop's commit, and one at the siège, are at every other
   site long before the first scheduled round (read directly from their tables).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from siege_sync.node import capture
from siege_sync.node.apply import Applier
from siege_sync.node.database import READ_COMMITTED_RW, DatabaseSpec, transaction
from siege_sync.node.news import CommitWatch
from tests.test_apply import all_events
from tools.localmesh import ProcessMesh

DDL = ["CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, LABEL VARCHAR(40) CHARACTER "
       "SET WIN1252, AMOUNT NUMERIC(15, 2))"]


def _run(con, *statements: str, commit: bool = True) -> None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        for sql in statements:
            cur.execute(sql)
        cur.close()
        if not commit:
            tm.rollback()


def _heard_within(count: list[int], before: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if count[0] > before:
            return True
        time.sleep(0.02)
    return False


def test_the_watch_hears_the_applications_commits_only(make_db, tmp_path: Path):
    con = make_db("shop", ddl=DDL)
    capture.install(con)
    other = make_db("other", ddl=DDL)
    capture.install(other)
    heard = [0]
    lock = threading.Lock()

    def on_news() -> None:
        with lock:
            heard[0] += 1

    watch = CommitWatch("shop", DatabaseSpec(str(tmp_path / "shop.fdb")), on_news,
                        debounce=0.3)
    watch.start()
    try:
        assert watch.listening.wait(10), "the watch never listened"
        for n in range(3):  # three commits in quick succession: one piece of news
            _run(con, f"INSERT INTO SALE VALUES ({n}, 'Caf\u00e9 cr\u00e8me', 2.50)")
        assert _heard_within(heard, 0, 5)
        time.sleep(0.5)
        assert heard[0] == 1, heard

        _run(con, "INSERT INTO SALE VALUES (10, 'annul\u00e9', 1)", commit=False)
        capture.beat(con, "shop", 7)
        # The node applying another site's sale: its own write, already an event.
        _run(other, "INSERT INTO SALE VALUES (20, '\u00e0 emporter', 9.90)")
        Applier(other, "other").apply([])
        Applier(con, "shop").apply([b for b in all_events(other)])
        assert not _heard_within(heard, 1, 1.5), "heard a rollback, a heartbeat or an apply"
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute("SELECT LABEL FROM SALE WHERE ID = 20")
            assert cur.fetchall() == [("\u00e0 emporter",)]

        _run(con, "UPDATE SALE SET AMOUNT = 3.10 WHERE ID = 1")
        assert _heard_within(heard, 1, 5)
    finally:
        watch.close()


def test_a_commit_reaches_every_site_without_waiting_for_the_pause(fb_server, tmp_path):
    pause = 600
    mesh = ProcessMesh(fb_server, tmp_path, DDL,
                       siege_toml=f"[siege]\ncontinuous = true\npause_seconds = {pause}\n")
    try:
        started = time.monotonic()
        _run(mesh.connection("lyon"), "INSERT INTO SALE VALUES (1, 'Cr\u00eape', 4.20)")
        _run(mesh.connection("siege"), "INSERT INTO SALE VALUES (2, 'Br\u00fbl\u00e9e', 5)")
        wanted = [(1, "Cr\u00eape", 4.20), (2, "Br\u00fbl\u00e9e", 5)]
        seen: dict[str, list] = {}
        deadline = started + 120  # a fifth of the pause: only news can have moved them
        while time.monotonic() < deadline:
            for site in ("siege", "lyon", "nice"):
                con = mesh.open_as_sysdba(site)
                try:
                    with transaction(con, READ_COMMITTED_RW) as tm:
                        cur = tm.cursor()
                        cur.execute("SELECT ID, LABEL, AMOUNT FROM SALE ORDER BY ID")
                        seen[site] = [(i, label, float(a)) for i, label, a in cur.fetchall()]
                finally:
                    con.close()
            if all(rows == wanted for rows in seen.values()):
                break
            time.sleep(0.2)
        assert all(rows == wanted for rows in seen.values()), seen
        assert time.monotonic() - started < pause
    finally:
        mesh.close()
