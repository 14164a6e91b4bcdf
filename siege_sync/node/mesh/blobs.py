"""Large BLOBs between nodes: cut into chunks to send, put back together on receipt.

An event refers to a BLOB of 64 KiB or more by ``BlobRef`` (sha256, length); its bytes live in
``SYNC$BLOBS`` (``storage.py``). Before the events that need them, the sender streams each
such BLOB as ``BlobChunk`` messages; the receiver writes chunks to a spool file, checks the
whole against its sha256 and stores it in its own ``SYNC$BLOBS`` — so the applier finds it,
and so this node can relay it further. A BLOB is read whole into a spool file (memory up to a
few MiB, disk beyond) in one short transaction: no transaction stays open while it travels.

A stream may carry BLOBs only for its own events: those it stored that no event of the stream
refers to are bounded while it lasts (``MAX_UNREFERENCED``) and deleted when it ends — a peer
cannot fill the database with chunks nobody needs (issue 20); a BLOB dropped this way is sent
again with the events that need it.

Must never store bytes whose hash does not match their name.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import IO

from firebird.driver import Connection

from ...proto import events_pb2, values_pb2
from ..db.database import READ_COMMITTED_RW, transaction
from ..journal.storage import DatabaseBlobStore

CHUNK_BYTES = 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
MAX_UNREFERENCED = 512 * 1024 * 1024  # BLOB bytes a stream may hold before their events


class BlobError(Exception):
    pass


def refs(bodies: Iterable[bytes]) -> list[values_pb2.BlobRef]:
    """The large BLOBs the events refer to, each once, in order of first mention."""
    seen: dict[bytes, values_pb2.BlobRef] = {}
    for body in bodies:
        event = events_pb2.Event.FromString(body)
        for column in event.columns:
            if column.value.WhichOneof("kind") == "blob":
                seen.setdefault(column.value.blob.sha256, column.value.blob)
    return list(seen.values())


def read_chunks(con: Connection, ref: values_pb2.BlobRef) -> Iterator[values_pb2.BlobChunk]:
    """The stored BLOB ``ref`` as chunks (``BlobError`` when this node does not hold it)."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    with spool:
        with transaction(con, READ_COMMITTED_RW) as tm:
            try:
                stored = DatabaseBlobStore(tm).open(ref)
            except KeyError as exc:
                raise BlobError(f"BLOB {ref.sha256.hex()} is not stored here") from exc
            try:
                while data := stored.read(CHUNK_BYTES):
                    spool.write(data)
            finally:
                stored.close()
        spool.seek(0)
        offset = 0
        while True:
            data = spool.read(CHUNK_BYTES)
            if not data and offset:
                return
            yield values_pb2.BlobChunk(sha256=ref.sha256, offset=offset, data=data,
                                       total=ref.length)
            offset += len(data)
            if not data or offset >= ref.length:
                return


class Assembler:
    """Receives chunks in order and stores each BLOB once it is complete and intact.
    ``database`` gives the connection (inside the node's pipeline) when one is stored."""

    def __init__(self, database: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._database = database
        self._open: dict[bytes, tuple[IO[bytes], int]] = {}
        self.stored = 0
        # Stored by this stream, no event of it referring to them yet: sha256 -> bytes.
        self.unreferenced: dict[bytes, int] = {}

    def referenced(self, shas: Iterable[bytes]) -> None:
        """Events of the stream refer to these BLOBs: they stay."""
        for sha in shas:
            self.unreferenced.pop(sha, None)

    def add(self, chunk: values_pb2.BlobChunk) -> None:
        if len(chunk.sha256) != 32:
            raise BlobError("a BLOB chunk without a proper sha256")
        held = sum(self.unreferenced.values()) + sum(n for _s, n in self._open.values())
        if held + len(chunk.data) > MAX_UNREFERENCED:
            raise BlobError(f"more than {MAX_UNREFERENCED // 2**20} MiB of BLOBs that no event "
                            "sent so far refers to: send the events with their BLOBs")
        spool, expected = self._open.get(chunk.sha256, (None, 0))
        if spool is None:
            if chunk.offset != 0:
                raise BlobError(f"BLOB {chunk.sha256.hex()[:12]}: chunk at {chunk.offset} "
                                "without its beginning")
            spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        if chunk.offset != expected:
            spool.close()
            self._open.pop(chunk.sha256, None)
            raise BlobError(f"BLOB {chunk.sha256.hex()[:12]}: chunk at {chunk.offset}, "
                            f"expected {expected}")
        spool.write(chunk.data)
        end = expected + len(chunk.data)
        if end < chunk.total:
            self._open[chunk.sha256] = (spool, end)
            return
        self._open.pop(chunk.sha256, None)
        with spool:
            self._store(chunk.sha256, spool, end)

    def _store(self, sha: bytes, spool: IO[bytes], length: int) -> None:
        spool.seek(0)
        digest = hashlib.sha256()
        while data := spool.read(CHUNK_BYTES):
            digest.update(data)
        if digest.digest() != sha:
            raise BlobError(f"BLOB {sha.hex()[:12]} arrived damaged (its bytes do not match "
                            "its sha256); it is sent again next time")
        spool.seek(0)
        with self._database() as con, transaction(con) as tm:
            store = DatabaseBlobStore(tm)
            if store.has(sha):
                return  # (its events refer to it already: it stays)
            ref = store.put(spool, text=False)
        assert ref.sha256 == sha and ref.length == length
        self.stored += 1
        self.unreferenced[sha] = length

    def close(self) -> None:
        """The stream ended: the BLOBs it stored for no event of it go."""
        for spool, _n in self._open.values():
            spool.close()
        self._open.clear()
        if self.unreferenced:
            with self._database() as con, transaction(con) as tm:
                DatabaseBlobStore(tm).drop(list(self.unreferenced))
            self.unreferenced.clear()
