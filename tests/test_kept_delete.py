"""A delete kept by a reference loses for good (issue 17, item 2; DESIGN §3.5).

Head office deletes a customer while a shop adds an order for it. The customer is kept: the
delete is on record as a loser, and the customer lives on as an ordinary row. When the shop
later cancels that order, the customer stays — with the edits head office made to it after it
came back — at every site, whatever order the events reach them in (the third site gets the
order and its cancellation before the delete). Checked by reading the application's tables.
"""

from __future__ import annotations

from siege_sync.node.db.database import (
    READ_COMMITTED_RW,
    DatabaseSpec,
    open_connection,
    transaction,
)
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.pipeline.apply import Applier
from siege_sync.node.pipeline.lookup import Lookup
from siege_sync.node.pipeline.publish import Publisher
from siege_sync.proto import events_pb2
from tests.test_apply import all_events

DDL = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(40))",
    "CREATE TABLE ORDERS (ID INTEGER NOT NULL PRIMARY KEY, CUST_ID INTEGER NOT NULL "
    "REFERENCES CUSTOMER (ID), TOTAL NUMERIC(12, 2))",
]
SITES = ("siege", "shop", "nice")


def _run(con, *statements: str) -> None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        for sql in statements:
            cur.execute(sql)
        cur.close()


def _rows(con, sql: str) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()]
        cur.close()
    return rows


def _events(appliers: dict, cons: dict, site: str) -> list[bytes]:
    appliers[site].apply([])  # publish first, as a node does before serving
    return all_events(cons[site])


def _deliver(appliers: dict, site: str, bodies: list[bytes]) -> None:
    result = appliers[site].apply(bodies)
    assert not result.refused, result.refused


def _of(bodies: list[bytes], site: str) -> list[bytes]:
    return [b for b in bodies if events_pb2.Event.FromString(b).origin.site == site]


def _deleted_knowing_the_cancel(make_db) -> tuple[dict, dict, list[bytes], list[bytes]]:
    """The shop takes an order for a new customer; nice cancels it; head office, having
    seen the cancellation, deletes the customer. Returns the sites, their appliers, the
    cancellation's events and the delete's (the shop has neither yet)."""
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    _run(cons["shop"], "INSERT INTO CUSTOMER (ID, NAME) VALUES (1, 'Martin')",
         "INSERT INTO ORDERS (ID, CUST_ID, TOTAL) VALUES (10, 1, 5)")
    created = _of(_events(appliers, cons, "shop"), "shop")
    for site in ("siege", "nice"):
        _deliver(appliers, site, created)
    _run(cons["nice"], "DELETE FROM ORDERS WHERE ID = 10")
    cancel = _of(_events(appliers, cons, "nice"), "nice")
    _deliver(appliers, "siege", cancel)
    _run(cons["siege"], "DELETE FROM CUSTOMER WHERE ID = 1")
    return cons, appliers, cancel, _of(_events(appliers, cons, "siege"), "siege")


def test_a_delete_kept_by_a_reference_never_strikes_later(make_db):
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}

    _run(cons["siege"], "INSERT INTO CUSTOMER (ID, NAME) VALUES (1, 'Dupont')")
    start = _events(appliers, cons, "siege")
    for site in ("shop", "nice"):
        _deliver(appliers, site, start)

    # Concurrently: head office deletes the customer, the shop takes an order for it.
    _run(cons["siege"], "DELETE FROM CUSTOMER WHERE ID = 1")
    _run(cons["shop"], "INSERT INTO ORDERS (ID, CUST_ID, TOTAL) VALUES (10, 1, 99.90)")
    delete = _of(_events(appliers, cons, "siege"), "siege")
    order = _of(_events(appliers, cons, "shop"), "shop")
    _deliver(appliers, "siege", order)
    _deliver(appliers, "shop", delete)

    # The customer came back at head office, which edits it.
    assert _rows(cons["siege"], "SELECT ID FROM CUSTOMER") == [(1,)]
    _run(cons["siege"], "UPDATE CUSTOMER SET NAME = 'Dupont et fils' WHERE ID = 1")
    edit = _of(_events(appliers, cons, "siege"), "siege")
    _deliver(appliers, "shop", edit)

    # The shop cancels the order.
    _run(cons["shop"], "DELETE FROM ORDERS WHERE ID = 10")
    cancel = _of(_events(appliers, cons, "shop"), "shop")
    _deliver(appliers, "siege", cancel)

    # The third site hears the shop first (the order and its cancellation), then head office.
    _deliver(appliers, "nice", cancel)
    _deliver(appliers, "nice", edit)

    for site, con in cons.items():
        assert _rows(con, "SELECT ID, NAME FROM CUSTOMER") == [(1, "Dupont et fils")], site
        assert _rows(con, "SELECT ID FROM ORDERS") == [], site
        kept = [c for c in conflicts.listing(con) if c.kind == "kept-by-reference"]
        assert len(kept) == 1 and kept[0].loser.startswith("siege"), f"{site}: {kept}"

    # And it stays an ordinary row: head office can delete it knowingly, everywhere.
    _run(cons["siege"], "DELETE FROM CUSTOMER WHERE ID = 1")
    gone = _of(_events(appliers, cons, "siege"), "siege")
    for site in ("shop", "nice"):
        _deliver(appliers, site, gone)
    for site, con in cons.items():
        assert _rows(con, "SELECT ID FROM CUSTOMER") == [], site


def test_a_delete_that_knew_the_reference_takes_effect_once_it_is_gone(make_db):
    """The other side of the rule: a delete whose origin saw the order go first is an
    ordinary delete, also at a site where the order's cancellation (by a third site) arrives
    after it: the customer waits there, kept, and goes when the cancellation arrives."""
    cons, appliers, cancel, delete = _deleted_knowing_the_cancel(make_db)

    _deliver(appliers, "shop", delete)  # before the cancellation it knew
    assert _rows(cons["shop"], "SELECT ID FROM CUSTOMER") == [(1,)], "kept while referenced"
    _deliver(appliers, "shop", cancel)
    _deliver(appliers, "nice", delete)
    for site, con in cons.items():
        assert _rows(con, "SELECT ID FROM CUSTOMER") == [], site
        assert _rows(con, "SELECT ID FROM ORDERS") == [], site
        assert [c for c in conflicts.listing(con) if c.kind == "kept-by-reference"] == [], site


def test_a_hold_decided_while_the_shop_removes_the_last_reference_is_released(
        make_db, monkeypatch):
    """Chaos seed 4 (issue 19): the applier decides that a delete waits for a row of its
    own snapshot, while the shop's user removes that row and the node publishes the removal
    before the hold is committed. Neither transaction sees the other (write skew): the
    publisher finds no hold to release, the applier commits one no row keeps. The applier
    checks the holds it decided once they are committed, so the customer goes, here as
    everywhere else."""
    cons, appliers, cancel, delete = _deleted_knowing_the_cancel(make_db)

    # The shop's user cancels the order too, committed after the applier's snapshot began
    # and published (by a second connection, as the node's publisher would) before the
    # applier commits the hold it decided from that snapshot.
    shop_path = cons["shop"].info.name
    second = open_connection(DatabaseSpec(shop_path))
    raced: list[int] = []
    decide = Lookup.referencing_row

    def racing(self, table, key, image, besides=()):
        if table.name == "CUSTOMER" and not raced:
            raced.append(1)
            _run(second, "DELETE FROM ORDERS WHERE ID = 10")
            Publisher(second, "shop").publish()
        return decide(self, table, key, image, besides)

    monkeypatch.setattr(Lookup, "referencing_row", racing)
    try:
        _deliver(appliers, "shop", delete)
    finally:
        monkeypatch.undo()
        second.close()
    assert raced, "the applier never looked for a row keeping the customer"

    mine = _of(_events(appliers, cons, "shop"), "shop")
    _deliver(appliers, "siege", mine)
    _deliver(appliers, "nice", mine)
    _deliver(appliers, "nice", delete)
    _deliver(appliers, "shop", cancel)
    for site, con in cons.items():
        assert _rows(con, "SELECT ID FROM CUSTOMER") == [], site
        assert _rows(con, "SELECT ID FROM ORDERS") == [], site
        assert [c for c in conflicts.listing(con) if c.kind == "kept-by-reference"] == [], site
