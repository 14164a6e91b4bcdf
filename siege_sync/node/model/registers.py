"""Row registers in the site's database (``SYNC$ROWS``) and the events <-> merge translation.

Owns the storage of each row's merge state (see ``merge.py``), keyed by table number and the
row's identity (:func:`key_identity`: the sha256 of its key as the engine compares it, so keys
the engine calls equal — 'ABC' and 'abc ' under a case-insensitive collation — are one row),
and the conversion between wire events and ``merge.Write``.
A row that changed before capture began has no registers: it is given a *pre-existing* life
(``PREEXISTING``), the same at every site, whose column values are read from the row where
it is here, else taken from the prior image an event of it carries (:func:`with_prior`),
else unknown (the sites adopted with equal data share it, and every later write overwrites
it knowingly).

A row of a table with CHECK constraints also keeps, per life, the whole row of its latest
update that carried one (``Life.latest_row``, ``Event.seen``: its written values and what its
origin saw in its other non-key, non-BLOB columns, with their writers): at most one more copy
of the row per life, in ``LifeRecord.latest_row``, so more such rows' registers exceed
``INLINE_REGISTERS`` and go to the BLOB column. ``LifeRecord.whole_row`` (a site, as stored
before whole rows were kept) is still read: such a row ranks that site's versions first until
it is settled again.

Stored as ``registers.proto`` says, with one economy: a head written by the insert that began
its life (most heads) leaves its stamp out — it is the life's generation. Records stored
before that still carry it and read the same.

Must never open its own transaction: registers change in the same transaction as the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from firebird.driver import Cursor, DatabaseError

from ...proto import events_pb2, registers_pb2, values_pb2
from ..db import values
from ..db.collation import identity_value
from ..db.database import StatementCache, quote
from ..db.schema import ColumnType, Kind, Table
from .merge import (
    LWW,
    EventId,
    Head,
    Life,
    Op,
    Policy,
    Refs,
    RowState,
    Stamp,
    WholeRow,
    Write,
    with_refs,
)

ROWS_TABLE = "SYNC$ROWS"  # each row's merge registers (capture.py creates it)
# A row's registers up to this size stay inline (no BLOB round trip), larger in REGS_BLOB.
INLINE_REGISTERS = 4000

# The life of a row that existed before capture: stamp zero, no site.
PREEXISTING = Stamp(0, "", 0, 0)

_OPS = {events_pb2.OP_INSERT: Op.INSERT, events_pb2.OP_UPDATE: Op.UPDATE,
        events_pb2.OP_DELETE: Op.DELETE}


def key_data(key: Sequence[values_pb2.Value]) -> bytes:
    """A row's exact key values, length-prefixed, as one byte string."""
    out = bytearray()
    for value in key:
        data = value.SerializeToString(deterministic=True)
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def key_values(data: bytes) -> list[values_pb2.Value]:
    out, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "big")
        out.append(values_pb2.Value.FromString(data[at + 4:at + 4 + n]))
        at += 4 + n
    return out


def key_hash(key: Sequence[values_pb2.Value]) -> bytes:
    """The hash of exact key values (a row's identity is :func:`key_identity`)."""
    return hashlib.sha256(key_data(key)).digest()


def key_identity(key: Sequence[values_pb2.Value],
             types: Table | Sequence[ColumnType] | None) -> bytes:
    """A row's identity in the registers: the hash of its key values as the engine compares
    them in the key columns (``types``: the table, or its key columns' types in key order;
    see ``collation.py``). Equal to :func:`key_hash` when normalizing changes nothing
    (integers, text of binary collations without trailing blanks), so such rows keep the
    identity they had before collations counted. Without types (a table this site lacks) the
    exact values are the identity."""
    if isinstance(types, Table):
        # Asked for many times for each event applied (a dozen for a row with a parent):
        # kept per table, by the key's exact bytes, which decide it.
        seen = types.identities
        data = tuple(v.SerializeToString(deterministic=True) for v in key)
        identity = seen.get(data)
        if identity is None:
            identity = key_identity(key, [c.type for c in types.key_columns])
            if len(seen) >= _IDENTITIES_KEPT:
                seen.clear()
            seen[data] = identity
        return identity
    if types is None or len(types) != len(key):
        return key_hash(key)
    return key_hash([identity_value(t, v) for t, v in zip(types, key, strict=True)])


_IDENTITIES_KEPT = 20_000  # per table: a few MB at most


def rekey(cur: Cursor, table_no: int, table: Table, dialect: int) -> int:
    """Move the registers of ``table``'s rows from the hash of their exact key (the identity
    before collations counted) to :func:`key_identity`, for every row the table holds now;
    returns how many moved. For an existing install's upgrade: only keys with a CHAR/VARCHAR
    column can change (a CHAR's padding, trailing blanks, case or accents under a
    case-insensitive collation). Registers of rows no longer in the table (tombstones) stay
    where they are: a late event for such a row finds no registers, as for a row that
    predates capture. Runs in the caller's transaction."""
    kinds = {c.type.element_kind for c in table.key_columns}
    if not kinds & {Kind.CHAR, Kind.VARCHAR}:
        return 0
    exprs = ", ".join(values.select_expr(c, dialect) for c in table.key_columns)
    reader = cur.transaction.cursor()
    moved = 0
    try:
        reader.execute(f"SELECT {exprs} FROM {quote(table.name, dialect)}")
        for row in reader:
            key = [values.encode(c.type, v) for c, v in zip(table.key_columns, row,
                                                            strict=True)]
            old, new = key_hash(key), key_identity(key, table)
            if old == new:
                continue
            cur.execute(f"UPDATE {ROWS_TABLE} SET KEY_HASH = ? WHERE TBL_NO = ? AND "
                        f"KEY_HASH = ? AND NOT EXISTS (SELECT 1 FROM {ROWS_TABLE} r WHERE "
                        "r.TBL_NO = ? AND r.KEY_HASH = ?)", (new, table_no, old, table_no, new))
            moved += max(cur.affected_rows, 0)
    finally:
        reader.close()
    return moved


# --- events <-> merge ------------------------------------------------------------------

def event_id(ref: events_pb2.EventRef) -> EventId:
    return EventId(ref.site, ref.incarnation, ref.seq)


def event_ref(eid: EventId) -> events_pb2.EventRef:
    return events_pb2.EventRef(site=eid.site, incarnation=eid.incarnation, seq=eid.seq)


def stamp_of(ref: events_pb2.StampRef) -> Stamp:
    return Stamp(ref.wall, ref.site, ref.incarnation, ref.seq)


def stamp_ref(stamp: Stamp) -> events_pb2.StampRef:
    return events_pb2.StampRef(wall=stamp.wall, site=stamp.site,
                               incarnation=stamp.incarnation, seq=stamp.seq)


def write_of(event: events_pb2.Event,
             values: Mapping[str, values_pb2.Value] | None = None) -> Write:
    """The merge's view of a wire event. ``values``: its columns' values by name, when the
    caller has them already."""
    stamp = Stamp(event.stamp, event.origin.site, event.origin.incarnation, event.seq)
    if values is None:
        values = {c.column: c.value for c in event.columns}
    columns = {name: value.SerializeToString(deterministic=True)
               for name, value in values.items()}
    bases = {c.column: event_id(c.base) for c in event.columns if c.HasField("base")}
    bases.update({c.column: event_id(c.base) for c in event.delete_bases})
    return Write(
        stamp=stamp,
        op=_OPS[event.op],
        generation=stamp_of(event.generation) if event.HasField("generation") else stamp,
        columns=columns,
        bases=bases,
        exist_base=event_id(event.exist_base) if event.HasField("exist_base") else None,
        follows=stamp_of(event.follows) if event.HasField("follows") else None,
        known_refs=(_refs(event.known_refs.refs) if event.HasField("known_refs")
                    else None),
        seen=({c.column: c.value.SerializeToString(deterministic=True)
               for c in event.seen.columns} if event.HasField("seen") else None),
        seen_bases={c.column: event_id(c.base) for c in event.seen.columns
                    if c.HasField("base")},
    )


def _refs(refs: Iterable[events_pb2.EventRef]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for ref in refs:
        origin = (ref.site, ref.incarnation)
        out[origin] = max(out.get(origin, 0), ref.seq)
    return out


def _ref_list(refs: Refs) -> list[events_pb2.EventRef]:
    return [events_pb2.EventRef(site=site, incarnation=inc, seq=seq)
            for (site, inc), seq in sorted(refs.items())]


def preexisting(columns: Iterable[str]) -> RowState:
    return RowState(Life(PREEXISTING, frozenset(),
                         {c: frozenset({Head(PREEXISTING, None)}) for c in columns}))


def knows_preexisting(state: RowState | None) -> bool:
    """Whether every pre-existing value of a row is known (or it has no pre-existing life):
    an update or delete of it needs no prior image."""
    if state is None:
        return False
    lives = [state.current, *state.past.values()]
    return not any(life.generation == PREEXISTING and any(
        head.stamp == PREEXISTING and head.value is None
        for heads in life.heads.values() for head in heads) for life in lives)


def with_prior(state: RowState, prior: Mapping[str, bytes]) -> RowState:
    """``state`` with the unknown values of its pre-existing life filled from ``prior``
    (column -> encoded Value: what an event's origin held before it, DESIGN §3.1). Known
    values are kept: sites adopted with equal rows agree on them."""
    if not prior:
        return state
    for life in [state.current, *state.past.values()]:
        if life.generation != PREEXISTING:
            continue
        heads = dict(life.heads)
        for column, value in prior.items():
            old = heads.get(column, frozenset())
            if any(h.stamp == PREEXISTING and h.value is None for h in old):
                heads[column] = frozenset({*(h for h in old if h.stamp != PREEXISTING),
                                           Head(PREEXISTING, value)})
        state = state.with_life(replace(life, heads=heads))
    return state


def prior_of(event: events_pb2.Event) -> dict[str, bytes]:
    return {c.column: c.value.SerializeToString() for c in event.prior}


# --- storage -----------------------------------------------------------------------------

def _life_record(life: Life) -> registers_pb2.LifeRecord:
    generation = life.generation
    rec = registers_pb2.LifeRecord(generation=stamp_ref(generation))
    rec.deletes.extend(stamp_ref(s) for s in sorted(life.deletes))
    refs: dict[Stamp, events_pb2.StampRef] = {}
    for name in sorted(life.heads):
        col = rec.columns.add(column=name)
        for head in sorted(life.heads[name]):
            if head.stamp == generation:  # (the stamp a head without one has)
                col.heads.add(value=head.value or b"", unknown=head.value is None)
                continue
            ref = refs.get(head.stamp)
            if ref is None:
                ref = refs[head.stamp] = stamp_ref(head.stamp)
            col.heads.add(stamp=ref, value=head.value or b"", unknown=head.value is None)
    rec.known_by_delete.extend(event_ref(e) for e in sorted(life.known_by_delete))
    if life.follows is not None:
        rec.follows.CopyFrom(stamp_ref(life.follows))
    if life.held_by is not None:
        rec.held_by.CopyFrom(event_ref(life.held_by))
    if life.evicted_by is not None:
        rec.evicted_by.CopyFrom(event_ref(life.evicted_by))
    rec.whole_row = life.whole_row_site or ""
    if life.whole_row is not None:
        rec.whole_row_of.CopyFrom(event_ref(life.whole_row))
    if life.latest_row is not None:
        row = life.latest_row
        rec.latest_row.stamp.CopyFrom(stamp_ref(row.stamp))
        for name in sorted(row.values):
            col = rec.latest_row.columns.add(column=name, value=row.values[name] or b"")
            if name in row.writers:
                col.writer.CopyFrom(event_ref(row.writers[name]))
    for stamp in sorted(life.delete_refs):
        rec.delete_refs.add(delete=stamp_ref(stamp)).known.extend(
            _ref_list(life.delete_refs[stamp]))
    return rec


def _life(rec: registers_pb2.LifeRecord) -> Life:
    generation = stamp_of(rec.generation)
    return Life(
        generation=generation,
        deletes=frozenset(stamp_of(s) for s in rec.deletes),
        heads={c.column: frozenset(Head(stamp_of(h.stamp) if h.HasField("stamp") else generation,
                                        None if h.unknown else h.value)
                                   for h in c.heads) for c in rec.columns},
        known_by_delete=frozenset(event_id(e) for e in rec.known_by_delete),
        follows=stamp_of(rec.follows) if rec.HasField("follows") else None,
        held_by=event_id(rec.held_by) if rec.HasField("held_by") else None,
        evicted_by=event_id(rec.evicted_by) if rec.HasField("evicted_by") else None,
        whole_row_site=rec.whole_row or None,
        whole_row=event_id(rec.whole_row_of) if rec.HasField("whole_row_of") else None,
        latest_row=WholeRow(
            stamp_of(rec.latest_row.stamp), {c.column: c.value for c in rec.latest_row.columns},
            {c.column: event_id(c.writer) for c in rec.latest_row.columns
             if c.HasField("writer")}) if rec.HasField("latest_row") else None,
        delete_refs={stamp_of(d.delete): _refs(d.known) for d in rec.delete_refs},
    )


def encode_state(state: RowState) -> bytes:
    msg = registers_pb2.RowRegisters(current=_life_record(state.current))
    msg.past.extend(_life_record(state.past[g]) for g in sorted(state.past))
    msg.refs.extend(_ref_list(state.refs))
    return msg.SerializeToString(deterministic=True)


def decode_state(data: bytes) -> RowState:
    msg = registers_pb2.RowRegisters.FromString(data)
    past = {life.generation: life for life in (_life(p) for p in msg.past)}
    state = RowState(_life(msg.current), past)
    return with_refs(state, _refs(msg.refs)) if msg.refs else state


def max_wall(state: RowState) -> int:
    walls = [state.generation.wall]
    for life in state.lives:
        walls.extend(s.wall for s in life.deletes)
        walls.extend(h.stamp.wall for hs in life.heads.values() for h in hs)
    return max(walls)


# Rows per batched load; rows per EXECUTE BLOCK of writes (a statement may name at most 255
# tables, and each UPDATE OR INSERT names its table several times: measured, 100 fail).
_BATCH = 100
_WRITE_BATCH = 50
_INSERT_BATCH = 200  # INSERTs name their table once
_COLUMNS = "(TBL_NO, KEY_HASH, MAX_WALL, REGS, REGS_BLOB)"
# "violation of PRIMARY or UNIQUE KEY constraint", "attempt to store duplicate value"
_DUPLICATE_KEY = frozenset({335544665, 335544349})


def load(cache: StatementCache, cur: Cursor, table_no: int, khash: bytes) -> RowState | None:
    cache.run(cur, f"SELECT REGS, REGS_BLOB FROM {ROWS_TABLE} WHERE TBL_NO = ? AND KEY_HASH = ?",
              (table_no, khash))
    row = cur.fetchone()
    if row is None:
        return None
    data = row[0] if row[0] is not None else row[1]
    if hasattr(data, "read"):
        blob = data
        data = blob.read()
        blob.close()
    return decode_state(data)


def store(cache: StatementCache, cur: Cursor, table_no: int, khash: bytes,
          state: RowState) -> None:
    data = encode_state(state)
    inline, blob = (data, None) if len(data) <= INLINE_REGISTERS else (None, data)
    cache.run(cur, f"UPDATE OR INSERT INTO {ROWS_TABLE} (TBL_NO, KEY_HASH, MAX_WALL, REGS, "
                   "REGS_BLOB) VALUES (?, ?, ?, ?, ?) MATCHING (TBL_NO, KEY_HASH)",
              (table_no, khash, max_wall(state), inline, blob))


class RowStates:
    """The registers of the rows one transaction touches, loaded once, written back once."""

    def __init__(self, cur: Cursor, cache: StatementCache) -> None:
        self._cur = cur
        self._cache = cache
        self._states: dict[tuple[int, bytes], RowState | None] = {}
        self._dirty: set[tuple[int, bytes]] = set()
        self._absent: set[tuple[int, bytes]] = set()  # found without registers when loaded

    def get(self, table_no: int, khash: bytes) -> RowState | None:
        key = (table_no, khash)
        if key not in self._states:
            state = self._states[key] = load(self._cache, self._cur, table_no, khash)
            if state is None:
                self._absent.add(key)
        return self._states[key]

    def prefetch(self, table_no: int, khashes: Iterable[bytes]) -> None:
        """Load many rows' registers with one query per hundred keys. The hashes are hex
        literals: the driver's work per parameter (~70 µs) costs more than preparing the
        statement."""
        missing = sorted({k for k in khashes if (table_no, k) not in self._states})
        for start in range(0, len(missing), _BATCH):
            chunk = missing[start:start + _BATCH]
            literals = ", ".join(f"x'{k.hex()}'" for k in chunk)
            self._cur.execute(f"SELECT KEY_HASH, REGS, REGS_BLOB FROM {ROWS_TABLE} "
                              f"WHERE TBL_NO = {int(table_no)} AND KEY_HASH IN ({literals})")
            found = {}
            for khash, inline, blob in self._cur.fetchall():
                data = inline if inline is not None else blob
                if hasattr(data, "read"):
                    reader = data
                    data = reader.read()
                    reader.close()
                found[khash] = decode_state(data)
            for khash in chunk:
                self._states[(table_no, khash)] = found.get(khash)
                if khash not in found:
                    self._absent.add((table_no, khash))

    def scan(self, table_no: int) -> Iterable[tuple[bytes, RowState]]:
        """Every row of a table that has registers, as this transaction sees them (its own
        changes not written back yet included). Reads them all: for the rare look-up that
        only the registers can answer (a row no longer in the table, found by a UNIQUE
        value), never for an ordinary write."""
        seen: set[bytes] = set()
        self._cur.execute(f"SELECT KEY_HASH, REGS, REGS_BLOB FROM {ROWS_TABLE} "
                          f"WHERE TBL_NO = {int(table_no)}")
        stored = self._cur.fetchall()
        for khash, inline, blob in stored:
            seen.add(khash)
            if (table_no, khash) in self._states:
                state = self._states[(table_no, khash)]
                if state is not None:
                    yield khash, state
                continue
            data = inline if inline is not None else blob
            if hasattr(data, "read"):
                reader = data
                data = reader.read()
                reader.close()
            yield khash, decode_state(data)
        for (number, khash), state in list(self._states.items()):
            if number == table_no and khash not in seen and state is not None:
                yield khash, state

    def put(self, table_no: int, khash: bytes, state: RowState) -> None:
        self._states[(table_no, khash)] = state
        self._dirty.add((table_no, khash))

    def flush(self) -> None:
        """Write back every changed row: inline ones as EXECUTE BLOCKs of literal statements
        (exact: bytes as hex literals), large ones one by one. A row that had no registers
        when loaded is written with an INSERT (compiled in half the time, four times as many
        to a block); should another transaction have stored its registers since (the
        engine refuses the duplicate, undoing the block), that block goes again as UPDATE
        OR INSERTs, which then meet that transaction as any concurrent write does."""
        new: list[str] = []  # the VALUES of each row, by how it is written
        known: list[str] = []
        for table_no, khash in sorted(self._dirty):
            state = self._states[(table_no, khash)]
            assert state is not None
            data = encode_state(state)
            if len(data) > INLINE_REGISTERS:
                store(self._cache, self._cur, table_no, khash, state)
                continue
            values = (f"({int(table_no)}, x'{khash.hex()}', {max_wall(state)}, "
                      f"x'{data.hex()}', NULL)")
            (new if (table_no, khash) in self._absent else known).append(values)
        for start in range(0, len(new), _INSERT_BATCH):
            chunk = new[start:start + _INSERT_BATCH]
            try:
                self._run_block([f"INSERT INTO {ROWS_TABLE} {_COLUMNS} VALUES {v};"
                                 for v in chunk])
            except DatabaseError as exc:
                if not _DUPLICATE_KEY & set(getattr(exc, "gds_codes", ()) or ()):
                    raise
                known.extend(chunk)
        for start in range(0, len(known), _WRITE_BATCH):
            self._run_block([f"UPDATE OR INSERT INTO {ROWS_TABLE} {_COLUMNS} VALUES {v} "
                             "MATCHING (TBL_NO, KEY_HASH);"
                             for v in known[start:start + _WRITE_BATCH]])
        self._absent -= self._dirty
        self._dirty.clear()

    def _run_block(self, statements: list[str]) -> None:
        self._cur.execute("EXECUTE BLOCK AS BEGIN\n" + "\n".join(statements) + "\nEND")


def link(event: events_pb2.Event, state: RowState | None, policy: Policy = LWW,
         unseen: Collection[str] = ()) -> None:
    """Fill in what a local event must say for the merge: its life, and the writers it
    overwrote (its bases), from this site's registers of the row before the change.

    An edit replaces knowingly only what the user could see (DESIGN §3.3): a column in
    ``unseen`` — its winning value is not what the table shows here (a value this site's
    narrower column could not hold) — gets no base, so the write is concurrent with that
    value and whichever loses is on record."""
    if event.op == events_pb2.OP_INSERT:
        if state is not None and not state.exists:
            event.follows.CopyFrom(stamp_ref(state.generation))
            event.exist_base.CopyFrom(event_ref(max(state.current.ended).event))
        return
    assert state is not None
    event.generation.CopyFrom(stamp_ref(state.generation))
    writers = state.current.writers(policy)
    if event.op == events_pb2.OP_UPDATE:
        for column in event.columns:
            if column.column in writers and column.column not in unseen:
                column.base.CopyFrom(event_ref(writers[column.column]))
    else:
        for name in sorted(writers):
            event.delete_bases.add(column=name, base=event_ref(writers[name]))
        # The references it knew: a delete that did not know one is overruled (merge.py).
        # It knew every earlier write of its own origin: a row its site made reference the
        # row and that still did would have stopped the delete there (or gone with it). Said
        # outright: such a write may not be counted here (a reference by a UNIQUE value to
        # a row gone from the table when the publisher looked), while a site that applies
        # it counts it (issue 18, H1's F1: a vehicle kept at the other sites for good).
        known = dict(state.refs)
        own = (event.origin.site, event.origin.incarnation)
        if event.origin.site and event.seq > 1:
            known[own] = max(known.get(own, 0), event.seq - 1)
        event.known_refs.SetInParent()
        event.known_refs.refs.extend(_ref_list(known))


def knows_values(state: RowState | None, columns: Collection[str], policy: Policy = LWW
                 ) -> bool:
    """Whether the registers hold the current value of each of ``columns`` (else
    :func:`drop_unchanged` cannot tell a re-saved value from a written one)."""
    if state is None:
        return False
    life = state.current
    return all(c in life.heads and life.winner(c, policy).value is not None for c in columns)


def drop_unchanged(event: events_pb2.Event, state: RowState, columns: Collection[str],
                   policy: Policy = LWW) -> bool:
    """Remove from a local UPDATE event those of ``columns`` whose value is the one this
    site's registers hold for them (its own earlier write or an applied one): the capture
    trigger cannot compare ARRAYs, so it records one on every update of its row, and such a
    copy must not overwrite another site's concurrent change (DESIGN §3.1). A column whose
    value the registers do not know (a row that predates capture: the publisher compares
    it with the old value the trigger recorded first) stays a write. Returns whether the
    event still writes a column."""
    life = state.current
    for i in reversed(range(len(event.columns))):
        column = event.columns[i]
        if column.column not in columns or column.column not in life.heads:
            continue
        held = life.winner(column.column, policy).value
        if held is not None and held == column.value.SerializeToString(deterministic=True):
            del event.columns[i]
    return len(event.columns) > 0
