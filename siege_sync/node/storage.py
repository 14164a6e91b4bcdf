"""Large BLOB values kept in the site's database (``SYNC$BLOBS``), by sha256.

An event refers to a large BLOB by ``BlobRef`` (sha256, length); the bytes live here, written
and read in segments inside the caller's transaction, so a 10 MB value is never held whole in
memory and is stored in the same transaction as the event that refers to it.

Must never open its own transaction: durability is the caller's (the publisher's) business.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

from firebird.driver import TransactionManager

from ..proto import values_pb2
from .capture import BLOBS_TABLE

CHUNK = 64 * 1024


class _Encoded:
    """A binary reader over a text or binary stream: text is sent UTF-8 encoded."""

    def __init__(self, stream: IO[Any], text: bool) -> None:
        self._stream = stream
        self._text = text

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size and size > 0 else CHUNK)
        if self._text and isinstance(data, str):
            return data.encode("utf-8")
        return data


class DatabaseBlobStore:
    """``values.BlobSink`` and ``values.BlobSource`` backed by ``SYNC$BLOBS``."""

    def __init__(self, tm: TransactionManager) -> None:
        self._tm = tm

    def put(self, stream: IO[Any], text: bool) -> values_pb2.BlobRef:
        digest = hashlib.sha256()
        length = 0
        reader = _Encoded(stream, text)
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            length += len(chunk)
        sha = digest.digest()
        cur = self._tm.cursor()
        try:
            cur.execute(f"SELECT 1 FROM {BLOBS_TABLE} WHERE SHA256 = ?", (sha,))
            if cur.fetchone() is None:
                stream.seek(0)
                # The driver streams any object with .read() into the BLOB segment by segment.
                cur.execute(f"INSERT INTO {BLOBS_TABLE} (SHA256, LEN, DATA) VALUES (?, ?, ?)",
                            (sha, length, _Encoded(stream, text)))
        finally:
            cur.close()
        return values_pb2.BlobRef(sha256=sha, length=length)

    def open(self, ref: values_pb2.BlobRef) -> IO[bytes]:
        cur = self._tm.cursor()
        cur.stream_blobs.append("DATA")
        cur.execute(f"SELECT DATA FROM {BLOBS_TABLE} WHERE SHA256 = ?", (ref.sha256,))
        row = cur.fetchone()
        if row is None:
            cur.close()
            raise KeyError(f"BLOB {ref.sha256.hex()} is not stored here")
        return row[0]
