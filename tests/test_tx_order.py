"""Dependencies inside one source transaction never block it (DESIGN §3.1, §3.5).

Application triggers make the capture order differ from the engine's: an AFTER INSERT trigger
that inserts a child row runs before the parent's capture trigger (POSITION 32000), so the
child is logged first; a self-referencing ON DELETE CASCADE deletes a whole tree in one
statement; rows may reference each other or themselves. Each scenario runs on real embedded
databases with two or three sites, and checks convergence by reading the application tables
of every site independently, with no loss on record that nobody lost.
"""

from __future__ import annotations

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture, status
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import all_events, run_sql

SITES = ("siege", "lyon", "nice")


def make_mesh(make_db, ddl: list[str], sites: tuple[str, ...] = SITES) -> tuple[dict, dict]:
    cons = {name: make_db(name, ddl=ddl) for name in sites}
    for con in cons.values():
        capture.install(con)
    return cons, {name: Applier(con, name) for name, con in cons.items()}


def send(cons: dict, appliers: dict, src: str, dst: str) -> None:
    appliers[src].apply([])  # a node publishes its committed changes before serving them
    result = appliers[dst].apply(all_events(cons[src]))
    assert not result.refused, result.refused
    assert not result.pending, result.waiting_for


def spread(cons: dict, appliers: dict, origin: str) -> None:
    """``origin``'s events to the siège, then from the siège to every other site."""
    if origin != "siege":
        send(cons, appliers, origin, "siege")
    for site in cons:
        if site != "siege":
            send(cons, appliers, "siege", site)


def table(con, name: str) -> dict[int, tuple]:
    """An independent read of an application table: every row, by its first column."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT * FROM {name} ORDER BY 1")
        out = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        cur.close()
    return out


def on_record(con) -> list[tuple[str, str]]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT KIND, LOSER FROM SYNC$CONFLICTS ORDER BY 1, 2")
        out = [(k.strip(), loser.strip()) for k, loser in cur.fetchall()]
        cur.close()
    return out


def everywhere(cons: dict, tables: tuple[str, ...]) -> dict[str, dict[int, tuple]]:
    """Every site holds the same rows in ``tables``, no loss is on record anywhere, and
    applying wrote nothing a site would send as its own change (an engine cascade, say)."""
    seen = {site: {t: table(con, t) for t in tables} for site, con in cons.items()}
    first = next(iter(seen.values()))
    for site, content in seen.items():
        assert content == first, f"{site} differs: {content} != {first}"
        assert on_record(cons[site]) == [], f"{site}: {on_record(cons[site])}"
        assert capture.pending_entries(cons[site]) == 0, f"{site} captured side effects"
    return first


ORDERS_DDL = [
    "CREATE TABLE ORDERS (ID INTEGER NOT NULL PRIMARY KEY, CUSTOMER VARCHAR(20))",
    "CREATE TABLE ORDER_STATUS (ID INTEGER NOT NULL PRIMARY KEY, "
    "ORDER_ID INTEGER NOT NULL REFERENCES ORDERS (ID) ON DELETE CASCADE, STATUS VARCHAR(10))",
    "CREATE SEQUENCE GEN_STATUS",
    # The order's first status line, written by the application's own trigger: it runs
    # before the capture trigger (POSITION 32000), so the line is captured before the order.
    "CREATE TRIGGER ORDERS_FIRST_STATUS FOR ORDERS AFTER INSERT POSITION 0 AS BEGIN "
    "INSERT INTO ORDER_STATUS (ID, ORDER_ID, STATUS) "
    "VALUES (NEXT VALUE FOR GEN_STATUS + 100 * NEW.ID, NEW.ID, 'new'); END",
]


def test_a_child_an_app_trigger_captures_before_its_parent_applies_with_it(make_db):
    cons, appliers = make_mesh(make_db, ORDERS_DDL)
    with transaction(cons["lyon"]) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO ORDERS (ID, CUSTOMER) VALUES (1, 'Dupont')")
        cur.execute("INSERT INTO ORDERS (ID, CUSTOMER) VALUES (2, 'Martin')")
        cur.execute("UPDATE ORDER_STATUS SET STATUS = 'paid' WHERE ORDER_ID = 1")
        cur.close()
    spread(cons, appliers, "lyon")
    content = everywhere(cons, ("ORDERS", "ORDER_STATUS"))
    assert content["ORDERS"] == {1: ("Dupont",), 2: ("Martin",)}
    assert sorted(content["ORDER_STATUS"].values()) == [(1, "paid"), (2, "new")], \
        "the guarded trigger did not fire again at the receiving sites"

    # The order deleted whole (its lines by the cascade), then a new one, in one transaction.
    with transaction(cons["nice"]) as tm:
        cur = tm.cursor()
        cur.execute("DELETE FROM ORDERS WHERE ID = 1")
        cur.execute("INSERT INTO ORDERS (ID, CUSTOMER) VALUES (3, 'Durand')")
        cur.close()
    spread(cons, appliers, "nice")
    content = everywhere(cons, ("ORDERS", "ORDER_STATUS"))
    assert set(content["ORDERS"]) == {2, 3}
    assert sorted(v[0] for v in content["ORDER_STATUS"].values()) == [2, 3]


TREE_DDL = [
    "CREATE TABLE NODE (ID INTEGER NOT NULL PRIMARY KEY, "
    "PARENT_ID INTEGER REFERENCES NODE (ID) ON DELETE CASCADE, NAME VARCHAR(10))",
]


def test_a_self_referencing_tree_deleted_by_cascade_in_one_transaction_goes_everywhere(make_db):
    cons, appliers = make_mesh(make_db, TREE_DDL)
    with transaction(cons["siege"]) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (1, NULL, 'root')")
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (2, 1, 'a')")
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (3, 2, 'b')")
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (4, 2, 'c')")
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (5, 5, 'self')")
        cur.execute("INSERT INTO NODE (ID, PARENT_ID, NAME) VALUES (6, NULL, 'other')")
        cur.close()
    spread(cons, appliers, "siege")
    assert set(everywhere(cons, ("NODE",))["NODE"]) == {1, 2, 3, 4, 5, 6}

    run_sql(cons["lyon"], "DELETE FROM NODE WHERE ID = 1")  # the engine deletes 2, 3, 4
    run_sql(cons["lyon"], "DELETE FROM NODE WHERE ID = 5")  # a row referencing itself
    spread(cons, appliers, "lyon")
    assert everywhere(cons, ("NODE",))["NODE"] == {6: (None, "other")}


PAIR_DDL = [
    "CREATE TABLE COMPANY (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20), "
    "PARAMS_ID INTEGER)",
    "CREATE TABLE PARAMS (ID INTEGER NOT NULL PRIMARY KEY, "
    "COMPANY_ID INTEGER NOT NULL REFERENCES COMPANY (ID) ON DELETE CASCADE, VAT VARCHAR(10))",
    "ALTER TABLE COMPANY ADD CONSTRAINT COMPANY_PARAMS FOREIGN KEY (PARAMS_ID) "
    "REFERENCES PARAMS (ID) ON DELETE SET NULL",
    # A company creates its parameter row (captured before the company's own insert).
    "CREATE TRIGGER COMPANY_PARAMS FOR COMPANY AFTER INSERT POSITION 0 AS BEGIN "
    "INSERT INTO PARAMS (ID, COMPANY_ID, VAT) VALUES (NEW.ID, NEW.ID, 'FR'); END",
]


def new_company(con, ident: int, name: str) -> None:
    """The application's save: the company, then its pointer to the parameter row its
    trigger created — two rows referencing each other, written in one transaction."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO COMPANY (ID, NAME) VALUES (?, ?)", (ident, name))
        cur.execute("UPDATE COMPANY SET PARAMS_ID = ID WHERE ID = ?", (ident,))
        cur.close()


def test_mutually_referencing_rows_are_inserted_and_deleted_in_one_transaction(make_db):
    cons, appliers = make_mesh(make_db, PAIR_DDL)
    new_company(cons["nice"], 1, "Acme")
    new_company(cons["nice"], 2, "Globex")
    spread(cons, appliers, "nice")
    content = everywhere(cons, ("COMPANY", "PARAMS"))
    assert content["COMPANY"] == {1: ("Acme", 1), 2: ("Globex", 2)}
    assert content["PARAMS"] == {1: (1, "FR"), 2: (2, "FR")}

    # The company goes, its parameter row by the cascade: each kept the other from going.
    run_sql(cons["lyon"], "DELETE FROM COMPANY WHERE ID = 1")
    spread(cons, appliers, "lyon")
    content = everywhere(cons, ("COMPANY", "PARAMS"))
    assert content["COMPANY"] == {2: ("Globex", 2)} and content["PARAMS"] == {2: (2, "FR")}


def test_rows_referencing_each_other_deleted_by_one_cascade_go_everywhere(make_db):
    # Built over several transactions (each applies in capture order), deleted in one: each
    # row kept the other at the receiving sites, on record as kept-by-reference, while the
    # origin had neither.
    cons, appliers = make_mesh(make_db, PAIR_DDL[:3])  # no trigger
    run_sql(cons["nice"], "INSERT INTO COMPANY (ID, NAME) VALUES (1, 'Acme')")
    run_sql(cons["nice"], "INSERT INTO PARAMS (ID, COMPANY_ID, VAT) VALUES (1, 1, 'FR')")
    run_sql(cons["nice"], "UPDATE COMPANY SET PARAMS_ID = 1 WHERE ID = 1")
    spread(cons, appliers, "nice")
    run_sql(cons["lyon"], "DELETE FROM COMPANY WHERE ID = 1")
    spread(cons, appliers, "lyon")
    content = everywhere(cons, ("COMPANY", "PARAMS"))
    assert content == {"COMPANY": {}, "PARAMS": {}}


def test_an_origin_that_waits_says_what_for_in_status(make_db):
    cons, appliers = make_mesh(make_db, ORDERS_DDL)
    run_sql(cons["lyon"], "INSERT INTO ORDERS (ID, CUSTOMER) VALUES (1, 'Dupont')")
    send(cons, appliers, "lyon", "nice")
    run_sql(cons["nice"], "UPDATE ORDERS SET CUSTOMER = 'Dupond' WHERE ID = 1")
    appliers["nice"].apply([])
    nice_own = [b for b in all_events(cons["nice"]) if b"nice" in b[:40]]
    result = appliers["siege"].apply(nice_own)  # without lyon's insert it names
    assert result.applied_events == 0 and not result.refused
    waits = [p for p in status.capture_status(cons["siege"]).parked if p.origin == "nice"]
    assert len(waits) == 1 and waits[0].seq == 1, waits
    assert "ORDERS (1)" in waits[0].reason and "lyon#2" in waits[0].reason, waits[0].reason
    assert waits[0].reason in result.waiting_for

    send(cons, appliers, "lyon", "siege")
    result = appliers["siege"].apply(nice_own)
    assert result.applied_events == 1 and not result.pending
    assert status.capture_status(cons["siege"]).parked == [], "cleared once applied"
    assert table(cons["siege"], "ORDERS") == {1: ("Dupond",)}
