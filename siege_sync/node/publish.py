"""Publishing: captured changes become immutable, stamped, dense, hash-chained events.

Owns the step from ``SYNC$LOG`` + image tables to ``SYNC$EVENTS``. One publish step is one
SNAPSHOT transaction that reads whole committed source transactions (see ``reader.py``),
gives each event the origin's next dense sequence number, a hybrid-logical-clock stamp and a
hash linking it to the previous event of this origin, stores the events verbatim, deletes the
log entries it consumed and advances the node's counters — all or nothing. Two publishers on
one database cannot both succeed: each step first locks the counter row.

Must never publish part of a source transaction, renumber or re-stamp a published event, or
decode raw bytes (values go through ``values.py`` exactly as stored).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from firebird.driver import Connection, Cursor, TransactionManager

from ..proto import events_pb2, values_pb2
from . import capture, values
from .capture import (
    EVENTS_TABLE,
    IMAGE_ID,
    IMAGE_MASK,
    IMAGE_PREFIX,
    INLINE_BODY,
    LOG_SEQ,
    LOG_TABLE,
    OP_DELETE,
    OP_ERROR,
    OP_INSERT,
    OP_MARKER,
    OP_UPDATE,
    STATE_TABLE,
)
from .clock import Clock, MarkerTable, StampIssuer, SystemClock
from .database import READ_COMMITTED_RW, SNAPSHOT_RW, literal, transaction
from .reader import Batch, CapturedTx, LogEntry, plan
from .schema import Column
from .storage import DatabaseBlobStore

log = logging.getLogger(__name__)

_OPS = {OP_INSERT: events_pb2.OP_INSERT, OP_UPDATE: events_pb2.OP_UPDATE,
        OP_DELETE: events_pb2.OP_DELETE}
# EXECUTE BLOCK takes at most 255 INSERTs ("Too many Contexts"); keep statements moderate.
_BLOCK_ROWS = 200
_BLOCK_BYTES = 1_000_000
_MARKER_KEEP_US = 24 * 3600 * 1_000_000


class PublishError(Exception):
    pass


@dataclass
class PublishResult:
    events: int = 0
    transactions: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    capture_errors: list[str] = field(default_factory=list)
    more: bool = False  # committed transactions are still waiting (batch limit reached)

    def add(self, other: PublishResult) -> None:
        self.events += other.events
        self.transactions += other.transactions
        self.first_seq = self.first_seq if self.first_seq is not None else other.first_seq
        self.last_seq = other.last_seq if other.last_seq is not None else self.last_seq
        self.capture_errors.extend(other.capture_errors)
        self.more = other.more


@dataclass
class _Counters:
    seq: int
    chain_head: bytes
    last_stamp: int
    incarnation: int


@dataclass
class _Image:
    columns: list[Column]
    rows: dict[int, tuple[str, list[values_pb2.Value]]]  # log id -> (mask, encoded values)


class Publisher:
    """Publishes one site's captured changes. One per database; not thread-safe."""

    def __init__(self, con: Connection, site: str, clock: Clock = SystemClock(),
                 max_entries: int = 20_000) -> None:
        self._con = con
        self._site = site
        self._clock = clock
        self._max_entries = max_entries

    def publish(self) -> PublishResult:
        """Publish everything committed so far (in steps of at most ``max_entries``)."""
        total = PublishResult()
        while True:
            step = self.publish_step()
            total.add(step)
            if not step.more:
                return total

    def _restore_boundary(self) -> int | None:
        """Detect a gbak restore (a new creation date): transaction numbers start again, so
        entries restored from the backup must not be grouped with new transactions."""
        with transaction(self._con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            try:
                cur.execute("SELECT MON$CREATION_DATE FROM MON$DATABASE")
                created = cur.fetchone()[0].isoformat()
                state = _read_state(cur, ("db_created", "restore_boundary"))
                boundary = state.get("restore_boundary")
                if state.get("db_created") is None:
                    _write_state(cur, "db_created", created)
                elif state["db_created"] != created:
                    cur.execute(f"SELECT MAX(LOG_ID) FROM {LOG_TABLE}")
                    boundary = str(int(cur.fetchone()[0] or 0))
                    log.warning("[%s] database restored from a backup (created %s, was %s): "
                                "entries up to log id %s keep their old transaction grouping",
                                self._site, created, state["db_created"], boundary)
                    _write_state(cur, "db_created", created)
                    _write_state(cur, "restore_boundary", boundary)
                    _bump_state(cur, "restores", 1, last=created)
                if boundary is not None:
                    cur.execute(f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM "
                                f"{LOG_TABLE} WHERE LOG_ID <= ? AND OP <> '{OP_MARKER}')",
                                (int(boundary),))
                    if cur.fetchone() is None:
                        cur.execute(f"DELETE FROM {STATE_TABLE} WHERE NAME = 'restore_boundary'")
                        return None
                return int(boundary) if boundary is not None else None
            finally:
                cur.close()

    def publish_step(self) -> PublishResult:
        capture.write_marker(self._con, self._clock.utc_now_us())
        boundary = self._restore_boundary()
        with transaction(self._con, SNAPSHOT_RW) as tm:
            cur = tm.cursor()
            try:
                counters = _lock_counters(cur)
                batch = plan(cur, self._max_entries, boundary)
                result = PublishResult(more=batch.pending_groups > len(batch.transactions))
                if not batch.transactions:
                    return result
                self._publish_batch(tm, cur, batch, counters, result)
                _store_counters(cur, counters)
                return result
            finally:
                cur.close()

    def _publish_batch(self, tm: TransactionManager, cur: Cursor, batch: Batch,
                       counters: _Counters, result: PublishResult) -> None:
        registry = capture.table_registry(self._con)
        markers = MarkerTable(batch.markers)
        blobs = DatabaseBlobStore(tm)
        images = self._read_images(cur, batch, blobs)
        issuer = StampIssuer(counters.last_stamp)
        origin = events_pb2.Origin(site=self._site, incarnation=counters.incarnation)
        rows: list[tuple[int, int, bytes, bytes]] = []
        for tx in batch.transactions:
            changes = [e for e in tx.entries if e.op in _OPS]
            for entry in tx.entries:
                if entry.op == OP_ERROR:
                    result.capture_errors.append(_describe_error(entry, registry))
            if not changes:
                continue
            source_tx = events_pb2.SourceTx(tx_id=tx.tx_id, first_seq=counters.seq + 1,
                                            count=len(changes))
            for entry in changes:
                counters.seq += 1
                table, key_cols = registry[entry.table_no]
                event = self._event(entry, table, key_cols, images[entry.table_no], markers,
                                    issuer, origin, counters, source_tx)
                body = event.SerializeToString(deterministic=True)
                counters.chain_head = hashlib.sha256(body).digest()
                rows.append((counters.seq, event.stamp, counters.chain_head, body))
                result.events += 1
            result.transactions += 1
        counters.last_stamp = issuer.last
        if rows:
            result.first_seq, result.last_seq = rows[0][0], rows[-1][0]
        _insert_events(cur, self._site, counters.incarnation, rows)
        _delete_consumed(cur, batch, images.keys())
        _purge_markers(cur, batch)
        for message in result.capture_errors:
            log.error("[%s] %s", self._site, message)
        if result.capture_errors:
            _bump_state(cur, "capture_errors", len(result.capture_errors),
                        last=result.capture_errors[-1])

    def _event(self, entry: LogEntry, table: str, key_cols: tuple[str, ...], image: _Image,
               markers: MarkerTable, issuer: StampIssuer, origin: events_pb2.Origin,
               counters: _Counters, source_tx: events_pb2.SourceTx) -> events_pb2.Event:
        try:
            mask, encoded = image.rows[entry.log_id]
        except KeyError:
            raise PublishError(
                f"log entry {entry.log_id} of {table} has no image row: the capture tables "
                "were edited by hand; run siege-node install, then analyse") from None
        names = [c.name for c in image.columns]
        position = {n: i for i, n in enumerate(names)}
        key = [encoded[position[k]] for k in key_cols]
        columns = []
        if entry.op != OP_DELETE:
            for i, name in enumerate(names):
                if i < len(mask) and mask[i] == "1":
                    columns.append(events_pb2.ColumnValue(column=name, value=encoded[i]))
        utc = (markers.to_utc_us(entry.log_id, entry.captured) if markers
               else self._clock.utc_now_us())
        return events_pb2.Event(
            origin=origin,
            seq=counters.seq,
            prev_hash=_prev_hash(counters),
            stamp=issuer.issue(utc),
            table=table,
            op=_OPS[entry.op],
            key=key,
            columns=columns,
            tx=source_tx,
            captured_local=_ticks(entry),
            captured_utc_us=utc,
            user=entry.user or "",
            client_address=entry.address or "",
        )

    def _read_images(self, cur: Cursor, batch: Batch,
                     blobs: DatabaseBlobStore) -> dict[int, _Image]:
        wanted: dict[int, set[int]] = {}
        for tx in batch.transactions:
            for entry in tx.entries:
                if entry.op in _OPS:
                    wanted.setdefault(entry.table_no, set()).add(entry.log_id)
        dialect = self._con.sql_dialect
        images: dict[int, _Image] = {}
        for number, ids in wanted.items():
            columns = capture.image_columns(self._con, number)
            exprs = ", ".join(values.select_expr(c, dialect, "I.") for c in columns)
            cur.execute(
                f"SELECT I.{IMAGE_ID}, I.{IMAGE_MASK}, {exprs} FROM {IMAGE_PREFIX}{number} I "
                f"WHERE I.{IMAGE_ID} <= ?", (batch.cutoff,))
            types = [c.type for c in columns]
            rows: dict[int, tuple[str, list[values_pb2.Value]]] = {}
            for row in cur:
                log_id = int(row[0])
                if log_id not in ids:
                    continue
                mask = row[1] or ""
                rows[log_id] = (mask, [values.encode(t, v, blobs)
                                       for t, v in zip(types, row[2:], strict=True)])
            images[number] = _Image(columns, rows)
        return images


def _ticks(entry: LogEntry) -> int:
    """Capture time as 100-microsecond ticks since 0001-01-01, local (as the engine saw it)."""
    at = entry.captured
    seconds = at.hour * 3600 + at.minute * 60 + at.second
    return ((at.toordinal() - 1) * 86_400 + seconds) * 10_000 + at.microsecond // 100


def _prev_hash(counters: _Counters) -> bytes:
    # Called after seq was advanced: the chain head still names the previous event.
    return counters.chain_head


def _describe_error(entry: LogEntry, registry: dict[int, tuple[str, tuple[str, ...]]]) -> str:
    table = registry.get(entry.table_no, (f"table #{entry.table_no}",))[0]
    return (f"capture of a change to {table} failed at {entry.captured:%Y-%m-%d %H:%M:%S} "
            f"(user {entry.user}, transaction {entry.tx_id}): {entry.detail}. The change was "
            "committed but not captured; run siege-node install (schema drift?) and then "
            "siege-ctl analyse --repair")


def _lock_counters(cur: Cursor) -> _Counters:
    """Read the node's counters and lock them: a second publisher gets an update conflict."""
    for name, default in (("seq", "0"), ("chain_head", ""), ("last_stamp", "0"),
                          ("incarnation", "1")):
        cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, "
                    f"COALESCE((SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?), ?)) "
                    "MATCHING (NAME)", (name, name, default))
    cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN "
                "('seq', 'chain_head', 'last_stamp', 'incarnation')")
    state = dict(cur.fetchall())
    return _Counters(int(state["seq"]), bytes.fromhex(state["chain_head"] or ""),
                     int(state["last_stamp"]), int(state["incarnation"]))


def _store_counters(cur: Cursor, counters: _Counters) -> None:
    for name, value in (("seq", str(counters.seq)), ("chain_head", counters.chain_head.hex()),
                        ("last_stamp", str(counters.last_stamp))):
        cur.execute(f"UPDATE {STATE_TABLE} SET VAL = ? WHERE NAME = ?", (value, name))


def _read_state(cur: Cursor, names: tuple[str, ...]) -> dict[str, str]:
    marks = ", ".join("?" for _ in names)
    cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN ({marks})", names)
    return dict(cur.fetchall())


def _write_state(cur: Cursor, name: str, value: str) -> None:
    cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) MATCHING (NAME)",
                (name, value))


def _bump_state(cur: Cursor, name: str, by: int, last: str) -> None:
    count = int(_read_state(cur, (name,)).get(name, "0")) + by
    _write_state(cur, name, str(count))
    _write_state(cur, f"last_{name}", last[:4000])


def _insert_events(cur: Cursor, site: str, incarnation: int,
                   rows: list[tuple[int, int, bytes, bytes]]) -> None:
    """Store events verbatim. Small bodies go in literal EXECUTE BLOCKs (one round trip for
    hundreds of rows, where the driver's executemany pays dozens of calls per row)."""
    origin = literal(site)
    statements: list[str] = []
    size = 0
    for seq, stamp, digest, body in rows:
        if len(body) > INLINE_BODY:
            cur.execute(
                f"INSERT INTO {EVENTS_TABLE} (ORIGIN, INCARNATION, SEQ, STAMP, HASH, BODY_BLOB) "
                "VALUES (?, ?, ?, ?, ?, ?)", (site, incarnation, seq, stamp, digest, body))
            continue
        stmt = (f"INSERT INTO {EVENTS_TABLE} (ORIGIN, INCARNATION, SEQ, STAMP, HASH, BODY) "
                f"VALUES ({origin}, {incarnation}, {seq}, {stamp}, x'{digest.hex()}', "
                f"x'{body.hex()}');")
        statements.append(stmt)
        size += len(stmt)
        if len(statements) >= _BLOCK_ROWS or size >= _BLOCK_BYTES:
            _execute_block(cur, statements)
            statements, size = [], 0
    if statements:
        _execute_block(cur, statements)


def _execute_block(cur: Cursor, statements: list[str]) -> None:
    cur.execute("EXECUTE BLOCK AS BEGIN\n" + "\n".join(statements) + "\nEND")


def _taken_condition(batch: Batch, alias: str) -> tuple[str, list[object]]:
    """SQL restricting log rows to those of the taken transactions (<= cutoff, and not one
    of the straddling groups, whose later entries are beyond the cutoff)."""
    cond = f"{alias}LOG_ID <= ?"
    params: list[object] = [batch.cutoff]
    for era, tx in batch.straddlers:
        if batch.restore_boundary is None:
            cond += f" AND {alias}TX_ID <> ?"
            params.append(tx)
        else:
            side = ">" if era == 1 else "<="
            cond += f" AND NOT ({alias}TX_ID = ? AND {alias}LOG_ID {side} ?)"
            params.extend([tx, batch.restore_boundary])
    return cond, params


def _delete_consumed(cur: Cursor, batch: Batch, tables: object) -> None:
    cond, params = _taken_condition(batch, "L.")
    for number in tables:  # type: ignore[attr-defined]
        cur.execute(
            f"DELETE FROM {IMAGE_PREFIX}{number} I WHERE I.{IMAGE_ID} <= ? AND EXISTS "
            f"(SELECT 1 FROM {LOG_TABLE} L WHERE L.LOG_ID = I.{IMAGE_ID} AND {cond})",
            [batch.cutoff, *params])
    cur.execute(f"DELETE FROM {LOG_TABLE} L WHERE {cond} AND L.OP <> '{OP_MARKER}'", params)


def _purge_markers(cur: Cursor, batch: Batch) -> None:
    """Keep the newest marker and those of the last day: a long open transaction's entries
    (ids below later markers) are still converted by the marker nearest below them."""
    if len(batch.markers) <= 1:
        return
    newest = batch.markers[-1].log_id
    cur.execute(
        f"DELETE FROM {LOG_TABLE} WHERE OP = '{OP_MARKER}' AND LOG_ID < ? "
        "AND CAPTURED < DATEADD(-1 DAY TO CAST('NOW' AS TIMESTAMP))", (newest,))


def published(con: Connection, site: str, after_seq: int = 0,
              incarnation: int | None = None) -> Iterator[bytes]:
    """The stored bodies of ``site``'s events with seq > ``after_seq``, in order."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            sql = (f"SELECT BODY, BODY_BLOB FROM {EVENTS_TABLE} WHERE ORIGIN = ? AND SEQ > ?"
                   + (" AND INCARNATION = ?" if incarnation is not None else "")
                   + " ORDER BY INCARNATION, SEQ")
            params: list[object] = [site, after_seq]
            if incarnation is not None:
                params.append(incarnation)
            cur.execute(sql, params)
            for body, blob in cur:
                if body is None and hasattr(blob, "read"):
                    data = blob.read()
                    blob.close()
                    yield data
                else:
                    yield body if body is not None else blob
        finally:
            cur.close()
