"""A site's own chain, confirmed by a peer; a rewound site takes a new incarnation and
publishes none of its changes twice.

A site restored from an old copy of its database would publish new events under sequence
numbers its peers already hold with other content. So, after a start, a node publishes
nothing until a peer has told it how far it holds this site's events (the seq and the hash of
the last one) and that matches the site's own chain (DESIGN §3.6):

* the peer holds nothing newer, and the hashes agree: confirmed, publishing may go on;
* the peer holds *more* of our events than we published, or an incarnation of this site
  newer than ours: we were rewound — *if* it is true. A peer's word alone proves nothing
  (any site could push another into a new incarnation: issue 20), so the check first only
  says ``CLAIMED``; the replica acts once the claimant has sent one of those transactions,
  signed by this site's own certificate and chaining from our head or opening a newer
  incarnation of ours — or, from a coordinator only, once it says it purged them (every site
  had them: ``replica.claim_purged``). Then
  we take a new incarnation above every one the peer knows (a new origin identity: its
  numbers start again at 1, so none is ever reused) and record that our old incarnation is
  applied up to where our copy stops — the peers then send the rest of it back, and it is
  applied like any other site's events;
* the peer's hash differs at a number we also published: our copy went on publishing
  different events under the same numbers. Nothing is changed automatically; it needs an
  operator's ``resync``;
* the peer's vector is empty while we published events (a peer that lost its vector, or a
  site that says nothing to lift the safety net — issue 20): it confirms nothing; a peer
  that holds events must. The caller decides whose empty vector still counts (the
  replica: the siège's and the stand-ins', or a new mesh's first round would fail).

**Restored captured changes** (issue 17 item 5). The copy may hold captured changes (image
tables) that the old incarnation published *after* the copy was taken: their events are among
those the peers send back. Published again under the new incarnation, an insert among them
would start a newer life of its row, beating the original and every later edit made on it
elsewhere. So a rewind that finds captured changes keeps a gate (``SYNC$STATE`` row
``rewound``): the log ids captured so far (the restored entries are among them), the moment
of a gbak restore (it renumbers transactions from 1), which image tables hold such entries,
and per old incarnation how far the peers hold it. While the peers' events are not all back
here and such entries remain, the publisher publishes nothing (``holding_back``): a later
change may depend on a restored one, and order matters. An old event of this site applied
here drops, in its apply transaction, the restored entries of its source transaction
(``forget_republished``): same transaction number, and one entry with the event's exact
capture time, table, key and operation (with a file copy transaction numbers go on from the
copy's, so new entries never share a restored one's number; after a gbak restore new entries
are captured after its creation date). Such a transaction is already in the rows: the applier
merges it into the registers only, as the publisher did when it published it, so a change made
on those rows since the restore is kept and published after it. What remains was never
published, and is published once the gate opens. A later hello that shows a peer holding more
of an old incarnation raises its target. The gate opens after ``GATE_LIMIT_S`` whatever
came back (said loudly): those events were purged (the site needs a resync) or no peer holding
them reaches this site, and its users' changes must not wait for ever.

Changes the publisher's counters and the vector in one transaction; never wipes anything the
mesh lacks: only captured entries whose events the mesh holds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from firebird.driver import Connection, Cursor
from google.protobuf.message import DecodeError

from ...proto import events_pb2
from ..db import values
from ..db.database import READ_COMMITTED_RW, SNAPSHOT_RW, transaction
from .capture import (
    IMAGE_PREFIX,
    LOG_SEQ,
    LOG_TABLE,
    OP_DELETE,
    OP_ERROR,
    OP_INSERT,
    OP_UPDATE,
    STATE_TABLE,
    VECTOR_TABLE,
    image_columns,
    image_tables,
    table_registry,
)
from .eventlog import read

log = logging.getLogger(__name__)

REWOUND_STATE = "rewound"
GATE_LIMIT_S = 24 * 3600  # the longest a restored site's captured changes wait (see below)
_OPS = {events_pb2.OP_INSERT: OP_INSERT, events_pb2.OP_UPDATE: OP_UPDATE,
        events_pb2.OP_DELETE: OP_DELETE}


class ChainCheck(Enum):
    CONFIRMED = "confirmed"
    NEW_INCARNATION = "new-incarnation"
    DIVERGED = "diverged"
    UNCONFIRMED = "unconfirmed"  # the peer holds none of our events: it proves nothing
    CLAIMED = "claimed"  # the peer says it holds more of ours: nothing done until proved


@dataclass
class Restored:
    """The gate a rewind left: captured entries restored from the copy wait until the old
    incarnation's events the peers hold are back here (see the module docstring)."""

    boundary: int  # captured entries with a log id up to this one may be restored ones
    restored_at: datetime | None  # a gbak restore's creation date: restored ones predate it
    tables: tuple[int, ...]  # image tables that held such entries
    targets: dict[int, int] = field(default_factory=dict)  # old incarnation -> seq held
    since: float = 0.0  # when the gate was set (seconds since the Unix epoch)

    def encode(self) -> str:
        at = self.restored_at.isoformat() if self.restored_at is not None else ""
        return (f"{self.boundary};{at};{','.join(map(str, self.tables))};"
                + ",".join(f"{inc}:{seq}" for inc, seq in sorted(self.targets.items()))
                + f";{int(self.since)}")

    @classmethod
    def decode(cls, text: str) -> Restored | None:
        try:
            boundary, at, tables, targets, since = text.split(";")
            return cls(int(boundary), datetime.fromisoformat(at) if at else None,
                       tuple(int(t) for t in tables.split(",") if t),
                       {int(i): int(s) for i, s in (p.split(":") for p in targets.split(",")
                                                    if p)}, float(since))
        except ValueError:
            return None  # hand-edited: no gate (publishing as before this feature)


def _event_hash(con: Connection, site: str, incarnation: int, seq: int) -> bytes | None:
    """The hash of our event ``seq``, or None when it is no longer stored (purged)."""
    for body in read(con, site, seq - 1, incarnation):
        if events_pb2.Event.FromString(body).seq != seq:
            return None  # the first one stored is a later one
        return hashlib.sha256(body).digest()
    return None


def confirm_own_chain(con: Connection, site: str, peer_seq: int, peer_head: bytes,
                      peer_holds: Mapping[int, int] | None = None,
                      peer_holds_anything: bool = True, proved: bool = True) -> ChainCheck:
    """Compare what a peer holds of this site's current incarnation with our own chain.
    ``peer_holds``: the seq the peer holds of each incarnation of this site (by default
    only the current one's, ``peer_seq``); ``peer_holds_anything``: whether its vector
    names any event at all (an empty one confirms nothing). ``proved``: whether the peer
    showed the events it claims (else a claim of more is only ``CLAIMED``, nothing
    changed)."""
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            incarnation, seq, head = _chain(cur)
            holds = {inc: s for inc, s in (peer_holds or {}).items() if s > 0}
            if peer_seq:
                holds[incarnation] = peer_seq
            newer = max((inc for inc in holds if inc > incarnation), default=None)
            _raise_targets(cur, holds, incarnation)
            if 0 < peer_seq <= seq:
                ours = head if peer_seq == seq else _event_hash(con, site, incarnation, peer_seq)
                # None: that event is purged here, which retention does only once every
                # site held it — this peer included. Nothing left to compare.
                if ours != peer_head and ours is not None:
                    log.error("[%s] a peer holds a different event #%d of this site: this "
                              "database went on from an older copy; run resync", site,
                              peer_seq)
                    return ChainCheck.DIVERGED
            if newer is None and seq > 0 and not holds and not peer_holds_anything:
                return ChainCheck.UNCONFIRMED
            if newer is None and peer_seq <= seq:
                return ChainCheck.CONFIRMED
            if not proved:
                return ChainCheck.CLAIMED
            # The peer holds events of ours we do not (or a later incarnation of this site):
            # we are an older copy. Our old incarnation is ours up to `seq`; the rest comes
            # back from the peers.
            taken = max(incarnation, newer or 0) + 1
            log.warning("[%s] rewound: a peer holds this site's events up to #%d of "
                        "incarnation %d%s, this database only up to #%d; taking incarnation %d",
                        site, peer_seq, incarnation,
                        f" and incarnation {newer}" if newer is not None else "", seq, taken)
            cur.execute(f"UPDATE OR INSERT INTO {VECTOR_TABLE} (ORIGIN, INCARNATION, APPLIED, "
                        "HEAD) VALUES (?, ?, ?, ?) MATCHING (ORIGIN, INCARNATION)",
                        # No event yet: no head (an empty one would be stored as 32 zero
                        # bytes, and the peers' event #1 would not chain to it).
                        (site, incarnation, seq, head or None))
            for name, value in (("incarnation", str(taken)), ("seq", "0"),
                                ("chain_head", "")):
                cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) "
                            "MATCHING (NAME)", (name, value))
            _keep_gate(con, cur, site, {inc: s for inc, s in holds.items() if inc < taken})
            return ChainCheck.NEW_INCARNATION
        finally:
            cur.close()


def own_chain(con: Connection) -> tuple[int, int, bytes]:
    """This site's current incarnation, the seq it published last, and that event's hash."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            return _chain(cur)
        finally:
            cur.close()


def _chain(cur: Cursor) -> tuple[int, int, bytes]:
    cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN "
                "('seq', 'incarnation', 'chain_head')")
    state = dict(cur.fetchall())
    return (int(state.get("incarnation", "1")), int(state.get("seq", "0")),
            bytes.fromhex(state.get("chain_head", "") or ""))


def _ends_transaction(event: events_pb2.Event) -> bool:
    return event.seq == event.tx.first_seq + event.tx.count - 1


def claimed_transaction(site: str, incarnation: int, seq: int, head: bytes,
                        bodies: Iterable[bytes]
                        ) -> tuple[list[events_pb2.Event], list[bytes]] | None:
    """Among ``bodies``, the first whole transaction of this site that it did not publish
    in this database: its next event (#``seq`` + 1 of ``incarnation``, chaining from
    ``head``) up to its transaction's last, else the first transaction of a newer
    incarnation of this site. None when there is none (or not whole yet). Signed by this
    site's certificate (checked by the caller), it proves that a peer holds more of this
    site than this database published: this database is an older copy."""
    ours: dict[tuple[int, int], tuple[events_pb2.Event, bytes]] = {}
    for body in bodies:
        try:
            event = events_pb2.Event.FromString(body)
        except DecodeError:
            continue  # (the applier says what is wrong with it)
        if event.origin.site == site:
            ours[(event.origin.incarnation, event.seq)] = (event, body)
    start: tuple[int, int] | None = None
    following = ours.get((incarnation, seq + 1))
    if following is not None and following[0].prev_hash == head:
        start = (incarnation, seq + 1)
    else:
        start = next(((inc, 1) for inc in sorted({i for i, _n in ours if i > incarnation})
                      if (inc, 1) in ours), None)
    if start is None:
        return None
    events: list[events_pb2.Event] = []
    found: list[bytes] = []
    inc, n = start
    while (inc, n) in ours:
        event, body = ours[(inc, n)]
        events.append(event)
        found.append(body)
        if _ends_transaction(event):
            return events, found
        n += 1
    return None


def transaction_beyond(con: Connection, site: str, incarnation: int, seq: int,
                       newer: int | None, limit: int = 5_000) -> list[bytes]:
    """What a peer that holds more of ``site`` than ``site`` published (its vector says
    ``seq`` of ``incarnation``) sends it in a hello reply as proof: the transaction after
    ``seq``, else the first one of incarnation ``newer``; empty when not stored here or
    longer than ``limit`` events (the streams that follow bring it then)."""
    for inc, after in ((incarnation, seq), (newer, 0)):
        if inc is None:
            continue
        out: list[bytes] = []
        reader = read(con, site, after, inc)
        try:
            for body in reader:
                event = events_pb2.Event.FromString(body)
                if not out and event.seq != after + 1:
                    break  # purged here
                out.append(body)
                if _ends_transaction(event):
                    return out
                if len(out) >= limit:
                    break
        finally:
            reader.close()
    return []


def _load(cur: Cursor) -> Restored | None:
    cur.execute(f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?", (REWOUND_STATE,))
    row = cur.fetchone()
    return Restored.decode(str(row[0])) if row and row[0] else None


def _store(cur: Cursor, gate: Restored | None) -> None:
    if gate is None:
        cur.execute(f"DELETE FROM {STATE_TABLE} WHERE NAME = ?", (REWOUND_STATE,))
        return
    cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) "
                "MATCHING (NAME)", (REWOUND_STATE, gate.encode()))


def _raise_targets(cur: Cursor, holds: Mapping[int, int], incarnation: int) -> None:
    """A gate already kept: a peer holding more of an old incarnation raises its target."""
    gate = _load(cur)
    if gate is None:
        return
    raised = {inc: s for inc, s in holds.items()
              if inc < incarnation and s > gate.targets.get(inc, 0)}
    if raised:
        gate.targets.update(raised)
        _store(cur, gate)


def _keep_gate(con: Connection, cur: Cursor, site: str, holds: Mapping[int, int]) -> None:
    """At a rewind: note the captured entries the copy may have restored, if there are any."""
    cur.execute(f"SELECT GEN_ID({LOG_SEQ}, 0), MON$CREATION_DATE FROM MON$DATABASE")
    boundary, created = cur.fetchone()
    boundary = int(boundary or 0)
    tables = tuple(no for no in image_tables(con) if _has_entries(cur, no, boundary))
    # A gbak restore has a creation date of its own, after the capture of what it restored
    # (a file copy keeps the original's, older than anything captured in it): its
    # transaction numbers started again from 1, and what was captured after it is new.
    gbak = any(_has_entries(cur, no, boundary, before=created) for no in tables) or \
        _has_errors(cur, boundary, before=created)
    restored_at = created if gbak else None
    tables = tuple(no for no in tables if _has_entries(cur, no, boundary, restored_at))
    if not tables and not _has_errors(cur, boundary, restored_at):
        _store(cur, None)  # nothing restored waits: nothing can be published twice
        return
    gate = Restored(boundary, restored_at, tables, dict(holds), time.time())
    # Applied here up to where the copy stops: what is still missing comes back.
    cur.execute(f"SELECT INCARNATION, APPLIED FROM {VECTOR_TABLE} WHERE ORIGIN = ?", (site,))
    have = {int(i): int(a) for i, a in cur.fetchall()}
    gate.targets = {inc: s for inc, s in gate.targets.items() if s > have.get(inc, 0)}
    _store(cur, gate)
    log.warning("[%s] the restored copy holds captured changes: none is published before "
                "this site's own events the peers hold (%s) are back here — those among them "
                "that were already published are not published again", site,
                ", ".join(f"incarnation {i} up to #{s}" for i, s in sorted(gate.targets.items())))


def _has_entries(cur: Cursor, number: int, boundary: int,
                 before: datetime | None = None) -> bool:
    """Whether image table ``number`` holds entries up to log id ``boundary`` (captured
    before ``before``, when given)."""
    cur.execute(f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM {IMAGE_PREFIX}{number} "
                "WHERE SYNC$ID <= ?" + (" AND SYNC$AT < ?" if before is not None else "") + ")",
                (boundary,) if before is None else (boundary, before))
    return cur.fetchone() is not None


def holding_back(con: Connection, site: str) -> str | None:
    """Why the publisher must publish nothing yet (None: go on). Opens the gate for good
    once the old incarnations' events the peers hold are applied here, or no restored entry
    is left."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            gate = _load(cur)
            if gate is None:
                return None
            cur.execute(f"SELECT INCARNATION, APPLIED FROM {VECTOR_TABLE} WHERE ORIGIN = ?",
                        (site,))
            have = {int(i): int(a) for i, a in cur.fetchall()}
            missing = {inc: (have.get(inc, 0), s) for inc, s in gate.targets.items()
                       if have.get(inc, 0) < s}
            waits = missing and (
                any(_has_entries(cur, no, gate.boundary, gate.restored_at) for no in gate.tables)
                or _has_errors(cur, gate.boundary, gate.restored_at))
            if waits and time.time() - gate.since > GATE_LIMIT_S:
                # The peers were told to send those events back long ago: they do not have
                # them any more (a purge: this site needs a resync) or cannot reach us. This
                # site's changes must not wait for ever.
                log.error("[%s] this site's own events published after its restored copy "
                          "(%s) did not come back within %d hours: its captured changes are "
                          "published now, some of them maybe a second time (check "
                          "`siege-ctl conflicts`; `siege-ctl resync` if events were purged)",
                          site, ", ".join(f"incarnation {inc} up to #{s}" for inc, (_a, s)
                                          in sorted(missing.items())), GATE_LIMIT_S // 3600)
                waits = False
            if waits:
                return ("restored from a copy: its captured changes wait until its "
                        "own events published after the copy are back from the peers ("
                        + ", ".join(f"incarnation {inc}: #{a + 1} to #{s}"
                                    for inc, (a, s) in sorted(missing.items()))
                        + "), so that none of them is published twice")
            _store(cur, None)
            log.info("[%s] this site's own events published after the restored copy are "
                     "back: its remaining captured changes are published", site)
            return None
        finally:
            cur.close()


def _has_errors(cur: Cursor, boundary: int, before: datetime | None = None) -> bool:
    """Whether capture failures up to log id ``boundary`` (before ``before``) wait."""
    cur.execute(f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM {LOG_TABLE} "
                f"WHERE OP = '{OP_ERROR}' AND LOG_ID <= ?"
                + (" AND CAPTURED < ?" if before is not None else "") + ")",
                (boundary,) if before is None else (boundary, before))
    return cur.fetchone() is not None


def release(con: Connection, site: str, why: str) -> None:
    """Open the gate now: waiting longer would stop this site's own old events for good
    (``why``). Restored entries not yet matched may then be published a second time."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            if _load(cur) is None:
                return
            _store(cur, None)
        finally:
            cur.close()
    log.warning("[%s] restored captured changes are published before all of this site's "
                "own older events came back: %s", site, why)


def forget_republished(con: Connection, cur: Cursor, site: str,
                       tx: list[events_pb2.Event]) -> bool:
    """Whether ``tx`` (one source transaction of this site's own, of an older incarnation,
    back from a peer) was captured in this restored copy: then its restored entries are
    dropped, in the caller's transaction (``cur``: the apply's), and the rows already show
    it. False without a gate."""
    origin = tx[0].origin
    if origin.site != site:
        return False
    gate = _load(cur)
    if gate is None or not gate.tables:
        return False
    cur.execute(f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = 'incarnation'")
    row = cur.fetchone()
    if origin.incarnation >= (int(row[0]) if row else 1):
        return False
    numbers = {name: no for no, (name, _keys) in table_registry(con).items()
               if no in gate.tables}
    reader = _EntryReader(con, cur, gate, numbers)
    tx_id = tx[0].tx.tx_id
    if not any(reader.published(tx_id, event) for event in tx):
        return False
    dropped = _drop_transaction(cur, gate, tx_id)
    log.info("[%s] %s#%d (incarnation %d): its %d restored captured changes were published "
             "then, not published again", site, site, tx[0].seq, origin.incarnation, dropped)
    return True


class _EntryReader:
    """The restored entries of one image table and one transaction number, read once."""

    def __init__(self, con: Connection, cur: Cursor, gate: Restored,
                 numbers: Mapping[str, int]) -> None:
        self._con, self._cur, self._gate, self._numbers = con, cur, gate, numbers
        self._entries: dict[tuple[int, int], list[tuple[str, int, list[bytes]]]] = {}
        self._keys: dict[int, tuple[list[str], list]] = {}

    def published(self, tx_id: int, event: events_pb2.Event) -> bool:
        number = self._numbers.get(event.table)
        if number is None:
            return False
        want = ([v.SerializeToString(deterministic=True) for v in event.key])
        return any(op == _OPS.get(event.op) and ticks == event.captured_local and key == want
                   for op, ticks, key in self._read(number, tx_id))

    def _read(self, number: int, tx_id: int) -> list[tuple[str, int, list[bytes]]]:
        found = self._entries.get((number, tx_id))
        if found is not None:
            return found
        if number not in self._keys:
            registry = table_registry(self._con)
            columns = {c.name: c for c in image_columns(self._con, number)}
            keys = [columns[k] for k in registry[number][1] if k in columns]
            self._keys[number] = ([values.select_expr(c, self._con.sql_dialect, "I.")
                                   for c in keys], [c.type for c in keys])
        exprs, types = self._keys[number]
        self._cur.execute(
            f"SELECT I.SYNC$OP, I.SYNC$AT{''.join(', ' + e for e in exprs)} FROM "
            f"{IMAGE_PREFIX}{number} I WHERE I.SYNC$TX = ? AND I.SYNC$ID <= ?",
            (tx_id, self._gate.boundary))
        found = [(str(op).strip(), _ticks(at),
                  [values.encode(t, v).SerializeToString(deterministic=True)
                   for t, v in zip(types, raw, strict=True)])
                 for op, at, *raw in self._cur.fetchall()]
        self._entries[(number, tx_id)] = found
        return found


def _drop_transaction(cur: Cursor, gate: Restored, tx_id: int) -> int:
    """Delete every restored entry of source transaction ``tx_id`` (an update that only
    re-saved an array has no event of its own, but went with its transaction)."""
    bound, params = "", [tx_id, gate.boundary]
    if gate.restored_at is not None:
        bound = " AND {at} < ?"
        params.append(gate.restored_at)
    dropped = 0
    for number in gate.tables:
        cur.execute(f"DELETE FROM {IMAGE_PREFIX}{number} WHERE SYNC$TX = ? AND SYNC$ID <= ?"
                    + bound.format(at="SYNC$AT"), params)
        dropped += cur.affected_rows
    cur.execute(f"DELETE FROM {LOG_TABLE} WHERE OP = '{OP_ERROR}' AND TX_ID = ? "
                "AND LOG_ID <= ?" + bound.format(at="CAPTURED"), params)
    return dropped


def _ticks(at: datetime) -> int:
    """Capture time as the publisher puts it in an event (``captured_local``): 100-microsecond
    ticks since 0001-01-01, local."""
    seconds = at.hour * 3600 + at.minute * 60 + at.second
    return ((at.toordinal() - 1) * 86_400 + seconds) * 10_000 + at.microsecond // 100
