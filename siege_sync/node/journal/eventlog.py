"""The stored events of every origin (``SYNC$EVENTS``): appended in segments, read in order.

An event is stored verbatim — the exact bytes its origin serialized, which its hash chain
covers — and forwarded as is. Events are appended in *segments*: one row holds a run of
consecutive events of one origin (``FIRST_SEQ`` .. ``LAST_SEQ``) as length-prefixed bodies
in one BLOB. One row per event would cost the engine a record and an index entry per event
and, through a server, a BLOB round trip per event; a segment costs them once per few hundred.

Must never re-serialize, reorder or alter an event body. ``append`` and ``read_with`` run in
the caller's transaction; ``read`` and ``stored_events`` open a short read transaction of their
own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from firebird.driver import Connection, Cursor

from ..db.database import READ_COMMITTED_RW, transaction
from .capture import EVENTS_TABLE

SEGMENT_BYTES = 256 * 1024
SEGMENT_EVENTS = 2000
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    stamp: int
    hash: bytes  # sha256 of body
    body: bytes


def append(cur: Cursor, origin: str, incarnation: int, events: list[StoredEvent]) -> int:
    """Append consecutive events of one origin; returns the number of segments written."""
    segments = 0
    start = 0
    while start < len(events):
        end, size = start, 0
        while end < len(events) and end - start < SEGMENT_EVENTS and (
                end == start or size + len(events[end].body) <= SEGMENT_BYTES):
            size += len(events[end].body) + _LEN.size
            end += 1
        run = events[start:end]
        blob = b"".join(_LEN.pack(len(e.body)) + e.body for e in run)
        cur.execute(
            f"INSERT INTO {EVENTS_TABLE} (ORIGIN, INCARNATION, FIRST_SEQ, LAST_SEQ, LAST_STAMP, "
            "HEAD, BODY) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (origin, incarnation, run[0].seq, run[-1].seq, run[-1].stamp, run[-1].hash, blob))
        segments += 1
        start = end
    return segments


def split(blob: bytes) -> Iterator[bytes]:
    """The event bodies of one segment, in order."""
    at = 0
    while at < len(blob):
        (n,) = _LEN.unpack_from(blob, at)
        at += _LEN.size
        yield blob[at:at + n]
        at += n


def read(con: Connection, origin: str, after_seq: int = 0,
         incarnation: int | None = None) -> Iterator[bytes]:
    """Bodies of ``origin``'s events with seq > ``after_seq``, in order (by incarnation
    then seq when ``incarnation`` is not given)."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            yield from read_with(cur, origin, after_seq, incarnation)
        finally:
            cur.close()


def read_with(cur: Cursor, origin: str, after_seq: int = 0,
              incarnation: int | None = None) -> Iterator[bytes]:
    """``read`` in the caller's transaction (its cursor: one read of many origins)."""
    sql = (f"SELECT FIRST_SEQ, BODY FROM {EVENTS_TABLE} WHERE ORIGIN = ? "
           "AND LAST_SEQ > ?" + (" AND INCARNATION = ?" if incarnation is not None
                                 else "") + " ORDER BY INCARNATION, FIRST_SEQ")
    params: list[object] = [origin, after_seq]
    if incarnation is not None:
        params.append(incarnation)
    cur.execute(sql, params)
    for first, body in cur:
        if hasattr(body, "read"):
            data = body.read()
            body.close()
            body = data
        for seq, event in enumerate(split(body), start=int(first)):
            if seq > after_seq:
                yield event


def stored_events(con: Connection) -> int:
    """How many events this database's log holds (every origin)."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT COALESCE(SUM(LAST_SEQ - FIRST_SEQ + 1), 0) FROM {EVENTS_TABLE}")
            return int(cur.fetchone()[0])
        finally:
            cur.close()
