"""Wake on commit (issue 22): the application's commits reach the other sites without
waiting for the siège's pause.

1. ``CommitWatch`` on a real database hears the application's committed changes — once for
   commits that follow each other closely — and nothing for a rolled-back transaction, the
   node's own apply, or a heartbeat.
2. Three ``siege-node run`` processes on a Firebird server, the siège in continuous mode
   with a pause of ten minutes: a shop's commit, and one at the siège, are at every other
   site long before the first scheduled round (read directly from their tables).
3. A site that cannot be dialled (``outbound_only``) hears of the others' news through its
   ``Listen`` call (tidings.py), and what it commits is passed on at once, though it dials
   only every ten minutes; and the bulletin such a call waits on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from siege_sync.node.db.database import READ_COMMITTED_RW, DatabaseSpec, transaction
from siege_sync.node.journal import capture
from siege_sync.node.journal.news import CommitWatch
from siege_sync.node.mesh.tidings import Bulletin
from siege_sync.node.pipeline.apply import Applier
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


def test_a_bulletin_tells_a_listener_of_the_others_news_only():
    """What ``Listen`` waits on: a site's own changes never wake it; the posts that follow
    the first closely go in one answer; a closed bulletin ends every wait at once."""
    bulletin = Bulletin()
    since = bulletin.mark()
    bulletin.post(["nice"])
    started = time.monotonic()
    since, sites = bulletin.wait("nice", since, 0.5)
    assert sites == [] and time.monotonic() - started >= 0.5, "its own change woke nice"

    def later() -> None:
        time.sleep(0.2)
        bulletin.post(["lyon"])
        time.sleep(0.02)
        bulletin.post(["siege", "nice"])

    poster = threading.Thread(target=later)
    poster.start()
    since, sites = bulletin.wait("nice", since, 10)
    poster.join()
    assert sites == ["lyon", "siege"]
    assert bulletin.wait("nice", since, 0.1) == (since, [])

    waiter: list[tuple[int, list[str]]] = []
    blocked = threading.Thread(target=lambda: waiter.append(bulletin.wait("nice", since, 60)))
    blocked.start()
    time.sleep(0.1)
    bulletin.close()
    blocked.join(timeout=5)
    assert waiter == [(since, [])]


def test_a_commit_reaches_every_site_without_waiting_for_the_pause(fb_server, tmp_path):
    pause = 600
    mesh = ProcessMesh(fb_server, tmp_path, DDL,
                       siege_toml=f"[siege]\ncontinuous = true\npause_seconds = {pause}\n")
    try:
        started = time.monotonic()
        _run(mesh.connection("lyon"), "INSERT INTO SALE VALUES (1, 'Cr\u00eape', 4.20)")
        _run(mesh.connection("siege"), "INSERT INTO SALE VALUES (2, 'Br\u00fbl\u00e9e', 5)")
        # Within a fifth of the pause: only news can have moved them.
        _until_rows(mesh, [(1, "Cr\u00eape", 4.20), (2, "Br\u00fbl\u00e9e", 5)], seconds=120)
        assert time.monotonic() - started < pause
    finally:
        mesh.close()


def test_a_site_that_cannot_be_dialled_hears_of_news_without_waiting_for_its_dial(
        fb_server, tmp_path):
    """nice dials out (``outbound_only``) every ten minutes and nobody can dial it: what
    lyon commits reaches it through its Listen call, and what it commits reaches lyon
    through the news round its push starts — both long before a dial or a pause."""
    pause = dial_every = 600
    mesh = ProcessMesh(fb_server, tmp_path, DDL, outbound={"nice"}, dial_every=dial_every,
                       siege_toml=f"[siege]\ncontinuous = true\npause_seconds = {pause}\n")
    try:
        # Its first dial (at start) is over, and its call to the siège is open.
        _until_rows(mesh, [])
        _until_listening(mesh, "nice")
        started = time.monotonic()
        _run(mesh.connection("lyon"), "INSERT INTO SALE VALUES (1, 'Cr\u00eape', 4.20)")
        _until_rows(mesh, [(1, "Cr\u00eape", 4.20)])
        _run(mesh.connection("nice"), "INSERT INTO SALE VALUES (2, '\u00e0 emporter', 9.9)")
        _until_rows(mesh, [(1, "Cr\u00eape", 4.20), (2, "\u00e0 emporter", 9.9)])
        assert time.monotonic() - started < 120  # a fifth of the dial and of the pause
    finally:
        mesh.close()


def _until_rows(mesh: ProcessMesh, wanted: list, seconds: float = 120) -> None:
    """Until every site's SALE holds ``wanted`` (read directly from each database)."""
    seen: dict[str, list] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for site in mesh.SITES:
            con = mesh.open_as_sysdba(site)
            try:
                with transaction(con, READ_COMMITTED_RW) as tm:
                    cur = tm.cursor()
                    cur.execute("SELECT ID, LABEL, AMOUNT FROM SALE ORDER BY ID")
                    seen[site] = [(i, label, float(a)) for i, label, a in cur.fetchall()]
            finally:
                con.close()
        if all(rows == wanted for rows in seen.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"not every site holds {wanted}: {seen}")


def _until_listening(mesh: ProcessMesh, site: str, seconds: float = 60) -> None:
    """Until ``site``'s node logs that it listens to the siège for news."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if "listening to siege for news" in mesh.logs[site].read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{site} never listened to the siège")
