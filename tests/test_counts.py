"""Counts that mean what they say (issue 24 item 3): heartbeats travel in every round, but a
round, its report, its progress lines and a site's dial-in traffic count only the changes
the shops made — an idle round is 0 in, 0 out at every site.
"""

from __future__ import annotations

from siege_sync.node.journal import capture
from siege_sync.proto import events_pb2
from tests.test_apply import run_sql
from tests.test_siege import mesh_with


def test_heartbeats_are_told_apart_without_parsing():
    beat = events_pb2.Event(seq=9, table=capture.HEARTBEAT_TABLE, stamp=12345)
    sale = events_pb2.Event(seq=9, table="SALE", stamp=12345)
    assert capture.is_heartbeat(beat.SerializeToString())
    assert not capture.is_heartbeat(sale.SerializeToString())


def test_an_idle_round_moves_nothing_an_operator_counts(tmp_path):
    mesh = mesh_with(tmp_path)
    try:
        rounds = mesh.nodes["siege"].roles[0].rounds
        progress: list = []
        first = rounds.run("manual")  # settles what the start left (announcements...)
        assert first.outcome == "complete", first
        idle = rounds.run("manual", progress.append)
        assert idle.outcome == "complete", idle  # the heartbeats came back: not silent
        assert [(s.site, s.events_in, s.events_out) for s in idle.sites] == [
            ("lyon", 0, 0), ("nice", 0, 0)], idle
        assert all(p.events_in == 0 and p.events_out == 0 for p in progress)
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'un')")
        busy = rounds.run("manual")
        assert [(s.site, s.events_in, s.events_out) for s in busy.sites] == [
            ("lyon", 1, 0), ("nice", 0, 1)], busy
    finally:
        mesh.close()


def test_a_report_counts_the_changes_of_each_table(tmp_path):
    mesh = mesh_with(tmp_path)
    try:
        rounds = mesh.nodes["siege"].roles[0].rounds
        rounds.run("manual")
        for key in range(3):
            run_sql(mesh.cons["lyon"], f"INSERT INTO T (ID, A) VALUES ({key}, 'Crêpe à {key} ')")
        report = rounds.run("manual")
        lyon = next(s for s in report.sites if s.site == "lyon")
        nice = next(s for s in report.sites if s.site == "nice")
        assert dict(lyon.tables_in) == {"T": 3} and dict(nice.tables_out) == {"T": 3}
        assert "SYNC$HEARTBEAT" not in lyon.tables_in
        from siege_sync.siege.reports import per_table, render_text

        assert per_table(report) == [("T", 3, 3)]
        text = render_text(report)
        assert "Per table:" in text and any(
            line.split() == ["T", "3", "3"] for line in text.splitlines()), text
    finally:
        mesh.close()


def test_a_long_phase_says_how_far_it_is_as_it_goes(tmp_path):
    """``siege-ctl manual`` printed nothing during a long exchange: now each batch says the
    changes moved so far and about how many there are (for an ETA)."""
    mesh = mesh_with(tmp_path)
    try:
        rounds = mesh.nodes["siege"].roles[0].rounds
        rounds.run("manual")
        rounds.progress_every = 0.0  # every batch (a node says it every 2 s)
        for first in range(0, 3000, 100):  # a day of sales: 30 transactions of 100 rows
            with mesh.cons["lyon"].transaction_manager() as tm:
                cur = tm.cursor()
                cur.executemany("INSERT INTO T (ID, A) VALUES (?, ?)",
                                [(key, f"vente {key} à crédit, crème brûlée ")
                                 for key in range(first, first + 100)])
                tm.commit()
        said: list = []
        report = rounds.run("manual", said.append)
        assert report.outcome == "complete", report
        gathering = [p for p in said if p.site == "lyon" and p.phase == "gather"
                     and p.state == "running" and p.expected_in]
        assert len(gathering) >= 3, said
        assert all(p.expected_in >= 3000 for p in gathering)
        counts = [p.events_in for p in gathering]
        assert counts == sorted(counts) and any(0 < c < 3000 for c in counts), counts
        sending = [p for p in said if p.site == "nice" and p.phase == "redistribute"
                   and p.state == "running" and p.expected_out]
        assert sending and sending[-1].events_out >= 2500, sending
        done = next(p for p in said if p.site == "lyon" and p.phase == "gather"
                    and p.state == "done")
        assert done.events_in == 3000
        # What the counts say is what nice holds, read from its table (trailing blank kept).
        with mesh.cons["nice"].transaction_manager() as tm:
            cur = tm.cursor()
            cur.execute("SELECT COUNT(*), MIN(A) FROM T WHERE A LIKE 'vente %'")
            assert cur.fetchone() == (3000, "vente 0 à crédit, crème brûlée ")
            tm.commit()
    finally:
        mesh.close()


def test_siege_ctl_writes_a_long_phase_with_an_eta():
    from siege_sync.i18n import speaking
    from siege_sync.proto import coordinator_pb2
    from siege_sync.siege.ctl import _moving

    p = coordinator_pb2.SiteProgress(site="lyon", phase="gather", state="running",
                                     events_in=1200, expected_in=13000)
    assert _moving(p, elapsed=12.0) == "1,200 of ~13,000 in, 0 of ~0 out, ETA 1:58"
    with speaking("fr"):
        assert "sur ~13" in _moving(p, elapsed=12.0)
