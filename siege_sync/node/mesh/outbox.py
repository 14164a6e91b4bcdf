"""What a peer lacks of what this database holds, as the messages a stream sends.

Owns reading the event log for a peer's vector: whole source transactions, each origin in
order, in batches of about ``max_events`` (a transaction much larger than a batch is cut
anyway: messages stay bounded, the receiver keeps its first part); the origins a peer lacks
little of — in a quiet round, every other site's heartbeat — read together in one
transaction and sent as one message (one apply call at the peer, not one per origin: the
round's cost grew with the square of the sites, tools/bench_scale.py); the certificates the
seals need in the first message, but those the peer says it keeps; the large BLOBs a batch
refers to before it, in messages of their own. Events the log no longer stores (purged once
every site had them) raise ``PurgedHere``: only a resync brings such a peer back.

Reads only, in short transactions of its own, through the replica's pipeline
(``Replica.on_connection``): no Firebird transaction stays open while a batch travels. Must
never decide which origins a peer may get (``origins.py``, the caller's).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

from firebird.driver import Connection, Cursor

from ...certs import from_pem
from ...proto import events_pb2, sync_pb2, values_pb2
from ..db.database import READ_COMMITTED_RW, transaction
from ..journal import eventlog
from ..model.vector import Origin, Vector
from . import blobs

T = TypeVar("T")

DEFAULT_BATCH_EVENTS = 500
_BLOB_MESSAGE_BYTES = 4 * 1024 * 1024
_LONG_TX_FACTOR = 4  # a batch may exceed max_events this much to end on a transaction


class PurgedHere(Exception):
    """A peer lacks events this node no longer stores (retention purged them): only a
    resync can bring it back."""


class Outbox:
    """One replica's outgoing streams (see the module's docstring)."""

    def __init__(self, vector: Callable[[], Vector],
                 on_con: Callable[[Callable[[Connection], T]], T],
                 certificates: Callable[[], list[bytes]]) -> None:
        """``vector()``: what this site holds, after publishing; ``on_con(step)``: ``step``
        on the replica's connection, in its pipeline; ``certificates()``: those its seals
        need."""
        self.vector = vector
        self._on_con = on_con
        self.certificates = certificates

    def batches_for(self, have: Vector, max_events: int = DEFAULT_BATCH_EVENTS,
                    only_origin: str | None = None, skip_origin: str | None = None
                    ) -> Iterator[list[bytes]]:
        """What a peer holding ``have`` lacks (of ``only_origin``'s events, when given; never
        ``skip_origin``'s), in batches of whole source transactions, each origin in order."""
        mine = self.vector()
        lacks = [(origin, after) for origin, after in sorted(have.lacks(mine).items())
                 if (only_origin is None or origin[0] == only_origin)
                 and origin[0] != skip_origin]
        # Origins the peer lacks little of — in a quiet round, every other site's heartbeat
        # — are read together, in one transaction: one each made a round's cost grow with
        # the square of the sites (tools/bench_scale.py).
        small = self._on_con(lambda con: self._read_small(con,
            [(o, a) for o, a in lacks if mine.seq(o) - a <= max_events], max_events))
        for origin, after in lacks:
            read = small.get(origin)
            if isinstance(read, PurgedHere):
                raise read
            if read:
                after += len(read)
                yield read
            while after < mine.seq(origin):
                batch = self._on_con(
                    lambda con, o=origin, a=after: self.read_batch(con, o, a, max_events))
                if not batch:
                    break  # purged here (retention): the peer needs a resync for it
                after += len(batch)
                yield batch

    def outgoing(self, have: Vector, max_events: int = DEFAULT_BATCH_EVENTS,
                 only_origin: str | None = None,
                 peer_holds: Collection[str] = (),
                 skip_origin: str | None = None) -> Iterator[sync_pb2.Batch]:
        """``batches_for`` as messages: the certificates the seals need in the first one
        (seal.py) but those the peer said it keeps (``peer_holds``: serials in hex), the
        large BLOBs a batch refers to first, in messages of their own."""
        sent: set[bytes] = set()
        certificates: list[bytes] | None = None
        # Small batches of several origins travel as one message, applied in one call: in a
        # quiet round each peer lacks every other site's heartbeat, and a call each made a
        # round's cost grow with the square of the sites (tools/bench_scale.py).
        events: list[bytes] = []
        for bodies in self.batches_for(have, max_events, only_origin, skip_origin):
            if certificates is None:
                held = set(peer_holds)
                certificates = [pem for pem in self.certificates()
                                if not held or f"{from_pem(pem).serial:x}" not in held]
                if certificates:
                    yield sync_pb2.Batch(certificates=certificates)
            chunks: list[values_pb2.BlobChunk] = []
            size = 0
            for ref in blobs.refs(bodies):
                if ref.sha256 in sent:
                    continue
                sent.add(ref.sha256)
                pieces = self._on_con(lambda con, r=ref: list(blobs.read_chunks(con, r)))
                for chunk in pieces:
                    chunks.append(chunk)
                    size += len(chunk.data)
                    if size >= _BLOB_MESSAGE_BYTES:
                        yield sync_pb2.Batch(blobs=chunks)
                        chunks, size = [], 0
            if chunks:
                yield sync_pb2.Batch(blobs=chunks)
            if events and len(events) + len(bodies) > max_events:
                yield sync_pb2.Batch(events=events)
                events = []
            events.extend(bodies)
        if events:
            yield sync_pb2.Batch(events=events)

    def _read_small(self, con: Connection, wants: list[tuple[Origin, int]], max_events: int
                    ) -> dict[Origin, list[bytes] | PurgedHere]:
        """``read_batch`` of each origin in ``wants``, in one transaction; an origin whose
        events are purged here maps to its ``PurgedHere`` (raised in its turn)."""
        out: dict[Origin, list[bytes] | PurgedHere] = {}
        if not wants:
            return out
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            try:
                for origin, after in wants:
                    try:
                        out[origin] = self.read_batch(con, origin, after, max_events, cur)
                    except PurgedHere as exc:
                        out[origin] = exc
            finally:
                cur.close()
        return out

    def read_batch(self, con: Connection, origin: Origin, after: int, max_events: int,
                   cur: Cursor | None = None) -> list[bytes]:
        """``origin``'s events after ``after``, at most ``max_events`` (ending on a source
        transaction when it can); ``cur``: read in the caller's transaction."""
        out: list[bytes] = []
        reader = (eventlog.read(con, origin[0], after, origin[1]) if cur is None
                  else eventlog.read_with(cur, origin[0], after, origin[1]))
        try:
            for body in reader:
                if not out and events_pb2.Event.FromString(body).seq != after + 1:
                    raise PurgedHere(
                        f"events of {origin[0]} after #{after} are no longer stored here "
                        "(every other site had them when they were purged): the site that "
                        "lacks them needs a resync")
                out.append(body)
                if len(out) >= max_events:
                    # Usually at the end of a source transaction; a transaction much larger
                    # than a batch is cut anyway (messages stay bounded) and the receiver
                    # keeps its first part until the rest arrives.
                    event = events_pb2.Event.FromString(body)
                    ends = event.seq == event.tx.first_seq + event.tx.count - 1
                    if ends or len(out) >= max_events * _LONG_TX_FACTOR:
                        break
        finally:
            reader.close()  # ends the read transaction before the batch travels
        return out
