"""ARRAY columns on real embedded Firebird (issue 16 item 4, DESIGN §3.1): the capture trigger
cannot compare two arrays, so it records a non-null array on every update of its row; the
publisher keeps it as a write only when it differs from what the row's registers hold."""

from __future__ import annotations

import hashlib

from siege_sync.node.db import guard
from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture
from siege_sync.node.pipeline.apply import Applier
from siege_sync.node.pipeline.publish import Publisher, published
from siege_sync.proto import events_pb2, values_pb2
from tests.test_apply import conflicts, exchange, run_sql
from tests.test_publish import events

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20), "
       "ARR INTEGER [1:3])"]


def read_rows(con) -> dict[int, tuple]:
    """The application table as the application reads it (not through the sync's code)."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT ID, A, ARR FROM T ORDER BY ID")
        rows = {r[0]: (r[1], list(r[2]) if r[2] is not None else None)
                for r in cur.fetchall()}
        cur.close()
    return rows


def written(con, site: str, after: int = 0) -> list[tuple[int, list[str]]]:
    """(op, columns written) of each event ``site`` published after seq ``after``."""
    return [(e.op, [c.column for c in e.columns]) for e in events(con, site, after)]


def test_an_edit_of_another_column_does_not_revert_a_concurrent_array_change(make_db):
    cons = {name: make_db(name, ddl=DDL) for name in ("siege", "lyon")}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    run_sql(cons["siege"], "INSERT INTO T (ID, A, ARR) VALUES (1, 'first', ?)", ([1, 2, 3],))
    exchange(appliers, cons, "siege", "lyon")

    # Concurrently: the siège changes the array; lyon then edits only A (stamped later).
    run_sql(cons["siege"], "UPDATE T SET ARR = ? WHERE ID = 1", ([7, 8, 9],))
    appliers["siege"].apply([])
    run_sql(cons["lyon"], "UPDATE T SET A = 'lyon' WHERE ID = 1")
    appliers["lyon"].apply([])

    for _ in range(2):
        exchange(appliers, cons, "lyon", "siege")
        exchange(appliers, cons, "siege", "lyon")
    for con in cons.values():
        assert read_rows(con) == {1: ("lyon", [7, 8, 9])}
        assert conflicts(con) == 0  # different columns: nothing lost
    # Lyon's edit of A carried no array write.
    assert written(cons["lyon"], "lyon") == [(events_pb2.OP_UPDATE, ["A"])]


def test_only_an_array_whose_content_changed_is_published_as_written(make_db):
    con = make_db(ddl=DDL)
    capture.install(con)
    pub = Publisher(con, "lyon")
    run_sql(con, "INSERT INTO T (ID, A, ARR) VALUES (1, 'x', ?)", ([1, 2, 3],))
    run_sql(con, "INSERT INTO T (ID, A, ARR) VALUES (2, 'x', ?)", ([1, 2, 3],))
    pub.publish()
    # One transaction: another column only (no array write), the array re-saved unchanged
    # (no event at all), a real change, and a change back (a write again).
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute("UPDATE T SET A = 'y' WHERE ID = 1")
        cur.execute("UPDATE T SET ARR = ? WHERE ID = 2", ([1, 2, 3],))
        cur.execute("UPDATE T SET ARR = ? WHERE ID = 2", ([4, 5, 6],))
        cur.execute("UPDATE T SET ARR = ? WHERE ID = 2", ([1, 2, 3],))
        cur.execute("UPDATE T SET A = 'z' WHERE ID = 2")
        cur.close()
    result = pub.publish()
    assert (result.events, result.transactions) == (4, 1)
    evs = events(con, "lyon", after=2)
    assert [(e.op, [c.column for c in e.columns]) for e in evs] == [
        (events_pb2.OP_UPDATE, ["A"]), (events_pb2.OP_UPDATE, ["ARR"]),
        (events_pb2.OP_UPDATE, ["ARR"]), (events_pb2.OP_UPDATE, ["A"])]
    assert [e.seq for e in evs] == [3, 4, 5, 6]  # still dense
    assert {(e.tx.first_seq, e.tx.count) for e in evs} == {(3, 4)}
    bodies = list(published(con, "lyon"))
    assert all(events_pb2.Event.FromString(b).prev_hash == hashlib.sha256(a).digest()
               for a, b in zip(bodies, bodies[1:], strict=False))  # chained
    # A transaction that only re-saves an array publishes nothing, and numbering goes on.
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 3],))
    assert pub.publish().events == 0
    run_sql(con, "UPDATE T SET A = 'w' WHERE ID = 1")
    pub.publish()
    assert written(con, "lyon", after=6) == [(events_pb2.OP_UPDATE, ["A"])]
    assert events(con, "lyon", after=6)[0].seq == 7


def test_a_row_that_predates_install_writes_its_array_only_when_changed(make_db):
    con = make_db(ddl=DDL + ["INSERT INTO T (ID, A) VALUES (1, 'old')"])
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 3],))  # before install
    capture.install(con)
    pub = Publisher(con, "lyon")
    # The registers do not know the array yet: the trigger's copy of its old value tells
    # that it was only re-saved (no event at all), and it travels as what the row held.
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 3],))
    run_sql(con, "UPDATE T SET A = 'new' WHERE ID = 1")
    run_sql(con, "UPDATE T SET A = 'newer' WHERE ID = 1")
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 4],))
    pub.publish()
    assert written(con, "lyon") == [(events_pb2.OP_UPDATE, ["A"]),
                                    (events_pb2.OP_UPDATE, ["A"]),
                                    (events_pb2.OP_UPDATE, ["ARR"])]
    first = events(con, "lyon")[0]
    assert {c.column: list(c.value.array.elements) for c in first.prior
            if c.column == "ARR"} == {"ARR": [values_pb2.Value(integer=n) for n in (1, 2, 3)]}


def test_an_edit_of_another_column_of_a_row_that_predates_install_keeps_array_changes(make_db):
    """Issue 19 (chaos oracle, CUSTOMER.TAGS): lyon changes the array of rows that existed
    before install — to NULL, to other values —; the siège, later, edits only A. The siège's
    update re-saved the arrays unchanged: it must not travel as a write of them stamped
    later, which would beat lyon's change everywhere (DESIGN §3.3: both survive)."""
    rows = ["INSERT INTO T (ID, A) VALUES (1, 'Hélène')", "INSERT INTO T (ID, A) VALUES (2, 'Zoë')"]
    cons = {name: make_db(name, ddl=DDL + rows) for name in ("siege", "lyon")}
    for con in cons.values():
        run_sql(con, "UPDATE T SET ARR = ? WHERE ID IN (1, 2)", ([0, 0, 0],))  # before install
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    run_sql(cons["lyon"], "UPDATE T SET ARR = NULL WHERE ID = 1")
    run_sql(cons["lyon"], "UPDATE T SET ARR = ? WHERE ID = 2", ([4, 5, 6],))
    appliers["lyon"].apply([])  # published first: the lower stamps
    run_sql(cons["siege"], "UPDATE T SET A = A || ' (siège)'")
    appliers["siege"].apply([])

    for _ in range(2):
        exchange(appliers, cons, "lyon", "siege")
        exchange(appliers, cons, "siege", "lyon")
    for con in cons.values():
        assert read_rows(con) == {1: ("Hélène (siège)", None), 2: ("Zoë (siège)", [4, 5, 6])}
        assert conflicts(con) == 0  # different columns: nothing lost
    assert written(cons["siege"], "siege") == [(events_pb2.OP_UPDATE, ["A"])] * 2


def test_updates_an_older_trigger_captured_keep_their_arrays_as_writes(make_db):
    """An install from before the arrays' old values (issue 19): install adds the column to
    the image; image rows the older trigger captured read NULL there, which is not an old
    value (FLAG_ARRAYS_BEFORE unset): their arrays stay writes as before — an array set to
    NULL is not lost."""
    con = make_db(ddl=DDL + ["INSERT INTO T (ID, A) VALUES (1, 'old')",
                             "INSERT INTO T (ID, A) VALUES (2, 'old')"])
    run_sql(con, "UPDATE T SET ARR = ?", ([1, 2, 3],))  # before install
    capture.install(con)
    # As the older version left it: no old-value column, a trigger that does not fill it.
    con.execute_immediate("DROP TRIGGER SYNC$TR1")
    con.commit()
    con.execute_immediate("ALTER TABLE SYNC$I1 DROP SYNC$OLD2")
    con.commit()

    def older_capture(key: int, mask: str, sql: str, params: tuple = ()) -> None:
        """An update and the image row the older trigger made of it."""
        with transaction(con) as tm:
            cur = tm.cursor()
            cur.execute(sql, params)
            cur.execute("INSERT INTO SYNC$I1 (SYNC$ID, SYNC$TX, SYNC$OP, SYNC$AT, SYNC$FLAGS, "
                        "SYNC$MASK, ID, A, ARR) SELECT NEXT VALUE FOR SYNC$LOG_SEQ, "
                        "CURRENT_TRANSACTION, 'U', CAST('NOW' AS TIMESTAMP), ?, ?, ID, A, ARR "
                        "FROM T WHERE ID = ?", (capture.FLAG_FULL_IMAGE, mask, key))
            cur.close()

    pub = Publisher(con, "lyon")
    older_capture(1, "011", "UPDATE T SET A = 'Hélène' WHERE ID = 1")
    pub.publish()  # an image without the column
    assert written(con, "lyon") == [(events_pb2.OP_UPDATE, ["A", "ARR"])]  # as it was
    older_capture(2, "001", "UPDATE T SET ARR = NULL WHERE ID = 2")
    report = capture.install(con)
    assert "T (as SYNC$I1)" in report.upgraded
    pub = Publisher(con, "lyon")
    pub.publish()
    assert written(con, "lyon", after=1) == [(events_pb2.OP_UPDATE, ["ARR"])]
    # The upgraded trigger records the old values from now on.
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([4, 5, 6],))
    run_sql(con, "UPDATE T SET A = 'Zoë'")
    pub.publish()
    assert written(con, "lyon", after=2) == [(events_pb2.OP_UPDATE, ["ARR"]),
                                             (events_pb2.OP_UPDATE, ["A"]),
                                             (events_pb2.OP_UPDATE, ["A"])]
    assert read_rows(con) == {1: ("Zoë", [4, 5, 6]), 2: ("Zoë", None)}


def test_a_re_saved_array_is_told_from_a_changed_one_by_its_bytes(make_db):
    """The publisher compares an array with its old value as it travels (exact bytes): -0.0
    is not 0.0, a trailing blank or an accent's case is a change (issue 19)."""
    con = make_db(ddl=["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20), "
                       "AD DOUBLE PRECISION [2], AV VARCHAR(5) [2] CHARACTER SET UTF8)",
                       "INSERT INTO T (ID, A) VALUES (1, 'old')"])
    run_sql(con, "UPDATE T SET AD = ?, AV = ? WHERE ID = 1", ([0.0, 1.5], ["é", "Noël"]))
    capture.install(con)  # the row predates install: its registers know no array
    pub = Publisher(con, "lyon")
    same = ([-0.0, 1.5], ["É ", "Noël"])
    for sql, params in [("UPDATE T SET A = 'new' WHERE ID = 1", ()),
                        ("UPDATE T SET AD = ? WHERE ID = 1", ([-0.0, 1.5],)),
                        ("UPDATE T SET AV = ? WHERE ID = 1", (["é ", "Noël"],)),
                        ("UPDATE T SET AV = ? WHERE ID = 1", (["É ", "Noël"],)),
                        ("UPDATE T SET AD = ?, AV = ? WHERE ID = 1", same)]:
        run_sql(con, sql, params)
    pub.publish()
    assert written(con, "lyon") == [(events_pb2.OP_UPDATE, ["A"]),
                                    (events_pb2.OP_UPDATE, ["AD"]),
                                    (events_pb2.OP_UPDATE, ["AV"]),
                                    (events_pb2.OP_UPDATE, ["AV"])]


def test_an_array_saved_back_to_what_the_registers_hold_is_a_write_where_the_row_moved_on(
        make_db):
    """A joined site's copy holds rows ahead of their registers (the siège's changes
    captured but not yet published when the copy was taken: their events come later). A
    user there saving the registers' older array changed the row: a write, not a re-save
    (chaos seed 2: such a write vanished, neither standing nor on record)."""
    con = make_db(ddl=DDL)
    capture.install(con)
    pub = Publisher(con, "lyon")
    run_sql(con, "INSERT INTO T (ID, A, ARR) VALUES (1, 'x', ?)", ([1, 2, 3],))
    pub.publish()
    number = {name: no for no, (name, _k) in capture.table_registry(con).items()}["T"]
    with transaction(con) as tm:  # the row moves on where capture does not see it
        cur = tm.cursor()
        cur.execute("SELECT RDB$SET_CONTEXT('USER_TRANSACTION', ?, ?) FROM RDB$DATABASE",
                    (guard.APPLY_CONTEXT, str(number)))
        cur.fetchone()
        cur.execute("UPDATE T SET ARR = ? WHERE ID = 1", ([7, 8, 9],))
        cur.close()
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 3],))  # the user's change
    pub.publish()
    assert written(con, "lyon", after=1) == [(events_pb2.OP_UPDATE, ["ARR"])]
    run_sql(con, "UPDATE T SET ARR = ? WHERE ID = 1", ([1, 2, 3],))  # a re-save: nothing
    assert pub.publish().events == 0
