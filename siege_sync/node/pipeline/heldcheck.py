"""Deletes made to wait for a row, checked again once committed (DESIGN §3.5; chaos seed 4).

A delete that knew every reference to its row but meets a row whose removal has not arrived
waits (``held_by``). The applier decides that from its transaction's snapshot; a local
transaction may remove that very row meanwhile, and the publisher, seeing the removal before
the hold is committed, finds nothing to release: neither saw the other, and the row would be
kept for good at one site. So every hold an apply decided from a row it read is checked again
in a transaction of its own begun after the hold was committed (``Settler.release_holds``);
at a node's first apply every hold on record is (it may have stopped in between), and at
every apply those kept by rows of tables this site does not replicate (no event says when
those go). A check that fails (a lock, a local change not published yet) is kept for the
next apply.

Owns which holds are still to check (``HeldDeletes``). Must never decide a hold: the settler
does, in the apply's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from firebird.driver import Connection, Cursor, DatabaseError

from ..db.database import SNAPSHOT_APPLY, StatementCache, transaction
from ..db.schema import Schema
from ..journal.capture import IMAGE_PREFIX
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import Policy
from ..model.registers import PREEXISTING
from .constraints import Settler
from .lookup import Key, RowId
from .refusals import LocalChangePending

log = logging.getLogger(__name__)


def tables_with_pending_changes(cur: Cursor, numbers: Iterable[int]) -> set[int]:
    """Tables with captured local changes visible to this transaction and not yet
    published (usually none: the pipeline has just published)."""
    found = set()
    for number in numbers:
        cur.execute(f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS "
                    f"(SELECT 1 FROM {IMAGE_PREFIX}{number})")
        if cur.fetchone() is not None:
            found.add(number)
    return found


class HeldDeletes:
    """The holds one applier decided and has not checked again yet."""

    def __init__(self, site: str) -> None:
        self._site = site
        # None: every hold on record, at the first check (a node stopped in between).
        self._holds: dict[RowId, Key] | None = None
        self._tx: dict[RowId, Key] = {}  # those of the database transaction under way

    def begin(self) -> None:
        """A database transaction of the apply begins: what it decides counts once it
        commits."""
        self._tx = {}

    def decided(self, holds: Mapping[RowId, Key]) -> None:
        """Holds a settler of the transaction under way decided from rows it read."""
        self._tx.update(holds)

    def committed(self) -> None:
        if self._holds is not None:
            self._holds.update(self._tx)

    def check(self, con: Connection, schema: Schema, registry: Mapping[str, int],
              sql: StatementCache, policies: Mapping[str, Policy]) -> None:
        """Deletes that wait for a row no longer there take effect, in a transaction of
        their own (see the module's docstring). Kept for the next call if that fails."""
        holds = self._holds
        try:
            with transaction(con, SNAPSHOT_APPLY) as tm:
                cur = tm.cursor()
                try:
                    rows = registers.RowStates(cur, sql)
                    pending: set[int] = set()  # (filled below, before any row is written)
                    settler = Settler(cur, schema, registry, rows, sql, policies, pending,
                                      DatabaseBlobStore(tm))
                    # At the first call every hold on record, those of tables left out too.
                    found = settler.held_rows() if holds is None else [
                        (table, key) for (name, _i), key in holds.items()
                        if (table := schema.tables.get(name)) is not None]
                    local = [] if holds is None else settler.held_rows(PREEXISTING.event)
                    # A row with a local change not published yet: the whole check waits
                    # for the next call (LocalChangePending, below).
                    pending |= tables_with_pending_changes(
                        cur, {registry[t.name] for t, _k in found + local})
                    released = settler.release_holds(found)
                    released += settler.release_holds(local, by=PREEXISTING.event)
                    settler.flush()
                    rows.flush()
                finally:
                    cur.close()
        except (LocalChangePending, DatabaseError) as exc:
            log.info("[%s] deletes waiting for rows that may be gone are checked again at the "
                     "next apply (%s)", self._site, " ".join(str(exc).split())[:300])
            return
        self._holds = {}
        if released:
            log.info("[%s] %d deletes that waited for rows no longer here took effect",
                     self._site, released)
