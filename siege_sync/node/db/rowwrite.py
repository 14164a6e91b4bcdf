"""Writing many rows per statement, exactly: literal ``EXECUTE BLOCK``s in the caller's order.

Owns :class:`RowWriter`: it buffers row writes (``UPDATE OR INSERT ... MATCHING`` the primary
key, or an ``INSERT`` standing for it for a row thought new, ``write_new``; ``INSERT``,
``UPDATE`` — also of the key itself, ``rekey`` —, ``DELETE``) and context
variable assignments, and emits them in exactly the order they were made as ``EXECUTE
BLOCK`` statements whose values are SQL literals (:mod:`.literal`: each stores exactly what
the parameter of :func:`.values.decode` would). A parameterized statement costs the driver
~300 µs of per-parameter work a row; a block of literal statements costs the server one
parse and compile for many rows (measured on a 10-column row: ~60 µs a row for UPDATE OR
INSERT, ~30 µs for INSERT or UPDATE).

It must never:

* open, commit or roll back a transaction: everything runs in the transaction of the cursor
  it was given (which must be active); the only transaction control it uses is a savepoint of
  its own while it finds the failing row of a failed block;
* reorder anything: a value without a literal form (an ARRAY, a BLOB travelling as a
  BlobRef, NaN/±inf, ...) makes its whole statement run with parameters at its place in the
  order, after the block before it has been executed;
* leave a failed block half-applied: a failed statement is undone as a whole by Firebird
  (measured: an EXECUTE BLOCK whose third statement fails leaves nothing of the first two);
  when the error is not a concurrent write or a lost connection, the block's statements are
  re-run one by one inside a savepoint to name the failing row, then rolled back to it.
  Context variables are not transactional: the ones the failed block set are put back to
  their values before it.

Limits (Firebird 3.0.11, measured): a request has at most 256 contexts — an ``UPDATE OR
INSERT`` uses 3, an ``UPDATE`` 2, an ``INSERT`` or a ``DELETE`` 1 (85 UPDATE OR INSERTs fit in
a block, 86 fail with "Too many Contexts"); a statement is at most 10 MiB. Blocks are cut
below both (:data:`MAX_CONTEXTS`, ``max_block_chars``).

The caller must call :meth:`RowWriter.flush` before reading anything the buffered writes may
change (and before commit). The write methods may execute a full block or a parameterized
statement themselves, so they can raise like ``flush``; after an error nothing buffered is
left (the write being added included). Parameterized statements, and one read of a context
variable before the writer first sets it, run on the caller's cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from firebird.driver import Cursor, DatabaseError

from siege_sync.proto import values_pb2

from . import values
from .database import StatementCache, is_concurrent_write, quote
from .database import literal as text_literal
from .literal import MAX_STATEMENT_BYTES, literal
from .schema import Column, Table

log = logging.getLogger(__name__)

Value = values_pb2.Value

MAX_CONTEXTS = 255  # of the 256 a request may use
DEFAULT_BLOCK_CHARS = 1_000_000
_CONTEXTS = {"upsert": 3, "insert": 1, "update": 2, "delete": 1, "context": 0}
_VAR = "SYNC$CTX"  # the block's variable for RDB$SET_CONTEXT results (SYNC$ names are ours)
_SAVEPOINT = "SYNC$ROWWRITE"
# gds codes of a lost attachment (see FIREBIRD_NOTES.md): nothing to re-run.
_LOST_CONNECTION = frozenset({335544856, 335544726, 335544727, 335544721, 335544741})
_BLOCK_OVERHEAD = 100  # bytes of EXECUTE BLOCK text around one statement
# "violation of PRIMARY or UNIQUE KEY constraint", "attempt to store duplicate value"
_DUPLICATE_KEY = frozenset({335544665, 335544349})


class RowWriteError(DatabaseError):
    """A buffered write failed. Names the row (``table``, ``key``: its key Values,
    ``operation``) and carries the Firebird error as ``__cause__`` and its ``sqlcode`` /
    ``gds_codes`` (so :func:`.database.is_concurrent_write` still recognizes a conflict).
    Nothing of the failing block is applied; the writer's buffer is empty afterwards."""

    table: str | None
    key: tuple[Value, ...]
    operation: str
    statement: str


@dataclass(frozen=True, slots=True)
class _Op:
    operation: str  # "upsert", "insert", "update", "delete" or "context"
    table: Table | None
    key: tuple[Value, ...]
    body: str | None  # the statement with literal values, for a block; None: parameters
    param_sql: str = ""  # the parameterized form, when body is None
    params: tuple[tuple[Column, Value], ...] = ()
    context: tuple[str, str, str | None] | None = None  # namespace, name, value
    insert_sql: str = ""  # run when param_sql (an UPDATE) touched no row
    insert_params: tuple[tuple[Column, Value], ...] = ()
    # An INSERT of a row thought new: the UPDATE OR INSERT run instead when the row is
    # there after all (``RowWriter.write_new``).
    instead: str | None = None

    @property
    def contexts(self) -> int:
        return _CONTEXTS[self.operation]


@dataclass(frozen=True, slots=True)
class _TableSql:
    table: Table
    name: str  # quoted
    by_name: Mapping[str, Column]
    key_columns: tuple[Column, ...]
    matching: str
    shapes: dict[tuple[str, ...], _Shape]  # by the column names a write gives, in order


@dataclass(frozen=True, slots=True)
class _Shape:
    """The statement text that depends only on which columns a write gives."""

    columns: tuple[Column, ...]
    quoted: tuple[str, ...]
    upsert_head: str  # "UPDATE OR INSERT INTO t (keys..., columns...) VALUES ("


class RowWriter:
    """Buffers row writes of one transaction and emits them as literal EXECUTE BLOCKs.

    ``cur`` is a cursor of the caller's (active) transaction, ``dialect`` the database's SQL
    dialect, ``cache`` prepares the parameterized fallback statements once; ``blobs`` reads
    BLOBs that travel as BlobRef (they always go through a parameter).
    """

    def __init__(self, cur: Cursor, dialect: int, cache: StatementCache,
                 blobs: values.BlobSource | None = None, *,
                 max_block_chars: int = DEFAULT_BLOCK_CHARS) -> None:
        self._cur = cur
        self._dialect = dialect
        self._cache = cache
        self._blobs = blobs
        self._max_chars = max_block_chars
        self._pending: list[_Op] = []
        self._contexts_used = 0
        self._chars = 0
        self._tables: dict[int, _TableSql] = {}
        # Context variables' values as of the last executed statement, for every name this
        # writer sets (read once before it first sets one): restored after a failed block.
        self._context_values: dict[tuple[str, str], str | None] = {}
        self.statements = 0  # executed statements (blocks and parameterized), for tests

    # --- buffering -----------------------------------------------------------------------

    def upsert(self, table: Table, key: Sequence[Value], columns: Mapping[str, Value]) -> None:
        """``UPDATE OR INSERT INTO table (key..., columns...) VALUES (...) MATCHING (key)``."""
        ts = self._table(table)
        shape = self._shape(ts, columns)
        cols = tuple(zip(shape.columns, columns.values(), strict=True))
        pairs = tuple(zip(ts.key_columns, key, strict=True)) + cols
        head = shape.upsert_head
        tail = f") MATCHING ({ts.matching})"
        lits = self._literals(pairs)
        body = None if lits is None else head + ", ".join(lits) + tail
        if body is None or _too_long(body):
            if any(c.type.dimensions for c, _ in cols):
                # Firebird 3 cannot prepare an UPDATE OR INSERT with an ARRAY parameter ("Data
                # type unknown"), nor describe one in MERGE's UPDATE branch (the driver then
                # fails to find its bounds): UPDATE, then INSERT when it touched no row.
                # The key is SET too, as UPDATE OR INSERT writes it: the row found may hold
                # an engine-equal key in other bytes (case, trailing blanks).
                keys = pairs[:len(ts.key_columns)]
                sets = ", ".join(f"{quote(c.name, self._dialect)} = {values.param_expr(c)}"
                                 for c, _ in keys + cols)
                names = ", ".join(quote(c.name, self._dialect) for c, _ in pairs)
                marks = ", ".join(values.param_expr(c) for c, _ in pairs)
                self._add(_Op("upsert", table, tuple(key), None,
                              f"UPDATE {ts.name} SET {sets} WHERE {self._where(keys, None)}",
                              keys + cols + keys, insert_sql=f"INSERT INTO {ts.name} ({names}) "
                                                      f"VALUES ({marks})",
                              insert_params=pairs))
            else:
                sql = head + ", ".join(values.param_expr(c) for c, _ in pairs) + tail
                self._add(_Op("upsert", table, tuple(key), None, sql, pairs))
        else:
            self._add(_Op("upsert", table, tuple(key), body))

    def write_new(self, table: Table, key: Sequence[Value],
                  columns: Mapping[str, Value]) -> None:
        """``upsert`` for a row thought not to be in the table (no registers here), written
        as an ``INSERT``: the server compiles it in half the time and a block holds three
        times as many. When a block of them meets a row that is there after all (a duplicate
        key), the whole block — undone by the engine — runs again as ``upsert``s, so the
        outcome is ``upsert``'s in every case."""
        ts = self._table(table)
        shape = self._shape(ts, columns)
        pairs = tuple(zip(ts.key_columns, key, strict=True)) + tuple(
            zip(shape.columns, columns.values(), strict=True))
        lits = self._literals(pairs)
        if lits is None:
            self.upsert(table, key, columns)
            return
        values_text = ", ".join(lits)
        head = "INSERT" + shape.upsert_head[len("UPDATE OR INSERT"):]
        body = head + values_text + ")"
        if _too_long(body):
            self.upsert(table, key, columns)
            return
        self._add(_Op("insert", table, tuple(key), body, instead=(
            f"{shape.upsert_head}{values_text}) MATCHING ({ts.matching})")))

    def insert(self, table: Table, key: Sequence[Value], columns: Mapping[str, Value]) -> None:
        """``INSERT INTO table (key..., columns...) VALUES (...)``: for rows known not to
        exist (measured: the server compiles it in half the time of an UPDATE OR INSERT,
        and a block holds 255 of them)."""
        ts = self._table(table)
        shape = self._shape(ts, columns)
        pairs = tuple(zip(ts.key_columns, key, strict=True)) + tuple(
            zip(shape.columns, columns.values(), strict=True))
        head = "INSERT" + shape.upsert_head[len("UPDATE OR INSERT"):]
        lits = self._literals(pairs)
        body = None if lits is None else head + ", ".join(lits) + ")"
        if body is None or _too_long(body):
            sql = head + ", ".join(values.param_expr(c) for c, _ in pairs) + ")"
            self._add(_Op("insert", table, tuple(key), None, sql, pairs))
        else:
            self._add(_Op("insert", table, tuple(key), body))

    def update(self, table: Table, key: Sequence[Value], columns: Mapping[str, Value]) -> None:
        """``UPDATE table SET columns... WHERE key``; nothing at all when ``columns`` is
        empty."""
        ts = self._table(table)
        shape = self._shape(ts, columns)
        cols = tuple(zip(shape.columns, columns.values(), strict=True))
        if not cols:
            return
        keys = tuple(zip(ts.key_columns, key, strict=True))
        lits = self._literals(cols + keys)
        body = None
        if lits is not None:
            sets = ", ".join(f"{name} = {lit}"
                             for name, lit in zip(shape.quoted, lits, strict=False))
            body = f"UPDATE {ts.name} SET {sets} WHERE {self._where(keys, lits[len(cols):])}"
        if body is None or _too_long(body):
            sets = ", ".join(f"{quote(c.name, self._dialect)} = {values.param_expr(c)}"
                             for c, _ in cols)
            sql = f"UPDATE {ts.name} SET {sets} WHERE {self._where(keys, None)}"
            self._add(_Op("update", table, tuple(key), None, sql, cols + keys))
        else:
            self._add(_Op("update", table, tuple(key), body))

    def rekey(self, table: Table, key: Sequence[Value], new_key: Sequence[Value]) -> None:
        """``UPDATE table SET key = new_key WHERE key``: the row takes another primary key in
        place (its other columns, and so its UNIQUE values, never leave the table)."""
        ts = self._table(table)
        d = self._dialect
        sets = tuple(zip(ts.key_columns, new_key, strict=True))
        keys = tuple(zip(ts.key_columns, key, strict=True))
        lits = self._literals(sets + keys)
        if lits is not None:
            assigned = ", ".join(f"{quote(c.name, d)} = {lit}"
                                 for (c, _), lit in zip(sets, lits, strict=False))
            body = f"UPDATE {ts.name} SET {assigned} WHERE {self._where(keys, lits[len(sets):])}"
            if not _too_long(body):
                self._add(_Op("update", table, tuple(key), body))
                return
        assigned = ", ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c, _ in sets)
        self._add(_Op("update", table, tuple(key), None,
                      f"UPDATE {ts.name} SET {assigned} WHERE {self._where(keys, None)}",
                      sets + keys))

    def delete(self, table: Table, key: Sequence[Value]) -> None:
        """``DELETE FROM table WHERE key``."""
        ts = self._table(table)
        keys = tuple(zip(ts.key_columns, key, strict=True))
        lits = self._literals(keys)
        if lits is None:
            self._add(_Op("delete", table, tuple(key), None,
                          f"DELETE FROM {ts.name} WHERE {self._where(keys, None)}", keys))
        else:
            self._add(_Op("delete", table, tuple(key),
                          f"DELETE FROM {ts.name} WHERE {self._where(keys, lits)}"))

    def set_context(self, name: str, value: str | None,
                    namespace: str = "USER_TRANSACTION") -> None:
        """``RDB$SET_CONTEXT(namespace, name, value)`` at this place in the order (``None``
        removes the variable). Capture triggers see it for the writes buffered after it."""
        ident = (namespace, name)
        if ident not in self._context_values:  # its value before this writer first sets it
            self.flush()  # read after what is buffered, in case a trigger of it set it
            self._cache.run(self._cur, "SELECT RDB$GET_CONTEXT(?, ?) FROM RDB$DATABASE",
                            (namespace, name))
            self._context_values[ident] = self._cur.fetchone()[0]
        val = "NULL" if value is None else text_literal(value)
        body = (f"{_VAR} = RDB$SET_CONTEXT({text_literal(namespace)}, {text_literal(name)}, "
                f"{val})")
        self._add(_Op("context", None, (), body, context=(namespace, name, value)))

    @property
    def pending(self) -> int:
        """Buffered operations not yet executed."""
        return len(self._pending)

    # --- executing -----------------------------------------------------------------------

    def flush(self) -> None:
        """Execute everything buffered, in order. On failure raises :class:`RowWriteError`
        naming the row (or the driver's error itself for a concurrent write or a lost
        connection); nothing of the failing block stays applied and the buffer is emptied."""
        ops = self._pending
        if not ops:
            return
        self._pending = []
        self._contexts_used = self._chars = 0
        try:
            self._execute(_block(ops))
        except DatabaseError as exc:
            if _DUPLICATE_KEY & set(getattr(exc, "gds_codes", ()) or ()) and any(
                    op.instead for op in ops):
                # A row written as new was there: the block again, each such row as an
                # upsert (the engine undid the whole block; order kept).
                self._restore_contexts(ops)
                for op in ops:
                    self._add(op if op.instead is None else
                              _Op("upsert", op.table, op.key, op.instead))
                self.flush()
                return
            self._recover(ops, exc)
        else:
            self._note_contexts(ops)

    def _add(self, op: _Op) -> None:
        if op.body is None:
            self.flush()
            self._run_parameterized(op)
            return
        size = len(op.body) + 2
        if self._pending and (self._contexts_used + op.contexts > MAX_CONTEXTS
                              or self._chars + size > self._max_chars):
            self.flush()
        self._pending.append(op)
        self._contexts_used += op.contexts
        self._chars += size

    def _execute(self, sql: str) -> None:
        tm = self._cur.transaction
        if not tm.is_active():
            raise RuntimeError("RowWriter runs in the caller's transaction, which is not "
                               "active; it never starts one")
        tm.execute_immediate(sql)
        self.statements += 1

    def _run_parameterized(self, op: _Op) -> None:
        sql = op.param_sql
        try:
            # decoded here, at execution: a BlobRef becomes a stream that is read only once
            self._cache.run(self._cur, sql, [values.decode(c.type, v, self._blobs)
                                             for c, v in op.params])
            self.statements += 1
            if op.insert_sql and self._cur.affected_rows == 0:
                sql = op.insert_sql
                self._cache.run(self._cur, sql, [values.decode(c.type, v, self._blobs)
                                                 for c, v in op.insert_params])
                self.statements += 1
        except DatabaseError as exc:
            if _not_the_row(exc):
                raise
            raise _row_error(op, sql, exc, self._dialect) from exc

    def _recover(self, ops: list[_Op], exc: DatabaseError) -> None:
        """The block failed and was undone as a whole. Find the row by running the block's
        statements one by one in a savepoint, then undo them (or keep them all if each
        succeeds alone: the block as such was the problem)."""
        if _not_the_row(exc):
            if is_concurrent_write(exc):  # the attachment still works: tidy up
                self._restore_contexts(ops)
            raise exc
        self._execute(f"SAVEPOINT {_SAVEPOINT}")
        for op in ops:
            try:
                self._execute(_block([op]))
            except DatabaseError as err:
                self._execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                self._execute(f"RELEASE SAVEPOINT {_SAVEPOINT} ONLY")
                self._restore_contexts(ops)
                raise _row_error(op, op.body or "", err, self._dialect) from err
        self._execute(f"RELEASE SAVEPOINT {_SAVEPOINT} ONLY")
        self._note_contexts(ops)
        log.warning("a block of %d statements failed (%s) but each succeeded alone",
                    len(ops), " ".join(str(exc).split()))

    def _note_contexts(self, ops: list[_Op]) -> None:
        for op in ops:
            if op.context is not None:
                self._context_values[op.context[:2]] = op.context[2]

    def _restore_contexts(self, ops: list[_Op]) -> None:
        touched = {op.context[:2] for op in ops if op.context is not None}
        if not touched:
            return
        restore = [_Op("context", None, (),
                       f"{_VAR} = RDB$SET_CONTEXT({text_literal(ns)}, {text_literal(name)}, "
                       f"{'NULL' if old is None else text_literal(old)})")
                   for (ns, name), old in ((i, self._context_values.get(i)) for i in touched)]
        self._execute(_block(restore))

    # --- statement text ------------------------------------------------------------------

    def _table(self, table: Table) -> _TableSql:
        ts = self._tables.get(id(table))
        if ts is None or ts.table is not table:
            d = self._dialect
            ts = _TableSql(table, quote(table.name, d), {c.name: c for c in table.columns},
                           table.key_columns,
                           ", ".join(quote(k, d) for k in table.primary_key), {})
            self._tables[id(table)] = ts
        return ts

    def _shape(self, ts: _TableSql, columns: Mapping[str, Value]) -> _Shape:
        names = tuple(columns)
        shape = ts.shapes.get(names)
        if shape is None:
            cols = []
            for name in names:
                col = ts.by_name.get(name)
                if col is None:
                    raise KeyError(f"table {ts.table.name} has no column {name}")
                if name in ts.table.primary_key:
                    raise ValueError(f"{name} is a key column of {ts.table.name}: pass it "
                                     "as key")
                cols.append(col)
            quoted = tuple(quote(c.name, self._dialect) for c in cols)
            all_names = ", ".join([quote(c.name, self._dialect) for c in ts.key_columns]
                                  + list(quoted))
            shape = ts.shapes[names] = _Shape(
                tuple(cols), quoted, f"UPDATE OR INSERT INTO {ts.name} ({all_names}) VALUES (")
        return shape

    def _literals(self, pairs: Sequence[tuple[Column, Value]]) -> list[str] | None:
        """The values' literals, or None when one has none (decode checks every value of a
        parameterized statement when it runs)."""
        d = self._dialect
        out = [literal(col, value, d) for col, value in pairs]
        return None if None in out else out  # type: ignore[return-value]

    def _where(self, keys: Sequence[tuple[Column, Value]], lits: Sequence[str] | None) -> str:
        d = self._dialect
        if lits is None:
            return " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c, _ in keys)
        return " AND ".join(f"{quote(c.name, d)} = {lit}"
                            for (c, _), lit in zip(keys, lits, strict=True))


def _block(ops: Sequence[_Op]) -> str:
    declare = f"DECLARE {_VAR} INTEGER;\n" if any(op.operation == "context" for op in ops) else ""
    return ("EXECUTE BLOCK AS\n" + declare + "BEGIN\n"
            + "".join(op.body + ";\n" for op in ops if op.body) + "END")


def _too_long(body: str) -> bool:
    """Too long for a statement even alone (UTF-8 takes at most 4 bytes a character)."""
    limit = MAX_STATEMENT_BYTES - _BLOCK_OVERHEAD
    return len(body) * 4 > limit and len(body.encode("utf-8")) > limit


def _not_the_row(exc: DatabaseError) -> bool:
    """Errors that say nothing about a row: re-running would not help."""
    codes = set(getattr(exc, "gds_codes", ()) or ())
    return is_concurrent_write(exc) or bool(codes & _LOST_CONNECTION)


def _row_error(op: _Op, sql: str, err: DatabaseError, dialect: int) -> RowWriteError:
    table = op.table.name if op.table is not None else None
    if op.table is not None:
        parts = []
        for col, value in zip(op.table.key_columns, op.key, strict=True):
            lit = literal(col, value, dialect)
            shown = lit if lit is not None else str(values.decode(col.type, value))
            parts.append(f"{col.name}={shown}"[:80])
        where = f"{op.table.name} key ({', '.join(parts)})"
    else:
        where = f"context variable {op.context[1] if op.context else '?'}"
    what = {"upsert": "UPDATE OR INSERT", "insert": "INSERT", "update": "UPDATE",
            "delete": "DELETE", "context": "RDB$SET_CONTEXT"}[op.operation]
    return RowWriteError(
        f"{what} of {where} failed: {' '.join(str(err).split())}",
        table=table, key=op.key, operation=op.operation, statement=sql,
        sqlcode=getattr(err, "sqlcode", None), gds_codes=getattr(err, "gds_codes", None),
        sqlstate=getattr(err, "sqlstate", None))
