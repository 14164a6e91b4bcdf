"""A joined site's copy holds whole a row the siège had deleted, and not published, when its
snapshot was taken (``operations/unpublished.py``; chaos seed 312).

The siège's user deletes a customer, edits another and adds a third; the snapshot is taken
before the node publishes those changes. Meanwhile a shop adds an order for the deleted
customer, so the delete is overruled everywhere. Before, the joined site's copy lacked the
customer while its registers said it was there: the overruled delete wrote it back with its
key only, its UNIQUE tax id and name NULL at that site for good. Checked by reading the
application's tables at the siège and at the joined site."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.journal import capture
from siege_sync.node.model.config import parse
from siege_sync.node.operations.join import take_identity
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import all_events
from tests.test_kept_delete import _of, _rows, _run

DDL = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, "
    "TAXID VARCHAR(16) CHARACTER SET WIN1252 UNIQUE, "
    "NAME VARCHAR(40) CHARACTER SET WIN1252 COLLATE WIN_PTBR, "
    "BALANCE NUMERIC(15, 2) DEFAULT 0 NOT NULL)",
    "CREATE TABLE ORDERS (ID INTEGER NOT NULL PRIMARY KEY, CUST_ID INTEGER NOT NULL "
    "REFERENCES CUSTOMER (ID), TOTAL NUMERIC(15, 2))",
]


CUSTOMERS = "SELECT ID, TAXID, NAME, BALANCE FROM CUSTOMER ORDER BY ID"


def test_a_row_the_siege_deleted_without_publishing_stays_whole_at_a_joined_site(
        make_db, tmp_path: Path) -> None:
    siege, nice = make_db("siege", ddl=DDL), make_db("nice", ddl=DDL)
    for con, site in ((siege, "siege"), (nice, "nice")):
        capture.install(con)
        capture.set_state(con, "site", site)  # (as its node records it)
    appliers = {"siege": Applier(siege, "siege"), "nice": Applier(nice, "nice")}
    _run(siege, "INSERT INTO CUSTOMER VALUES (1, 'T-0001', 'Zoé  ', 12.50)",
         "INSERT INTO CUSTOMER VALUES (2, 'T-0002', 'Éloïse', 0)",
         "INSERT INTO CUSTOMER VALUES (4, 'T-0004', 'Müller', -3.20)")
    appliers["siege"].apply([])  # published
    assert not appliers["nice"].apply(_of(all_events(siege), "siege")).refused

    # Changes made at the siège and not published when the snapshot is taken.
    _run(siege, "DELETE FROM CUSTOMER WHERE ID = 1",
         "UPDATE CUSTOMER SET NAME = 'Hélène', BALANCE = 99.90 WHERE ID = 2",
         "INSERT INTO CUSTOMER VALUES (3, 'T-0003', 'Çava', 7.00)")
    assert capture.pending_entries(siege) == 3
    siege_path = siege.info.name
    siege.close()
    shutil.copyfile(siege_path, tmp_path / "vannes.fdb")  # the snapshot
    siege = open_connection(DatabaseSpec(siege_path))
    appliers["siege"] = Applier(siege, "siege")

    vannes = open_connection(DatabaseSpec(str(tmp_path / "vannes.fdb")))
    try:
        cfg = parse({"site": "vannes", "database": {"dsn": str(tmp_path / "vannes.fdb")}},
                    tmp_path / "vannes.toml")
        summary = take_identity(vannes, cfg, "shop")
        assert "1 rows they deleted put back as its registers say" in summary, summary
        # The deleted row is back as the registers say (its delete comes as an event); the
        # others stay as the siège left them (their events write what they changed).
        assert _rows(vannes, CUSTOMERS) == [
            (1, "T-0001", "Zoé  ", Decimal("12.50")),
            (2, "T-0002", "Hélène", Decimal("99.90")), (3, "T-0003", "Çava", Decimal("7.00")),
            (4, "T-0004", "Müller", Decimal("-3.20"))]

        # A shop orders for customer 1 meanwhile: the siège's delete is overruled.
        _run(nice, "INSERT INTO ORDERS VALUES (10, 1, 45.00)")
        appliers["nice"].apply([])
        appliers["siege"].apply(_of(all_events(nice), "nice"))  # publishes its own first
        applier = Applier(vannes, "vannes")
        assert not applier.apply(_of(all_events(nice), "nice")).refused
        assert not applier.apply(_of(all_events(siege), "siege")).refused

        expected = [(1, "T-0001", "Zoé  ", Decimal("12.50")),
                    (2, "T-0002", "Hélène", Decimal("99.90")),
                    (3, "T-0003", "Çava", Decimal("7.00")),
                    (4, "T-0004", "Müller", Decimal("-3.20"))]
        assert _rows(siege, CUSTOMERS) == expected
        assert _rows(vannes, CUSTOMERS) == expected
        assert _rows(vannes, "SELECT ID, CUST_ID FROM ORDERS") == [(10, 1)]
    finally:
        vannes.close()
        siege.close()
