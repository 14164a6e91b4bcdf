"""The settler's writes to the application's tables: a decided row becomes statements.

Owns turning a row's merged image into the table's row — only the columns that differ from
what the table shows, a row new here as an INSERT, values a column here cannot hold yet
kept aside (``unfit``, DESIGN §3.8), a BLOB whose bytes have not arrived waiting
(``NotArrived``) — and the context variable that lets the node's own writes past the
capture trigger and the guarded application triggers (``SYNC$APPLY``). Writes are buffered
(``db.rowwrite``) and go out before any read (``flush``).

The CHECK fall-back of DESIGN §3.5 is here, because only the engine's answer decides it:
when merging concurrent column writes gives a row a CHECK refuses, the row becomes the
whole row of its latest write (``Life.whole_row``); refused (held) only when even that row
breaks a CHECK here, or the latest write carries no whole row. A row only one site wrote
that a CHECK refuses was not merged: the constraint differs between sites (held).

Writes only what its caller decided, in its caller's transaction; must never decide a
constraint flag, read registers, or commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import NoReturn

from firebird.driver import Cursor, DatabaseError

from ...proto import values_pb2
from ..db import values
from ..db.database import StatementCache
from ..db.guard import APPLY_CONTEXT
from ..db.rowwrite import RowWriteError, RowWriter
from ..db.schema import Column, ForeignKey, Schema, Table
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import Head, Life
from ..model.registers import PREEXISTING
from .lookup import Key, Lookup, show
from .refusals import ConstraintError, LocalChangePending, NotArrived

log = logging.getLogger(__name__)

_CHECK_FAILED = 335544558  # "Operation violates CHECK constraint"
_FK_VIOLATED = 335544466  # "violation of FOREIGN KEY constraint"


def _writer_context(writer: RowWriter) -> Callable[[int], None]:
    """Sets ``SYNC$APPLY`` to the number of the table about to be written, in the writer's
    order, so that its capture trigger and guarded application triggers skip the node's own
    writes. Set before every write, not cached: a failed block puts the variable back to its
    value before the block (context variables are not transactional), so a cache would lie."""

    def set_context(number: int) -> None:
        writer.set_context(APPLY_CONTEXT, str(number))

    return set_context


def _merged(life: Life) -> bool:
    """Whether the row's values come from more than one site: only then can a CHECK refuse
    it here as an outcome of the merge (``TableWrites._check_fallback``)."""
    return len({h.stamp.site for hs in life.heads.values() for h in hs}
               - {PREEXISTING.site}) > 1


def _unmerged_check(table: str, key: Sequence[values_pb2.Value],
                    exc: Exception) -> ConstraintError:
    """One site wrote every value: nothing was merged, so not an outcome of ours but a
    constraint this site has and that site had not (held, §3.5)."""
    return ConstraintError(
        f"{table} {show(key)}: the database here refuses the row as its origin wrote it "
        f"({' '.join(str(exc).split())}): the constraint differs between sites; "
        "`siege-node held` says what to do")


def _shown_life(image: Mapping[str, bytes | None]) -> Life:
    """A life holding ``image`` (what the table shows), to compare values with."""
    return Life(PREEXISTING, frozenset(), {
        c: frozenset({Head(PREEXISTING, v)}) for c, v in image.items()})


class TableWrites:
    """One settler's writes (see the module's docstring)."""

    def __init__(self, cur: Cursor, schema: Schema, registry: Mapping[str, int],
                 sql: StatementCache, blobs: DatabaseBlobStore | None, look: Lookup) -> None:
        self._registry = registry
        self._blobs = blobs  # large BLOB values: read from and written to SYNC$BLOBS
        self._look = look
        # Row writes go out as literal EXECUTE BLOCKs (rowwrite.py), flushed before any read.
        self._writer = RowWriter(cur, schema.dialect, sql, blobs)
        self._set_context = _writer_context(self._writer)
        # (table, column) -> rows whose merged value this site's column cannot hold yet: a
        # site with a wider column wrote it (DESIGN §3.8). The registers keep it; the row
        # keeps what it had; catchup.py writes it once the column is widened here.
        self.unfit: dict[tuple[str, str], int] = {}

    def flush(self, *, fallback: bool = False) -> None:
        """Execute the buffered row writes (before any read, and before commit).
        ``fallback``: the buffer holds only a row whose CHECK refusal ``_write`` settles
        (the driver's error is raised); otherwise a CHECK refusal is final."""
        try:
            self._writer.flush()
        except RowWriteError as exc:
            if _FK_VIOLATED in (exc.gds_codes or ()):
                # A row referencing one we delete was committed after our snapshot began: a
                # local change this transaction cannot see yet. Publish, then try again.
                raise LocalChangePending from exc
            if not fallback and _CHECK_FAILED in (exc.gds_codes or ()):
                raise _unmerged_check(exc.table or "?", exc.key, exc) from exc
            raise

    def update(self, table: Table, key: Key, columns: Mapping[str, values_pb2.Value],
               check_local: bool = False) -> None:
        """Change these columns of a row in the table, as the registers' outcome demands (a
        reference re-pointed, set to NULL or put back; a loser letting go of its value).
        ``check_local``: refuse (``LocalChangePending``) a row with a local change not yet
        published."""
        number = self._registry[table.name]
        if check_local:
            self._look.check_local(table, number, key)
        self._set_context(number)
        self._look.forget(table)
        self._writer.update(table, key, columns)

    def rekey(self, table: Table, key: Key, new_key: Key) -> None:
        """The row ``key`` takes ``new_key`` in place (a UNIQUE clash's loser becomes the
        winner: ``Clashes``); the winner's write that follows gives it its values."""
        number = self._registry[table.name]
        self._look.check_local(table, number, key)
        self._set_context(number)
        self._look.forget(table)
        self._writer.rekey(table, key, new_key)
        self._look.written.discard((table.name, registers.key_data(key)))

    def delete(self, table: Table, key: Key) -> None:
        """Delete the row from its table."""
        number = self._registry[table.name]
        self._look.check_local(table, number, key)
        self._set_context(number)
        self._look.forget(table)
        self._writer.delete(table, key)
        self._look.written.discard((table.name, registers.key_data(key)))

    def write(self, table: Table, key: Key, life: Life,
              shown: Mapping[str, bytes | None] | None, left: set[str] | None = None,
              fresh: bool = False, instead: Mapping[str, bytes] | None = None) -> Life:
        """Write the row's image (only the columns that differ from what is shown), the
        ``left`` columns as NULL for now (a cycle's reference, put back later), ``instead``
        over its own columns (references re-pointed from a hidden row: ``Clashes``); on a
        CHECK refusal, fall back to whole-row last-writer-wins. ``fresh``: the row has no
        registers here (usually not in the table either: written as new). Returns the life
        as written (``whole_row`` set by a fall-back)."""
        policy = self._look.policy(table)
        null = values_pb2.Value(null=True).SerializeToString(deterministic=True)

        def image(of: Life) -> dict[str, bytes | None]:
            return {**of.image(policy), **(instead or {}), **{c: null for c in left or ()}}

        named = self._named_by_old_value(table, key, image(life), shown)
        # Alone in its block when a refusal must undo nothing else: a rename a row here
        # names, or a row whose merged columns a CHECK may refuse (the whole-row fall-back).
        # A row only one site wrote goes out with the others: a CHECK refusing it is final
        # (the constraint differs between sites), whichever flush meets it. Isolating every
        # row of a table with a CHECK made each event its own statement (the chaos run's
        # shop applied ~5x slower than plain inserts).
        alone = bool(named) or (table.has_checks and _merged(life))
        if alone:
            self.flush()
        try:
            self._upsert(table, key, image(life), shown or {}, fresh=fresh)
            if named:
                self._writer.flush()
            if alone and table.has_checks:
                self.flush(fallback=True)
            return life
        except DatabaseError as exc:
            if named and _FK_VIOLATED in (getattr(exc, "gds_codes", ()) or ()):
                self._refuse_rename(table, key, named, exc)
            if _CHECK_FAILED not in (getattr(exc, "gds_codes", ()) or ()):
                raise
            if not alone:  # a buffered row of another write, flushed to make room
                failed = exc if isinstance(exc, RowWriteError) else None
                raise _unmerged_check(failed.table or "?" if failed else table.name,
                                      failed.key if failed else key, exc) from exc
            return self._check_fallback(table, key, life, image, exc)

    @staticmethod
    def _refuse_rename(table: Table, key: Key, named: tuple[ForeignKey, str, Key | None],
                       exc: DatabaseError) -> NoReturn:
        """The engine refuses to change a UNIQUE value a row here names (a change that did
        not know that row: the merge does not settle it yet, so it is held, §3.5)."""
        fk, child, ckey = named
        raise ConstraintError(
            f"{table.name} {show(key)}: its {', '.join(fk.parent_columns)} changes, but "
            f"{child} {show(ckey) if ckey else ''} here still names the old value through "
            f"{fk.name}, which does not follow such changes (ON UPDATE NO ACTION): the change "
            "did not know that row (written concurrently at another site). An operator must "
            "point that row elsewhere or delete it at its site, or change the value back "
            "where it was changed") from exc

    def _check_fallback(self, table: Table, key: Key, life: Life,
                        image: Callable[[Life], dict[str, bytes | None]],
                        exc: DatabaseError) -> Life:
        """The merged row breaks a CHECK: the whole row of its latest write, or refused."""
        latest = max(h.stamp for hs in life.heads.values() for h in hs)
        if not _merged(life):
            raise _unmerged_check(table.name, key, exc) from exc
        row = life.latest_row
        fallback = replace(life, whole_row=latest.event)
        if row is None or row.stamp != latest:
            # The latest write did not say what its origin saw in the other columns (an
            # event of an older node): the row as that origin had it is not known here.
            raise ConstraintError(
                f"{table.name} {show(key)}: merging concurrent changes of its columns "
                f"breaks a CHECK constraint ({' '.join(str(exc).split())}) and its latest "
                f"write ({latest.site}) does not carry the whole row its site saw (an older "
                "node); an operator must correct the row at one site (or the constraint "
                "differs between sites; `siege-node held` says what to do)") from exc
        try:
            self._upsert(table, key, image(fallback), {})
            self.flush(fallback=True)
        except DatabaseError as again:
            if _CHECK_FAILED not in (getattr(again, "gds_codes", ()) or ()):
                raise
            raise ConstraintError(
                f"{table.name} {show(key)}: merging concurrent changes of its columns "
                f"breaks a CHECK constraint, and even the whole row of its latest write "
                f"({latest.site}) breaks one here ({' '.join(str(again).split())}): the "
                "constraint differs between sites; `siege-node held` says what to do"
            ) from again
        log.info("%s %s: merged columns broke a CHECK; the whole row of %s's latest write "
                 "kept", table.name, show(key), latest.site)
        return fallback

    def _named_by_old_value(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                            shown: Mapping[str, bytes | None] | None
                            ) -> tuple[ForeignKey, str, Key | None] | None:
        """A row that references, through a UNIQUE key, a value this write changes (not
        to an engine-equal one): the reference, the referencing table and key. The engine
        then cascades the change, or refuses it (the reference's own rule)."""
        if not shown:
            return None
        for columns in table.uniques:
            if not any(set(fk.parent_columns) == set(columns) for fk in table.referenced_by):
                continue
            new = [image.get(c) for c in columns]
            old = [shown.get(c) for c in columns]
            if new == old or any(v is None for v in [*new, *old]):
                continue
            if self._look.holds(table, _shown_life(shown), columns,
                           [values_pb2.Value.FromString(v) for v in new]):  # type: ignore
                continue  # engine-equal: nothing changes for the references
            found = self._look.referencing(table, key, shown, only=columns)
            if found is not None:
                fk, child, ckey, _writer = found
                return fk, child.name if child is not None else fk.table, ckey
        return None

    def insert(self, table: Table, key: Key, given: Mapping[str, values_pb2.Value]) -> None:
        """Insert a row new here from its insert's values by column (``given``). A CHECK
        refusing it is final: only its origin wrote it."""
        number = self._registry[table.name]
        self._look.check_local(table, number, key)
        columns = {}
        for c in table.columns:
            value = given.get(c.name)
            if (value is not None and c.name not in table.primary_key
                    and self._writable(table, key, c, value)):
                columns[c.name] = value
        self._set_context(number)
        self._look.forget(table)
        try:
            self._writer.write_new(table, key, columns)
        except ValueError as exc:  # a value that does not fit its column
            raise ValueError(f"{table.name} {show(key)}: {exc}") from exc
        except RowWriteError as exc:  # another buffered row, flushed to make room
            if _CHECK_FAILED in (exc.gds_codes or ()):
                raise _unmerged_check(exc.table or "?", exc.key, exc) from exc
            raise
        self._look.written.add((table.name, registers.key_data(key)))

    def _writable(self, table: Table, key: Key, column: Column,
                  value: values_pb2.Value) -> bool:
        """Whether the row's value goes into its column now: not when this site's column
        cannot hold it (counted in ``unfit``: the registers keep it, DESIGN §3.8); a BLOB
        whose bytes have not arrived stops the transaction (``NotArrived``)."""
        if not values.fits(column.type, value):
            where = (table.name, column.name)
            self.unfit[where] = self.unfit.get(where, 0) + 1
            return False
        if value.WhichOneof("kind") == "blob" and self._blobs is not None:
            try:
                self._blobs.open(value.blob).close()
            except KeyError as exc:
                raise NotArrived(f"{table.name} {show(key)}: the {column.name} BLOB "
                                 f"({value.blob.length} bytes) has not arrived") from exc
        return True

    def _upsert(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                shown: Mapping[str, bytes | None], fresh: bool = False) -> None:
        number = self._registry[table.name]
        self._look.check_local(table, number, key)
        # The key bytes are the current life's — its insert's, the same at every site —
        # not the event's: an event of another life of an engine-equal key (a late delete of
        # an older one) names the row in its own bytes. The event's bytes only where the
        # life's are unknown (a row that existed before capture). Other columns only when
        # known and changed.
        kept = [values_pb2.Value.FromString(data) if (data := image.get(name)) else value
                for name, value in zip(table.primary_key, key, strict=True)]
        if kept != key and registers.key_identity(kept, table) == registers.key_identity(
                key, table):
            key = kept  # (another row's key — an event contradicting itself — stays refused)
        columns = {}
        for c in table.columns:
            data = image.get(c.name)
            if c.name in table.primary_key or data is None or shown.get(c.name) == data:
                continue
            value = values_pb2.Value.FromString(data)
            if self._writable(table, key, c, value):
                columns[c.name] = value
        self._set_context(number)
        try:
            self._look.forget(table)
            (self._writer.write_new if fresh else self._writer.upsert)(table, key, columns)
        except ValueError as exc:  # a value that does not fit its column
            raise ValueError(f"{table.name} {show(key)}: {exc}") from exc
        self._look.written.add((table.name, registers.key_data(key)))
