"""The same constraint outcome at every site (DESIGN §3.5), on real databases.

Named scenarios first (orphan child, parent delete meeting an unknown child, a child whose
parent has not arrived, a UNIQUE clash, a CHECK broken by merged columns, a chain of three
levels), each in both arrival orders; then a seeded random workload on a parent/child schema
with a UNIQUE and a CHECK, exchanged in random orders: every site ends identical, holds the
same losses on record, and nothing is refused.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.pipeline.apply import Applier
from siege_sync.proto import events_pb2
from tests.test_apply import all_events, run_sql
from tests.test_capture_random import snapshot

DDL = [
    "CREATE TABLE P (ID INTEGER NOT NULL PRIMARY KEY, CODE VARCHAR(10), NAME VARCHAR(20), "
    "CONSTRAINT P_CODE UNIQUE (CODE))",
    "CREATE TABLE C (ID INTEGER NOT NULL PRIMARY KEY, PID INTEGER REFERENCES P (ID), "
    "QTY INTEGER, MAX_QTY INTEGER, CHECK (QTY <= MAX_QTY))",
    "CREATE TABLE G (ID INTEGER NOT NULL PRIMARY KEY, CID INTEGER REFERENCES C (ID))",
]
SITES = ("siege", "lyon", "nice")


@pytest.fixture
def mesh(make_db):
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    return cons, {name: Applier(con, name) for name, con in cons.items()}


def send(mesh, src: str, dst: str, shuffle: int | None = None) -> None:
    cons, appliers = mesh
    appliers[src].apply([])
    bodies = all_events(cons[src])
    if shuffle is not None:
        random.Random(shuffle).shuffle(bodies)
    result = appliers[dst].apply(bodies)
    assert not result.refused, result.refused
    assert not result.pending, result.waiting_for


def round_trip(mesh, order: tuple[str, ...] = ("lyon", "nice")) -> None:
    """Gather at the siège in the given order, then redistribute."""
    for site in order:
        send(mesh, site, "siege")
    for site in SITES[1:]:
        send(mesh, "siege", site)


def rows(con, table: str) -> dict[int, tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT * FROM {table} ORDER BY 1")
        out = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        cur.close()
    return out


def losses(con) -> set[tuple[str, str, str]]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT IDENT, KIND, LOSER FROM SYNC$CONFLICTS")
        out = {(i.hex(), k.strip(), loser.strip()) for i, k, loser in cur.fetchall()}
        cur.close()
    return out


def _differences(cons) -> dict:
    """Each site's rows that not every site holds, by table (what a failure shows)."""
    out = {}
    for table in ("P", "C", "G"):
        held = {site: set(rows(con, table).items()) for site, con in cons.items()}
        every = set.intersection(*held.values())
        odd = {site: sorted(r - every) for site, r in held.items() if r - every}
        if odd:
            out[table] = odd
    return out


def same_everywhere(cons) -> dict:
    states = [snapshot(con) for con in cons.values()]
    if not all(s == states[0] for s in states):
        raise AssertionError(f"sites differ: {_differences(cons)}")
    assert len({frozenset(losses(con)) for con in cons.values()}) == 1, "losses differ"
    return states[0]


@pytest.mark.parametrize("order", [("lyon", "nice"), ("nice", "lyon")])
def test_orphan_child_brings_its_parent_back_and_the_delete_is_on_record(mesh, order):
    cons, _ = mesh
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE, NAME) VALUES (1, 'A', 'Dupont')")
    round_trip(mesh)
    run_sql(cons["lyon"], "DELETE FROM P WHERE ID = 1")  # knows no child
    run_sql(cons["nice"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 1, 5)")
    round_trip(mesh, order)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {1: ("A", "Dupont")}, "parent restored with its values"
        assert rows(con, "C") == {10: (1, 1, 5)}
    kinds = [k for _i, k, _l in losses(cons["siege"])]
    assert kinds == ["kept-by-reference"]
    assert any(loser.startswith("lyon/") for _i, _k, loser in losses(cons["siege"]))

    # The child goes later: the delete lost for good (issue 17): the parent stays, an
    # ordinary row, and the delete stays on record.
    run_sql(cons["nice"], "DELETE FROM C WHERE ID = 10")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {1: ("A", "Dupont")} and rows(con, "C") == {}
        assert [k for _i, k, _l in losses(con)] == ["kept-by-reference"]


def test_a_chain_of_three_levels_is_kept_whole(mesh):
    cons, _ = mesh
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE) VALUES (1, 'A')")
    run_sql(cons["siege"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 1, 5)")
    round_trip(mesh)
    with transaction(cons["lyon"]) as tm:  # lyon empties the tree it knows
        cur = tm.cursor()
        cur.execute("DELETE FROM C WHERE ID = 10")
        cur.execute("DELETE FROM P WHERE ID = 1")
        cur.close()
    run_sql(cons["nice"], "INSERT INTO G (ID, CID) VALUES (100, 10)")  # a grandchild
    round_trip(mesh, ("nice", "lyon"))
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert set(rows(con, "P")) == {1} and set(rows(con, "C")) == {10}
        assert set(rows(con, "G")) == {100}
    # The grandchild goes later: C's delete, which did not know it, lost for good, and C
    # keeps its parent.
    run_sql(cons["nice"], "DELETE FROM G WHERE ID = 100")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert set(rows(con, "P")) == {1} and set(rows(con, "C")) == {10}
        assert rows(con, "G") == {}


def test_a_child_whose_parent_has_not_arrived_waits_for_it(mesh):
    cons, appliers = mesh
    run_sql(cons["lyon"], "INSERT INTO P (ID, CODE) VALUES (1, 'A')")
    send(mesh, "lyon", "nice")
    run_sql(cons["nice"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 1, 5)")
    appliers["nice"].apply([])
    nice_own = [b for b in all_events(cons["nice"]) if b"nice" in b[:40]]
    result = appliers["siege"].apply(nice_own)  # the child, before lyon's parent
    assert result.applied_events == 0 and not result.refused
    assert "P (1)" in result.waiting_for[0] and "has not arrived" in result.waiting_for[0]
    appliers["lyon"].apply([])
    result = appliers["siege"].apply(nice_own + all_events(cons["lyon"]))
    assert not result.refused and not result.pending
    assert rows(cons["siege"], "C") == {10: (1, 1, 5)}


@pytest.mark.parametrize("order", [("lyon", "nice"), ("nice", "lyon")])
def test_a_unique_clash_hides_the_lower_stamp_until_the_clash_is_gone(mesh, order):
    cons, _ = mesh
    run_sql(cons["lyon"], "INSERT INTO P (ID, CODE, NAME) VALUES (1, 'X', 'first')")
    # Capture times have millisecond resolution and each site's engine clock is mapped to UTC
    # on its own: space the writes so their order is sure (the fsync of a commit with forced
    # writes used to space them by accident).
    time.sleep(0.02)
    run_sql(cons["nice"], "INSERT INTO P (ID, CODE, NAME) VALUES (2, 'X', 'second')")
    round_trip(mesh, order)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {2: ("X", "second")}, "the later write keeps the value"
    assert [k for _i, k, _l in losses(cons["lyon"])] == ["unique-clash"]

    run_sql(cons["nice"], "UPDATE P SET CODE = 'Y' WHERE ID = 2")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {1: ("X", "first"), 2: ("Y", "second")}
        assert losses(con) == set()


@pytest.mark.parametrize("order", [("lyon", "nice"), ("nice", "lyon")])
def test_merged_columns_breaking_a_check_fall_back_to_the_latest_sites_row(mesh, order):
    cons, _ = mesh
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE) VALUES (1, 'A')")
    run_sql(cons["siege"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 2, 10)")
    round_trip(mesh)
    # Capture times have millisecond resolution: space the writes so their order is sure.
    run_sql(cons["lyon"], "UPDATE C SET MAX_QTY = 9 WHERE ID = 10")
    time.sleep(0.01)
    run_sql(cons["nice"], "UPDATE C SET QTY = 1, MAX_QTY = 5 WHERE ID = 10")
    time.sleep(0.01)
    run_sql(cons["lyon"], "UPDATE C SET QTY = 8 WHERE ID = 10")  # the latest write
    # Column by column: QTY 8 (lyon, latest) with MAX_QTY 5 (nice, later than lyon's 9).
    round_trip(mesh, order)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "C") == {10: (1, 8, 9)}, "lyon's versions, the latest site's"
    lost = sorted(loser.split("#")[0] for _i, k, loser in losses(cons["siege"]))
    assert lost == ["nice/1", "nice/1"], "nice's QTY and MAX_QTY are on record"


@pytest.mark.parametrize("order", [("lyon", "nice"), ("nice", "lyon")])
def test_a_check_that_no_sites_versions_satisfy_falls_back_to_the_latest_whole_row(mesh, order):
    """The latest writer (nice) did not write QTY: its event carries the QTY its site saw
    (2), so the row is nice's whole row, and lyon's QTY 8 is on record everywhere."""
    cons, _ = mesh
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE) VALUES (1, 'A')")
    run_sql(cons["siege"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 2, 10)")
    round_trip(mesh)
    run_sql(cons["lyon"], "UPDATE C SET QTY = 8 WHERE ID = 10")
    time.sleep(0.01)
    run_sql(cons["nice"], "UPDATE C SET MAX_QTY = 5 WHERE ID = 10")
    round_trip(mesh, order)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "C") == {10: (1, 2, 5)}, "nice's whole row"
        assert {(k, loser.split("#")[0]) for _i, k, loser in losses(con)} == {
            ("whole-row", "lyon/1")}


def test_a_check_broken_when_the_latest_write_carries_no_whole_row_stops_that_site_clearly(
        mesh):
    """An event of an older node does not say what its site saw in the columns it did not
    write: the whole row is not known, and the transaction is held, saying so."""
    cons, appliers = mesh
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE) VALUES (1, 'A')")
    run_sql(cons["siege"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 2, 10)")
    round_trip(mesh)
    run_sql(cons["lyon"], "UPDATE C SET QTY = 8 WHERE ID = 10")
    time.sleep(0.01)
    run_sql(cons["nice"], "UPDATE C SET MAX_QTY = 5 WHERE ID = 10")
    send(mesh, "lyon", "siege")
    appliers["nice"].apply([])
    bodies = all_events(cons["nice"])
    at = max(i for i, b in enumerate(bodies)
             if events_pb2.Event.FromString(b).origin.site == "nice")
    last = events_pb2.Event.FromString(bodies[at])
    assert last.HasField("seen")
    last.ClearField("seen")  # as an older node published it (the last of its chain)
    bodies[at] = last.SerializeToString(deterministic=True)
    result = appliers["siege"].apply(bodies)
    assert len(result.refused) == 1 and "nice#" in result.refused[0]
    assert "C (10)" in result.refused[0] and "CHECK" in result.refused[0]
    assert "older node" in result.refused[0]
    assert rows(cons["siege"], "C") == {10: (1, 8, 10)}, "nothing of it applied"


def test_a_referenced_row_loses_its_unique_value_to_a_later_one_and_its_rows_follow(mesh):
    """The lower stamp loses a UNIQUE clash, referenced or not (issue 19; it used to stay
    when referenced, and a clash between two referenced rows held the origin for ever):
    the rows referencing it reference the winner, on record, and come back to it when the
    clash is gone."""
    cons, appliers = mesh
    with transaction(cons["lyon"]) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO P (ID, CODE, NAME) VALUES (1, 'X', 'invoiced')")
        cur.execute("INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (10, 1, 1, 5)")
        cur.close()
    time.sleep(0.02)  # nice's code is written later, whatever the engine clocks' mapping
    run_sql(cons["nice"], "INSERT INTO P (ID, CODE, NAME) VALUES (2, 'X', 'later')")
    round_trip(mesh, ("nice", "lyon"))
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {2: ("X", "later")}, "the later write keeps the value"
        assert rows(con, "C") == {10: (2, 1, 5)}, "its line follows the winner"
    assert {k for _i, k, _l in losses(cons["siege"])} == {"unique-clash", "reparented"}

    run_sql(cons["nice"], "UPDATE P SET CODE = 'Y' WHERE ID = 2")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {1: ("X", "invoiced"), 2: ("Y", "later")}
        assert rows(con, "C") == {10: (1, 1, 5)}, "back to the row it references"
        assert losses(con) == set()

    # Both referenced: the same row registered twice, merged the same way.
    run_sql(cons["lyon"], "INSERT INTO P (ID, CODE, NAME) VALUES (3, 'Z', 'a')")
    run_sql(cons["lyon"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (11, 3, 1, 5)")
    time.sleep(0.02)
    run_sql(cons["nice"], "INSERT INTO P (ID, CODE, NAME) VALUES (4, 'Z', 'b')")
    run_sql(cons["nice"], "INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (12, 4, 1, 5)")
    send(mesh, "lyon", "siege")
    send(mesh, "nice", "siege")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    for con in cons.values():
        assert rows(con, "P") == {1: ("X", "invoiced"), 2: ("Y", "later"), 4: ("Z", "b")}
        assert rows(con, "C") == {10: (1, 1, 5), 11: (4, 1, 5), 12: (4, 1, 5)}
    assert {k for _i, k, _l in losses(cons["siege"])} == {"unique-clash", "reparented"}
    del appliers


# --- random workload ----------------------------------------------------------------------

SEEDS = [int(s) for s in os.environ.get("SIEGE_CONSTRAINT_SEEDS", "1,2,3,4,5,6").split(",")]


def local_tx(con, rng: random.Random, site: str) -> None:
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    try:
        for _ in range(rng.randint(1, 3)):
            # Parents 1-3 are referenced (their codes never clash); 4-6 are not (theirs do;
            # two referenced rows holding one UNIQUE value merge, tested above).
            p, q, c = rng.randint(1, 3), rng.randint(4, 6), rng.randint(10, 15)
            sql, params = rng.choice([
                ("INSERT INTO P (ID, CODE, NAME) VALUES (?, ?, ?)",
                 (p, f"{site[0]}{p}{rng.randint(0, 99)}", f"{site}")),
                ("INSERT INTO P (ID, CODE, NAME) VALUES (?, ?, ?)",
                 (q, rng.choice(["X", "Y", f"{site[0]}{q}"]), f"{site}")),
                ("UPDATE P SET CODE = ? WHERE ID = ?", (rng.choice("XYZW"), q)),
                ("UPDATE P SET CODE = ? WHERE ID = ?", (f"{site[0]}{rng.randint(0, 99)}", p)),
                ("UPDATE P SET NAME = ? WHERE ID = ?", (f"{site}-{rng.randint(0, 9)}",
                                                       rng.choice([p, q]))),
                ("DELETE FROM P WHERE ID = ?", (rng.choice([p, q]),)),
                ("INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (?, ?, ?, ?)",
                 (c, p, rng.randint(0, 5), rng.randint(5, 9))),
                # Both columns of the CHECK together: a CHECK broken by merging a lone
                # QTY with a lone MAX_QTY waits for an operator (tested above).
                ("UPDATE C SET QTY = ?, MAX_QTY = ? WHERE ID = ?",
                 (rng.randint(0, 5), rng.randint(5, 9), c)),
                ("UPDATE C SET PID = ? WHERE ID = ?", (p, c)),
                ("DELETE FROM C WHERE ID = ?", (c,)),
            ])
            try:
                cur.execute(sql, params)
            except DatabaseError:
                pass  # refused here (duplicate, orphan, check): the user is told
        cur.close()
        if rng.random() < 0.1:
            tm.rollback()
        else:
            tm.commit()
    finally:
        tm.close()


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_random_constrained_workload_converges_everywhere(mesh, seed, tx=local_tx):
    cons, _ = mesh
    rng = random.Random(seed)
    with transaction(cons["siege"]) as tm:  # a common start, so updates and deletes bite
        cur = tm.cursor()
        for p in range(1, 6):
            cur.execute("INSERT INTO P (ID, CODE, NAME) VALUES (?, ?, 'start')", (p, f"S{p}"))
        for c in range(10, 14):
            cur.execute("INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (?, ?, 1, 5)",
                        (c, 1 + c % 3))
        cur.close()
    round_trip(mesh)
    for _ in range(60):
        site = rng.choice(SITES)
        if rng.random() < 0.7:
            tx(cons[site], rng, site)
        else:
            other = "siege" if site != "siege" else rng.choice(SITES[1:])
            src, dst = rng.choice([(site, other), (other, site)])
            send(mesh, src, dst, shuffle=rng.randint(0, 10**6))
    for _ in range(3):
        round_trip(mesh, tuple(rng.sample(SITES[1:], 2)))
    state = same_everywhere(cons)
    digests = {tuple(table_digest(con, t) for t in introspect(con).tables.values())
               for con in cons.values()}
    assert len(digests) == 1, f"seed {seed}: digests differ"
    assert len(all_events(cons["siege"])) > 20, f"seed {seed}: the workload did little"
    del state


def _lyon_row_hidden_at_the_siege(mesh) -> dict:
    """lyon's row 2 and, later, the siège's row 1 take the code X: row 2 loses, hidden at
    the siège (not in its table). Returns the connections."""
    cons, _appliers = mesh
    run_sql(cons["lyon"], "INSERT INTO P (ID, CODE, NAME) VALUES (2, 'X', 'lyon')")
    time.sleep(0.02)
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE, NAME) VALUES (1, 'X', 'siege')")
    send(mesh, "siege", "lyon")
    send(mesh, "lyon", "siege")
    assert rows(cons["siege"], "P") == {1: ("X", "siege")}, "row 2 is hidden at the siège"
    return cons


def test_a_key_inserted_again_where_its_row_is_hidden_keeps_the_local_insert(mesh):
    """lyon's row 2 lost a UNIQUE clash at the siège (hidden there: not in its table), so
    the siège's application may insert a row 2 of its own. If the clash ends in the same
    publish (the winner's code changed first), the hidden row comes back — it must not
    overwrite the later local insert, which is the newer life everywhere (issue 19)."""
    cons = _lyon_row_hidden_at_the_siege(mesh)
    run_sql(cons["siege"], "UPDATE P SET CODE = 'Z' WHERE ID = 1")  # the clash ends...
    run_sql(cons["siege"], "INSERT INTO P (ID, CODE, NAME) VALUES (2, 'new', 'siege')")
    round_trip(mesh)
    round_trip(mesh)
    for con in cons.values():
        assert rows(con, "P") == {1: ("Z", "siege"), 2: ("new", "siege")}
    same_everywhere(cons)


def test_a_value_let_go_and_taken_back_in_one_publish_step_publishes(mesh):
    """The siège's row 1 holds the code X that lyon's older row 2 lost (row 2 hidden there);
    the application changes row 1's code and then sets it back, both before a publish. The
    step publishes (row 2 comes back, then loses again) and every site ends the same. (The
    publisher skips only rows a later local transaction of the step *inserts*; skipping
    updated rows too failed a whole publish on a UNIQUE key in the random workload of
    branch fix-unique, seed 26 — a sequence this simpler one does not reproduce.)"""
    cons = _lyon_row_hidden_at_the_siege(mesh)
    run_sql(cons["siege"], "UPDATE P SET CODE = 'Z' WHERE ID = 1")
    run_sql(cons["siege"], "UPDATE P SET CODE = 'X' WHERE ID = 1")
    round_trip(mesh)
    round_trip(mesh)
    same_everywhere(cons)
    assert rows(cons["siege"], "P")[1] == ("X", "siege")


def referenced_clashes_tx(con, rng: random.Random, site: str) -> None:
    """Every parent is referenced and any two may take the same code (issue 19): two
    referenced rows holding one UNIQUE value merge (the lower stamp goes, its rows follow)."""
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    try:
        for _ in range(rng.randint(1, 3)):
            p, c = rng.randint(1, 6), rng.randint(10, 15)
            sql, params = rng.choice([
                ("INSERT INTO P (ID, CODE, NAME) VALUES (?, ?, ?)",
                 (p, rng.choice(["X", "Y", f"{site[0]}{p}"]), site)),
                ("UPDATE P SET CODE = ? WHERE ID = ?", (rng.choice(["X", "Y", "Z"]), p)),
                ("UPDATE P SET NAME = ? WHERE ID = ?", (f"{site}-{rng.randint(0, 9)}", p)),
                ("DELETE FROM P WHERE ID = ?", (p,)),
                ("INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (?, ?, ?, ?)",
                 (c, p, rng.randint(0, 5), rng.randint(5, 9))),
                ("UPDATE C SET PID = ? WHERE ID = ?", (p, c)),
                ("DELETE FROM C WHERE ID = ?", (c,)),
            ])
            try:
                cur.execute(sql, params)
            except DatabaseError:
                pass  # refused here (duplicate, orphan): the user is told
        cur.close()
        tm.commit()
    finally:
        tm.close()


def own_keys_clashes_tx(con, rng: random.Random, site: str) -> None:
    """As ``referenced_clashes_tx``, with new rows keyed as a shop's application keys them
    (each site's generator range): a site never inserts the key of a row another site
    created, only values (the codes) clash."""
    base = {"siege": 0, "lyon": 2, "nice": 4}[site]
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    try:
        for _ in range(rng.randint(1, 3)):
            p, c = rng.randint(1, 6), rng.randint(10, 15)
            mine_p, mine_c = 7 + base + rng.randint(0, 1), 20 + base + rng.randint(0, 1)
            sql, params = rng.choice([
                ("INSERT INTO P (ID, CODE, NAME) VALUES (?, ?, ?)",
                 (mine_p, rng.choice(["X", "Y", f"{site[0]}{mine_p}"]), site)),
                ("UPDATE P SET CODE = ? WHERE ID = ?", (rng.choice(["X", "Y", "Z"]), p)),
                ("UPDATE P SET NAME = ? WHERE ID = ?", (f"{site}-{rng.randint(0, 9)}", p)),
                ("DELETE FROM P WHERE ID = ?", (rng.choice([p, mine_p]),)),
                ("INSERT INTO C (ID, PID, QTY, MAX_QTY) VALUES (?, ?, ?, ?)",
                 (mine_c, rng.choice([p, mine_p]), rng.randint(0, 5), rng.randint(5, 9))),
                ("UPDATE C SET PID = ? WHERE ID = ?", (rng.choice([p, mine_p]),
                                                      rng.choice([c, mine_c]))),
                ("DELETE FROM C WHERE ID = ?", (rng.choice([c, mine_c]),)),
            ])
            try:
                cur.execute(sql, params)
            except DatabaseError:
                pass  # refused here (duplicate, orphan): the user is told
        cur.close()
        tm.commit()
    finally:
        tm.close()


# Seeds 1-100 pass (SIEGE_KEYED_CLASH_SEEDS=1,2,...).
KEYED_SEEDS = [int(s) for s in os.environ.get("SIEGE_KEYED_CLASH_SEEDS", "1,2,82").split(",")]


@pytest.mark.parametrize("seed", KEYED_SEEDS, ids=[f"seed={s}" for s in KEYED_SEEDS])
def test_random_clashes_between_referenced_rows_keyed_per_site_converge(mesh, seed):
    test_random_constrained_workload_converges_everywhere(mesh, seed, own_keys_clashes_tx)


# Any site may insert any key here, also the key of a row a UNIQUE clash hides: of seeds
# 1-150, 149 pass (SIEGE_CLASH_SEEDS=1,2,...); seed 125 leaves one reference differing (a
# hidden row's key inserted anew, then deleted, while a row re-pointed from it stays: see
# README, "A UNIQUE value two sites registered").
CLASH_SEEDS = [int(s) for s in os.environ.get("SIEGE_CLASH_SEEDS", "2,8,12,62,108").split(",")]


@pytest.mark.parametrize("seed", CLASH_SEEDS, ids=[f"seed={s}" for s in CLASH_SEEDS])
def test_random_clashes_between_referenced_rows_converge(mesh, seed):
    test_random_constrained_workload_converges_everywhere(mesh, seed, referenced_clashes_tx)
