"""Sites on different schema versions (DESIGN §3.8): what a site keeps of another site's newer
schema, and how it catches up once it has upgraded too.

* **A column this site lacks**: the other sites' writes of it are merged into the row
  registers like any column (the registers hold every column's versions and values); nothing
  is written to the row. When the column appears here, ``fill_new_columns`` writes each row's
  merged value from its registers.
* **A table this site lacks**: its events are kept in ``SYNC$DEFERRED`` (the rest of their
  transaction applies; the origin is not held up) and applied, in the order they arrived,
  once the table is installed here (``Applier.catch_up``).

``catch_up`` does both; ``siege-node install``, ``upgrade`` and ``run`` call it. The writes it
makes are the applier's (not captured: they are other sites' changes arriving late).
Must never run while application users write the new columns: it runs right after the
install that added them, before the node serves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from firebird.driver import Connection, Cursor

from ..proto import events_pb2, values_pb2
from . import capture, registers, values
from .capture import DEFERRED_TABLE
from .database import StatementCache, quote, transaction
from .guard import APPLY_CONTEXT
from .merge import LWW, Policy
from .schema import Table, introspect
from .storage import DatabaseBlobStore

log = logging.getLogger(__name__)

_COLUMNS_STATE = "columns:"  # + table: the columns whose values the rows hold here


_SYSTEM_PREFIXES = ("RDB$", "MON$", "SEC$", "SYNC$")


def plausible_table(name: str) -> bool:
    """A name an application table can have (kept aside when not here yet); anything else —
    empty, system or sync names, control characters, quotes — is a malformed event."""
    return (0 < len(name) <= 63 and name[0].isascii() and name[0].isalpha()
            and name == name.strip()
            and all(c.isascii() and (c.isalnum() or c in "_$ ") for c in name)
            and not name.upper().startswith(_SYSTEM_PREFIXES))


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


def fill_new_columns(con: Connection, policies: dict[str, Policy] | None = None
                     ) -> list[str]:
    """Columns that appeared since the last call get each row's merged value from its
    registers; returns ``TABLE.COLUMN (n rows)`` for each column filled."""
    schema = introspect(con)
    numbers = {name: no for no, (name, _k) in capture.table_registry(con).items()}
    done: list[str] = []
    for name, table in sorted(schema.tables.items()):
        if name not in numbers:
            continue
        current = [c.name for c in table.columns]
        known = capture.get_state(con, _COLUMNS_STATE + name)
        if known is not None:
            added = [c for c in current if c not in known.split(",")]
            if added:
                filled = _fill(con, table, numbers[name], added,
                               (policies or {}).get(name, LWW))
                done += [f"{name}.{c} ({filled[c]} rows)" for c in added]
        if known != ",".join(current):
            capture.set_state(con, _COLUMNS_STATE + name, ",".join(current))
    return done


def _fill(con: Connection, table: Table, number: int, columns: list[str],
          policy: Policy) -> dict[str, int]:
    d = con.sql_dialect
    keys = table.key_columns
    where = " AND ".join(f"{quote(c.name, d)} = {values.param_expr(c)}" for c in keys)
    filled = dict.fromkeys(columns, 0)
    with transaction(con) as tm:
        cur = tm.cursor()
        reader = tm.cursor()
        try:
            # Other sites' changes arriving late: not captured (the applier's mark).
            cur.execute(f"SELECT RDB$SET_CONTEXT('USER_TRANSACTION', '{APPLY_CONTEXT}', ?) "
                        "FROM RDB$DATABASE", (str(number),))
            reader.execute(f"SELECT {', '.join(values.select_expr(c, d) for c in keys)} "
                           f"FROM {quote(table.name, d)}")
            cache = StatementCache()
            store = DatabaseBlobStore(tm)
            for row in reader.fetchall():
                key = [values.encode(c.type, v) for c, v in zip(keys, row, strict=True)]
                state = registers.load(cache, cur, number, registers.key_hash(key))
                if state is None or not state.current.visible:
                    continue
                image = state.current.image(policy)
                for name in columns:
                    raw = image.get(name)
                    if raw is None:
                        continue
                    column = table.column(name)
                    value = values.decode(column.type, values_pb2.Value.FromString(raw), store)
                    cur.execute(f"UPDATE {quote(table.name, d)} SET {quote(name, d)} = "
                                f"{values.param_expr(column)} WHERE {where}",
                                [value, *[values.decode(c.type, v)
                                          for c, v in zip(keys, key, strict=True)]])
                    filled[name] += 1
            cache.close()
        finally:
            reader.close()
            cur.close()
    return filled
