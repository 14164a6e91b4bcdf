"""A copy's rows that its source changed and had not published yet, put back as the copy's
registers say (a join or a resync: ``join.take_identity``).

The siège's snapshot holds its tables as they were, its own captured changes not yet
published included, while its registers know only what it had published. The joined site
drops those captured changes (the siège publishes them itself: they arrive as events), but
its tables kept showing them — and the applier writes a row by what its registers say the
table shows. A row the siège's user had deleted, not yet published, was missing from the
copy while its registers said it was there; when the delete arrived and was overruled (a row
of another site referenced the customer), the row was written back with the columns that
"differed" — none — so only its key: a UNIQUE tax id stayed NULL at the joined site for good
while every other site held it (chaos seed 312).

Owns putting such a row back before the copy becomes the site's own: a row its registers
show and its table lacks (deleted at the siège, the delete not yet published) is written
whole, with every value the registers know. The other rows such changes name stay as the
siège left them, which is safe: the siège's event about each writes what it changed (an
update's columns differ from what the registers knew; an insert writes the whole row), or
loses to a write that was itself written here. Writes go in passes, so that rows referencing
each other find each other; a row the engine still refuses after every pass (a UNIQUE value
another unpublished change took) stays as it was, said in the log. Writes with the apply
context set, so neither capture nor guarded application triggers see them. Must never touch
a row no captured change names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from firebird.driver import Connection, DatabaseError

from ...proto import values_pb2
from ..db import values
from ..db.database import StatementCache, quote, transaction
from ..db.guard import APPLY_CONTEXT
from ..db.rowwrite import RowWriter
from ..db.schema import Table, introspect
from ..journal import capture
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import LWW, Policy

log = logging.getLogger(__name__)

_PASSES = 4  # rows referencing each other: each pass writes what the previous let through


@dataclass
class _Row:
    table: Table
    number: int
    key: list[values_pb2.Value]


def undo_unpublished(con: Connection, policies: Mapping[str, Policy]) -> int:
    """Write back whole the rows the copy's captured, unpublished changes deleted while its
    registers show them (see the module's docstring). Returns how many."""
    rows = _named_rows(con)
    if not rows:
        return 0
    done = 0
    left = rows
    for _ in range(_PASSES):
        failed: list[_Row] = []
        for row in left:
            try:
                done += _settle(con, row, policies)
            except DatabaseError:
                failed.append(row)
        if not failed or len(failed) == len(left):
            left = failed
            break
        left = failed
    for row in left:
        log.warning("a row the source of this copy changed and had not published yet, %s %s, "
                    "could not be put back as its registers say (the database refused it); "
                    "it stays as the copy holds it", row.table.name,
                    [str(v).strip() for v in row.key])
    return done


def _named_rows(con: Connection) -> list[_Row]:
    """Every row a captured change not yet published names, once, in the order first named."""
    registry = capture.table_registry(con)
    schema = introspect(con)
    d = con.sql_dialect
    found: dict[tuple[int, bytes], tuple[int, _Row]] = {}
    with transaction(con) as tm:
        cur = tm.cursor()
        for number in capture.image_tables(con):
            name = registry.get(number, ("", ""))[0]
            table = schema.tables.get(name)
            if table is None:
                continue
            keys = [table.column(c) for c in table.primary_key]
            cur.execute(f"SELECT SYNC$ID, {', '.join(values.select_expr(c, d) for c in keys)} "
                        f"FROM {quote(capture.IMAGE_PREFIX + str(number), d)} ORDER BY SYNC$ID")
            for log_id, *raw in cur.fetchall():
                if any(v is None for v in raw):
                    continue
                key = [values.encode(c.type, v) for c, v in zip(keys, raw, strict=True)]
                ident = (number, registers.key_identity(key, table))
                if ident not in found:
                    found[ident] = (int(log_id), _Row(table, number, key))
        cur.close()
    return [row for _id, row in sorted(found.values(), key=lambda item: item[0])]


def _settle(con: Connection, row: _Row, policies: Mapping[str, Policy]) -> int:
    """The row written back whole if its registers show it and the table lacks it, in a
    transaction of its own (a refusal undoes only it); 1 if written."""
    d = con.sql_dialect
    table = row.table
    with transaction(con) as tm:
        cur = tm.cursor()
        sql = StatementCache()
        try:
            state = registers.RowStates(cur, sql).get(
                row.number, registers.key_identity(row.key, table))
            if state is None or not state.current.visible:
                return 0
            where = " AND ".join(f"{quote(c, d)} = {values.param_expr(table.column(c))}"
                                 for c in table.primary_key)
            cur.execute(f"SELECT 1 FROM {quote(table.name, d)} WHERE {where}",
                        [values.decode(table.column(c).type, v)
                         for c, v in zip(table.primary_key, row.key, strict=True)])
            if cur.fetchone() is not None:
                return 0
            image = state.current.image(policies.get(table.name, LWW))
            writer = RowWriter(cur, d, sql, DatabaseBlobStore(tm))
            writer.set_context(APPLY_CONTEXT, str(row.number))
            writer.upsert(table, row.key, {
                c.name: values_pb2.Value.FromString(image[c.name])  # type: ignore[arg-type]
                for c in table.columns
                if c.name not in table.primary_key and image.get(c.name) is not None})
            writer.set_context(APPLY_CONTEXT, None)
            writer.flush()
        finally:
            sql.close()
            cur.close()
    return 1
