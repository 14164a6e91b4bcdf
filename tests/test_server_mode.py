"""Capture and publishing through a real Firebird server on loopback (started by the tests):
an ordinary application user, a limbo (2PC) transaction, the server restarted under the node.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import uuid

import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.journal import capture
from siege_sync.node.journal.status import capture_status
from siege_sync.node.pipeline.publish import Publisher, published
from siege_sync.proto import events_pb2

DDL = [
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, CUSTOMER VARCHAR(40), "
    "TOTAL NUMERIC(18,2), RAW VARCHAR(10) CHARACTER SET NONE)",
]


@pytest.fixture
def server_db(fb_server):
    name = f"s{uuid.uuid4().hex[:8]}"
    con = fb_server.create_database(name, ddl=DDL)
    capture.install(con)
    yield name, con
    if not con.is_closed():
        con.close()


def keys(con, site="paris") -> list[int]:
    return [events_pb2.Event.FromString(b).key[0].integer for b in published(con, site)]


def test_capture_and_publish_through_the_server_as_an_ordinary_user(fb_server, server_db):
    name, con = server_db
    with con.transaction_manager() as tm:
        tm.execute_immediate("CREATE OR ALTER USER CLERK PASSWORD 'clerk1'")
        tm.commit()
    with con.transaction_manager() as tm:
        tm.execute_immediate("GRANT ALL ON INVOICE TO CLERK")
        tm.commit()
    app = open_connection(DatabaseSpec(fb_server.dsn(name), user="CLERK", password="clerk1"))
    try:
        with app.transaction_manager() as tm:
            cur = tm.cursor()
            cur.execute("INSERT INTO INVOICE (ID, CUSTOMER, TOTAL, RAW) VALUES (?, ?, ?, ?)",
                        (1, "Ana", 12, b"\x00\xff\x80"))
            cur.execute("UPDATE INVOICE SET TOTAL = 13 WHERE ID = 1")
            cur.close()
            tm.commit()
    finally:
        app.close()
    assert Publisher(con, "paris").publish().events == 2
    first = events_pb2.Event.FromString(next(iter(published(con, "paris"))))
    assert first.user == "CLERK" and first.client_address.startswith("127.0.0.1")
    raw = {c.column: c.value for c in first.columns}["RAW"]
    assert raw.octets.rstrip(b" ") == b"\x00\xff\x80"


def _prepare_and_die(dsn: str, password: str) -> None:
    """Child process: a two-phase transaction prepared, then the process dies: limbo."""
    from firebird.driver import DistributedTransactionManager, connect

    con = connect(dsn, user="SYSDBA", password=password, charset="UTF8")
    dtm = DistributedTransactionManager([con])
    dtm.begin()
    dtm.execute_immediate("INSERT INTO INVOICE (ID, CUSTOMER) VALUES (2, 'in limbo')")
    dtm.prepare()
    os._exit(0)


def test_limbo_transaction_waits_then_flows(fb_server, server_db):
    name, con = server_db
    child = multiprocessing.get_context("spawn").Process(
        target=_prepare_and_die, args=(fb_server.dsn(name), fb_server.password))
    child.start()
    child.join(60)
    with con.transaction_manager() as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO INVOICE (ID, CUSTOMER) VALUES (3, 'after')")
        cur.close()
        tm.commit()
    Publisher(con, "paris").publish()
    assert keys(con) == [3]
    limbo = capture_status(con).limbo_transactions
    assert len(limbo) == 1
    # What an operator does (the driver's services API has no limbo support yet): gfix.
    subprocess.run(["gfix", "-user", "SYSDBA", "-password", fb_server.password,
                    "-commit", str(limbo[0]), fb_server.dsn(name)], check=True, timeout=60)
    Publisher(con, "paris").publish()
    assert keys(con) == [3, 2]


def test_server_restart_under_the_publisher_loses_nothing(fb_server, server_db):
    name, con = server_db
    with con.transaction_manager() as tm:
        cur = tm.cursor()
        for i in range(100):
            cur.execute("INSERT INTO INVOICE (ID, CUSTOMER) VALUES (?, 'x')", (i + 10,))
        cur.close()
        tm.commit()
    fb_server.restart()
    with pytest.raises(DatabaseError):
        Publisher(con, "paris").publish()
    con.close()
    con = open_connection(fb_server.spec(name))
    try:
        Publisher(con, "paris").publish()
        assert keys(con) == list(range(10, 110))
    finally:
        con.close()
