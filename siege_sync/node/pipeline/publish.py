"""Publishing: captured changes become immutable, stamped, dense, hash-chained events.

Owns the step from the captured changes (image tables, see ``reader.py``) to
``SYNC$EVENTS``. One publish step is one SNAPSHOT transaction that reads whole committed
source transactions, gives each event the origin's next dense sequence number, a
hybrid-logical-clock stamp above every stamp on its row, a hash linking it to the previous
event of this origin, and what the merge needs (its row's life and the writers it overwrote,
from the row registers, which it updates — a column whose winning value the table could not
show, ``_Unseen``, names no writer; a delete names the references to its row its origin
knew, and a write that makes a row reference a parent is counted in the parent's registers,
``Settler.note_references``, at the end of its transaction when the parent is inserted later
in it); an ARRAY the capture trigger recorded on an update (it cannot compare arrays) is a
write only when it differs from the value the registers hold — where they do not know it (a
row that predates install), from its old value, which the trigger records with it —, and an
update left writing nothing is not published (before numbering, so the sequence stays
dense); an update or delete of a row the registers do not know (it predates install)
carries the values its origin held in the columns it does not write (``Event.prior``), which
also fill the row's pre-existing life here; an update of a table with CHECK constraints
carries what the row held in the columns it does not write, with their writers here
(``Event.seen``, ``_seen``: the whole row its user saved, for the CHECK fall-back), and one
of a row showing such a whole row also writes the columns shown unlike the merge
(``_as_shown``); within a transaction an insert goes before the updates of its own row an
AFTER INSERT trigger logged ahead of it (``_inserts_first``); the last event of each
transaction is signed with the node's key (``seal.py``; a node's publisher always signs);
rows a later transaction of the step inserts are never written by the settlers (the table
shows what the application saved); it stores the events verbatim,
deletes the captured rows it consumed and advances the node's counters — all or nothing.
Two publishers on one database cannot both succeed: each step first locks the counter rows.

After a restore nothing is published until the site's own older events are back
(``rewind.holding_back``).

Must never publish part of a source transaction, renumber or re-stamp a published event, or
decode raw bytes (values go through ``values.py`` exactly as stored).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from firebird.driver import Connection, Cursor, DatabaseError, TransactionManager

from ...proto import events_pb2, values_pb2
from ..db import values
from ..db.database import (
    READ_COMMITTED_RW,
    SNAPSHOT_RW,
    StatementCache,
    is_concurrent_write,
    transaction,
)
from ..db.schema import Column, ColumnType, Table
from ..journal import capture, catchup, conflicts, eventlog, reader, rewind
from ..journal.capture import LOG_TABLE, OP_DELETE, OP_INSERT, OP_MARKER, OP_UPDATE, STATE_TABLE
from ..journal.reader import Batch, Group, LogEntry, plan
from ..journal.schemacache import READ_ONLY, SchemaCache
from ..journal.seal import Sealer
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.clock import Clock, MarkerTable, StampIssuer, SystemClock, local_us
from ..model.merge import LWW, EventId, Policy, RowState, Write, losses, merge
from .constraints import Settler, constrained
from .refusals import LocalChangePending

log = logging.getLogger(__name__)

_OPS = {OP_INSERT: events_pb2.OP_INSERT, OP_UPDATE: events_pb2.OP_UPDATE,
        OP_DELETE: events_pb2.OP_DELETE}
_MARKER_DRIFT_US = 1_000_000  # an offset change this large needs a new marker
_MARKER_EVERY_US = 600 * 1_000_000  # and one every ten minutes anyway
_MAX_ATTEMPTS = 5
_IN_LIST = 500  # values in one IN (...) list (Firebird 3 takes at most 1,500)


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


@dataclass(slots=True)
class _Change:
    """One captured change with its values encoded."""

    entry: LogEntry
    event: events_pb2.Event  # table, op, key and written columns; the rest is set later
    khash: bytes = b""
    arrays: tuple[str, ...] = ()  # an update's ARRAY columns: written, or only re-saved?
    # An update's or delete's values of the columns it does not write, as read (encoded only
    # for a row the registers do not know: it predates install; see _prior).
    unwritten: list[tuple[str, ColumnType, object]] | None = None


class Publisher:
    """Publishes one site's captured changes. One per database; not thread-safe."""

    def __init__(self, con: Connection, site: str, clock: Clock | None = None,
                 max_entries: int = 20_000, policies: Mapping[str, Policy] | None = None,
                 sealer: Sealer | None = None) -> None:
        """``sealer``: signs the last event of each transaction (seal.py) — every node does;
        None only where no peer checks (tests of the merge alone)."""
        self._sealer = sealer
        self._policies = dict(policies or {})
        self._con = con
        self._site = site
        self._clock = clock or SystemClock()
        self._max_entries = max_entries
        # Kept across publishes until DDL commits (schemacache.py); the applier shares it.
        self.schemas = SchemaCache(con)
        # The planning reads of every image table, prepared once per schema (reader.plan);
        # freed with the publisher, while its connection is normally still open.
        self._plan_statements = StatementCache()
        weakref.finalize(self, _free_quietly, self._plan_statements)

    def _has_checks(self, name: str) -> bool:
        table = self.schemas.table(name)
        return table is not None and table.has_checks

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
        with transaction(self._con, READ_ONLY) as tm:
            cur = tm.cursor()
            try:
                # Nearly always: nothing to write, and a read-only commit writes nothing.
                cur.execute("SELECT MON$CREATION_DATE FROM MON$DATABASE")
                created = cur.fetchone()[0].isoformat()
                state = _read_state(cur, ("db_created", "restore_boundary"))
            finally:
                cur.close()
        if state.get("db_created") == created and state.get("restore_boundary") is None:
            return None
        with transaction(self._con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            try:
                cur.execute("SELECT MON$CREATION_DATE FROM MON$DATABASE")
                created = cur.fetchone()[0].isoformat()
                state = _read_state(cur, ("db_created", "restore_boundary"))
                boundary = state.get("restore_boundary")
                if not state.get("db_created"):
                    _write_state(cur, "db_created", created)
                elif state["db_created"] != created:
                    cur.execute(f"SELECT GEN_ID({capture.LOG_SEQ}, 0) FROM RDB$DATABASE")
                    boundary = str(int(cur.fetchone()[0] or 0))
                    log.warning("[%s] database restored from a backup (created %s, was %s): "
                                "entries up to log id %s keep their old transaction grouping",
                                self._site, created, state["db_created"], boundary)
                    _write_state(cur, "db_created", created)
                    _write_state(cur, "restore_boundary", boundary)
                    _bump_state(cur, "restores", 1, last=created)
                if boundary is not None and capture.pending_entries(self._con) == 0:
                    cur.execute(f"DELETE FROM {STATE_TABLE} WHERE NAME = 'restore_boundary'")
                    return None
                return int(boundary) if boundary is not None else None
            finally:
                cur.close()

    def _mark_clock(self) -> None:
        """Write a clock marker when the engine's UTC offset moved (DST, a clock set) or the
        last one is old; otherwise the log would fill with identical markers."""
        with transaction(self._con, READ_ONLY) as tm:
            cur = tm.cursor()
            try:
                cur.execute("SELECT CAST('NOW' AS TIMESTAMP) FROM RDB$DATABASE")
                now = self._clock.utc_now_us()
                offset = now - local_us(cur.fetchone()[0])
                state = _read_state(cur, ("marker_offset_us", "marker_at_us"))
            finally:
                cur.close()
        if (state.get("marker_offset_us")
                and abs(offset - int(state["marker_offset_us"])) < _MARKER_DRIFT_US
                and 0 <= now - int(state["marker_at_us"]) < _MARKER_EVERY_US):
            return
        capture.write_marker(self._con, now)
        with transaction(self._con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            _write_state(cur, "marker_offset_us", str(offset))
            _write_state(cur, "marker_at_us", str(now))
            cur.close()

    def publish_step(self) -> PublishResult:
        """One all-or-nothing step; run again when another publisher of this database was
        writing the same counters at the same moment (it did, or will do, the work)."""
        for attempt in range(_MAX_ATTEMPTS):
            try:
                return self._publish_step()
            except DatabaseError as exc:
                if not is_concurrent_write(exc) or attempt == _MAX_ATTEMPTS - 1:
                    raise
            except LocalChangePending:
                if attempt == _MAX_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _publish_step(self) -> PublishResult:
        if not self.schemas.check():
            _free_quietly(self._plan_statements)
        self._mark_clock()
        boundary = self._restore_boundary()
        waiting = rewind.holding_back(self._con, self._site)
        if waiting is not None:
            # A restored copy's captured changes may be published already, under the
            # incarnation it had: nothing goes out before those events are back (rewind.py).
            log.info("[%s] nothing published yet: %s", self._site, waiting)
            return PublishResult()
        with transaction(self._con, SNAPSHOT_RW) as tm:
            cur = tm.cursor()
            try:
                counters = _lock_counters(cur)
                batch = plan(cur, self._max_entries, boundary, self.schemas.image_tables(),
                             self._plan_statements)
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
        registry = self.schemas.registry()
        changes, columns_of = self._read_changes(cur, batch, registry, DatabaseBlobStore(tm))
        statements = StatementCache()
        try:
            self._link_and_store(tm, cur, batch, counters, result, registry, changes,
                                 columns_of, statements)
        finally:
            statements.close()

    def _link_and_store(self, tm: TransactionManager, cur: Cursor, batch: Batch,
                        counters: _Counters, result: PublishResult,
                        registry: dict[int, tuple[str, tuple[str, ...]]],
                        changes: dict[Group, list[_Change]], columns_of: dict[int, list[str]],
                        statements: StatementCache) -> None:
        rows = registers.RowStates(cur, statements)
        key_types: dict[int, tuple[ColumnType, ...] | None] = {}
        by_table: dict[int, list[bytes]] = {}
        for tx_changes in changes.values():
            for change in tx_changes:
                number = change.entry.table_no
                if number not in by_table:  # the key's collations (image tables have none)
                    by_table[number] = []
                    key_types[number] = self.schemas.key_types(registry[number][0])
                change.khash = registers.key_identity(change.event.key, key_types[number])
                by_table[number].append(change.khash)
        for number, khashes in by_table.items():
            rows.prefetch(number, khashes)
        befores = _arrays_before(cur, self.schemas, changes)
        markers = MarkerTable(batch.markers)
        unseen = _Unseen(self.schemas, registry, catchup.unfit_columns(cur))
        settlers = _LazySettler(self.schemas, registry, self._policies)
        blob_store = DatabaseBlobStore(tm)
        issuer = StampIssuer(counters.last_stamp)
        origin = events_pb2.Origin(site=self._site, incarnation=counters.incarnation)
        stored: list[eventlog.StoredEvent] = []
        # Rows the transactions not published yet in this step insert (settlers never
        # write them: the table shows what the application saved there since — a key it
        # could insert because the row was hidden). Inserts only: a later update means the
        # row was in the table, and skipping an earlier write of it would leave the table
        # holding a value the registers let go of (a row coming back then collides on a
        # UNIQUE key and the whole publish fails).
        ahead = Counter((c.entry.table_no, c.khash) for group in changes.values()
                        for c in group if c.entry.op == OP_INSERT)
        settlers.later_local = set(ahead)  # (kept up to date in place below)
        # Rows whose reference a change not published yet writes (that change, even later
        # in the same transaction, is what the application saved there: a row coming back
        # from a UNIQUE clash never takes it back to itself, ``Clashes.repoint_back``).
        refs_ahead = Counter((c.entry.table_no, c.khash) for group in changes.values()
                             for c in group if _writes_reference(c, self.schemas))
        settlers.later_refs = set(refs_ahead)
        for tx in batch.transactions:
            tx_changes = _inserts_first(
                sorted(changes.get(tx.group, []), key=lambda c: c.entry.log_id))
            for c in tx_changes:
                if c.entry.op != OP_INSERT:
                    continue
                row = (c.entry.table_no, c.khash)
                ahead[row] -= 1
                if ahead[row] == 0:
                    settlers.later_local.discard(row)
            if not tx_changes:
                continue  # only capture errors in it
            first_seq = counters.seq + 1
            unplaced: list[tuple[Table, Write, events_pb2.Event]] = []
            # Serialized once the transaction's event count is known: an update that only
            # re-saved an array is not published.
            tx_events: list[events_pb2.Event] = []
            for change in tx_changes:
                entry = change.entry
                row = (entry.table_no, change.khash)
                if row in refs_ahead and _writes_reference(change, self.schemas):
                    refs_ahead[row] -= 1
                    if refs_ahead[row] == 0:
                        settlers.later_refs.discard(row)
                # The row's registers: the stamp must exceed every stamp on the row, and the
                # event names the life and the writers it overwrote (DESIGN §3.2, §3.3).
                khash = change.khash
                state = rows.get(entry.table_no, khash)
                event = change.event
                if entry.log_id in befores:
                    _drop_resaved(change, befores[entry.log_id])
                    if not event.columns:
                        change.event = None  # type: ignore[assignment]
                        continue  # it only re-saved arrays
                if entry.op != OP_INSERT and not registers.knows_preexisting(state):
                    # A row that predates install: the values it held travel with the
                    # event, so that any site can restore it whole (DESIGN §3.1).
                    prior = _prior(event, change.unwritten or [])
                    state = registers.with_prior(
                        state or registers.preexisting(columns_of[entry.table_no]), prior)
                policy = self._policies.get(event.table, LWW)
                if change.arrays and state is not None and entry.log_id not in befores \
                        and not registers.drop_unchanged(
                        event, state, change.arrays, policy):
                    change.event = None  # type: ignore[assignment]
                    continue
                utc = (markers.to_utc_us(entry.log_id, entry.captured) if markers
                       else self._clock.utc_now_us())
                counters.seq += 1
                row_wall = registers.max_wall(state) if state is not None else None
                event.origin.CopyFrom(origin)
                event.seq = counters.seq
                event.stamp = issuer.issue(utc, row_wall)
                event.captured_local = _ticks(entry)
                event.captured_utc_us = utc
                event.user = entry.user or ""
                event.client_address = entry.address or ""
                checked = (entry.op == OP_UPDATE and change.unwritten is not None
                           and state is not None and self._has_checks(event.table))
                if checked and state is not None and state.current.shown_row is not None:
                    _as_shown(event, change.unwritten or [], state, policy)
                registers.link(event, state, policy, unseen.columns(
                    entry.table_no, event, state, policy) if entry.op == OP_UPDATE else ())
                if checked and state is not None:
                    _seen(event, change.unwritten or [], state.current.writers(policy))
                write = registers.write_of(event)
                merged = merge(state, write, policy).state
                if merged.current.whole_row is not None and entry.op == OP_UPDATE:
                    # The table holds what the user saved, and the event writes it (above).
                    merged = replace(merged, current=replace(merged.current, whole_row=None))
                # An insert matters too when it references a parent: a row written for a
                # life its site lost is on record as at the sites that apply it (§3.5).
                # So does an insert over a row hidden by a UNIQUE clash (rows may have been
                # re-pointed from it).
                hidden = state is not None and constrained(state)
                settled = False
                if entry.op != OP_INSERT or hidden or settlers.references(cur, event.table):
                    settler = settlers.get(cur, rows, statements, blob_store)
                    table = settler.table(event.table)
                    if table is not None and (table.foreign_keys or hidden or (
                            entry.op != OP_INSERT and table.uniques)):
                        merged = settler.after_local_write(table, state, merged)
                        settled = True
                rows.put(entry.table_no, khash, merged)
                # A local write can change what is on record too: a delete ends a row
                # whose losing heads it never saw. (Not the first write of a row, which
                # nothing else wrote: one write per column, nothing lost.)
                if state is not None or settled:
                    before = losses(state, policy) if state is not None else set()
                    after = losses(merged, policy)
                    if after != before:
                        conflicts.record(cur, entry.table_no, event.key, khash, after - before,
                                         retracted=before - after, decide=policy.manual,
                                         cache=statements)
                if entry.op != OP_DELETE and settlers.references(cur, event.table):
                    # Counted in the parents' registers, as where it is applied (a delete
                    # of them that did not know it is overruled); a parent this transaction
                    # inserts later (an application trigger's order) at its end.
                    settler = settlers.get(cur, rows, statements, blob_store)
                    table = settler.table(event.table)
                    settler.resolved.clear()
                    if table is not None and not settler.note_references(
                            table, write.id, write.columns, create=False):
                        unplaced.append((table, write, event))
                    else:
                        _name_parents(event, settler.resolved)
                tx_events.append(event)
                change.event = None  # type: ignore[assignment]  # the body is what stays
            for table, write, event in unplaced:
                settler = settlers.get(cur, rows, statements, blob_store)
                settler.resolved.clear()
                settler.note_references(table, write.id, write.columns)
                _name_parents(event, settler.resolved)
            if not tx_events:
                continue  # nothing but arrays saved unchanged
            source_tx = events_pb2.SourceTx(tx_id=tx.tx_id, first_seq=first_seq,
                                            count=len(tx_events))
            for event in tx_events:
                event.tx.CopyFrom(source_tx)
                event.prev_hash = counters.chain_head
                body = event.SerializeToString(deterministic=True)
                if self._sealer is not None and event is tx_events[-1]:
                    body = self._sealer.seal(body)
                counters.chain_head = hashlib.sha256(body).digest()
                stored.append(eventlog.StoredEvent(event.seq, event.stamp,
                                                   counters.chain_head, body))
            result.transactions += 1
        counters.last_stamp = issuer.last
        settlers.flush()
        rows.flush()
        result.events = len(stored)
        if stored:
            result.first_seq, result.last_seq = stored[0].seq, stored[-1].seq
            eventlog.append(cur, self._site, counters.incarnation, stored)
        result.capture_errors = [_describe_error(e, registry)
                                 for e in reader.error_entries(cur, batch)]
        reader.delete_taken(cur, batch)
        _purge_markers(cur, batch)
        for message in result.capture_errors:
            log.error("[%s] %s", self._site, message)
        if result.capture_errors:
            _bump_state(cur, "capture_errors", len(result.capture_errors),
                        last=result.capture_errors[-1])

    def _read_changes(self, cur: Cursor, batch: Batch,
                      registry: dict[int, tuple[str, tuple[str, ...]]],
                      blobs: DatabaseBlobStore
                      ) -> tuple[dict[Group, list[_Change]], dict[int, list[str]]]:
        """Every taken change, encoded, by source transaction. Only what an event carries is
        encoded: the key, and the written columns (all for an insert, the mask's for an
        update, none for a delete)."""
        dialect = self._con.sql_dialect
        by_group: dict[Group, list[_Change]] = {}
        columns_of: dict[int, list[str]] = {}
        for number in sorted(batch.tables):
            columns = self.schemas.image(number).columns
            if not columns:
                raise PublishError(
                    f"captured changes of table #{number} have no image table: the capture "
                    "objects were edited by hand; run siege-node install, then analyse")
            names = [c.name for c in columns]
            columns_of[number] = names
            types = [c.type for c in columns]
            key_at = [names.index(k) for k in registry[number][1]]
            array_at = [i for i, t in enumerate(types) if t.dimensions]
            select_list = ", ".join(values.select_expr(c, dialect, "I.") for c in columns)
            for group, entry, mask, raw in reader.image_rows(cur, batch, number, select_list):
                # Values go straight into the event message: standalone protobuf messages
                # each carry their own memory arena (measured ~20 KB an event otherwise).
                event = events_pb2.Event(table=registry[number][0], op=_OPS[entry.op])
                for i in key_at:
                    event.key.append(values.encode(types[i], raw[i], blobs))
                if entry.op != OP_DELETE:
                    for i, flag in enumerate(mask):
                        if flag == "1":
                            event.columns.add(column=names[i]).value.CopyFrom(
                                values.encode(types[i], raw[i], blobs))
                change = _Change(entry, event)
                if entry.flags & capture.FLAG_FULL_IMAGE and entry.op != OP_INSERT:
                    change.unwritten = _unwritten(columns, key_at, mask, raw, entry.op)
                if array_at and entry.op == OP_UPDATE:
                    change.arrays = tuple(names[i] for i in array_at if mask[i] == "1")
                by_group.setdefault(group, []).append(change)
        return by_group, columns_of


class _Unseen:
    """Which columns an update writes whose registers' winner the table did not show: a
    value this site's narrower column could not hold (``catchup.mark_unfit``). Looked at
    only for the columns so marked, so a site whose columns all fit pays one query."""

    def __init__(self, schemas: SchemaCache, registry: dict[int, tuple[str, tuple[str, ...]]],
                 marked: dict[int, set[str]]) -> None:
        self._schemas, self._registry, self._marked = schemas, registry, marked
        self._types: dict[int, dict[str, ColumnType]] = {}

    def columns(self, table_no: int, event: events_pb2.Event, state: RowState | None,
                policy: Policy) -> set[str]:
        marked = self._marked.get(table_no)
        if not marked or state is None:
            return set()
        if table_no not in self._types:
            name = self._registry[table_no][0]
            table = self._schemas.table(name)
            self._types[table_no] = {c.name: c.type for c in table.columns} if table else {}
        types = self._types[table_no]
        out = set()
        for written in event.columns:
            name = written.column
            if name not in marked or name not in types or name not in state.current.heads:
                continue
            shown = state.current.winner(name, policy).value
            if shown is not None and not values.fits(
                    types[name], values_pb2.Value.FromString(shown)):
                out.add(name)
        return out


def _free_quietly(statements: StatementCache) -> None:
    """Free prepared statements; their connection may be gone (closed, lost, the database
    restored): then the engine freed them already."""
    try:
        statements.close()
    except DatabaseError:
        log.debug("prepared statements of a closed connection", exc_info=True)


def _name_parents(event: events_pb2.Event, resolved: Mapping[str, list]) -> None:
    """The parent rows the event's references to a UNIQUE key met here (DESIGN §3.5):
    every site counts them on those rows, whatever row holds the value there."""
    for name in sorted(resolved):
        event.parents.add(foreign_key=name).key.extend(resolved[name])


def _writes_reference(change: _Change, schemas: SchemaCache) -> bool:
    """Does the change (an insert or update) write a column of a foreign key of its table?"""
    if change.entry.op == OP_DELETE or change.event is None:
        return False
    table = schemas.table(change.event.table)
    if table is None or not table.foreign_keys:
        return False
    written = {c.column for c in change.event.columns}
    return any(col in written for fk in table.foreign_keys for col in fk.columns)


def _inserts_first(changes: list[_Change]) -> list[_Change]:
    """A transaction's changes in log order, except that an insert goes before the updates of
    its own row logged ahead of it.

    An application's AFTER INSERT trigger runs before the capture trigger (POSITION 32000):
    when it updates the row just inserted (a computed reference, a status), that update is
    logged first, and the insert after it with the row as inserted. Replayed in log order
    the update would meet a row that does not exist yet. An update of a row inserted later
    in the same transaction, with no delete of that row between, can only be such an
    update: it happened after the insert."""
    out: list[_Change] = []
    first_update: dict[tuple[int, bytes], int] = {}  # row -> index of its leading update
    for change in changes:
        row = (change.entry.table_no, change.khash)
        op = change.entry.op
        if op == OP_UPDATE:
            first_update.setdefault(row, len(out))
        elif op == OP_INSERT and row in first_update:
            at = first_update.pop(row)
            out.insert(at, change)
            for other, index in first_update.items():
                if index >= at:
                    first_update[other] = index + 1
            continue
        else:
            first_update.pop(row, None)
        out.append(change)
    return out


def _arrays_before(cur: Cursor, schemas: SchemaCache, changes: dict[Group, list[_Change]]
                   ) -> dict[int, list[tuple[str, ColumnType, object]]]:
    """The old values of the ARRAYs that updates recorded (capture.FLAG_ARRAYS_BEFORE), by
    log id: what the row held where its user saved it tells a re-save. Not the registers'
    value: a joined site's copy holds rows ahead of their registers (the siège's changes
    captured but not yet published when the copy was taken), and a user saving there the
    registers' older value changed the row — dropped as a re-save, that write vanished
    without record (chaos seed 2). Only for rows an update of an array touched (fetching an
    array costs a round trip into the engine per value): one query per table and
    ``_IN_LIST`` of them. Rows captured by older triggers (no flag) fall back to the
    registers (registers.drop_unchanged)."""
    wanted: dict[int, list[int]] = {}
    for tx_changes in changes.values():
        for change in tx_changes:
            entry = change.entry
            if change.arrays and entry.flags & capture.FLAG_ARRAYS_BEFORE:
                wanted.setdefault(entry.table_no, []).append(entry.log_id)
    out: dict[int, list[tuple[str, ColumnType, object]]] = {}
    for number, log_ids in wanted.items():
        image = schemas.image(number)
        at = [(i, c) for i, c in enumerate(image.columns) if c.name in image.befores]
        if not at:
            continue
        select = ", ".join(f"I.{capture.before_column(i)}" for i, _c in at)
        for start in range(0, len(log_ids), _IN_LIST):
            ids = ", ".join(str(int(i)) for i in log_ids[start:start + _IN_LIST])
            cur.execute(f"SELECT I.{capture.IMAGE_ID}, {select} FROM {capture.IMAGE_PREFIX}"
                        f"{number} I WHERE I.{capture.IMAGE_ID} IN ({ids})")
            for log_id, *raw in cur.fetchall():
                out[int(log_id)] = [(c.name, c.type, value)
                                    for (_i, c), value in zip(at, raw, strict=True)]
    return out


def _drop_resaved(change: _Change, before: list[tuple[str, ColumnType, object]]) -> None:
    """Remove from an update's event the ARRAYs it re-saved unchanged: the same bytes as
    their old value (the trigger cannot compare arrays; encoded, as they travel, so -0.0 is
    not 0.0). Each becomes a column the update does not write, whose value then tells the
    registers of a row that predates install what it holds (``_prior``, with_prior): a
    re-save never overwrites another site's concurrent change of it (DESIGN §3.3)."""
    event = change.event
    olds = {name: (ctype, value) for name, ctype, value in before}
    for i in reversed(range(len(event.columns))):
        name = event.columns[i].column
        if name not in olds:
            continue
        ctype, value = olds[name]
        if (event.columns[i].value.SerializeToString(deterministic=True)
                == values.encode(ctype, value).SerializeToString(deterministic=True)):
            del event.columns[i]
            change.arrays = tuple(a for a in change.arrays if a != name)
            if change.unwritten is not None:
                change.unwritten.append((name, ctype, value))


def _unwritten(columns: list[Column], key_at: list[int], mask: str, raw: tuple,
               op: str) -> list[tuple[str, ColumnType, object]]:
    """The values of a full image (capture.FLAG_FULL_IMAGE) that its event does not write:
    every column of a delete (the key too: the registers of a row that predates install
    then know it, so that a reference by a UNIQUE value can find the deleted row and bring
    it back); an update's unwritten non-key columns but BLOBs (an update copies a BLOB only
    when written). A large BLOB is not kept (its reader is closed here, inside the reading
    transaction): it stays unknown."""
    out = []
    for i, col in enumerate(columns):
        if op == OP_UPDATE and (i in key_at or mask[i:i + 1] == "1" or col.type.is_blob):
            continue
        value = raw[i]
        if hasattr(value, "read"):
            value.close()
            continue
        out.append((col.name, col.type, value))
    return out


def _prior(event: events_pb2.Event,
           unwritten: list[tuple[str, ColumnType, object]]) -> dict[str, bytes]:
    """Put the unwritten values into ``event.prior``; return them encoded, by column. The
    driver hands BLOBs under its 64 KiB threshold as bytes: they travel inline."""
    prior = {}
    for name, ctype, value in unwritten:
        encoded = values.encode(ctype, value)
        if encoded.WhichOneof("kind") == "blob":
            continue
        event.prior.add(column=name).value.CopyFrom(encoded)
        prior[name] = encoded.SerializeToString()
    return prior


def _as_shown(event: events_pb2.Event, unwritten: list[tuple[str, ColumnType, object]],
              state: RowState, policy: Policy) -> None:
    """A local update of a row that shows a whole row (its merged columns broke a CHECK,
    constraints.py): its user saved the row as shown, so it also writes the columns where the
    shown value is not the merged one (a lost head would come back with the merged columns,
    here and not where it is applied, or the other way round). Their base is the writer
    shown, as for any write: the heads the whole row overrode stay concurrent, and lose to
    this write, on record. Without a full image (an old capture trigger) it writes only what
    it wrote; the registers then hold the merged columns."""
    shown = state.current
    merged = replace(shown, whole_row=None)
    written = {c.column for c in event.columns}
    for name, ctype, value in unwritten:
        if name in written or name not in shown.heads:
            continue
        if shown.winner(name, policy).value == merged.winner(name, policy).value:
            continue
        encoded = values.encode(ctype, value)
        if encoded.WhichOneof("kind") != "blob":
            event.columns.add(column=name).value.CopyFrom(encoded)


def _seen(event: events_pb2.Event, unwritten: list[tuple[str, ColumnType, object]],
          writers: Mapping[str, EventId]) -> None:
    """Put what the row held here in the columns an update does not write (non-key,
    non-BLOB: an update's image has no unwritten BLOB) into ``event.seen``, each with its
    writer here as base: with the written columns, the whole row its user saw and saved
    (a row whose merged columns break a CHECK falls back to it, DESIGN §3.5)."""
    event.seen.SetInParent()
    written = {c.column for c in event.columns}
    for name, ctype, value in unwritten:
        if name in written:
            continue
        encoded = values.encode(ctype, value)
        if encoded.WhichOneof("kind") == "blob":
            continue
        column = event.seen.columns.add(column=name)
        column.value.CopyFrom(encoded)
        if name in writers:
            column.base.CopyFrom(registers.event_ref(writers[name]))


def _ticks(entry: LogEntry) -> int:
    """Capture time as 100-microsecond ticks since 0001-01-01, local (as the engine saw it)."""
    at = entry.captured
    seconds = at.hour * 3600 + at.minute * 60 + at.second
    return ((at.toordinal() - 1) * 86_400 + seconds) * 10_000 + at.microsecond // 100


def _describe_error(entry: LogEntry, registry: dict[int, tuple[str, tuple[str, ...]]]) -> str:
    table = registry.get(entry.table_no, (f"table #{entry.table_no}",))[0]
    return (f"capture of a change to {table} failed at {entry.captured:%Y-%m-%d %H:%M:%S} "
            f"(user {entry.user}, transaction {entry.tx_id}): {entry.detail}. The change was "
            "committed but not captured; run siege-node install (schema drift?) and then "
            "siege-ctl analyse --repair")


def _lock_counters(cur: Cursor) -> _Counters:
    """Read the node's counters and lock them: a second publisher waits, then gets an update
    conflict (install creates the rows, so two first publishers cannot both insert them)."""
    cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN "
                "('seq', 'chain_head', 'last_stamp', 'incarnation') WITH LOCK")
    state = dict(cur.fetchall())
    if len(state) != 4:
        raise PublishError("the node's counters are missing from SYNC$STATE: run "
                           "siege-node install (it creates them)")
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
    return eventlog.read(con, site, after_seq, incarnation)


class _LazySettler:
    """The constraint side of local writes, built at the first write of a step (it needs the
    schema: foreign keys, UNIQUE constraints)."""

    def __init__(self, schemas: SchemaCache, registry: dict[int, tuple[str, tuple[str, ...]]],
                 policies: Mapping[str, Policy]) -> None:
        self._schemas = schemas
        self._registry = {name: no for no, (name, _k) in registry.items()}
        self._policies = policies
        self._settler: Settler | None = None
        self._later_local: set[tuple[int, bytes]] = set()
        self._later_refs: set[tuple[int, bytes]] = set()

    @property
    def later_refs(self) -> set[tuple[int, bytes]]:
        return self._later_refs

    @later_refs.setter
    def later_refs(self, rows: set[tuple[int, bytes]]) -> None:
        """Rows whose reference a change not published yet writes (``Settler.later_refs``)."""
        self._later_refs = rows
        if self._settler is not None:
            self._settler.later_refs = rows

    @property
    def later_local(self) -> set[tuple[int, bytes]]:
        return self._later_local

    @later_local.setter
    def later_local(self, rows: set[tuple[int, bytes]]) -> None:
        """Rows later transactions of the step write (``Settler.later_local``)."""
        self._later_local = rows
        if self._settler is not None:
            self._settler.later_local = rows

    def references(self, cur: Cursor, table: str) -> bool:
        """Whether ``table`` has a foreign key (an insert-only step of tables without
        references never builds the settler)."""
        found = self._schemas.table(table)
        return found is not None and bool(found.foreign_keys)

    def get(self, cur: Cursor, rows: registers.RowStates, statements: StatementCache,
            blobs: DatabaseBlobStore) -> Settler:
        if self._settler is None:
            # Rows written here are other rows (parents, hidden rows) that the change lets
            # go of; everything captured so far is being published in this transaction.
            self._settler = Settler(cur, self._schemas.schema(), self._registry, rows,
                                    statements, self._policies, set(),
                                    blobs)
            self._settler.later_local = self._later_local
            self._settler.later_refs = self._later_refs
        return self._settler

    def flush(self) -> None:
        if self._settler is not None:
            self._settler.flush()
