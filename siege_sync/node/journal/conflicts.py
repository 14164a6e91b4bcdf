"""Losing versions on record (``SYNC$CONFLICTS``): recording, listing, re-applying by hand.

Owns the record of every version that lost a merge (DESIGN §3.3): which row, what kind of
loss, the losing write and its value, what it lost to. A record's identity is the same at
every site (a hash of table, key and the loss's identity), so sites that merged the same
events hold the same records. Re-applying a losing version is an ordinary local write of its
values: the capture trigger records it, and it travels as a new event that knowingly
overwrites the current value everywhere — nothing is changed behind the merge's back.

What a loser lost to is said in words (``Conflict.lost_to``), built when records are listed
from the stored events (``SYNC$EVENTS``), so every site that holds the same events says the
same. The record's WINNER is the head that stands *now*, which is not always what beat the
loser: a column write that lost to a concurrent write W stays a losing head when W is later
overwritten knowingly — even by the loser's own site, whose later write names W, the value
it showed, not the loser — so the winner on record can be a later write of the loser's own
site. The words follow the winner's bases back to the write that beat the loser ("lost to
lyon/1#40 (concurrent), which siege/1#337 later overwrote"); a lost life is told the same way
through the inserts that followed it. Events purged by retention leave plainer words.

An operator marks records seen (``mark_seen``, ``mark_seen_before``: ``siege-ctl conflicts
--ack``): they stay on record, and listings leave them out unless asked. The marks live in
``SYNC$STATE`` at the node that was asked (the siège), not in the records.

``record`` (applier, publisher) and ``record_overwritten`` (repair, resync) run in the
caller's transaction; the others open their own. Must never change a record's identity or its
stored refs when saying it in words.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from firebird.driver import Connection, Cursor

from ...proto import events_pb2, values_pb2
from ..db import values
from ..db.database import READ_COMMITTED_RW, SNAPSHOT_RW, StatementCache, quote, transaction
from ..db.schema import Table, introspect
from ..model import registers
from ..model.merge import LWW, EventId, Head, Loss, LossKind, Policy, Write
from . import eventlog
from .capture import (
    CONFLICTS_TABLE,
    EVENTS_TABLE,
    get_state,
    set_state,
    states_starting,
    table_registry,
)

# Records an operator marked seen (SYNC$STATE: the record table's columns stay as
# installed): one state per record, and a date before which every record counts as seen.
SEEN = "conflict_seen:"
SEEN_BEFORE = "conflicts_seen_before"
_SEEN_ID = 48  # hex digits of a record's identity in its mark (a state's name: 63 at most)


class ConflictError(Exception):
    pass


@dataclass(frozen=True)
class Conflict:
    ident: str  # hex; its first 12 characters name it for an operator
    table: str
    key: list[values_pb2.Value]
    kind: str
    generation: str
    loser: str
    column: str | None
    value: values_pb2.Value | None
    winner: str | None
    recorded: datetime
    reapplied: datetime | None
    awaiting_decision: bool = False  # a `manual` table: the lww value stands until decided
    lost_to: str = ""  # what the loser lost to, in words (see the module docstring)
    seen: bool = False  # an operator marked it seen (mark_seen): kept, listed on demand
    # When the losing write was made at its site (UTC; None: not known — recorded by a node
    # older than the column, or an analyse or resync record).
    changed: datetime | None = None

    @property
    def short_id(self) -> str:
        return self.ident[:12]

    @property
    def sentence(self) -> str:
        """The whole loss in one line: "siege/1#15 (PROJECTED_BUDGET) lost to ..."."""
        what = f" ({self.column})" if self.column else ""
        return f"{self.loser}{what} lost to {self.lost_to or self.winner or '?'}"


def _ref(eid: EventId) -> str:
    return f"{eid.site}/{eid.incarnation}#{eid.seq}"


def _ident(number: int, row: bytes, loss: Loss) -> bytes:
    kind, gen, loser, column = loss.identity
    return hashlib.sha256(f"{number}|{row.hex()}|{kind.value}|{_ref(gen)}|{_ref(loser)}|"
                          f"{column}".encode()).digest()


_RETRACT = f"DELETE FROM {CONFLICTS_TABLE} WHERE IDENT = ?"
_RECORD = (f"UPDATE OR INSERT INTO {CONFLICTS_TABLE} (IDENT, TBL_NO, KEY_HASH, KEY_DATA, KIND, "
           "GEN, LOSER, COL, WINNER, VAL, DECIDE, CHANGED_US, RECORDED) VALUES (?, ?, ?, ?, ?, "
           "?, ?, ?, ?, ?, ?, ?, CAST('NOW' AS TIMESTAMP)) MATCHING (IDENT)")


def record(cur: Cursor, number: int, key: Sequence[values_pb2.Value], row: bytes,
           new: set[Loss], retracted: set[Loss], decide: bool = False,
           cache: StatementCache | None = None) -> None:
    """Put new losses on record; drop those the registers no longer hold (a losing head its
    own origin later overwrote knowingly). ``row`` is the row's identity
    (``registers.key_identity``): a loss is the same record whichever engine-equal spelling of
    the key the event at hand carries (``key``, kept for showing and re-applying).
    ``cache``: the caller's prepared statements (an apply records many)."""
    def run(sql: str, params: Sequence[object]) -> None:
        if cache is None:
            cur.execute(sql, params)
        else:
            cache.run(cur, sql, params)

    kdata = registers.key_data(key)
    khash = row
    for loss in retracted:
        run(_RETRACT, (_ident(number, row, loss),))
    for loss in new:
        run(_RECORD, (_ident(number, row, loss), number, khash, kdata, loss.kind.value,
                      _ref(loss.generation), _ref(loss.loser), loss.column, _ref(loss.winner),
                      loss.value, 1 if decide else 0, loss.at or None))


def record_overwritten(cur: Cursor, number: int, key: Sequence[values_pb2.Value],
                       column: str | None, value: values_pb2.Value | None, kind: str,
                       loser: str, winner: str) -> None:
    """Put on record a value that was replaced outside the merge — by an operator's repair
    (kind ``analyse``) or a resync (kind ``resync``) — so that it can be read and written
    again (``reapply``). ``column`` None: the row's removal (a delete) was what lost."""
    kdata = registers.key_data(list(key))
    body = value.SerializeToString(deterministic=True) if value is not None else None
    ident = hashlib.sha256(f"{kind}|{number}|{kdata.hex()}|{column}|"
                           f"{(body or b'').hex()}|{loser}|{winner}".encode()).digest()
    cur.execute(
        f"UPDATE OR INSERT INTO {CONFLICTS_TABLE} (IDENT, TBL_NO, KEY_HASH, KEY_DATA, KIND, "
        "GEN, LOSER, COL, WINNER, VAL, DECIDE, RECORDED) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, 0, CAST('NOW' AS TIMESTAMP)) MATCHING (IDENT)",
        (ident, number, hashlib.sha256(kdata).digest(), kdata, kind, kind, loser, column,
         winner, body))


def listing(con: Connection, table: str | None = None,
            policies: Mapping[str, Policy] | None = None) -> list[Conflict]:
    """Every record (of ``table``), oldest first, each with what it lost to in words
    (``policies``: the tables' merge policies, which rank a column's writes)."""
    names = {no: name for no, (name, _k) in table_registry(con).items()}
    seen = set(states_starting(con, SEEN))
    seen_before = get_state(con, SEEN_BEFORE)
    before = datetime.fromisoformat(seen_before) if seen_before else None
    # A snapshot: a record the node rewrites meanwhile (UPDATE OR INSERT) frees its old
    # value BLOB, which a read-committed cursor may still be about to open ("BLOB not
    # found": the chaos run's oracle, reading while a site applied).
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        events = _Events(tm.cursor())
        try:
            cur.execute(f"SELECT IDENT, TBL_NO, KEY_DATA, KIND, GEN, LOSER, COL, VAL, WINNER, "
                        f"RECORDED, REAPPLIED, DECIDE, CHANGED_US FROM {CONFLICTS_TABLE} "
                        "ORDER BY RECORDED, IDENT")
            out = []
            for (ident, no, kdata, kind, gen, loser, col, val, winner, at, again, decide,
                 changed) in cur:
                if hasattr(val, "read"):
                    blob = val
                    val = blob.read()
                    blob.close()
                name = names.get(no, f"#{no}")
                if table is not None and name != table:
                    continue
                out.append(Conflict(ident.hex(), name, registers.key_values(kdata or b""),
                                    kind, gen, loser, col,
                                    values_pb2.Value.FromString(val) if val else None,
                                    winner, at, again, bool(decide),
                                    lost_to(events, kind, loser, col, winner,
                                            (policies or {}).get(name, LWW)),
                                    f"{SEEN}{ident.hex()[:_SEEN_ID]}" in seen
                                    or (before is not None and at is not None and at < before),
                                    _moment(changed)))
            return out
        finally:
            events.close()
            cur.close()


_NO_SEQ = 1 << 62  # above any sequence number: bisects to the run a seq is in


class _Events:
    """The stored events a listing looks at, by id: one query per origin for where its runs
    of events are, one read per run looked into."""

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur
        self._runs: dict[tuple[str, int], list[tuple[int, int]]] = {}  # first, last seq
        self._segments: dict[tuple[str, int, int], list[bytes]] = {}
        self._found: dict[EventId, events_pb2.Event | None] = {}
        self._writes: dict[EventId, Write | None] = {}

    def get(self, eid: EventId) -> events_pb2.Event | None:
        """The event, or None when this site holds it no more (purged) or never did."""
        if eid not in self._found:
            self._found[eid] = self._read(eid)
        return self._found[eid]

    def _read(self, eid: EventId) -> events_pb2.Event | None:
        if not eid.site or eid.seq <= 0:
            return None  # a row's pre-existing life: no event
        origin = (eid.site, eid.incarnation)
        if origin not in self._runs:
            self._cur.execute(f"SELECT FIRST_SEQ, LAST_SEQ FROM {EVENTS_TABLE} WHERE "
                              "ORIGIN = ? AND INCARNATION = ? ORDER BY FIRST_SEQ", origin)
            self._runs[origin] = [(int(a), int(b)) for a, b in self._cur.fetchall()]
        runs = self._runs[origin]
        at = bisect.bisect_right(runs, (eid.seq, _NO_SEQ)) - 1
        if at < 0 or not runs[at][0] <= eid.seq <= runs[at][1]:
            return None
        first = runs[at][0]
        segment = (eid.site, eid.incarnation, first)
        if segment not in self._segments:
            self._cur.execute(f"SELECT BODY FROM {EVENTS_TABLE} WHERE ORIGIN = ? AND "
                              "INCARNATION = ? AND FIRST_SEQ = ?", segment)
            row = self._cur.fetchone()
            body = row[0] if row is not None else b""
            if hasattr(body, "read"):
                reader = body
                body = reader.read()
                reader.close()
            self._segments[segment] = list(eventlog.split(body))
        bodies = self._segments[segment]
        at = eid.seq - first
        return events_pb2.Event.FromString(bodies[at]) if 0 <= at < len(bodies) else None

    def write(self, eid: EventId) -> Write | None:
        """The merge's view of the event (None as for ``get``)."""
        if eid not in self._writes:
            event = self.get(eid)
            self._writes[eid] = registers.write_of(event) if event is not None else None
        return self._writes[eid]

    def close(self) -> None:
        self._cur.close()


def _moment(stamp_us: int | None) -> datetime | None:
    """A stamp's wall time (µs since the epoch, UTC) as an aware datetime."""
    if not stamp_us:
        return None
    return datetime.fromtimestamp(int(stamp_us) / 1_000_000, tz=UTC)


def _parse_ref(text: str | None) -> EventId | None:
    """The inverse of ``_ref`` ("site/incarnation#seq"); None for other words."""
    if not text:
        return None
    head, hash_, seq = text.rpartition("#")
    site, slash, incarnation = head.rpartition("/")
    if not hash_ or not slash or not seq.isdigit() or not incarnation.isdigit():
        return None
    return EventId(site, int(incarnation), int(seq))


def _same_origin(a: EventId, b: EventId) -> bool:
    return a.site == b.site and a.incarnation == b.incarnation


def _then(refs: list[str]) -> str:
    """"a", "a then b", "a, 3 more, then z": who overwrote, in order."""
    if len(refs) <= 3:
        return " then ".join(refs)
    return f"{refs[0]}, {len(refs) - 2} more, then {refs[-1]}"


# Longest chain of knowing overwrites followed back from a winner (a guard, not a limit met
# in practice: each step is one more write of the same column that saw the one before).
_MAX_STEPS = 10_000


def lost_to(events: _Events, kind: str, loser: str, column: str | None, winner: str | None,
            policy: Policy = LWW) -> str:
    """What ``loser`` lost to, in words an operator can follow (module docstring)."""
    lid, wid = _parse_ref(loser), _parse_ref(winner)
    if wid is None or lid is None:
        return winner or ""  # a repair's or a resync's record: its own words
    if kind == LossKind.COLUMN.value and column is not None:
        return _column_words(events, lid, wid, column, policy)
    if kind == LossKind.GENERATION.value:
        return _life_words(events, lid, wid)
    if kind == LossKind.UPDATE_OF_DEAD_ROW.value:
        if _same_origin(lid, wid) and lid.seq < wid.seq:
            return (f"{winner}, a later delete of the row by the same site (this update had "
                    "lost its column to another value there; that loss is on record too)")
        return f"{winner}, a delete of the row that had not seen this update"
    if kind == LossKind.DELETE_OF_REFERENCED_ROW.value:
        return f"{winner}, a write that made another row reference this one: the row stays"
    if kind == LossKind.UNIQUE_CLASH.value:
        return f"{winner}, a later write of the same unique value in another row"
    if kind == LossKind.REPARENTED.value:
        return (f"{winner}, an insert of the key this row references: the row it was "
                "written for lost to it")
    if kind == LossKind.WHOLE_ROW.value:
        return (f"{winner}, the latest write of the row: merging the columns broke a CHECK "
                "constraint, so the row is that write's whole row (the values its site saw)")
    return winner or ""


def _column_words(events: _Events, lid: EventId, wid: EventId, column: str,
                  policy: Policy) -> str:
    """A column write that lost: the winner standing now, followed back through the writes
    it knowingly overwrote (their bases) to the one that beat the loser — the deepest that
    still outranks it. The winner's site, when it is the loser's, had the loser when it wrote
    and named another value: what it overwrote (its base) is what beat the loser there."""
    winner = _ref(wid)
    loser_write = events.write(lid)
    chain: list[tuple[EventId, Write | None]] = [(wid, events.write(wid))]

    def base_of(write: Write | None) -> EventId | None:
        base = write.bases.get(column) if write is not None else None
        return base if base is not None and base != lid and base.site else None

    def outranks(write: Write | None) -> bool:
        if write is None or loser_write is None:
            return False
        return policy.rank(Head(write.stamp, None)) > policy.rank(
            Head(loser_write.stamp, None))

    own = _same_origin(lid, wid) and lid.seq < wid.seq
    if own and (base := base_of(chain[0][1])) is not None:
        chain.append((base, events.write(base)))
    while len(chain) < _MAX_STEPS and (base := base_of(chain[-1][1])) is not None:
        write = events.write(base)
        if not outranks(write):
            break
        chain.append((base, write))
    if len(chain) == 1:
        if own and chain[0][1] is None:  # the events that tell what stood between are gone
            return (f"{winner}, a later write of the same site that replaced another "
                    "site's value shown there, not this one (that value beat this write; "
                    "its events are purged here)")
        if own:
            return f"{winner}, a later write of the same site made without seeing this value"
        return f"{winner} (concurrent)"
    later = [_ref(eid) for eid, _w in reversed(chain[:-1])]
    return f"{_ref(chain[-1][0])} (concurrent), which {_then(later)} later overwrote"


def _life_words(events: _Events, lid: EventId, wid: EventId) -> str:
    """A life that lost to a concurrent insert: the current life, followed back through the
    lives it knowingly followed (deleted, then inserted again) to the one that beat it."""
    winner = _ref(wid)
    lost = events.write(lid)
    chain: list[EventId] = [wid]
    write = events.write(wid)
    while write is not None and write.follows is not None and len(chain) < _MAX_STEPS:
        if lost is None or not write.follows > lost.stamp:
            break
        chain.append(write.follows.event)
        write = events.write(write.follows.event)
    if len(chain) == 1:
        return f"{winner}, a concurrent insert of the same key"
    later = [_ref(eid) for eid in reversed(chain[:-1])]
    return (f"{_ref(chain[-1])}, a concurrent insert of the same key; that row was later "
            f"deleted and inserted again by {_then(later)}")


def find(con: Connection, short_id: str) -> Conflict:
    found = [c for c in listing(con) if c.ident.startswith(short_id.lower())]
    if not found:
        raise ConflictError(f"no change set aside {short_id!r} is on record here; `conflicts` "
                            "lists them (siege-ctl at the siège, siege-node at a site)")
    if len(found) > 1:
        raise ConflictError(f"{short_id!r} names {len(found)} conflicts; give more characters")
    return found[0]


def mark_seen(con: Connection, short_id: str) -> Conflict:
    """An operator has seen this record: kept on record, left out of listings unless asked
    (``siege-ctl conflicts --ack``)."""
    conflict = find(con, short_id)
    set_state(con, f"{SEEN}{conflict.ident[:_SEEN_ID]}",
              datetime.now().isoformat(timespec="seconds"))
    return conflict


def mark_seen_before(con: Connection, before: datetime) -> int:
    """Every record made before ``before`` seen (``--ack-before``); how many that marks."""
    earlier = get_state(con, SEEN_BEFORE)
    if earlier and datetime.fromisoformat(earlier) > before:
        before = datetime.fromisoformat(earlier)  # (never taken back by an older date)
    marked = sum(1 for c in listing(con) if not c.seen and c.recorded < before)
    set_state(con, SEEN_BEFORE, before.isoformat(timespec="seconds"))
    return marked


def reapply(con: Connection, short_id: str) -> Conflict:
    """Write a losing column value back as a new local change (which then wins knowingly
    everywhere). Whole lost lives are restored column by column the same way."""
    conflict = find(con, short_id)
    if conflict.kind == LossKind.REPARENTED.value:
        raise ConflictError(
            f"conflict {conflict.short_id}: this row references {conflict.column} of a row "
            f"whose life it was written for ({conflict.generation}) lost to another insert of "
            f"the same key ({conflict.winner}); nothing was overwritten. Point it at the right "
            "row, or delete it, at any site")
    if conflict.column is None or conflict.value is None:
        raise ConflictError(
            f"conflict {conflict.short_id} is a whole row that lost to another insert of the "
            "same key; re-apply its columns one by one from the losing site's values")
    table = introspect(con).tables.get(conflict.table)
    if table is None:
        raise ConflictError(f"table {conflict.table} is not replicated here any more")
    _write(con, table, conflict)
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"UPDATE {CONFLICTS_TABLE} SET REAPPLIED = CAST('NOW' AS TIMESTAMP), "
                    "DECIDE = 0 WHERE IDENT = ?", (bytes.fromhex(conflict.ident),))
        cur.close()
    return conflict


def _write(con: Connection, table: Table, conflict: Conflict) -> None:
    assert conflict.column is not None and conflict.value is not None
    d = con.sql_dialect
    key_cols = table.key_columns
    column = table.column(conflict.column)
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c in key_cols)
    key_params = [values.decode(c.type, v) for c, v in zip(key_cols, conflict.key, strict=True)]
    value = values.decode(column.type, conflict.value)
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"UPDATE {quote(table.name, d)} SET {quote(column.name, d)} = "
                        f"{values.param_expr(column)} WHERE {where}", [value, *key_params])
            if cur.affected_rows == 0:
                # The row died (its update lost to a delete): bring it back with the key and
                # the losing value; the insert travels like any other.
                names = [quote(c.name, d) for c in key_cols] + [quote(column.name, d)]
                marks = [values.param_expr(c) for c in key_cols] + [values.param_expr(column)]
                cur.execute(f"INSERT INTO {quote(table.name, d)} ({', '.join(names)}) "
                            f"VALUES ({', '.join(marks)})", [*key_params, value])
        finally:
            cur.close()


def current_value(con: Connection, conflict: Conflict) -> values_pb2.Value | None:
    """What the row holds now in the losing version's column (None: no such row or column
    any more) — the winning side, to show next to the loser."""
    if conflict.column is None:
        return None
    table = introspect(con, only=conflict.table).tables.get(conflict.table)
    if table is None or conflict.column not in {c.name for c in table.columns}:
        return None
    d = con.sql_dialect
    column = table.column(conflict.column)
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}"
                         for c in table.key_columns)
    params = [values.decode(c.type, v) for c, v in zip(table.key_columns, conflict.key,
                                                       strict=True)]
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT {values.select_expr(column, d)} FROM {quote(table.name, d)} "
                        f"WHERE {where}", params)
            row = cur.fetchone()
            if row is None:
                return None
            raw = row[0]
            if hasattr(raw, "read"):
                reader = raw
                raw = reader.read()
                reader.close()
            return values.encode(column.type, raw) if not (
                isinstance(raw, bytes | str) and len(raw) >= values.LARGE_BLOB) else None
        finally:
            cur.close()
