"""Order-independent, bit-exact digests of replicated tables.

Owns the fingerprint two sites compare to prove they hold the same rows: every row is read
exactly (``values.py``; a DOUBLE by its bits, raw bytes as bytes, a large BLOB by its sha256
streamed), hashed with its column names, and the row hashes are added modulo 2^256 — so the
digest does not depend on the order rows are read in, and a duplicated row changes it.
Streams the table; never holds it in memory. Read-only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO, Any

from firebird.driver import Connection

from ...proto import values_pb2
from ..db import values
from ..db.database import SNAPSHOT_RW, quote, transaction
from ..db.schema import Table

MOD = 1 << 256


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    digest: str  # hex


class HashOnly:
    """A BlobSink that keeps nothing: a large BLOB counts by its sha256 and length."""

    def put(self, stream: IO[Any], text: bool) -> values_pb2.BlobRef:
        digest = hashlib.sha256()
        length = 0
        while chunk := stream.read(64 * 1024):
            data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
            digest.update(data)
            length += len(data)
        return values_pb2.BlobRef(sha256=digest.digest(), length=length)


def hash_encoded(names: list[bytes], encoded: list[values_pb2.Value]) -> bytes:
    """A row's hash: its column names and exactly encoded values."""
    h = hashlib.sha256()
    for name, value in zip(names, encoded, strict=True):
        data = value.SerializeToString(deterministic=True)
        h.update(len(name).to_bytes(2, "big") + name)
        h.update(len(data).to_bytes(4, "big") + data)
    return h.digest()


def row_hash(names: list[bytes], types: list[Any], row: tuple, sink: HashOnly) -> bytes:
    """A row as read by ``values.select_expr`` columns, hashed (``hash_encoded``)."""
    return hash_encoded(names, [values.encode(t, v, sink)
                                for t, v in zip(types, row, strict=True)])


def table_digest(con: Connection, table: Table) -> TableDigest:
    exprs = ", ".join(values.select_expr(c, con.sql_dialect) for c in table.columns)
    names = [c.name.encode() for c in table.columns]
    types = [c.type for c in table.columns]
    sink = HashOnly()
    total = 0
    count = 0
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT {exprs} FROM {quote(table.name, con.sql_dialect)}")
            for row in cur:
                total = (total + int.from_bytes(row_hash(names, types, row, sink), "big")) % MOD
                count += 1
        finally:
            cur.close()
    return TableDigest(table.name, count, total.to_bytes(32, "big").hex())
