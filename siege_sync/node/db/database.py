"""Opening a site's Firebird database: embedded or through a server, dialect 1 or 3.

Owns the one place where the driver's process-wide configuration is touched (the SQL dialect
of a new attachment is only settable there) and the transaction parameter blocks the node
uses. Must never leave a connection or transaction open behind the caller's back: everything
returned is a context manager.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from firebird.driver import (
    TPB,
    Connection,
    Cursor,
    DatabaseError,
    Isolation,
    Statement,
    TransactionManager,
    connect,
    driver_config,
)

# The driver reads the attachment dialect from its global defaults; guard the
# set-connect-restore sequence so two threads never see each other's dialect.
_DIALECT_LOCK = threading.Lock()


class DatabaseUnavailable(Exception):
    """The database cannot be opened; the message says why and what to do."""


@dataclass(frozen=True)
class DatabaseSpec:
    """Where a site's database is and how to log in.

    ``dsn`` is a plain path (embedded, no server) or ``host:/path`` / ``inet://...``
    (through a Firebird server).
    """

    dsn: str
    user: str = "SYSDBA"
    password: str | None = None
    role: str | None = None


def _attach(spec: DatabaseSpec, dialect: int) -> Connection:
    with _DIALECT_LOCK:
        saved = driver_config.db_defaults.sql_dialect.value
        driver_config.db_defaults.sql_dialect.value = dialect
        try:
            return connect(
                spec.dsn, user=spec.user, password=spec.password, role=spec.role, charset="UTF8"
            )
        finally:
            driver_config.db_defaults.sql_dialect.value = saved


def open_connection(spec: DatabaseSpec) -> Connection:
    """Attach with the database's own SQL dialect (detected), charset UTF8."""
    try:
        con = _attach(spec, 3)
        dialect = con.info.sql_dialect
        if dialect != 3:
            con.close()
            con = _attach(spec, dialect)
        return con
    except DatabaseError as exc:
        raise DatabaseUnavailable(
            f"cannot open database {spec.dsn!r} as {spec.user}: {str(exc).strip()}. "
            "Check the path or server address, that the Firebird server runs (for host:path), "
            "and the user and password in the node's config."
        ) from exc


@contextmanager
def connection(spec: DatabaseSpec) -> Iterator[Connection]:
    con = open_connection(spec)
    try:
        yield con
    finally:
        con.close()


def dialect_of(con: Connection) -> int:
    return con.sql_dialect


# Transaction parameter blocks. SNAPSHOT gives the reader a stable view of exactly the
# transactions committed before it started; READ COMMITTED is for short metadata work.
# Every node transaction ignores limbo (prepared 2PC) transactions: reading one of their
# records otherwise fails the whole statement ("record ... is stuck in limbo"); ignored,
# their rows stay unpublished until an operator resolves them (status lists them).
SNAPSHOT_RW = TPB(isolation=Isolation.SNAPSHOT, lock_timeout=10, ignore_limbo=True).get_buffer()
# Applying waits a short while for a row a local transaction holds: a user's save commits in
# milliseconds; a transaction still open after that may stay open for hours (lockholder.py).
SNAPSHOT_APPLY = TPB(isolation=Isolation.SNAPSHOT, lock_timeout=3,
                     ignore_limbo=True).get_buffer()
READ_COMMITTED_RW = TPB(isolation=Isolation.READ_COMMITTED_RECORD_VERSION, lock_timeout=10,
                        ignore_limbo=True).get_buffer()


@contextmanager
def transaction(con: Connection, params: bytes = READ_COMMITTED_RW) -> Iterator[TransactionManager]:
    """A transaction that commits when the block ends normally and rolls back otherwise."""
    tm = con.transaction_manager(default_tpb=params)
    tm.begin()
    try:
        yield tm
    except BaseException:
        if tm.is_active():
            tm.rollback()
        tm.close()
        raise
    else:
        if tm.is_active():
            tm.commit()
        tm.close()


# gds codes of a write that met a concurrent transaction (lock conflict, deadlock, update
# conflict, and its record-version form): the whole transaction may simply be run again.
CONCURRENT_WRITE_CODES = frozenset({335544345, 335544336, 335544878, 335544451})


# Lost connections (FIREBIRD_NOTES): attachment shut down, error reading / writing data
# (the server died), unable to complete a network request (the server is down).
CONNECTION_LOST_CODES = frozenset({335544856, 335544726, 335544727, 335544721})


def connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and bool(
        set(getattr(exc, "gds_codes", ()) or ()) & CONNECTION_LOST_CODES)


def is_concurrent_write(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and bool(
        set(getattr(exc, "gds_codes", ()) or ()) & CONCURRENT_WRITE_CODES)


IO_ERROR = 335544344  # isc_io_error: the engine could not read or write a database file


def cannot_write(exc: BaseException) -> str | None:
    """Why the database could not be written, in words an operator acts on, when ``exc``
    says so (a full disk, a failing one); None for any other error.

    Why: with a full disk the node's calls died with a traceback and the coordinator's
    round said only "UNKNOWN: Exception calling application: I/O error during "write"
    operation for file ..." — the words "No space left on device" were in the traceback's
    last lines only (found by the chaos run, issue 19)."""
    if not isinstance(exc, DatabaseError) or IO_ERROR not in set(
            getattr(exc, "gds_codes", ()) or ()):
        return None
    text = " ".join(str(exc).split())
    if "no space left" in text.lower() or "disk full" in text.lower():
        return (f"DISK FULL: the database cannot grow ({text}). Nothing half-done was kept; "
                "free space on that disk — the next exchange resumes by itself")
    return (f"the database file could not be read or written ({text}): check its disk; "
            "the next exchange tries again")


class StatementCache:
    """Statements prepared once per connection and reused across transactions.

    The driver re-prepares whenever a cursor's SQL text differs from its previous one, which
    costs more than the execution itself for the short statements of the apply path.
    ``close`` frees them (before the connection closes).
    """

    def __init__(self) -> None:
        self._prepared: dict[str, Statement] = {}

    def run(self, cur: Cursor, sql: str, params: Sequence[object] = ()) -> Cursor:
        stmt = self._prepared.get(sql)
        if stmt is None:
            stmt = self._prepared[sql] = cur.prepare(sql)
        cur.execute(stmt, params)
        return cur

    def close(self) -> None:
        for stmt in self._prepared.values():
            stmt.free()
        self._prepared.clear()


def quote(identifier: str, dialect: int = 3) -> str:
    """An identifier as written in SQL.

    Dialect 3 quotes it (case and spaces kept). In dialect 1 ``"..."`` is a string literal, so
    names are written bare; introspection refuses dialect 1 names that would need quotes.
    """
    if dialect == 1:
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
