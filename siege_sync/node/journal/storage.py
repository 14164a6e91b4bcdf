"""Large BLOB values kept in the site's database (``SYNC$BLOBS``), by sha256.

An event refers to a large BLOB by ``BlobRef`` (sha256, length); the bytes live here, written
and read in segments inside the caller's transaction, so a 10 MB value is never held whole in
memory (the publisher stores a value with the event that refers to it; a receiving stream,
``blobs.py``, stores it ahead of its events).

Must never open its own transaction: durability is the caller's business.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO, Any

from firebird.driver import TransactionManager

from ...proto import values_pb2
from .capture import BLOBS_TABLE

CHUNK = 64 * 1024


class _Hashing:
    """Reads a text or binary stream once, as bytes (text UTF-8 encoded), hashing as it goes,
    and never returns more than asked (the driver's segment buffer has a fixed size)."""

    def __init__(self, stream: IO[Any], text: bool) -> None:
        self._stream = stream
        self._text = text
        self._pending = b""
        self.digest = hashlib.sha256()
        self.length = 0

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else CHUNK
        while len(self._pending) < size:
            data = self._stream.read(size)
            if not data:
                break
            if isinstance(data, str):
                data = data.encode("utf-8")
            self._pending += data
        out, self._pending = self._pending[:size], self._pending[size:]
        self.digest.update(out)
        self.length += len(out)
        return out


class DatabaseBlobStore:
    """``values.BlobSink`` and ``values.BlobSource`` backed by ``SYNC$BLOBS``."""

    def __init__(self, tm: TransactionManager) -> None:
        self._tm = tm

    def put(self, stream: IO[Any], text: bool) -> values_pb2.BlobRef:
        """Store a stream read once: it is written under a random provisional key while its
        hash is computed, then renamed to its hash (or dropped if that content is here)."""
        reader = _Hashing(stream, text)
        provisional = os.urandom(32)
        cur = self._tm.cursor()
        try:
            # The driver streams any object with .read() into the BLOB segment by segment.
            cur.execute(f"INSERT INTO {BLOBS_TABLE} (SHA256, LEN, DATA) VALUES (?, 0, ?)",
                        (provisional, reader))
            sha = reader.digest.digest()
            cur.execute(f"SELECT 1 FROM {BLOBS_TABLE} WHERE SHA256 = ?", (sha,))
            if cur.fetchone() is None:
                cur.execute(f"UPDATE {BLOBS_TABLE} SET SHA256 = ?, LEN = ? WHERE SHA256 = ?",
                            (sha, reader.length, provisional))
            else:
                cur.execute(f"DELETE FROM {BLOBS_TABLE} WHERE SHA256 = ?", (provisional,))
        finally:
            cur.close()
        return values_pb2.BlobRef(sha256=sha, length=reader.length)

    def drop(self, shas: list[bytes]) -> None:
        """Delete these BLOBs (a stream's that no event refers to, ``blobs.Assembler``)."""
        cur = self._tm.cursor()
        try:
            for sha in shas:
                cur.execute(f"DELETE FROM {BLOBS_TABLE} WHERE SHA256 = ?", (sha,))
        finally:
            cur.close()

    def has(self, sha256: bytes) -> bool:
        cur = self._tm.cursor()
        try:
            cur.execute(f"SELECT 1 FROM {BLOBS_TABLE} WHERE SHA256 = ?", (sha256,))
            return cur.fetchone() is not None
        finally:
            cur.close()

    def open(self, ref: values_pb2.BlobRef) -> StoredBlob:
        cur = self._tm.cursor()
        cur.stream_blobs.append("DATA")
        cur.execute(f"SELECT DATA FROM {BLOBS_TABLE} WHERE SHA256 = ?", (ref.sha256,))
        row = cur.fetchone()
        if row is None:
            cur.close()
            raise KeyError(f"BLOB {ref.sha256.hex()} is not stored here")
        return StoredBlob(cur, row[0])


class StoredBlob:
    """A stored BLOB being read; keeps its cursor alive (the driver's reader dies with it)."""

    def __init__(self, cur: Any, reader: Any) -> None:
        self._cur = cur
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        return self._reader.read(size)

    def close(self) -> None:
        self._reader.close()
        self._cur.close()
