"""Sites on different schema versions (DESIGN §3.8): what a site keeps of another site's newer
schema, and how it catches up once it has upgraded too.

* **A column this site lacks**: the other sites' writes of it are merged into the row
  registers like any column (the registers hold every column's versions and values); nothing
  is written to the row. When the column appears here, ``fill_new_columns`` writes each row's
  merged value from its registers.
* **A column narrower here** (a VARCHAR, an INTEGER or a NUMERIC another site widened):
  a value this site's column cannot hold is merged into the registers like any other, the
  row keeps what it had in that column, and the column is marked (``mark_unfit``, shown by
  ``unfit``: status, hello, exchange problems). When the column's type changes here,
  ``write_widened`` writes each such row's merged value from its registers.
* **A table this site lacks**: its events are kept in ``SYNC$DEFERRED`` (the rest of their
  transaction applies; the origin is not held up) and applied, in the order they arrived,
  once the table is installed here (``Applier.catch_up``) — at most
  ``MAX_DEFERRED_PER_ORIGIN`` per origin: beyond, that origin's transaction holds, saying
  so.

``apply.catch_up`` does all three; ``siege-node install``, ``upgrade`` and ``run`` call it. The
writes it makes are the applier's (not captured: they are other sites' changes arriving
late). Must never overwrite a local change not yet published: the caller publishes first,
and a table with captured changes still waiting is left for the next call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from firebird.driver import Connection, Cursor, DatabaseError

from ...proto import events_pb2, values_pb2
from ..db import values
from ..db.database import StatementCache, quote, transaction
from ..db.guard import APPLY_CONTEXT
from ..db.schema import Column, Schema, Table, introspect
from ..model import registers
from ..model.merge import LWW, Policy
from . import capture
from .capture import DEFERRED_TABLE, STATE_TABLE
from .storage import DatabaseBlobStore

log = logging.getLogger(__name__)

_COLUMNS_STATE = "columns:"  # + table: the columns whose values the rows hold here
# + table number "." column: "<writes>|<the column's type then>" — values it could not hold
_UNFIT_STATE = "unfit:"


_SYSTEM_PREFIXES = ("RDB$", "MON$", "SEC$", "SYNC$")


def plausible_table(name: str) -> bool:
    """A name an application table can have (kept aside when not here yet); anything else —
    empty, system or sync names, control characters, quotes — is a malformed event."""
    return (0 < len(name) <= 63 and name[0].isascii() and name[0].isalpha()
            and name == name.strip()
            and all(c.isascii() and (c.isalnum() or c in "_$ ") for c in name)
            and not name.upper().startswith(_SYSTEM_PREFIXES))


# Events of tables this site lacks, kept per origin at most: beyond, the origin's next such
# transaction holds (a site flooding a table nobody else has cannot fill the disk; issue 20).
MAX_DEFERRED_PER_ORIGIN = 200_000


def deferred_counts(cur: Cursor) -> dict[str, int]:
    """Events kept aside per origin site (one read: the applier counts on from there)."""
    cur.execute(f"SELECT ORIGIN, COUNT(*) FROM {DEFERRED_TABLE} GROUP BY ORIGIN")
    return {str(site): int(n) for site, n in cur.fetchall()}


def defer(cur: Cursor, event: events_pb2.Event, body: bytes) -> None:
    """Keep an event of a table not installed here (inside the applier's transaction)."""
    cur.execute(f"INSERT INTO {DEFERRED_TABLE} (ORD, ORIGIN, INCARNATION, SEQ, TBL, BODY, "
                f"RECORDED) SELECT COALESCE(MAX(ORD), 0) + 1, ?, ?, ?, ?, ?, "
                f"CAST('NOW' AS TIMESTAMP) FROM {DEFERRED_TABLE}",
                (event.origin.site, event.origin.incarnation, event.seq, event.table, body))


def waiting(con: Connection) -> dict[str, int]:
    """Events kept per table not installed here."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT TBL, COUNT(*) FROM {DEFERRED_TABLE} GROUP BY TBL")
        found = {name: int(n) for name, n in cur.fetchall()}
        cur.close()
    return found


def ready(con: Connection, tables: set[str]) -> Iterator[bytes]:
    """Kept events whose table is now installed, oldest first."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT TBL, BODY FROM {DEFERRED_TABLE} ORDER BY ORD")
        found = []
        for name, body in cur:
            if name in tables:
                found.append(body.read() if hasattr(body, "read") else body)
        cur.close()
    yield from found


def forget(con: Connection, event: events_pb2.Event) -> None:
    with transaction(con) as tm:
        tm.cursor().execute(f"DELETE FROM {DEFERRED_TABLE} WHERE ORIGIN = ? AND "
                            "INCARNATION = ? AND SEQ = ?",
                            (event.origin.site, event.origin.incarnation, event.seq))


@dataclass(frozen=True)
class Unfit:
    """Writes of a column whose values this site's column could not hold (kept aside)."""

    table: str
    column: str
    writes: int
    type: str  # this site's column type when they arrived
    number: int  # the table's number in the registers

    def describe(self) -> str:
        return (f"{self.writes} write(s) of {self.table}.{self.column} by sites where that "
                f"column is wider do not fit {self.type} here: kept, and written once this "
                "site's column is widened too (siege-node upgrade with the same vendor "
                "script)")


def mark_unfit(cur: Cursor, number: int, column: Column, writes: int) -> None:
    """Note writes of ``column`` this site could not hold (inside the applier's transaction)."""
    name = f"{_UNFIT_STATE}{number}.{column.name}"
    cur.execute(f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?", (name,))
    row = cur.fetchone()
    before = int(row[0].split("|", 1)[0]) if row else 0
    cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) "
                "MATCHING (NAME)", (name, f"{before + writes}|{column.type.ddl()}"))


def unfit_columns(cur: Cursor) -> dict[int, set[str]]:
    """Per table number, the columns marked by :func:`mark_unfit` (in the caller's
    transaction): where a row may show another value than its registers' winner."""
    cur.execute(f"SELECT NAME FROM {STATE_TABLE} WHERE NAME STARTING WITH ?", (_UNFIT_STATE,))
    found: dict[int, set[str]] = {}
    for (key,) in cur.fetchall():
        number, _, column = key[len(_UNFIT_STATE):].partition(".")
        found.setdefault(int(number), set()).add(column)
    return found


def unfit(con: Connection) -> list[Unfit]:
    """Columns with values kept aside because this site's column is narrower."""
    names = {no: name for no, (name, _k) in capture.table_registry(con).items()}
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME STARTING WITH ?",
                    (_UNFIT_STATE,))
        found = []
        for key, val in cur.fetchall():
            number, _, column = key[len(_UNFIT_STATE):].partition(".")
            writes, _, ctype = val.partition("|")
            found.append(Unfit(names.get(int(number), f"#{number}"), column, int(writes),
                               ctype, int(number)))
        cur.close()
    return sorted(found, key=lambda u: (u.table, u.column))


def write_widened(con: Connection, policies: dict[str, Policy] | None = None,
                  schema: Schema | None = None) -> list[str]:
    """Columns with values kept aside whose type changed here since: each row whose merged
    value it now holds gets it. Returns ``TABLE.COLUMN (n rows)`` for each column done.
    ``schema``: the live schema, when the caller has read it."""
    schema = schema or introspect(con)
    done: list[str] = []
    for item in unfit(con):
        table = schema.tables.get(item.table)
        marker = f"{_UNFIT_STATE}{item.number}.{item.column}"
        if table is None or item.column not in {c.name for c in table.columns}:
            _drop_state(con, marker)  # gone here: the registers keep the values
            continue
        column = table.column(item.column)
        if column.type.ddl() == item.type:
            continue  # not widened yet
        number = item.number
        written, left = _fill(con, table, number, [item.column],
                              (policies or {}).get(item.table, LWW), only_different=True)
        if written is None:
            log.info("%s: local changes wait to be published; %s.%s is written later",
                     item.table, item.table, item.column)
            continue
        done.append(f"{item.table}.{item.column} ({written[item.column]} rows)")
        if left:
            capture.set_state(con, marker, f"{left}|{column.type.ddl()}")
        else:
            _drop_state(con, marker)
    return done


def _states(con: Connection, prefix: str) -> dict[str, str]:
    """The state values named ``prefix`` + something, by that something."""
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME STARTING WITH ?",
                        (prefix,))
            return {str(n)[len(prefix):]: str(v) for n, v in cur.fetchall()}
        finally:
            cur.close()


def _drop_state(con: Connection, name: str) -> None:
    with transaction(con) as tm:
        tm.cursor().execute(f"DELETE FROM {STATE_TABLE} WHERE NAME = ?", (name,))


def fill_new_columns(con: Connection, policies: dict[str, Policy] | None = None,
                     schema: Schema | None = None) -> list[str]:
    """Columns that appeared since the last call get each row's merged value from its
    registers; returns ``TABLE.COLUMN (n rows)`` for each column filled. ``schema``: the
    live schema, when the caller has read it."""
    schema = schema or introspect(con)
    numbers = {name: no for no, (name, _k) in capture.table_registry(con).items()}
    done: list[str] = []
    # Every table's known columns in one read, and those seen for the first time written in
    # one transaction: one query and commit per table cost seconds with hundreds of tables.
    known_columns = _states(con, _COLUMNS_STATE)
    first_seen = {name: ",".join(c.name for c in table.columns)
                  for name, table in schema.tables.items()
                  if name in numbers and name not in known_columns}
    if first_seen:
        with transaction(con) as tm:
            cur = tm.cursor()
            try:
                for name, columns in first_seen.items():
                    cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES "
                                "(?, ?) MATCHING (NAME)", (_COLUMNS_STATE + name, columns))
            finally:
                cur.close()
    for name, table in sorted(schema.tables.items()):
        if name not in numbers or name in first_seen:
            continue
        current = [c.name for c in table.columns]
        known = known_columns.get(name)
        if known is not None:
            added = [c for c in current if c not in known.split(",")]
            if added:
                filled, _left = _fill(con, table, numbers[name], added,
                                      (policies or {}).get(name, LWW))
                if filled is None:  # local changes first: the next call fills them
                    log.info("%s: local changes wait to be published; %s filled later",
                             name, ", ".join(added))
                    continue
                done += [f"{name}.{c} ({filled[c]} rows)" for c in added]
        if known != ",".join(current):
            capture.set_state(con, _COLUMNS_STATE + name, ",".join(current))
    return done


class _LocalChange(Exception):
    """A user wrote the table while the fill ran: it is undone and tried again later."""


def _fill(con: Connection, table: Table, number: int, columns: list[str],
          policy: Policy, only_different: bool = False) -> tuple[dict[str, int] | None, int]:
    """Write each row's merged value of ``columns`` from its registers: every row's (a new
    column), or ``only_different`` where the row holds another value (a widened column).
    Returns the rows written per column — None when the table has captured changes not yet
    published, before or during the fill (nothing written: a row may hold a newer local
    value; the next call tries again) — and the number of values that still do not fit.

    Each row is written only if it still holds the value read, and a row a constraint
    refuses is left as it is (counted as not fitting, logged): users may be at work."""
    d = con.sql_dialect
    keys = table.key_columns
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c in keys)
    filled = dict.fromkeys(columns, 0)
    left = 0
    targets = [table.column(name) for name in columns]
    pending = (f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS "
               f"(SELECT 1 FROM {capture.IMAGE_PREFIX}{number})")
    try:
        with transaction(con) as tm:
            cur = tm.cursor()
            reader = tm.cursor()
            try:
                cur.execute(pending)
                if cur.fetchone() is not None:
                    return None, 0
                # Other sites' changes arriving late: not captured (the applier's mark).
                # Fetched: a SELECT's expressions are evaluated only when its row is fetched
                # (unfetched, the new columns' fill was captured as this site's own writes).
                cur.execute(f"SELECT RDB$SET_CONTEXT('USER_TRANSACTION', '{APPLY_CONTEXT}', "
                            "?) FROM RDB$DATABASE", (str(number),))
                cur.fetchone()
                shown = [values.select_expr(c, d) for c in (*keys, *targets)]
                reader.execute(f"SELECT {', '.join(shown)} FROM {quote(table.name, d)}")
                cache = StatementCache()
                store = DatabaseBlobStore(tm)
                for row in reader.fetchall():
                    key = [values.encode(c.type, v) for c, v in zip(keys, row, strict=False)]
                    state = registers.load(cache, cur, number, registers.key_identity(key, table))
                    if state is None or not state.current.visible:
                        continue
                    image = state.current.image(policy)
                    for column, now in zip(targets, row[len(keys):], strict=True):
                        raw = image.get(column.name)
                        if raw is None:
                            continue
                        merged = values_pb2.Value.FromString(raw)
                        if not values.fits(column.type, merged):
                            left += 1
                            continue
                        plain = not column.type.is_blob and not column.type.dimensions
                        held = values.encode(column.type, now) if plain else None
                        if only_different and held == merged:
                            continue
                        if _write(cur, table, column, where, key, merged, held, store):
                            filled[column.name] += 1
                        else:
                            left += 1
                cache.close()
                cur.execute(pending)
                if cur.fetchone() is not None:
                    raise _LocalChange
            finally:
                reader.close()
                cur.close()
    except _LocalChange:
        return None, 0
    return filled, left


def _write(cur: Cursor, table: Table, column: Column, where: str, key: list,
           merged: values_pb2.Value, held: values_pb2.Value | None,
           store: DatabaseBlobStore) -> bool:
    """One row's column from its registers, if it still holds ``held``; whether written."""
    d = cur.connection.sql_dialect
    keys = table.key_columns
    still = (f" AND {quote(column.name, d)} IS NOT DISTINCT FROM {values.param_expr(column)}"
             if held is not None else "")
    params = [values.decode(column.type, merged, store),
              *[values.decode(c.type, v) for c, v in zip(keys, key, strict=True)]]
    if held is not None:
        params.append(values.decode(column.type, held))
    try:
        cur.execute(f"UPDATE {quote(table.name, d)} SET {quote(column.name, d)} = "
                    f"{values.param_expr(column)} WHERE {where}{still}", params)
    except DatabaseError as exc:  # a CHECK or UNIQUE here refuses it: left as it is
        log.warning("%s.%s of %s not written from the registers: %s", table.name,
                    column.name, [values.describe(v) for v in key], " ".join(str(exc).split()))
        return False
    return cur.affected_rows > 0
