"""Gap-safe reading and publishing on real embedded Firebird (DESIGN §3.2)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from datetime import datetime

import pytest
from firebird.driver import Connection, DatabaseError, Isolation, tpb

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.journal import capture
from siege_sync.node.journal.status import capture_status
from siege_sync.node.model.clock import SkewedClock, SystemClock
from siege_sync.node.pipeline.publish import Publisher, published
from siege_sync.proto import events_pb2

DDL = [
    "CREATE TABLE ACCOUNT (ID INTEGER NOT NULL PRIMARY KEY, OWNER VARCHAR(40), "
    "AMOUNT NUMERIC(18,2), NOTE BLOB SUB_TYPE TEXT)",
    "CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, LABEL VARCHAR(20))",
]


def events(con: Connection, site: str = "lyon", after: int = 0) -> list[events_pb2.Event]:
    return [events_pb2.Event.FromString(b) for b in published(con, site, after)]


def key_of(event: events_pb2.Event) -> int:
    return event.key[0].integer


class Writer:
    """An application transaction held open across publish steps."""

    def __init__(self, con: Connection, isolation: Isolation = Isolation.SNAPSHOT) -> None:
        self.tm = con.transaction_manager(default_tpb=tpb(isolation))
        self.tm.begin()
        self.cur = self.tm.cursor()

    def __call__(self, sql: str, params: tuple = ()) -> Writer:
        self.cur.execute(sql, params)
        return self

    def commit(self) -> None:
        self.cur.close()
        self.tm.commit()
        self.tm.close()

    def rollback(self) -> None:
        self.cur.close()
        self.tm.rollback()
        self.tm.close()


@pytest.fixture
def site(make_db):
    con = make_db(ddl=DDL)
    capture.install(con)
    return con


def test_events_are_dense_chained_stamped_and_audited(site):
    w = Writer(site)
    w("INSERT INTO ACCOUNT (ID, OWNER, AMOUNT, NOTE) VALUES (1, 'Ana', 10.50, 'hello')")
    w("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'pen')").commit()
    Writer(site)("UPDATE ACCOUNT SET AMOUNT = 11 WHERE ID = 1").commit()
    Writer(site)("DELETE FROM ITEM WHERE ID = 1").commit()
    result = Publisher(site, "lyon").publish()
    assert (result.events, result.transactions) == (4, 3)
    evs = events(site)
    assert [e.seq for e in evs] == [1, 2, 3, 4]
    prev = b""
    for e, body in zip(evs, published(site, "lyon"), strict=True):
        assert e.prev_hash == prev
        prev = hashlib.sha256(body).digest()
    assert capture_status(site).state["chain_head"] == prev.hex()
    assert all(a.stamp < b.stamp for a, b in zip(evs, evs[1:], strict=False))
    ins, item, upd, dele = evs
    assert ins.op == events_pb2.OP_INSERT and ins.table == "ACCOUNT"
    assert {c.column for c in ins.columns} == {"ID", "OWNER", "AMOUNT", "NOTE"}
    assert ins.tx.first_seq == 1 and ins.tx.count == 2 and item.tx.first_seq == 1
    assert [c.column for c in upd.columns] == ["AMOUNT"]
    assert upd.columns[0].value.scaled.unscaled == 1100
    assert dele.op == events_pb2.OP_DELETE and key_of(dele) == 1 and not dele.columns
    assert ins.user == "SYSDBA" and ins.captured_utc_us > 0 and ins.captured_local > 0
    assert capture_status(site).pending_entries == 0
    assert Publisher(site, "lyon").publish().events == 0  # nothing twice


def test_lower_id_committed_after_higher_ones_were_published(site):
    held = Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'held')")  # takes id first
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (2, 'quick')").commit()
    Publisher(site, "lyon").publish()
    assert [key_of(e) for e in events(site)] == [2]
    status = capture_status(site)
    assert any(t.tx_id for t in status.open_transactions)  # the open one is visible
    held.commit()
    Publisher(site, "lyon").publish()
    assert [key_of(e) for e in events(site)] == [2, 1]


def test_rolled_back_holes_do_not_block(site):
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'gone')").rollback()
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (2, 'kept')").commit()
    assert Publisher(site, "lyon").publish().events == 1
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (3, 'next')").commit()
    assert [key_of(e) for e in events(site)] == [2]
    assert Publisher(site, "lyon").publish().events == 1


def test_long_transaction_holds_back_only_itself(site):
    long_tx = Writer(site, Isolation.READ_COMMITTED_RECORD_VERSION)
    long_tx("INSERT INTO ACCOUNT (ID, OWNER) VALUES (100, 'long')")
    for i in range(5):
        Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (?, 'flow')", (i,)).commit()
        Publisher(site, "lyon").publish()
        long_tx("UPDATE ACCOUNT SET OWNER = ? WHERE ID = 100", (f"long{i}",))
    assert [key_of(e) for e in events(site)] == [0, 1, 2, 3, 4]
    long_tx.commit()
    Publisher(site, "lyon").publish()
    tail = events(site, after=5)
    assert [e.op for e in tail] == [events_pb2.OP_INSERT] + [events_pb2.OP_UPDATE] * 5
    assert tail[-1].columns[0].value.text == "long4"
    assert tail[0].tx.count == 6 and {e.tx.first_seq for e in tail} == {6}


def test_lock_order_publishes_t2_before_t1(site):
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'a')")("INSERT INTO ITEM (ID, LABEL) "
                                                               "VALUES (2, 'b')").commit()
    Publisher(site, "lyon").publish()
    t1 = Writer(site, Isolation.READ_COMMITTED_RECORD_VERSION)
    t1("UPDATE ITEM SET LABEL = 'A by T1' WHERE ID = 1")
    t2 = Writer(site, Isolation.READ_COMMITTED_RECORD_VERSION)
    t2("UPDATE ITEM SET LABEL = 'B by T2' WHERE ID = 2").commit()
    t1("UPDATE ITEM SET LABEL = 'B by T1' WHERE ID = 2").commit()
    Publisher(site, "lyon").publish()
    labels = [(key_of(e), e.columns[0].value.text) for e in events(site, after=2)]
    assert labels == [(2, "B by T2"), (1, "A by T1"), (2, "B by T1")]


def test_batches_keep_transactions_whole(site):
    for start in range(0, 30, 10):
        w = Writer(site)
        for i in range(start, start + 10):
            w("INSERT INTO ITEM (ID, LABEL) VALUES (?, 'x')", (i,))
        w.commit()
    steps = Publisher(site, "lyon", max_entries=15)
    first = steps.publish_step()
    assert (first.events, first.more) == (10, True)  # 2 txs of 10 would exceed 15
    rest = steps.publish()
    assert rest.events == 20
    evs = events(site)
    assert [e.seq for e in evs] == list(range(1, 31))
    assert [e.tx.first_seq for e in evs] == [1] * 10 + [11] * 10 + [21] * 10


def test_stamps_across_a_dst_change_and_a_clock_set_back(site):
    clock = SkewedClock(SystemClock(), 0)
    pub = Publisher(site, "lyon", clock=clock)
    # Engine-local time is UTC+1 (winter) then the node measures UTC+2 (summer time).
    clock.offset_us = -3600 * 10**6
    capture.write_marker(site, clock.utc_now_us())
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'winter')").commit()
    clock.offset_us = -7200 * 10**6
    pub.publish()  # writes the summer marker *after* entry 1: entry 1 keeps the winter offset
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (2, 'summer')").commit()
    Writer(site)("UPDATE ITEM SET LABEL = 'summer2' WHERE ID = 1").commit()
    clock.offset_us = -5 * 3600 * 10**6  # the clock is then set far back
    pub.publish()
    e1, e2, e3 = events(site)
    # Converted by the nearest marker below: the winter entry is 1 h off its local time,
    # the summer ones 2 h (the test machine's engine runs on its own local time).
    base = round((datetime.now() - datetime.utcnow()).total_seconds() / 3600)
    assert (_offset_h(e1), _offset_h(e2), _offset_h(e3)) == (base - 1, base - 2, base - 2)
    stamps = [e.stamp for e in (e1, e2, e3)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert e3.stamp > e1.stamp  # row 1's stamps stay monotonic whatever the clock did


def _offset_h(event: events_pb2.Event) -> int:
    local_unix_us = event.captured_local * 100 - (datetime(1970, 1, 1) - datetime(1, 1, 1)
                                                  ).total_seconds() * 10**6
    return round((event.captured_utc_us - local_unix_us) / 3600e6)


def test_two_publishers_never_both_publish(site, tmp_path):
    for i in range(200):
        Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (?, 'x')", (i,)).commit()
    other = open_connection(DatabaseSpec(str(tmp_path / "site.fdb")))
    results: list[object] = []

    def run(con: Connection) -> None:
        try:
            results.append(Publisher(con, "lyon").publish().events)
        except DatabaseError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in (site, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    Publisher(site, "lyon").publish()
    evs = events(site)
    assert sorted(key_of(e) for e in evs) == list(range(200))
    assert [e.seq for e in evs] == list(range(1, 201))


def test_failed_step_publishes_nothing(site, monkeypatch):
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'x')").commit()
    from siege_sync.node.pipeline import publish as publish_module

    def boom(*args, **kwargs):
        raise RuntimeError("crash after the events were written")

    monkeypatch.setattr(publish_module, "_purge_markers", boom)
    with pytest.raises(RuntimeError):
        Publisher(site, "lyon").publish()
    assert events(site) == [] and capture_status(site).pending_entries == 1
    monkeypatch.undo()
    assert Publisher(site, "lyon").publish().events == 1 and len(events(site)) == 1


def test_gbak_restore_is_detected(site, tmp_path):
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (1, 'published')").commit()
    Publisher(site, "lyon").publish()
    Writer(site)("INSERT INTO ITEM (ID, LABEL) VALUES (2, 'in backup only')").commit()
    site.close()
    src, bak, dst = tmp_path / "site.fdb", tmp_path / "site.fbk", tmp_path / "restored.fdb"
    subprocess.run(["gbak", "-b", str(src), str(bak)], check=True)
    subprocess.run(["gbak", "-c", str(bak), str(dst)], check=True)
    con = open_connection(DatabaseSpec(str(dst)))
    try:
        Writer(con)("INSERT INTO ITEM (ID, LABEL) VALUES (3, 'after restore')").commit()
        Publisher(con, "lyon").publish()
        status = capture_status(con)
        assert status.state["restores"] == "1"
        assert [key_of(e) for e in events(con)] == [1, 2, 3]
        assert [e.tx.first_seq for e in events(con)] == [1, 2, 3]
    finally:
        con.close()


def test_large_blob_is_published_by_reference_streamed(site):
    import tracemalloc

    from siege_sync.node.db.database import transaction
    from siege_sync.node.journal.storage import DatabaseBlobStore

    big = os.urandom(1 << 20) * 10  # 10 MB
    Writer(site)("INSERT INTO ACCOUNT (ID, OWNER, NOTE) VALUES (1, 'big', 'small note')").commit()
    w = Writer(site)
    w.cur.execute("INSERT INTO ACCOUNT (ID, OWNER, NOTE) VALUES (2, 'big', ?)",
                  ("é" * (5 << 20),))  # a 10 MB UTF-8 text BLOB
    w.commit()
    del big
    tracemalloc.start()
    Publisher(site, "lyon").publish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, f"publishing held {peak} bytes: the BLOB was not streamed"
    small, large = events(site)
    note = {c.column: c.value for c in small.columns}["NOTE"]
    assert note.text == "small note"
    ref = {c.column: c.value for c in large.columns}["NOTE"].blob
    assert ref.length == 10 << 20
    with transaction(site) as tm:
        stream = DatabaseBlobStore(tm).open(ref)
        digest = hashlib.sha256()
        while chunk := stream.read(1 << 16):
            digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())
        stream.close()
    assert digest.digest() == ref.sha256


def test_heartbeat_travels_through_the_capture_path(site):
    capture.beat(site, "lyon", 7)
    capture.beat(site, "lyon", 8)
    Publisher(site, "lyon").publish()
    ins, upd = events(site)
    assert ins.table == capture.HEARTBEAT_TABLE and ins.key[0].text == "lyon"
    assert upd.op == events_pb2.OP_UPDATE
    assert {c.column: c.value.integer for c in upd.columns}["ROUND_NO"] == 8


def test_capture_failures_are_reported_by_publish(site):
    site.execute_immediate("ALTER TABLE ITEM ALTER LABEL TYPE VARCHAR(80)")  # behind our back
    site.commit()
    w = Writer(site)
    w("INSERT INTO ITEM (ID, LABEL) VALUES (1, ?)", ("x" * 60,))
    w("INSERT INTO ACCOUNT (ID, OWNER) VALUES (1, 'still captured')").commit()
    result = Publisher(site, "lyon").publish()
    assert result.events == 1 and len(result.capture_errors) == 1
    assert "ITEM" in result.capture_errors[0] and "analyse --repair" in result.capture_errors[0]
    status = capture_status(site)
    assert status.capture_errors == 1 and status.pending_entries == 0


def test_dialect1_database_publishes_exact_double_keys(make_db):
    con = make_db("d1", dialect=1, ddl=[
        "CREATE TABLE ART (CODE NUMERIC(15,2) NOT NULL PRIMARY KEY, PRICE NUMERIC(15,2), "
        "LABEL VARCHAR(20), CREATED DATE)"])
    capture.install(con)
    Writer(con)("INSERT INTO ART (CODE, PRICE, LABEL, CREATED) VALUES (0.1, 19.99, 'a', "
                "'2026-03-29 02:30:00')").commit()
    Writer(con)("UPDATE ART SET CODE = 0.3 WHERE CODE = 0.1").commit()
    result = Publisher(con, "d1site").publish()
    assert (result.events, result.transactions) == (3, 2)
    ins, dele, ins2 = events(con, "d1site")
    import struct

    def as_double(value) -> float:
        return struct.unpack("<d", struct.pack("<Q", value.double_bits))[0]

    assert as_double(ins.key[0]) == 0.1 and as_double(dele.key[0]) == 0.1
    assert as_double(ins2.key[0]) == 0.3 and dele.op == events_pb2.OP_DELETE
    cols = {c.column: c.value for c in ins.columns}
    assert as_double(cols["PRICE"]) == 19.99 and cols["LABEL"].text == "a"
    assert capture_status(con).pending_entries == 0


def test_a_clock_jump_written_to_the_skew_file_moves_a_running_node_s_clock(tmp_path):
    """The chaos run's clock jump (SIEGE_SYNC_FAULT_CLOCK_SKEW_FILE): the skew is read from
    its file at most once a second while the node runs; a bad write keeps the last one."""
    import time as _time

    from siege_sync.node.model.clock import FileSkewedClock

    skew = tmp_path / "skew"
    skew.write_text("3600\n")
    clock = FileSkewedClock(SystemClock(), skew)
    assert abs(clock.utc_now_us() - SystemClock().utc_now_us() - 3600 * 10**6) < 10**6
    skew.write_text("-3600")
    assert clock.utc_now_us() - SystemClock().utc_now_us() > 3000 * 10**6  # not re-read yet
    _time.sleep(1.05)
    assert abs(clock.utc_now_us() - SystemClock().utc_now_us() + 3600 * 10**6) < 10**6
    skew.write_text("an hour")
    _time.sleep(1.05)
    assert abs(clock.utc_now_us() - SystemClock().utc_now_us() + 3600 * 10**6) < 10**6
