"""Issue 17 item 1: a purge never forgets a key's stamp floor.

A site whose clock runs an hour ahead inserts a row and deletes it. The siège's rounds purge
the dead row at the sites they reach; a site is then re-inserting the key with a clock an
hour behind that life's stamps. A site that dials in receives the re-insert while it still
holds the dead life, and only afterwards asks for the purge order and follows it. Every
site must end holding the re-inserted row (read by a plain SELECT of the application's
table at each site), whatever the clocks and the order of purges.

Real embedded Firebird, the real Applier/Publisher, purge orders planned as the siège plans
them (``siege.purge.plan``, test_apply's ``Coordinator``) and followed as a site does
(``retention.purge`` after the check of ``Replica.obey_purge``, test_apply's ``obey``).
"""

from __future__ import annotations

import pytest

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture
from siege_sync.node.model.clock import SkewedClock, SystemClock
from siege_sync.node.pipeline.apply import Applier
from siege_sync.node.pipeline.publish import Publisher
from tests.test_apply import Coordinator, conflicts, exchange, obey, run_sql

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20), B INTEGER)"]
HOUR_US = 3600 * 1_000_000



def rows_of(con) -> dict[int, tuple[str | None, int | None]]:
    """The application's table as a plain SELECT sees it."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, A, B FROM T ORDER BY ID")
        out = {i: (a, b) for i, a, b in cur.fetchall()}
        cur.close()
    return out


def sync_all(appliers: dict, cons: dict) -> None:
    """A round of exchanges through the siège: everything is everywhere after it."""
    for site in ("lyon", "nice"):
        exchange(appliers, cons, site, "siege")
    for site in ("lyon", "nice"):
        exchange(appliers, cons, "siege", site)


# (site whose clock is off, by how much, site that deletes, site that re-inserts)
SCENARIOS = {
    # lyon's clock runs an hour ahead: its row's stamps are above the siège's wall time.
    "lyon-ahead": ("lyon", +HOUR_US, "lyon", "siege"),
    # the siège's clock runs an hour behind: its own re-insert after its purge.
    "siege-behind": ("siege", -HOUR_US, "lyon", "siege"),
    # the siège deletes lyon's row; nice, which has not purged, re-inserts it: the siège
    # and lyon, which purged, must still order it after the life they forgot.
    "not-purged-reinserts": ("lyon", +HOUR_US, "siege", "nice"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_key_lives_again_after_a_purge_at_every_site_whatever_the_clocks(make_db, scenario):
    skewed, offset, deleter, reinserter = SCENARIOS[scenario]
    names = ("siege", "lyon", "nice")
    cons = {name: make_db(name, ddl=DDL) for name in names}
    for con in cons.values():
        capture.install(con)
    clocks = {name: SkewedClock(SystemClock(), offset if name == skewed else 0)
              for name in names}
    appliers = {name: Applier(con, name, publisher=Publisher(con, name, clock=clocks[name]))
                for name, con in cons.items()}
    coordinator = Coordinator(appliers)

    # The first life, born at lyon, ended by a delete everyone receives.
    run_sql(cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (1, 'first life', 1)")
    run_sql(cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (2, 'stays', 2)")
    sync_all(appliers, cons)
    run_sql(cons[deleter], "DELETE FROM T WHERE ID = 1")
    sync_all(appliers, cons)
    coordinator.round()  # the snapshot the next round's purge of ended lives needs
    sync_all(appliers, cons)

    # The next round reaches the siège and lyon; nice dials in and has not asked yet.
    order = coordinator.round()
    purged = {site: obey(cons[site], appliers[site], order) for site in ("siege", "lyon")}
    assert all(p.lives == 1 for p in purged.values()), purged  # the dead life is forgotten

    # The key lives again at a site whose clock is an hour behind that life's stamps.
    run_sql(cons[reinserter], "INSERT INTO T (ID, A, B) VALUES (1, 'second life', 22)")
    appliers[reinserter].apply([])
    if reinserter != "siege":
        exchange(appliers, cons, reinserter, "siege")
    # nice dials in: its exchange brings the re-insert while it still holds the dead life,
    # then it asks for the purge order and follows it.
    exchange(appliers, cons, "siege", "nice")
    obey(cons["nice"], appliers["nice"], order)
    sync_all(appliers, cons)
    # A later round purges again everywhere (the re-insert ended nothing: the row stays).
    coordinator.round()
    sync_all(appliers, cons)
    order = coordinator.round()
    for site in names:
        obey(cons[site], appliers[site], order)
        # A stub is compacted once, never rewritten or counted again.
        again = obey(cons[site], appliers[site], order)
        assert (again.lives, again.rows) == (0, 0), f"{site}: {again}"
    run_sql(cons["nice"], "UPDATE T SET B = 23 WHERE ID = 1")
    sync_all(appliers, cons)

    expected = {1: ("second life", 23), 2: ("stays", 2)}
    assert {site: rows_of(cons[site]) for site in names} == dict.fromkeys(names, expected)
    # The re-insert followed the purged life knowingly everywhere: nothing lost, no record.
    assert {site: conflicts(cons[site]) for site in names} == dict.fromkeys(names, 0)
