"""Foreign keys to a UNIQUE key instead of the primary key (issue 18 item 3; DESIGN §3.5).

ERPs reference their master tables by code: ``TRIP (VEHICLE_CODE) REFERENCES VEHICLE (CODE)``.
The applier finds the parent row by that key (the engine's comparison: the CODE column is
case- and accent-insensitive, and PAD SPACE ignores trailing blanks), then applies the usual
rules: a parent deleted while another site writes a child that names its code comes back and
the delete is on record; two sites that create a vehicle with the same code keep the later
one everywhere, the other on record, and the trips of both sites stay (they name the code,
which still exists); a code changed at one site is settled as the engine's action says.

Also (issue 18 item 2) a replicated table referencing one that ``[tables]`` leaves out: a
site lacking the parent row holds the transaction with the explanation, never a traceback.

Real embedded databases; rows read back with independent queries at every site.
"""

from __future__ import annotations

import os
import random
import time
from decimal import Decimal

import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.db.schema import TableSelection
from siege_sync.node.journal import capture, conflicts, parking
from siege_sync.node.pipeline.apply import Applier
from siege_sync.proto import events_pb2
from tests.test_apply import all_events

# Case- and accent-insensitive, PAD SPACE: 'Camión 7 ' = 'CAMION 7' for the engine.
CODE = "VARCHAR(12) CHARACTER SET UTF8"
CI_AI = "COLLATE UNICODE_CI_AI"
DDL = [
    f"CREATE TABLE VEHICLE (ID INTEGER NOT NULL PRIMARY KEY, CODE {CODE} NOT NULL {CI_AI}, "
    "LABEL VARCHAR(30), CONSTRAINT VEHICLE_CODE UNIQUE (CODE))",
    f"CREATE TABLE TRIP (ID INTEGER NOT NULL PRIMARY KEY, VEHICLE_CODE {CODE} "
    f"REFERENCES VEHICLE (CODE) {CI_AI}, KM NUMERIC(9, 1))",
]
SITES = ("siege", "lyon", "nice")


def _run(con, *statements: str, params: tuple = ()) -> None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        for sql in statements:
            cur.execute(sql, params) if "?" in sql else cur.execute(sql)
        cur.close()


def _rows(con, sql: str) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    return rows


def _state(con) -> tuple[list[tuple], list[tuple]]:
    """Both tables, exact values (the CODE's bytes: case, accents, trailing blanks)."""
    return (_rows(con, "SELECT ID, CAST(CODE AS VARCHAR(12) CHARACTER SET OCTETS), LABEL "
                       "FROM VEHICLE ORDER BY ID"),
            _rows(con, "SELECT ID, CAST(VEHICLE_CODE AS VARCHAR(12) CHARACTER SET OCTETS), KM "
                       "FROM TRIP ORDER BY ID"))


def _show_key(key) -> str:
    return ",".join(str(getattr(v, v.WhichOneof("kind") or "null", "?")) for v in key)


def _records(con) -> list[tuple[str, str]]:
    return sorted((c.table, c.kind) for c in conflicts.listing(con))


def _setup(make_db, selection: TableSelection | None = None, ddl: list[str] = DDL,
           sites: tuple[str, ...] = SITES):
    cons = {name: make_db(name, ddl=ddl) for name in sites}
    for con in cons.values():
        capture.install(con, selection) if selection else capture.install(con)
    return cons, {name: Applier(con, name) for name, con in cons.items()}


def _own(appliers: dict, cons: dict, site: str) -> list[bytes]:
    appliers[site].apply([])  # publish first, as a node does before serving
    return [b for b in all_events(cons[site])
            if events_pb2.Event.FromString(b).origin.site == site]


def _deliver(appliers: dict, site: str, bodies: list[bytes]) -> None:
    result = appliers[site].apply(bodies)
    assert not result.refused, result.refused
    assert not result.pending, result.waiting_for


def _everywhere(cons: dict, appliers: dict) -> None:
    """Every site's own events to every other site, twice (what was relayed settles)."""
    for _ in range(2):
        for src in cons:
            bodies = _own(appliers, cons, src)
            for dst in cons:
                if dst != src:
                    _deliver(appliers, dst, bodies)


def _same(cons: dict) -> tuple[list[tuple], list[tuple]]:
    states = {site: _state(con) for site, con in cons.items()}
    first = next(iter(states.values()))
    assert all(s == first for s in states.values()), states
    records = {site: _records(con) for site, con in cons.items()}
    if not all(r == next(iter(records.values())) for r in records.values()):
        full = {site: {(c.table, c.kind, _show_key(c.key), c.generation, c.loser, c.column,
                        c.winner) for c in conflicts.listing(con)}
                for site, con in cons.items()}
        every = set.intersection(*full.values())
        raise AssertionError({site: sorted(f - every) for site, f in full.items()})
    return first


def test_a_parent_and_its_children_by_code_apply_elsewhere(make_db):
    """(a) Created together at one site, also when an application trigger writes the child
    before the parent's capture (the engine's order differs from the capture order)."""
    ddl = [*DDL, "CREATE TRIGGER VEHICLE_FIRST_TRIP FOR VEHICLE AFTER INSERT AS BEGIN "
                 "IF (NEW.LABEL = 'delivered') THEN INSERT INTO TRIP (ID, VEHICLE_CODE, KM) "
                 "VALUES (NEW.ID * 1000, UPPER(NEW.CODE), 0); END"]
    cons, appliers = _setup(make_db, ddl=ddl, sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7 ', 'van')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 12.5)",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (11, 'camión 7  ', 3)")
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (2, 'Grúa', 'delivered')")
    _deliver(appliers, "nice", _own(appliers, cons, "lyon"))
    state = _same(cons)
    assert state[1][0][1] == b"CAMION 7" and len(state[1]) == 3
    assert state[0][0][1] == "Camión 7 ".encode(), "the code's bytes travel exactly"
    assert _records(cons["nice"]) == []


def test_a_parent_deleted_while_a_child_names_its_code_comes_back(make_db):
    """(b) The delete did not know the trip: it loses (kept by reference), at every site,
    whichever order the events arrive in; the vehicle stays when the trip goes later."""
    cons, appliers = _setup(make_db)
    _run(cons["siege"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7 ', 'van')")
    _everywhere(cons, appliers)
    _run(cons["siege"], "DELETE FROM VEHICLE WHERE ID = 1")
    _run(cons["lyon"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 8)")
    delete, trip = _own(appliers, cons, "siege"), _own(appliers, cons, "lyon")
    _deliver(appliers, "nice", delete)  # nice: the delete first
    _deliver(appliers, "nice", trip)
    _deliver(appliers, "siege", trip)
    _deliver(appliers, "lyon", delete)
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert vehicles == [(1, "Camión 7 ".encode(), "van")], "brought back whole"
    assert [t[0] for t in trips] == [10]
    assert _records(cons["siege"]) == [("VEHICLE", "kept-by-reference")]

    _run(cons["lyon"], "DELETE FROM TRIP WHERE ID = 10")
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert [v[0] for v in vehicles] == [1] and trips == [], "the delete lost for good"


@pytest.mark.parametrize("action", ["", "ON UPDATE CASCADE ON DELETE CASCADE"])
def test_two_sites_create_the_same_code_the_later_one_stays(make_db, action):
    """(c) A UNIQUE clash between two new vehicles whose trips name the code: the vehicle
    whose code was written later stays everywhere, the other is on record (unique-clash);
    every trip stays (the code it names exists) and the trips written for the losing
    vehicle are on record with it, never re-pointed silently. Also when the foreign key
    cascades: the loser's row is never deleted while trips name its code (a cascade would
    delete them)."""
    ddl = [DDL[0], DDL[1].replace("REFERENCES VEHICLE (CODE)",
                                  f"REFERENCES VEHICLE (CODE) {action}")]
    cons, appliers = _setup(make_db, ddl=ddl)
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'lyon')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 1)")
    time.sleep(0.02)  # nice's code is written later, whatever the engine clocks' mapping
    _run(cons["nice"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (2, 'camion 7 ', 'nice')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (20, 'camión 7', 2)")
    lyon, nice = _own(appliers, cons, "lyon"), _own(appliers, cons, "nice")
    _deliver(appliers, "siege", lyon)
    _deliver(appliers, "siege", nice)
    _deliver(appliers, "lyon", nice)
    _deliver(appliers, "nice", lyon)
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert vehicles == [(2, b"camion 7 ", "nice")]
    assert [t[0] for t in trips] == [10, 20]
    records = _records(cons["siege"])
    assert ("VEHICLE", "unique-clash") in records, records
    assert ("TRIP", "reparented") in records, records

    # nice renames its vehicle: lyon's comes back, everywhere.
    _run(cons["nice"], "DELETE FROM TRIP WHERE ID IN (10, 20)",
         "UPDATE VEHICLE SET CODE = 'Grúa' WHERE ID = 2")
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert [(v[0], v[2]) for v in vehicles] == [(1, "lyon"), (2, "nice")]


def test_a_code_changed_at_one_site_cascades_as_the_foreign_key_says(make_db):
    """(d) ON UPDATE CASCADE: the origin's engine changed the trips too (captured there):
    every site ends with the new code in the vehicle and its trips, including a trip another
    site wrote concurrently with the old code (its engine cascades it on apply)."""
    ddl = [DDL[0], DDL[1].replace("REFERENCES VEHICLE (CODE)",
                                  "REFERENCES VEHICLE (CODE) ON UPDATE CASCADE")]
    cons, appliers = _setup(make_db, ddl=ddl)
    _run(cons["siege"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'van')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'Camión 7', 1)")
    _everywhere(cons, appliers)
    _run(cons["siege"], "UPDATE VEHICLE SET CODE = 'Grúa 1' WHERE ID = 1")
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert vehicles == [(1, "Grúa 1".encode(), "van")]
    assert trips == [(10, "Grúa 1".encode(), 1)]


def _concurrent_rename(make_db):
    """siege renames vehicle 'Camión 7' (no trip names it there) while lyon adds a trip
    naming it; each site gets the other's change after its own."""
    cons, appliers = _setup(make_db)
    _run(cons["siege"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'van')")
    _everywhere(cons, appliers)
    _run(cons["siege"], "UPDATE VEHICLE SET CODE = 'Grúa 1' WHERE ID = 1")
    _run(cons["lyon"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 4)")
    return cons, appliers, _own(appliers, cons, "siege"), _own(appliers, cons, "lyon")


def test_a_code_changed_while_another_site_adds_a_trip_is_held_clearly(make_db):
    """(d) NO ACTION, concurrently: the engine refuses the rename where the trip is. Until
    the merge settles it (below), the site holds it saying why and what to do — it was
    retried as a local change six times and refused as 'local writers kept changing the
    same rows' — and nothing is lost: the trip stays where it was written."""
    cons, appliers, rename, trip = _concurrent_rename(make_db)
    result = appliers["lyon"].apply(rename)
    assert result.retries == 0 and len(result.refused) == 1, result
    said = result.refused[0]
    assert "VEHICLE (1)" in said and "TRIP (10)" in said and "NO ACTION" in said, said
    assert "operator" in said
    todo = [h.todo for h in parking.held_here(cons["lyon"], "lyon")]
    assert len(todo) == 1 and "names the old value" in todo[0], todo
    assert _rows(cons["lyon"], "SELECT ID, KM FROM TRIP") == [(10, 4)]
    assert _rows(cons["lyon"], "SELECT CODE FROM VEHICLE") == [("Camión 7",)]
    # The siège: the code is gone. The trip waits (held, once events name the vehicle the
    # trip met: then the siège knows that vehicle has another code now).
    result = appliers["siege"].apply(trip)
    said = " ".join([*result.refused, *result.waiting_for])
    assert result.applied_events == 0 and "CAMION 7" in said, result


@pytest.mark.xfail(strict=True, reason="a rename of a referenced code concurrent with a new "
                   "reference is not settled by the merge yet (issue 18 item 3 (d)): lyon "
                   "holds the rename, the siège waits for the old code for ever")
def test_a_code_changed_while_another_site_adds_a_trip_converges(make_db):
    """(d) What the design asks (§3.5, as for a delete that did not know a child): the
    change of the value a new row names did not know that row, and the sites agree."""
    cons, appliers, rename, trip = _concurrent_rename(make_db)
    for site in ("siege", "lyon", "nice"):
        _deliver(appliers, site, rename + trip)
    vehicles, trips = _same(cons)
    assert [t[0] for t in trips] == [10] and [v[0] for v in vehicles] == [1]


# --- item 2: a parent table that [tables] leaves out -------------------------------------

LOCAL_PARENT = TableSelection(exclude=("VEHICLE",))


def test_a_code_whose_parent_table_is_not_replicated_holds_where_it_is_missing(make_db):
    """(e) VEHICLE is each site's own (left out): a trip naming a code nice lacks holds
    there, saying why and what to do; once nice creates that vehicle, it applies."""
    cons, appliers = _setup(make_db, LOCAL_PARENT, sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7 ', 'van')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 8)")
    trip = _own(appliers, cons, "lyon")
    assert len(trip) == 1, "the vehicle is not replicated"
    result = appliers["nice"].apply(trip)
    assert result.applied_events == 0
    said = " ".join([*result.refused, *result.waiting_for])
    assert "VEHICLE" in said and "not replicated" in said and "[tables]" in said, said
    # `siege-node held` at nice says it and what to do.
    held = parking.held_here(cons["nice"], "nice")
    assert len(held) == 1 and held[0].state == parking.REFUSED, held
    assert "[tables] leaves out" in held[0].todo and "create that row at nice" in held[0].todo
    # The site's operator creates the vehicle there: the next round applies the trip.
    _run(cons["nice"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (5, 'camion 7', 'mine')")
    result = appliers["nice"].apply(trip)
    assert not result.refused and result.applied_events in (0, 1), result
    assert _rows(cons["nice"], "SELECT ID, KM FROM TRIP") == [(10, 8)]
    assert parking.held_here(cons["nice"], "nice") == []


def test_a_primary_key_reference_to_a_table_left_out_holds_where_the_parent_is_missing(
        make_db):
    """Item 2 by primary key: SALE references SHOP_PARAMS (ID), left out at both sites."""
    ddl = ["CREATE TABLE SHOP_PARAMS (ID INTEGER NOT NULL PRIMARY KEY)",
           "CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, "
           "PARAMS INTEGER REFERENCES SHOP_PARAMS (ID))"]
    cons, appliers = _setup(make_db, TableSelection(exclude=("SHOP_PARAMS",)), ddl=ddl,
                            sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO SHOP_PARAMS (ID) VALUES (7)",
         "INSERT INTO SALE (ID, PARAMS) VALUES (10, 7)")
    sale = _own(appliers, cons, "lyon")
    result = appliers["nice"].apply(sale)
    assert result.applied_events == 0
    said = " ".join([*result.refused, *result.waiting_for])
    assert "SHOP_PARAMS" in said and "not replicated" in said and "[tables]" in said, said
    _run(cons["nice"], "INSERT INTO SHOP_PARAMS (ID) VALUES (7)")
    result = appliers["nice"].apply(sale)
    assert not result.refused, result
    assert _rows(cons["nice"], "SELECT ID, PARAMS FROM SALE") == [(10, 7)]


def test_a_delete_after_a_code_clash_knows_the_trips_of_both_vehicles(make_db):
    """(c) then a delete: each site counted lyon's trip on the vehicle that held the code
    when the trip reached it — lyon's own vehicle at lyon, nice's at a site that heard nice
    first. lyon then deletes the trips and nice's vehicle: its delete knew every trip, so it
    must not be overruled anywhere (it was at the siège, which kept the vehicle for good)."""
    cons, appliers = _setup(make_db)
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'lyon')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 1)")
    time.sleep(0.02)
    _run(cons["nice"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (2, 'camion 7 ', 'nice')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (20, 'camión 7', 2)")
    lyon, nice = _own(appliers, cons, "lyon"), _own(appliers, cons, "nice")
    _deliver(appliers, "siege", nice)  # the siège hears nice first
    _deliver(appliers, "siege", lyon)
    _deliver(appliers, "lyon", nice)
    _deliver(appliers, "nice", lyon)
    _run(cons["lyon"], "DELETE FROM TRIP", "DELETE FROM VEHICLE WHERE ID = 2")
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert [(v[0], v[2]) for v in vehicles] == [(1, "lyon")] and trips == []
    assert ("VEHICLE", "kept-by-reference") not in _records(cons["siege"])


def test_a_parent_table_left_out_at_one_site_only_is_said_where_it_blocks(make_db):
    """Item 2: VEHICLE is replicated at lyon, left out at nice (a policy mismatch). nice's
    trip names a vehicle only nice has: lyon cannot place it and says why; nothing of lyon's
    vehicles is lost at nice (kept aside for when nice replicates the table)."""
    cons = {"lyon": make_db("lyon", ddl=DDL), "nice": make_db("nice", ddl=DDL)}
    capture.install(cons["lyon"])
    capture.install(cons["nice"], LOCAL_PARENT)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'lyon')")
    _run(cons["nice"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (5, 'Grúa', 'nice')",
         "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (50, 'GRUA', 9)")
    nice, lyon = _own(appliers, cons, "nice"), _own(appliers, cons, "lyon")
    result = appliers["lyon"].apply(nice)
    said = " ".join([*result.refused, *result.waiting_for])
    assert result.applied_events == 0 and "VEHICLE" in said and "GRUA" in said, result
    assert "[tables]" in said, said
    result = appliers["nice"].apply(lyon)
    assert not result.refused, result
    assert _rows(cons["nice"], "SELECT ID FROM VEHICLE") == [(5,)], "nice's own rows only"


def test_a_code_of_a_parent_table_without_a_primary_key(make_db):
    """(e) The parent table has no primary key (never replicated: refused, or left out): a
    trip naming a code the site has applies, one naming a code it lacks holds, said plainly
    (it failed with 'a replicated row references VEHICLE, which is not replicated here')."""
    ddl = [f"CREATE TABLE VEHICLE (CODE {CODE} NOT NULL {CI_AI}, LABEL VARCHAR(30), "
           "CONSTRAINT VEHICLE_CODE UNIQUE (CODE))", DDL[1]]
    cons, appliers = _setup(make_db, LOCAL_PARENT, ddl=ddl, sites=("lyon", "nice"))
    for con in cons.values():
        _run(con, "INSERT INTO VEHICLE (CODE, LABEL) VALUES ('Camión 7 ', 'both')")
    _run(cons["lyon"], "INSERT INTO VEHICLE (CODE, LABEL) VALUES ('Grúa', 'lyon')")
    _run(cons["lyon"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 8)")
    _run(cons["lyon"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (11, 'GRUA', 2)")
    result = appliers["nice"].apply(_own(appliers, cons, "lyon"))
    assert result.applied_events == 1 and len(result.refused) == 1, result
    assert "TRIP (11)" in result.refused[0] and "[tables]" in result.refused[0], result
    assert _rows(cons["nice"], "SELECT ID FROM TRIP") == [(10,)]


def test_a_trip_naming_a_deleted_vehicles_reused_code_is_counted_alike(make_db):
    """The siège deletes vehicle 1 ('Camión 7') and creates vehicle 2 with the same code;
    meanwhile nice writes a trip naming vehicle 1's code. nice overrules the delete (it did
    not know the trip) and hides vehicle 1 behind vehicle 2 (the later code); the siège and
    lyon counted the trip on vehicle 2 only, so the delete stands there: the sites hold
    different registers and records (and different rows once vehicle 2 goes)."""
    cons, appliers = _setup(make_db)
    _run(cons["siege"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'old')")
    _everywhere(cons, appliers)
    _run(cons["siege"], "DELETE FROM VEHICLE WHERE ID = 1")
    _run(cons["siege"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (2, 'CAMION 7 ', 'new')")
    _run(cons["nice"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'camion 7', 3)")
    _everywhere(cons, appliers)
    _same(cons)
    # The trip goes, then vehicle 2 gives the code up: vehicle 1 must come back alike
    # everywhere (or stay gone everywhere).
    _run(cons["nice"], "DELETE FROM TRIP WHERE ID = 10")
    _everywhere(cons, appliers)
    _run(cons["siege"], "UPDATE VEHICLE SET CODE = 'Grúa' WHERE ID = 2")
    _everywhere(cons, appliers)
    _same(cons)


# --- rows that predate install (found by H1's ERP schema generator, F1 and F3) -----------

PREEXISTING_DDL = [*DDL, "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7 ', 'old')"]


def test_a_preexisting_vehicle_deleted_with_its_last_trip_stays_deleted(make_db):
    """lyon writes a trip for a vehicle both sites had before install, then deletes the trip
    and the vehicle in one transaction. The publisher could not count the trip on the
    vehicle (gone from the table when it looked, and no registers), so the delete said it
    knew no reference, and nice - which counted the trip - kept the vehicle for good
    ('kept-by-reference', the delete losing to its own site's earlier trip). A delete knows
    every earlier write of its own site."""
    cons, appliers = _setup(make_db, ddl=PREEXISTING_DDL, sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 5)")
    _run(cons["lyon"], "DELETE FROM TRIP WHERE ID = 10", "DELETE FROM VEHICLE WHERE ID = 1")
    _deliver(appliers, "nice", _own(appliers, cons, "lyon"))
    vehicles, trips = _same(cons)
    assert vehicles == [] and trips == [] and _records(cons["nice"]) == []


def test_a_trip_for_a_preexisting_vehicle_deleted_concurrently_brings_it_back(make_db):
    """lyon deletes a vehicle both sites had before install; nice writes a trip naming its
    code. The delete did not know the trip: the vehicle comes back at lyon (it waited there
    for good: 'whose insert has not arrived here yet')."""
    cons, appliers = _setup(make_db, ddl=PREEXISTING_DDL, sites=("lyon", "nice"))
    _run(cons["lyon"], "DELETE FROM VEHICLE WHERE ID = 1")
    _run(cons["nice"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 5)")
    _everywhere(cons, appliers)
    vehicles, trips = _same(cons)
    assert vehicles == [(1, "Camión 7 ".encode(), "old")] and [t[0] for t in trips] == [10]


# --- random workload ----------------------------------------------------------------------

# One seed in `make test` (its time budget); seeds 1-16 pass (2 and 7 failed before events
# named the parent key their origin met: a deleted vehicle's code reused).
# SIEGE_UNIQUE_REF_SEEDS=1,2,3 for more.
SEEDS = [int(s) for s in os.environ.get("SIEGE_UNIQUE_REF_SEEDS", "1").split(",")]
# Spellings of three codes the engine calls equal in pairs (case, accents, trailing blanks).
SPELLINGS = ["Camión 7", "CAMION 7 ", "Grúa", "grua", "Äb", "ab  "]


def _local_tx(con, rng: random.Random, site: str) -> None:
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    try:
        for _ in range(rng.randint(1, 3)):
            v, t = rng.randint(1, 6), rng.randint(10, 17)
            sql, params = rng.choice([
                ("INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (?, ?, ?)",
                 (v, rng.choice(SPELLINGS), site)),
                ("UPDATE VEHICLE SET LABEL = ? WHERE ID = ?", (f"{site}-{rng.randint(0, 9)}", v)),
                ("DELETE FROM VEHICLE WHERE ID = ?", (v,)),
                ("INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (?, ?, ?)",
                 (t, rng.choice(SPELLINGS), rng.randint(0, 999) / 10)),
                ("UPDATE TRIP SET VEHICLE_CODE = ? WHERE ID = ?", (rng.choice(SPELLINGS), t)),
                ("UPDATE TRIP SET KM = ? WHERE ID = ?", (rng.randint(0, 999) / 10, t)),
                ("DELETE FROM TRIP WHERE ID = ?", (t,)),
            ])
            try:
                cur.execute(sql, params)
            except DatabaseError:
                pass  # refused here (duplicate, orphan): the user is told
        cur.close()
        tm.commit()
    finally:
        tm.close()


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_random_workload_by_code_converges(make_db, seed):
    """Vehicles created, relabelled and deleted, trips naming their codes in any spelling
    the engine calls equal, at three sites, exchanged in random orders (codes are never
    renamed: see the strict xfail above): every site ends with the same rows, bytes and
    records, and nothing waits or is held."""
    cons, appliers = _setup(make_db)
    rng = random.Random(seed)
    _run(cons["siege"], *[f"INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES ({i + 1}, "
                          f"'{c}', 'start')" for i, c in enumerate(SPELLINGS[::2])])
    _everywhere(cons, appliers)
    for _ in range(60):
        site = rng.choice(SITES)
        if rng.random() < 0.6:
            _local_tx(cons[site], rng, site)
        else:
            src = rng.choice([s for s in SITES if s != site])
            bodies = _own(appliers, cons, src)
            if rng.random() < 0.5:  # everything src holds, relayed events included
                bodies = all_events(cons[src])
            result = appliers[site].apply(bodies)  # (some may wait for a third site's)
            assert not result.refused, result.refused
    for _ in range(2):
        for src in SITES:
            appliers[src].apply([])
            bodies = all_events(cons[src])
            for dst in SITES:
                if dst != src:
                    assert not appliers[dst].apply(bodies).refused
    for site in SITES:
        _deliver(appliers, site, [])
    _same(cons)
    assert len(all_events(cons["siege"])) > 15, f"seed {seed}: the workload did little"


def test_a_reference_to_a_two_column_unique_key(make_db):
    """A WIN1252 site code and a number together name a depot: the deleted depot comes back
    at the site that deleted it, with its exact bytes, when another site's delivery names
    it ('é' travels as its WIN1252 byte)."""
    ddl = ["CREATE TABLE DEPOT (ID INTEGER NOT NULL PRIMARY KEY, SITE CHAR(4) CHARACTER SET "
           "WIN1252 NOT NULL COLLATE WIN_PTBR, NUM SMALLINT NOT NULL, NAME VARCHAR(20), "
           "CONSTRAINT DEPOT_SITE_NUM UNIQUE (SITE, NUM))",
           "CREATE TABLE DELIVERY (ID INTEGER NOT NULL PRIMARY KEY, DSITE CHAR(4) CHARACTER "
           "SET WIN1252 COLLATE WIN_PTBR, DNUM SMALLINT, "
           "FOREIGN KEY (DSITE, DNUM) REFERENCES DEPOT (SITE, NUM))"]
    cons, appliers = _setup(make_db, ddl=ddl, sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO DEPOT (ID, SITE, NUM, NAME) VALUES (1, 'Sète', 2, 'port')")
    _everywhere(cons, appliers)
    _run(cons["lyon"], "DELETE FROM DEPOT WHERE ID = 1")
    _run(cons["nice"], "INSERT INTO DELIVERY (ID, DSITE, DNUM) VALUES (7, 'SETE', 2)")
    _everywhere(cons, appliers)
    for con in cons.values():
        assert _rows(con, "SELECT ID, CAST(SITE AS CHAR(4) CHARACTER SET OCTETS), NUM, NAME "
                          "FROM DEPOT") == [(1, "Sète".encode("cp1252"), 2, "port")]
        assert _rows(con, "SELECT ID FROM DELIVERY") == [(7,)]
        assert [c.kind for c in conflicts.listing(con)] == ["kept-by-reference"]


def test_a_delete_of_a_row_that_a_table_left_out_references_at_one_site(make_db):
    """Item 2 the other way: TRIP is left out (each site's own), VEHICLE replicated. lyon
    deletes a vehicle that only nice's own trips name: nice keeps it while they do (the
    engine would refuse the delete), says nothing is lost, and publish never fails."""
    cons, appliers = _setup(make_db, TableSelection(exclude=("TRIP",)), sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'van')")
    _everywhere(cons, appliers)
    _run(cons["nice"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 5)")
    _run(cons["lyon"], "DELETE FROM VEHICLE WHERE ID = 1")
    result = appliers["nice"].apply(_own(appliers, cons, "lyon"))
    assert not result.refused, result
    assert _rows(cons["nice"], "SELECT ID FROM VEHICLE") == [(1,)], "kept: nice's trip names it"
    assert _rows(cons["nice"], "SELECT ID FROM TRIP") == [(10,)]


def test_a_row_kept_for_a_table_left_out_goes_once_those_rows_go(make_db):
    """... and once nice's own trip goes (no event says so: TRIP is not replicated), the
    delete takes effect at nice too, at its next apply: it stayed there for good."""
    cons, appliers = _setup(make_db, TableSelection(exclude=("TRIP",)), sites=("lyon", "nice"))
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (1, 'Camión 7', 'van')")
    _everywhere(cons, appliers)
    _run(cons["nice"], "INSERT INTO TRIP (ID, VEHICLE_CODE, KM) VALUES (10, 'CAMION 7', 5)")
    _run(cons["lyon"], "DELETE FROM VEHICLE WHERE ID = 1")
    _deliver(appliers, "nice", _own(appliers, cons, "lyon"))
    _run(cons["nice"], "DELETE FROM TRIP WHERE ID = 10")
    _run(cons["lyon"], "INSERT INTO VEHICLE (ID, CODE, LABEL) VALUES (2, 'Grúa', 'crane')")
    _deliver(appliers, "nice", _own(appliers, cons, "lyon"))
    vehicles, _trips = _same(cons)
    assert [v[0] for v in vehicles] == [2]


# --- one customer registered twice, each referenced (issue 19; DESIGN §3.5) --------------

SHOP_DDL = [
    "CREATE TABLE CUSTOMER (ID BIGINT NOT NULL PRIMARY KEY, "
    "TAXID VARCHAR(16) CHARACTER SET WIN1252, NAME VARCHAR(40) CHARACTER SET WIN1252, "
    "CONSTRAINT CUSTOMER_TAXID UNIQUE (TAXID))",
    "CREATE TABLE INVOICE (ID BIGINT NOT NULL PRIMARY KEY, CUSTOMER_ID BIGINT NOT NULL, "
    "TOTAL NUMERIC(15, 2), CONSTRAINT INVOICE_CUSTOMER FOREIGN KEY (CUSTOMER_ID) "
    "REFERENCES CUSTOMER (ID))",
    "CREATE TABLE CONTACT (ID BIGINT NOT NULL PRIMARY KEY, CUSTOMER_ID BIGINT NOT NULL, "
    "NAME VARCHAR(40) CHARACTER SET WIN1252, CONSTRAINT CONTACT_CUSTOMER FOREIGN KEY "
    "(CUSTOMER_ID) REFERENCES CUSTOMER (ID))",
]


def _shop(con) -> tuple[list[tuple], ...]:
    return (_rows(con, "SELECT ID, CAST(TAXID AS VARCHAR(16) CHARACTER SET OCTETS), NAME "
                       "FROM CUSTOMER ORDER BY ID"),
            _rows(con, "SELECT ID, CUSTOMER_ID, TOTAL FROM INVOICE ORDER BY ID"),
            _rows(con, "SELECT ID, CUSTOMER_ID, NAME FROM CONTACT ORDER BY ID"))


def _shop_same(cons: dict) -> tuple[list[tuple], ...]:
    states = {site: _shop(con) for site, con in cons.items()}
    first = next(iter(states.values()))
    assert all(s == first for s in states.values()), states
    full = {site: sorted((c.table, c.kind, _show_key(c.key), c.generation, c.loser,
                          c.column or "", c.winner) for c in conflicts.listing(con))
            for site, con in cons.items()}
    assert all(f == next(iter(full.values())) for f in full.values()), full
    for site, con in cons.items():
        assert parking.held_here(con, site) == [], site
    return first


def _register_twice(cons: dict) -> None:
    """lyon then nice register the same customer (same TAXID, other keys), each invoicing
    it; nice also records a contact."""
    _run(cons["lyon"], "INSERT INTO CUSTOMER (ID, TAXID, NAME) VALUES "
                       "(3000000005, 'FR-0000000001', 'Société Générale ')",
         "INSERT INTO INVOICE (ID, CUSTOMER_ID, TOTAL) VALUES (10, 3000000005, 120.50)")
    time.sleep(0.02)  # nice's TAXID is written later, whatever the engine clocks' mapping
    _run(cons["nice"], "INSERT INTO CUSTOMER (ID, TAXID, NAME) VALUES "
                       "(4000000013, 'FR-0000000001', 'Societe Generale')",
         "INSERT INTO INVOICE (ID, CUSTOMER_ID, TOTAL) VALUES (20, 4000000013, 7.05)",
         "INSERT INTO CONTACT (ID, CUSTOMER_ID, NAME) VALUES (21, 4000000013, 'Zoé')")


@pytest.mark.parametrize("first", ["lyon", "nice"])
def test_one_customer_registered_twice_and_referenced_at_both_sites_merges(make_db, first):
    """Both rows referenced: the lower stamp (lyon's) goes everywhere, on record whole; its
    invoice now references nice's customer, its own reference on record; nothing is held.
    Whichever registration reaches the siège first (the winner brought back by its invoice
    while the loser is in the table with its own, or the loser by its invoice while the
    winner is)."""
    cons, appliers = _setup(make_db, ddl=SHOP_DDL)
    _register_twice(cons)
    lyon, nice = _own(appliers, cons, "lyon"), _own(appliers, cons, "nice")
    second = "nice" if first == "lyon" else "lyon"
    bodies = {"lyon": lyon, "nice": nice}
    _deliver(appliers, "siege", bodies[first])
    _deliver(appliers, "siege", bodies[second])
    _deliver(appliers, "lyon", nice)
    _deliver(appliers, "nice", lyon)
    _everywhere(cons, appliers)
    customers, invoices, contacts = _shop_same(cons)
    assert customers == [(4000000013, b"FR-0000000001", "Societe Generale")]
    assert invoices == [(10, 4000000013, Decimal("120.50")), (20, 4000000013, Decimal("7.05"))]
    assert contacts == [(21, 4000000013, "Zoé")]
    records = conflicts.listing(cons["siege"])
    assert sorted((c.table, c.kind, _show_key(c.key)) for c in records) == [
        ("CUSTOMER", "unique-clash", "3000000005"), ("INVOICE", "reparented", "10")]
    clash = next(c for c in records if c.kind == "unique-clash")
    moved = next(c for c in records if c.kind == "reparented")
    assert moved.generation == clash.generation, "the invoice's old customer is named"
    assert moved.column == "CUSTOMER_ID"


def test_a_child_arriving_after_the_merge_references_the_winner(make_db):
    """lyon invoices its customer again before it hears of nice's: that invoice reaches the
    siège after the clash was settled. It references nice's customer there too (the loser
    is not brought back from its registers), on record; every site the same."""
    cons, appliers = _setup(make_db, ddl=SHOP_DDL)
    _register_twice(cons)
    early = _own(appliers, cons, "lyon")
    _run(cons["lyon"], "INSERT INTO INVOICE (ID, CUSTOMER_ID, TOTAL) VALUES (11, 3000000005, 3)",
         "INSERT INTO CONTACT (ID, CUSTOMER_ID, NAME) VALUES (12, 3000000005, 'Chloé')")
    late = _own(appliers, cons, "lyon")
    nice = _own(appliers, cons, "nice")
    _deliver(appliers, "siege", early)
    _deliver(appliers, "siege", nice)
    assert [c[0] for c in _shop(cons["siege"])[0]] == [4000000013], "settled before"
    _deliver(appliers, "siege", late)
    customers, invoices, contacts = _shop(cons["siege"])
    assert [c[0] for c in customers] == [4000000013], "the loser stays gone"
    assert [(i[0], i[1]) for i in invoices] == [(10, 4000000013), (11, 4000000013),
                                               (20, 4000000013)]
    assert [(c[0], c[1]) for c in contacts] == [(12, 4000000013), (21, 4000000013)]
    _deliver(appliers, "lyon", nice)
    _deliver(appliers, "nice", late)
    _everywhere(cons, appliers)
    _shop_same(cons)
    assert sorted((c.table, c.kind, _show_key(c.key))
                  for c in conflicts.listing(cons["nice"])) == [
        ("CONTACT", "reparented", "12"), ("CUSTOMER", "unique-clash", "3000000005"),
        ("INVOICE", "reparented", "10"), ("INVOICE", "reparented", "11")]


def test_the_loser_comes_back_with_its_rows_once_the_clash_is_gone(make_db):
    """nice corrects its customer's TAXID: lyon's customer comes back everywhere and its
    invoice references it again (its registers never changed), the records go. nice
    corrects it before it hears of lyon's customer, the siège after it merged them."""
    cons, appliers = _setup(make_db, ddl=SHOP_DDL)
    _register_twice(cons)
    lyon, nice = _own(appliers, cons, "lyon"), _own(appliers, cons, "nice")
    _deliver(appliers, "siege", lyon)
    _deliver(appliers, "siege", nice)
    assert [i[1] for i in _shop(cons["siege"])[1]] == [4000000013, 4000000013]
    _run(cons["nice"], "UPDATE CUSTOMER SET TAXID = 'FR-0000000002' WHERE ID = 4000000013")
    _everywhere(cons, appliers)
    customers, invoices, contacts = _shop_same(cons)
    assert [(c[0], c[1]) for c in customers] == [(3000000005, b"FR-0000000001"),
                                                 (4000000013, b"FR-0000000002")]
    assert [(i[0], i[1]) for i in invoices] == [(10, 3000000005), (20, 4000000013)]
    assert conflicts.listing(cons["siege"]) == []


@pytest.mark.parametrize("first", ["lyon", "nice"])
def test_the_winner_deleted_where_the_loser_was_not_seen_gives_its_rows_back(make_db, first):
    """nice deletes its customer (and its rows) before it hears of lyon's: there, lyon's
    customer simply arrives. The siège, which had merged them, ends the same: lyon's
    customer back with its invoice, nothing on record but the delete's own outcome."""
    cons, appliers = _setup(make_db, ddl=SHOP_DDL)
    _register_twice(cons)
    _run(cons["nice"], "DELETE FROM CONTACT WHERE ID = 21", "DELETE FROM INVOICE WHERE ID = 20",
         "DELETE FROM CUSTOMER WHERE ID = 4000000013")
    lyon, nice = _own(appliers, cons, "lyon"), _own(appliers, cons, "nice")
    bodies = {"lyon": lyon, "nice": nice}
    _deliver(appliers, "siege", bodies[first])
    _deliver(appliers, "siege", bodies["nice" if first == "lyon" else "lyon"])
    _deliver(appliers, "nice", lyon)
    _deliver(appliers, "lyon", nice)
    _everywhere(cons, appliers)
    customers, invoices, contacts = _shop_same(cons)
    assert [c[0] for c in customers] == [3000000005]
    assert [(i[0], i[1]) for i in invoices] == [(10, 3000000005)] and contacts == []
    assert conflicts.listing(cons["siege"]) == []
