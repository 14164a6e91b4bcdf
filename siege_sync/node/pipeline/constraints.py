"""Putting merged rows into the database, with the same constraint outcome at every site
(DESIGN §3.5).

Owns the step from a row's merged registers to the row in its table, when the database's
constraints have a say:

* **foreign keys**: every write that makes a row reference a parent is counted in the
  parent's registers (``note_references``); a parent delete that did not know one of them is
  overruled for good (merge.py): on record, the parent lives on as an ordinary row — a child
  written while its parent is deleted brings it back from its tombstone — and it stays when
  the referencing rows go later. A row referenced by a visible row is visible: a delete
  that knew every reference but meets a row whose removal has not arrived here yet keeps
  the row while it waits (``held_by``); when that row goes, the delete takes effect — also
  when a local transaction removed it unseen by the apply's snapshot that decided the wait
  (checked again once committed: ``release_holds``).
* **references to a UNIQUE key** (``REFERENCES VEHICLE (CODE)``) work like the others: the
  parent is the row holding the value as the engine compares it — in the table, else in the
  registers (a deleted parent a new reference brings back, or one hidden by a clash:
  ``_parent_key``). Such a reference names the value, not a row: it never keeps a row from
  losing a UNIQUE clash (the value stays, the winner holds it); the loser's row takes the
  winner's key in place (``_hand_over``), so the value never leaves the table; the rows
  written for the loser go on record (``REPARENTED``), and both rows count the references
  made through the value (``_shared_refs``), whichever row held it where they arrived. An
  event can name the parent row its origin met (``name_parents``; the publisher reads
  ``resolved``): then every site counts the reference on that row, as for a primary key. A
  change of such a value while a row elsewhere names the old one (ON UPDATE NO ACTION) is
  not settled by the merge yet: the transaction is held, saying so.
* **UNIQUE** (other than the key): of two rows holding the same value, the one whose value
  was written with the lower stamp is hidden everywhere and on record (``evicted_by``); it
  comes back when the clash is gone. Referenced or not: two referenced rows holding one
  value are the same thing registered twice (two sites registered one customer at once),
  and the rows referencing the loser by its primary key reference the winner instead
  (``_repoint``; a row arriving later for the loser too, ``_repoint_child``) — in the
  table only: their registers keep their own reference, on record (``REPARENTED``, naming
  the loser's life; kept true by ``_rerecord_from`` when the hidden row changes). So the
  table follows from the registers: when the loser's key shows a row again, they
  reference it again (``_repoint_back``); a winner deleted where the loser was never seen
  gives them back (``_give_back``). The engine checks each statement, so the loser lets go
  of its value (its nullable columns of the UNIQUE key set to NULL, in this transaction
  only) while the rows move; a UNIQUE key without a nullable column, or rows of a table
  this site does not replicate referencing the loser, hold the transaction, saying so.
* **colliding keys**: when a life of a key loses to a concurrent insert (merge.py's
  ``GENERATION``), the rows referencing that key that were written for the lost life — by its
  origin, after it, stamped below the insert that replaced it — are on record with it
  (``REPARENTED``, naming the lost life and the winner) and stay visible. Kept true both ways:
  when the parent's life loses (``_reparent_children``) and when such a row is written, goes
  or points elsewhere (``_reparent_child``, also for local changes the publisher shows).
* **CHECK**: when merging concurrent column writes gives a row a CHECK refuses, the row falls
  back to whole-row last-writer-wins (``_check_fallback``): it becomes the whole row of its
  latest write — the update with the highest stamp, whose event carries, besides what it
  wrote, what its origin's row held in the other columns (``Event.seen``, kept as the life's
  ``latest_row``, merge.py) — and ``whole_row`` names that write. A column that row has no
  value for (a BLOB it did not write: not in an update's image) keeps the merged value. Every
  head it overrides is on record at every site (``WHOLE_ROW``; in the columns it wrote, the
  usual ``COLUMN`` losses to it). Decided again at each write of the row (a later write whose
  merged row satisfies the CHECK ends it; the records of the overridden heads then follow the
  merge). A local edit of a row showing such a row also writes the columns whose shown value
  is not the merged one (publish.py), so every site keeps the row its user saved. Refused
  (the transaction held, with the row and the constraint named) only when even that whole
  row breaks a CHECK here — the constraint differs between sites — or when the latest write
  carries no whole row (published by an older node, or captured by an older trigger).

Each flag is decided again from the current registers and rows whenever a row involved
changes, so it is a function of the events applied, not of their arrival order. A child whose
parent has never been seen here cannot be placed: ``NotArrived`` makes the applier wait
for the parent's event (it was committed before the child at the child's origin); so does a
large BLOB whose bytes have not arrived.

Inside one source transaction the capture order is not always the engine's (an application's
AFTER INSERT trigger writes a child before the parent's capture trigger runs; a cascade logs a
parent's delete before its children's). Given the applier's ``later`` (does a row still have
events of this transaction to apply?), a row whose parent is inserted later in the
transaction, or whose delete meets rows the transaction deletes later, is ``Deferred``: the
applier applies it after them. A row never references or keeps itself. Rows that keep each
other from being deleted (a cycle) are untied (``untie``): the nullable references to a row
from rows deleted later are set to NULL first (put back if such a row stays after all); when
no reference of the cycle is nullable, ``force`` settles the row as if the others stayed.

Bringing parents back can meet a cycle too: rows referencing each other were deleted together
while another site wrote a row referencing one of them. The first row of the cycle brings
back its parent, which references the first row, still unwritten. The row closing the cycle
is then written without that reference (NULL), or — when that column cannot be NULL — the
nearest row of the cycle whose reference can be; the reference is put back (and the rows it
names brought back) once the first row is written. Every row ends whole, as its registers
say, whichever row went first. A cycle with no nullable reference cannot be written one row
after the other (the engine checks each reference at once): ``ConstraintError`` names its
rows and the transaction is held.

A row new here in a table none of this involves (no foreign key either way, no UNIQUE besides
its key: ``plain``) has no outcome to decide: ``write_new`` writes it straight from its
insert, with the merge's registers — the applier's short path for most of a catching-up
site's events; the general path gives the same rows and registers (a test holds them equal).

Runs inside its caller's transaction (the applier's, or the publisher's for local writes);
must never commit or open one, and never write a row the registers do not decide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NoReturn

from firebird.driver import Cursor, DatabaseError

from ...proto import values_pb2
from ..db import values
from ..db.collation import identity_value
from ..db.database import StatementCache, quote
from ..db.guard import APPLY_CONTEXT
from ..db.rowwrite import RowWriteError, RowWriter
from ..db.schema import Column, ForeignKey, Schema, Table
from ..journal import conflicts
from ..journal.capture import CONFLICTS_TABLE, IMAGE_PREFIX
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import (
    LWW,
    EventId,
    Head,
    Life,
    Loss,
    LossKind,
    Policy,
    Refs,
    RowState,
    Stamp,
    losses,
    referenced,
    with_refs,
)
from ..model.registers import PREEXISTING

log = logging.getLogger(__name__)

_CHECK_FAILED = 335544558  # "Operation violates CHECK constraint"
_FK_VIOLATED = 335544466  # "violation of FOREIGN KEY constraint"
_MAX_DEPTH = 64  # rows settled because another one changed, nested


class ConstraintError(Exception):
    """The constraints cannot be satisfied from the events (the origin is stopped)."""


class NotArrived(Exception):
    """Something the transaction needs has not arrived here yet: a parent row this site has
    never had, or the bytes of a large BLOB. The transaction waits for it."""


class LocalChangePending(Exception):
    """A row to be written has a captured local change not yet published."""


RowId = tuple[str, bytes]  # table name, key hash: a row of the source transaction


class Deferred(Exception):
    """The event must wait for the next event of ``row`` in its own source transaction
    (a parent inserted later, a referencing row deleted later). Raised before anything of
    the event is written or stored."""

    def __init__(self, row: RowId, why: str) -> None:
        super().__init__(why)
        self.row = row


Key = list[values_pb2.Value]


@dataclass
class _Step:
    """A row being brought back because ``child`` references it through ``fk``."""

    child: RowId
    table: Table
    key: Key
    fk: ForeignKey
    parent: RowId

    @property
    def nullable(self) -> bool:
        return all(self.table.column(c).nullable for c in self.fk.columns)


@dataclass
class _Untie(Exception):
    """Raised inside a cycle of rows being brought back, caught by the restore of ``step``:
    that row is written without the reference, which is put back once ``top`` is written."""

    step: _Step
    top: RowId
    done: bool = field(default=False)


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
    it here as an outcome of the merge (``Settler._check_fallback``)."""
    return len({h.stamp.site for hs in life.heads.values() for h in hs}
               - {PREEXISTING.site}) > 1


def _unmerged_check(table: str, key: Sequence[values_pb2.Value],
                    exc: Exception) -> ConstraintError:
    """One site wrote every value: nothing was merged, so not an outcome of ours but a
    constraint this site has and that site had not (held, §3.5)."""
    return ConstraintError(
        f"{table} {_show(key)}: the database here refuses the row as its origin wrote it "
        f"({' '.join(str(exc).split())}): the constraint differs between sites; "
        "`siege-node held` says what to do")


class Settler:
    """Writes merged rows of one transaction, deciding the constraint flags."""

    def __init__(self, cur: Cursor, schema: Schema, registry: Mapping[str, int],
                 rows: registers.RowStates, sql: StatementCache,
                 policies: Mapping[str, Policy], local_pending: set[int],
                 blobs: DatabaseBlobStore | None = None) -> None:
        self._cur = cur
        self._schema = schema
        self._dialect = schema.dialect
        self._registry = registry
        self._rows = rows
        self._sql = sql
        self._policies = policies
        self._local_pending = local_pending
        self._blobs = blobs  # large BLOB values: read from and written to SYNC$BLOBS
        # Row writes go out as literal EXECUTE BLOCKs (rowwrite.py), flushed before any read.
        self._writer = RowWriter(cur, schema.dialect, sql, blobs)
        self._set_context = _writer_context(self._writer)
        self._written: set[tuple[str, bytes]] = set()  # rows written (present) in this tx
        self.losses_recorded = 0
        # Rows whose delete this settler made wait for a row it read in the table (not one
        # it is writing): decided from this transaction's snapshot, so to be checked again
        # once committed (``release_holds``; the applier does).
        self.holds: dict[RowId, Key] = {}
        # The applier's view of the source transaction (None outside one): does a row still
        # have events of it to apply; whether to untie a cycle of deletes before deferring,
        # and whether to defer nothing at all (the last resort for a cycle).
        self.later: Callable[[RowId], bool] | None = None
        self.untie = False
        self.force = False
        # References to a UNIQUE key: the parent row's primary key its origin met, by
        # foreign key name, as the event at hand names them (the applier sets it for each
        # event; empty: look the parent up by its value). Every site then counts the
        # reference on that row, and brings it back from its tombstone, whatever row holds
        # the value here. ``resolved``: what ``note_references`` found, for the publisher
        # to put in the event (foreign key name -> the parent's primary key).
        # The publisher's view: rows a later local transaction of the step being published
        # inserts (table number, key identity). The table shows what the application saved
        # there since: this step never writes them (that transaction's own event settles
        # them), e.g. a hidden row coming back where the application inserted its key anew.
        self.later_local: set[tuple[int, bytes]] = set()
        # Rows whose reference a local change of the step not published yet writes (even
        # later in the transaction being published): the table holds what it saved.
        self.later_refs: set[tuple[int, bytes]] = set()
        self.named: Mapping[str, Key] = {}
        self._named_values: dict[str, bytes] = {}  # the value each named key was met for
        self.resolved: dict[str, Key] = {}
        # References set to NULL to untie a cycle of deletes: (table, key, columns).
        self._nulled: list[tuple[Table, Key, tuple[str, ...]]] = []
        # Rows being brought back because a row references them, outermost first. A parent
        # already among them is a cycle (rows referencing each other, deleted together).
        self._restoring: list[_Step] = []
        # References of such a cycle written as NULL, by the row whose write lets them be
        # put back (the row of the cycle that was being brought back first).
        self._left: dict[RowId, list[_Step]] = {}
        # (table, column) -> rows whose merged value this site's column cannot hold yet: a
        # site with a wider column wrote it (DESIGN §3.8). The registers keep it; the row
        # keeps what it had; catchup.py writes it once the column is widened here.
        self.unfit: dict[tuple[str, str], int] = {}
        # Rows hidden by a UNIQUE clash, by table (read when first needed); rows hidden or
        # back since, whose value rows reference by a UNIQUE key: (table, key, registers
        # before, image), for ``_reparent_by_value``.
        self._hidden_keys: dict[str, list[Key]] = {}
        # By table: the key of the row holding a UNIQUE value (columns, its identity), or a
        # primary key found there (no columns); forgotten when this settler writes the table.
        self._unique_cache: dict[str, dict[tuple[tuple[str, ...], bytes], Key]] = {}
        self._clashed: list[tuple[Table, Key, RowState | None, dict[str, bytes | None]]] = []
        # Two referenced rows holding one UNIQUE value (DESIGN §3.5): by the winner not yet
        # written, the losers (key, registers, the winner's value event, the columns) whose
        # rows are re-pointed to it once it is; by child row, the reference columns written
        # with the winner's key instead of a hidden loser's; the rows re-pointed, whose
        # ``REPARENTED`` records follow once the loser's registers are stored.
        self._merge_after: dict[RowId, list[tuple[Key, RowState, EventId, tuple[str, ...]]]] \
            = {}
        self._repoint_to: dict[RowId, dict[str, bytes]] = {}
        self._repointed: list[tuple[Table, Key, Table, Key]] = []
        self._rewon: list[tuple[Table, Key]] = []  # hidden rows another row hides now

    def table(self, name: str) -> Table | None:
        return self._schema.tables.get(name)

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

    # --- registers ---------------------------------------------------------------------

    def _stored(self, table: Table, key: Key) -> RowState | None:
        """A row's stored registers; None for a table that is not replicated (a foreign key
        may reference one: its rows are the application's alone)."""
        number = self._registry.get(table.name)
        return None if number is None else self._rows.get(
            number, registers.key_identity(key, table))

    def state(self, table: Table, key: Key, inserting: bool = False) -> RowState | None:
        """A row's registers. A row that predates capture (or an insert's) has none: unless
        inserting, it gets a pre-existing life with the values the database holds, so that
        it can be restored or shown later (unknown when the row is not here)."""
        state = self._stored(table, key)
        if state is None and not inserting:
            image = self._read_row(table, key) or {}
            state = RowState(Life(PREEXISTING, frozenset(), {
                c.name: frozenset({Head(PREEXISTING, image.get(c.name))})
                for c in table.columns}))
        return state

    def put(self, table: Table, key: Key, before: RowState | None, after: RowState) -> None:
        """Store a row's registers and put the losses that changed on record."""
        number = self._registry[table.name]
        policy = self._policy(table)
        row = registers.key_identity(key, table)
        self._rows.put(number, row, after)
        if table.referenced_by and before is not None and _hidden_as(before.current) \
                not in (None, _hidden_as(after.current)):
            self._rerecord_from(table, key, before)
            if _hidden_as(after.current) is not None:
                # Still hidden, by another row now (the winner let go of the value): the
                # rows re-pointed from it follow the new winner (``_follow_new_winners``).
                self._rewon.append((table, key))
        old = losses(before, policy) if before is not None else set()
        new = losses(after, policy)
        if new != old:
            conflicts.record(self._cur, number, key, row, new - old, retracted=old - new,
                             decide=policy.manual, cache=self._sql)
            self.losses_recorded += len(new - old)
            if table.referenced_by and any(loss.kind is LossKind.GENERATION
                                           for loss in new ^ old):
                self._reparent_children(table, key, before)
            if any(loss.kind is LossKind.UNIQUE_CLASH for loss in new ^ old):
                self._hidden_keys.pop(table.name, None)
                if any(fk.parent_columns != table.primary_key for fk in table.referenced_by):
                    self._clashed.append((table, key, before, after.current.image(policy)))

    def _policy(self, table: Table) -> Policy:
        return self._policies.get(table.name, LWW)

    def note_references(self, table: Table, writer: EventId,
                        written: Mapping[str, bytes | None], create: bool = True,
                        depth: int = 0) -> bool:
        """Count a write of ``table`` (``written``: the columns it wrote, encoded) in the
        registers of each parent whose whole key it sets: a delete of that parent that did
        not know the write is overruled, and the parent comes back if it was gone. Called
        once the row itself is settled. ``create=False``: return False, doing nothing, when
        a parent has no registers yet (the publisher waits for the end of the transaction,
        whose later events may insert it). The reference is decided from the event's own
        values, so that every site counts the same writes."""
        for fk in table.foreign_keys:
            parent = self._schema.tables.get(fk.parent)
            raw = [written.get(c) for c in fk.columns]
            if parent is None or parent.name not in self._registry or \
                    any(v is None for v in raw):
                continue
            parsed = [values_pb2.Value.FromString(v) for v in raw]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            try:
                # (by a UNIQUE key: the row holding it here, which the child's write met)
                pkey = self._parent_key(table, fk, parent, parsed)
            except ValueError:
                continue  # a value no parent key can hold: the row itself was refused
            if pkey is None:
                continue  # no row holds it here: the child was refused or is waiting
            if fk.parent_columns != parent.primary_key:
                self.resolved[fk.name] = pkey
            number = self._registry[parent.name]
            if self._rows.get(number, registers.key_identity(pkey, parent)) is None \
                    and not create:
                return False
            # A value rows clashed over counts on each of them when the event does not
            # name the row its origin met: which one held it when the write reached a site
            # is not the same everywhere (see _unique_outcome).
            also = [] if fk.parent_columns == parent.primary_key or self._named(
                table, fk, parent, _rekey(table, fk, parent, parsed)) is not None \
                else self._hidden_holders(table, fk, parent, parsed, pkey)
            for held in [pkey, *also]:
                pstate = self.state(parent, held)
                assert pstate is not None
                after = referenced(pstate, writer)
                if after is pstate:
                    continue
                if after.current.exists and not pstate.current.exists:
                    self.settle(parent, held, pstate, after, depth=depth + 1)
                else:
                    self.put(parent, held, pstate, after)
        return True

    def _hidden_holders(self, table: Table, fk: ForeignKey, parent: Table,
                        parsed: Sequence[values_pb2.Value], besides: Key) -> list[Key]:
        """The rows hidden by a UNIQUE clash whose value a reference to a UNIQUE key names
        (``besides`` excepted)."""
        if fk.parent_columns == parent.primary_key:
            return []
        hidden = self._hidden(parent)
        if not hidden:
            return []
        vals = _rekey(table, fk, parent, parsed)
        mine = registers.key_identity(besides, parent)
        return [k for k in hidden if registers.key_identity(k, parent) != mine
                and (state := self._stored(parent, k)) is not None
                and self._holds(parent, state.current, fk.parent_columns, vals)]

    def _holds(self, table: Table, life: Life, columns: Sequence[str],
               vals: Sequence[values_pb2.Value]) -> bool:
        """Does the life hold these values in these columns, as the engine compares them?"""
        image = life.image(self._policy(table))
        held = [image.get(c) for c in columns]
        if any(v is None for v in held):
            return False  # not known here (a pre-existing value)
        types = [table.column(c).type for c in columns]
        return [identity_value(t, values_pb2.Value.FromString(v))  # type: ignore[arg-type]
                for t, v in zip(types, held, strict=True)] == [
            identity_value(t, v) for t, v in zip(types, vals, strict=True)]

    # --- settling ----------------------------------------------------------------------

    def settle(self, table: Table, key: Key, before: RowState | None, after: RowState,
               holder: EventId | None = None, hide: EventId | None = None,
               depth: int = 0, hidden_for: tuple[str, ...] = ()) -> None:
        """Decide the constraint flags of ``after`` (the row's merged registers), make the
        database row match, store the registers. ``before``: the registers the database
        row reflects now (None: none). ``holder``: a row about to reference this one;
        ``hide``: the row about to take this one's UNIQUE value (``hidden_for``: those
        columns; rows referencing them go on referencing whichever row holds it)."""
        if depth > _MAX_DEPTH:
            raise ConstraintError(f"constraints between rows of {table.name} chain deeper than "
                                  f"{_MAX_DEPTH} rows; an operator must look at them")
        policy = self._policy(table)
        was = before is not None and before.current.visible
        old_image = before.current.image(policy) if was and before is not None else {}
        if depth == 0 and self.later is not None:
            self._in_order(table, key, after, old_image if was else None, policy)
        life = replace(after.current, held_by=None, evicted_by=hide, whole_row=None,
                       whole_row_site=None)
        if not life.exists and was and table.uniques and table.referenced_by:
            self._give_back(table, key, old_image, depth)
        if not life.exists:
            held = holder or (self._referencing_row(table, key, old_image) if was else None)
            life = replace(life, held_by=held)
            if held is not None and holder is None:
                self.holds[(table.name, registers.key_identity(key, table))] = key
        if life.visible and table.uniques:
            kept = holder is not None or life.held_by is not None
            life, refs = self._unique_outcome(table, key, life, after.refs, kept,
                                              old_image if was else None, depth)
            if refs != after.refs:
                after = with_refs(after, refs)
                life = replace(life, overruled=after.current.overruled)
        if life.visible:
            left = self._ensure_parents(table, key, life.image(policy),
                                        old_image if was else None, life.generation.event,
                                        depth)
            life = self._write(table, key, life, old_image if was else None, left,
                               fresh=before is None)
            for loser, lstate, event, columns in self._merge_after.pop(
                    (table.name, registers.key_identity(key, table)), ()):
                self._repoint(table, loser, key)
                self.settle(table, loser, lstate, lstate, hide=event, depth=depth + 1,
                            hidden_for=columns)
        elif was:
            if hide is not None:
                self._refuse_if_referenced(table, key, old_image, "hidden by a UNIQUE clash",
                                           besides=hidden_for)
            self._delete(table, key)
        if life.visible and before is not None and before.current.exists and \
                before.current.evicted_by is not None and table.referenced_by:
            self._repoint_back(table, key, before)  # (before ``put`` drops their records)
        self.put(table, key, before, replace(after, current=life))
        if table.foreign_keys:
            self._reparent_child(table, key, before.current if was and before else None,
                                 old_image, life if life.visible else None, policy)
        if life.visible:
            self._put_back((table.name, registers.key_identity(key, table)), depth)
        if depth == 0 and not self._restoring:
            self._put_back(None, depth)
            self._reparent_by_value()
            self._rerecord_repointed()
        if was:
            new_image = life.image(policy) if life.visible else {}
            # The row that hides this one is not written yet: hidden rows wait for it.
            self._release(table, old_image, new_image, depth, hidden_too=hide is None)
        if depth == 0 and not self._restoring:
            self._follow_new_winners()

    def _in_order(self, table: Table, key: Key, after: RowState,
                  shown: Mapping[str, bytes | None] | None, policy: Policy) -> None:
        """Raise ``Deferred`` when the row must wait for a later event of its own source
        transaction: a parent it now references is not here but inserted later; its delete
        meets a row the transaction deletes later (children go first, as the engine needs).
        With ``untie``, a nullable reference from such a row is set to NULL instead."""
        assert self.later is not None
        if self.force:
            return
        if after.current.exists:
            image = after.current.image(policy)
            for fk, parent, pkey in self._references(table, key, image, shown):
                row = (parent.name, registers.key_identity(pkey, parent))
                if self.later(row) and not self._exists(
                        parent.name, parent.primary_key, pkey, parent, table, fk):
                    raise Deferred(row, f"{table.name} {_show(key)} references {parent.name} "
                                        f"{_show(pkey)}, inserted later in its transaction")
            return
        if shown is None:
            return  # not in the table: nothing to delete
        while True:
            found = self._referencing(table, key, shown)
            if found is None:
                return
            fk, child, ckey, _writer = found
            if child is None or ckey is None:
                return
            row = (child.name, registers.key_identity(ckey, child))
            if not self.later(row):
                return  # kept by a row that stays: settle() decides
            if not self.untie or not all(child.column(c).nullable for c in fk.columns):
                raise Deferred(row, f"{table.name} {_show(key)} is referenced by {child.name} "
                                    f"{_show(ckey)}, deleted later in its transaction")
            self._set_context(self._registry[child.name])
            self._unique_cache.pop(child.name, None)
            self._writer.update(child, ckey, {c: values_pb2.Value(null=True)
                                              for c in fk.columns})
            self._nulled.append((child, ckey, fk.columns))

    def restore_untied(self) -> None:
        """Put back the references ``_in_order`` set to NULL, in the rows that stayed (a row
        referencing them from outside the transaction keeps them)."""
        for child, ckey, columns in self._nulled:
            state = self._stored(child, ckey)
            if state is None or not state.current.visible:
                continue
            self.flush()
            if self._read_row(child, ckey) is None:
                continue
            image = state.current.image(self._policy(child))
            left = self._ensure_parents(child, ckey, image, None,
                                        state.current.generation.event, 0)
            self._set_context(self._registry[child.name])
            self._unique_cache.pop(child.name, None)
            self._writer.update(child, ckey, {c: values_pb2.Value.FromString(image[c])
                                              for c in columns if image.get(c) is not None
                                              and c not in left})
        self._nulled.clear()
        self._put_back(None, 0)

    def held_rows(self, by: EventId | None = None) -> list[tuple[Table, Key]]:
        """The rows on record as kept by a reference (``kept-by-reference``), some held now;
        ``by``: only those kept by that writer. One read of the records."""
        self.flush()
        sql = (f"SELECT DISTINCT TBL_NO, KEY_DATA FROM {CONFLICTS_TABLE} WHERE KIND = ?"
               + (" AND WINNER = ?" if by is not None else ""))
        params: tuple[object, ...] = (LossKind.DELETE_OF_REFERENCED_ROW.value,)
        if by is not None:
            params += (f"{by.site}/{by.incarnation}#{by.seq}",)
        self._sql.run(self._cur, sql, params)
        names = {number: name for name, number in self._registry.items()}
        out = []
        for number, data in self._cur.fetchall():
            table = self.table(names.get(number, ""))
            if table is not None:
                out.append((table, registers.key_values(data)))
        return out

    def release_holds(self, rows: Iterable[tuple[Table, Key]],
                      by: EventId | None = None) -> int:
        """Deletes that wait (``held_by``; ``by``: only for that writer) for rows no longer
        there take effect, as they did where they were made. No event says so when:

        * the rows keeping them belong to a table this site does not replicate (kept, on
          record, by the pre-existing writer: ``held_rows(PREEXISTING.event)``);
        * the hold was decided from an apply's snapshot while a local transaction removed
          the row it saw, and the publisher saw that removal before the hold was committed:
          neither transaction saw the other (chaos seed 4, issue 19).

        Returns how many rows were released."""
        released = 0
        for table, key in rows:
            state = self._stored(table, key)
            if state is None or state.current.exists or state.current.held_by is None or \
                    (by is not None and state.current.held_by != by):
                continue
            shown = self._read_row(table, key)
            if shown is not None and self._referencing_row(table, key, shown) is not None:
                continue  # still named here
            self.settle(table, key, state, state)
            released += 1
        return released

    def after_local_write(self, table: Table, before: RowState | None,
                          merged: RowState) -> RowState:
        """A local change (already in the table) seen by the publisher: a delete here really
        deleted the row; a row that stopped referencing a parent, or holding a UNIQUE
        value, lets go of what it held — here exactly as at the sites that apply it."""
        policy = self._policy(table)
        life = merged.current
        if life.deletes and life.held_by is not None and before is not None and \
                len(life.deletes) > len(before.current.deletes):
            merged = replace(merged, current=replace(life, held_by=None))
        old = before.current.image(policy) if before is not None and \
            before.current.visible else {}
        new = merged.current.image(policy) if merged.current.visible else {}
        self._release(table, old, new, 0, hidden_too=True)
        if table.referenced_by and before is not None and _hidden_as(before.current) \
                not in (None, _hidden_as(merged.current)):
            # A row hidden by a UNIQUE clash written here (inserted again by its key): the
            # rows re-pointed from it reference it again, as at the sites that apply it.
            key = [values_pb2.Value.FromString(new[c]) for c in table.primary_key
                   if new.get(c) is not None]  # type: ignore[arg-type]
            if len(key) == len(table.primary_key):
                # (the table may be past the change at hand: the row deleted since)
                if merged.current.visible and self._read_row(table, key) is not None:
                    self._repoint_back(table, key, before)
                self._rerecord_from(table, key, before, now=merged)
        image = old or new
        key = [values_pb2.Value.FromString(image[c]) for c in table.primary_key
               if image.get(c) is not None]
        if table.foreign_keys and len(key) == len(table.primary_key):
            # (the key from the row's own image: a row the registers know was inserted whole)
            self._reparent_child(
                table, key, before.current if old and before is not None else None, old,
                merged.current if merged.current.visible else None, policy)
        return merged

    def _unique_outcome(self, table: Table, key: Key, life: Life, refs: Refs, kept: bool,
                        shown: Mapping[str, bytes | None] | None, depth: int
                        ) -> tuple[Life, Refs]:
        """Hide this row, or the visible row it clashes with: the lower stamp loses; the
        rows referencing the loser by its primary key are re-pointed to the winner.
        ``kept``: a row is about to reference this one (it is re-pointed the same way by
        ``_ensure_parents``); ``shown``: what the table shows of it (None: not there).
        Returns the life and the references to count (``refs``, this row's, and those of
        the rows it clashed with).

        Rows referencing the value count on whichever row held it when they reached a
        site — not the same row everywhere when two rows clash — so both rows count the
        references of both (``_shared_refs``): a delete of either that knew them all is
        not overruled at one site and obeyed at another.

        References through the clashing columns themselves do not count: they name the
        value, which stays whichever row holds it (a trip naming a vehicle's code). The
        loser's row, when it is in the table and such rows reference it, becomes the
        winner's in place (``_hand_over``): the value never leaves the table, which the
        engine requires of a referenced UNIQUE key (a delete then an insert is refused, or
        cascades to the referencing rows)."""
        policy = self._policy(table)
        image = life.image(policy)
        for columns in table.uniques:
            vals = [image.get(c) for c in columns]
            if any(v is None for v in vals):
                continue  # not known here (pre-existing value)
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue  # NULLs never clash
            if (shown is not None and [shown.get(c) for c in columns] == vals
                    and self._registry[table.name] not in self._local_pending):
                # The table's row already holds these values (no local change pending in
                # it): the engine's own UNIQUE lets no other row hold them. Asked anyway,
                # every update of such a table (totals kept by triggers) flushed the
                # buffered writes and read the table: one statement per event, not a block.
                continue
            other_key = self._holder_of(table, columns, parsed, key)
            if other_key is None:
                continue
            other = self.state(table, other_key)
            assert other is not None
            if any(fk.parent_columns != table.primary_key for fk in table.referenced_by):
                shared = _shared_refs(refs, other.refs)
                if shared != other.refs:
                    self.put(table, other_key, other, with_refs(other, shared))
                    other = self._stored(table, other_key) or other
                refs = shared
            mine, theirs = _unique_stamp(life, columns, policy), \
                _unique_stamp(other.current, columns, policy)
            # The lower stamp loses, referenced or not: the rows referencing it by its
            # primary key reference the winner instead (``_repoint``; a row about to
            # reference it, ``_repoint_child``) — the same row registered twice.
            other_image = other.current.image(policy)
            if theirs > mine:
                if shown is not None and self._referencing_row(
                        table, key, shown, besides=columns) is not None:
                    self._repoint(table, key, other_key)
                    self._refuse_if_referenced(table, key, shown, "hidden by a UNIQUE clash",
                                               besides=columns)
                return replace(life, evicted_by=theirs.event), refs
            if self._referencing_row(table, other_key, other_image,
                                     besides=columns) is not None:
                if shown is not None:
                    self._repoint(table, other_key, key)
                else:
                    # This row is not in the table yet and the loser's rows cannot point
                    # at it before it is: the loser lets go of the value first, its rows
                    # follow once this row is written (settle, ``_merge_after``).
                    self._free_value(table, other_key, other_image, columns, key)
                    self._merge_after.setdefault(
                        (table.name, registers.key_identity(key, table)), []).append(
                        (other_key, other, mine.event, columns))
                    continue
                self.settle(table, other_key, other, other, hide=mine.event,
                            depth=depth + 1, hidden_for=columns)
                continue
            if shown is None and self._referencing(
                    table, other_key, other_image, only=columns) is not None:
                self._hand_over(table, other_key, key)
            self.settle(table, other_key, other, other, hide=mine.event, depth=depth + 1,
                        hidden_for=columns)
        return life, refs

    def _hand_over(self, table: Table, loser: Key, winner: Key) -> None:
        """The loser's row takes the winner's key in place; the winner's write that follows
        gives it the winner's values. Rows naming the UNIQUE value never see it go."""
        number = self._registry[table.name]
        self._check_local(table, number, loser)
        self._set_context(number)
        self._unique_cache.pop(table.name, None)
        self._writer.rekey(table, loser, winner)
        self._written.discard((table.name, registers.key_data(loser)))

    def _references(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                    shown: Mapping[str, bytes | None] | None
                    ) -> list[tuple[ForeignKey, Table, Key]]:
        """The parents (by primary key) a row's image references anew, itself excepted."""
        out = []
        for fk in table.foreign_keys:
            vals = [image.get(c) for c in fk.columns]
            if any(v is None for v in vals):
                continue
            if shown is not None and vals == [shown.get(c) for c in fk.columns]:
                continue
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            parent = self._schema.tables.get(fk.parent)
            if parent is None or parent.name not in self._registry:
                continue
            pkey = self._parent_key(table, fk, parent, parsed)
            if pkey is None:
                # A UNIQUE value no row holds here, in the table or the registers: maybe
                # a row this transaction inserts later (an application trigger wrote the
                # child first). Wait for the rest of it; a row that is not in it at all
                # waits for its insert (_ensure_parents, once nothing else is left).
                raise Deferred((parent.name, b"unique:" + registers.key_data(parsed)),
                               f"{table.name} {_show(key)} references {parent.name} "
                               f"({', '.join(fk.parent_columns)}) = {_show(parsed)}, which "
                               "no row holds yet")
            if not _same_row(table, key, parent, pkey):
                out.append((fk, parent, pkey))
        return out

    def _ensure_parents(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                        shown: Mapping[str, bytes | None] | None, holder: EventId,
                        depth: int) -> set[str]:
        """Bring back the parents the row's image references and this site does not hold.
        Returns the columns to write as NULL for now: references of a cycle (rows that
        reference each other, deleted together, brought back by a row referencing one of
        them), put back by ``_put_back`` once the row they name is written."""
        left: set[str] = set()
        for fk in table.foreign_keys:
            vals = [image.get(c) for c in fk.columns]
            if any(v is None for v in vals):
                continue
            if shown is not None and vals == [shown.get(c) for c in fk.columns]:
                continue  # the reference did not change: its parent is there
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue  # no reference
            parent = self._schema.tables.get(fk.parent)
            if parent is not None and fk.parent_columns == parent.primary_key and _same_row(
                    table, key, parent, _rekey(table, fk, parent, parsed)):
                continue  # the row references itself: it is being written
            if self._exists(fk.parent, fk.parent_columns, parsed, parent, table, fk):
                continue
            named = f"{parent.name if parent else fk.parent} " + (
                _show(parsed) if parent is not None and fk.parent_columns == parent.primary_key
                else f"({', '.join(fk.parent_columns)}) = {_show(parsed)}")
            if parent is None or parent.name not in self._registry:
                raise ConstraintError(
                    f"{table.name} {_show(key)} references {named}, which does not exist "
                    f"here, and {fk.parent} is not replicated ([tables] leaves it out: each "
                    "site keeps its own rows there, so a row another site references may be "
                    f"missing here): create that row here, or include {fk.parent} in "
                    "[tables] at every site, or drop the foreign key; then `siege-node held "
                    "--retry`")
            pkey = self._parent_key(table, fk, parent, parsed)
            pstate = self._stored(parent, pkey) if pkey is not None else None
            if pkey is not None and pstate is not None and \
                    fk.parent_columns != parent.primary_key and not self._holds(
                        parent, pstate.current, fk.parent_columns,
                        _rekey(table, fk, parent, parsed)):
                # The row its origin met holds another value now: changed concurrently.
                raise ConstraintError(
                    f"{table.name} {_show(key)} names {named}, which {parent.name} "
                    f"{_show(pkey)} held where it was written; that row holds another value "
                    "here now (changed at another site that did not know "
                    f"{table.name} {_show(key)}), and no row holds the old one. An operator "
                    f"must point {table.name} {_show(key)} at the new value or delete it at "
                    "its site, or change the value back where it was changed")
            if pkey is None or pstate is None:
                raise NotArrived(
                    f"{table.name} {_show(key)} references {named}, whose insert has not "
                    f"arrived here yet. If it never does: the site that wrote {table.name} "
                    f"may leave {parent.name} out of [tables] (the sites' [tables] must agree "
                    "on it)" + ("" if fk.parent_columns == parent.primary_key else
                                ", or another site changed that value concurrently (an "
                                "operator settles it)"))
            step = _Step((table.name, registers.key_identity(key, table)), table, key, fk,
                         (parent.name, registers.key_identity(pkey, parent)))
            if any(s.parent == step.parent for s in self._restoring):
                # A cycle: the parent is being brought back and waits for this row.
                self._untie_cycle(step)
                left.update(fk.columns)
                continue
            # The parent was deleted without knowing this row, or hidden by a UNIQUE
            # clash: a row referencing it brings it back.
            self._restoring.append(step)
            try:
                self.settle(parent, pkey, pstate, pstate, holder=holder, depth=depth + 1)
                if fk.parent_columns == parent.primary_key:
                    self._repoint_child(table, key, fk, parent, pkey)
            except _Untie as untie:
                if untie.step is not step:
                    raise
                # This row goes first without that reference (the rows of the cycle between
                # were not written); the reference, and the rows it brings back, once the
                # cycle's first row is written.
                self._left.setdefault(untie.top, []).append(step)
                left.update(fk.columns)
            finally:
                self._restoring.pop()
        return left

    def _untie_cycle(self, step: _Step) -> None:
        """``step`` closes a cycle of rows being brought back. The row closing it is written
        without its reference when that reference is nullable; otherwise the nearest row of
        the cycle whose reference is (``_Untie``). The outcome — every row whole, as its
        registers say — is the same whichever row goes first; only the order of writes
        changes. No nullable reference: the engine checks each reference at once, so no
        order of writes brings the rows back."""
        at = max(i for i, s in enumerate(self._restoring) if s.parent == step.parent)
        top = step.parent
        if step.nullable:
            self._left.setdefault(top, []).append(step)
            return
        cycle = self._restoring[at:]  # from the row that first brought back ``top``
        for earlier in reversed(cycle[1:]):  # edges inside the cycle, nearest first
            if earlier.nullable:
                raise _Untie(earlier, top)
        rows = " -> ".join(f"{s.table.name} {_show(s.key)}" for s in [*cycle[1:], step])
        first = cycle[0]
        raise ConstraintError(
            f"{first.table.name} {_show(first.key)} brings back rows that were deleted "
            f"while it was written, and they reference each other through columns that "
            f"cannot be NULL ({rows} -> back to the first): the engine checks each reference "
            "at once, so they cannot be written one after the other. An operator must make "
            "one of those references nullable, or delete (at its site) the row that "
            "references them")

    def _put_back(self, top: RowId | None, depth: int) -> None:
        """Put back the references of a cycle written as NULL, now that ``top`` (None: every
        row) is written: the rows they name are brought back first (a row of the cycle that
        was not written yet)."""
        tops = [top] if top is not None else list(self._left)
        for row in tops:
            for step in self._left.pop(row, ()):
                state = self._rows.get(self._registry[step.table.name], step.child[1])
                if state is None or not state.current.visible:
                    continue  # the row is not there after all: nothing references
                image = state.current.image(self._policy(step.table))
                mine = {c: image.get(c) for c in step.fk.columns}
                still = self._ensure_parents(step.table, step.key, mine, None,
                                             state.current.generation.event, depth + 1)
                self._set_context(self._registry[step.table.name])
                self._unique_cache.pop(step.table.name, None)
                self._writer.update(step.table, step.key, {
                    c: values_pb2.Value.FromString(v) for c, v in mine.items()
                    if v is not None and c not in still})

    def _release(self, table: Table, old: Mapping[str, bytes | None],
                 new: Mapping[str, bytes | None], depth: int, hidden_too: bool) -> None:
        """A row stopped referencing parents or holding UNIQUE values: parents kept only for
        it may now be deleted, rows hidden by it may come back."""
        for fk in table.foreign_keys:
            parent = self._schema.tables.get(fk.parent)
            vals = [old.get(c) for c in fk.columns]
            if parent is None or parent.name not in self._registry or \
                    any(v is None for v in vals) or vals == [new.get(c) for c in fk.columns]:
                continue
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            # (a parent kept for this row is in the table: no need to look further)
            pkey = self._parent_key(table, fk, parent, parsed, stored_too=False)
            if pkey is None:
                continue
            pstate = self._stored(parent, pkey)
            if pstate is not None and pstate.current.held_by is not None:
                self.settle(parent, pkey, pstate, pstate, depth=depth + 1)
        if hidden_too and any([old.get(c) for c in cols] != [new.get(c) for c in cols]
                              for cols in table.uniques):
            for hidden_key in self._hidden_rows(table):
                state = self.state(table, hidden_key)
                if state is not None and state.current.evicted_by is not None:
                    self.settle(table, hidden_key, state, state, depth=depth + 1)

    # --- rows whose parent's life lost (DESIGN §3.5) ----------------------------------

    def _reparented(self, table: Table, image: Mapping[str, bytes | None] | None,
                    generation: Stamp | None,
                    parents: Mapping[RowId, RowState | None] | None = None) -> set[Loss]:
        """The ``REPARENTED`` records a row (its image, its life) calls for: for each parent
        it references, each life of that parent that lost to a concurrent insert, when this
        row's life began with an insert of that lost life's origin (same site and
        incarnation) after the lost insert and stamped below the insert that replaced it.
        Such a row was written for the lost life: its origin knew that life (its own, earlier
        in its sequence), and could not yet have seen the replacing one, whose stamp is
        higher (the typical case: an invoice and its lines saved in one transaction at two
        sites using the same number). A row its origin wrote after seeing the winner but
        stamped below it (its clock behind) is on record too: a record too many, visible,
        never a silent re-parenting. Decided from registers only, so every site records the
        same. ``parents``: parents' registers to use instead of the stored ones."""
        out: set[Loss] = set()
        if image is None or generation is None:
            return out
        for fk in table.foreign_keys:
            parent = self._schema.tables.get(fk.parent)
            if parent is None or parent.name not in self._registry:
                continue
            vals = [image.get(c) for c in fk.columns]
            if any(v is None for v in vals):
                continue
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            if fk.parent_columns != parent.primary_key:
                out |= self._reparented_by_value(table, fk, parent, parsed, generation,
                                                 parents)
                continue
            pkey = _rekey(table, fk, parent, parsed)
            prow = (parent.name, registers.key_identity(pkey, parent))
            if parents is not None and prow in parents:
                pstate = parents[prow]
            else:
                pstate = self._stored(parent, pkey)
            if pstate is not None and not pstate.current.visible and \
                    pstate.current.evicted_by is not None:
                # Its parent lost a UNIQUE clash while referenced: the row references the
                # winner instead (``_repoint``, ``_repoint_child``: also while the parent's
                # delete has not yet been overruled by the reference), its own reference on
                # record.
                out.add(Loss(LossKind.REPARENTED, pstate.current.generation.event,
                             generation.event, ", ".join(fk.columns), None,
                             pstate.current.evicted_by, generation.wall))
            if pstate is None or not pstate.past:
                continue
            for life in pstate.lives:
                lost = life.generation
                if not pstate.lost(life) or (lost.site, lost.incarnation) != (
                        generation.site, generation.incarnation) or lost.seq >= generation.seq:
                    continue
                replaced_by = min(g.generation for g in pstate.lives if g.generation > lost)
                if generation < replaced_by:
                    out.add(Loss(LossKind.REPARENTED, lost.event, generation.event,
                                 ", ".join(fk.columns), None, replaced_by.event,
                                 generation.wall))
        return out

    def _reparented_by_value(self, table: Table, fk: ForeignKey, parent: Table,
                             parsed: Sequence[values_pb2.Value], generation: Stamp,
                             parents: Mapping[RowId, RowState | None] | None
                             ) -> set[Loss]:
        """``_reparented`` for a reference to a UNIQUE key: the row holding the value lost
        it to a concurrent row (a UNIQUE clash: two sites created a vehicle with the same
        code) and this row was written for the loser — by the origin of the loser's value,
        after it, stamped below the winner's value. It now names the winner (the value it
        names is the winner's): on record with the clash, never re-pointed silently."""
        out: set[Loss] = set()
        hidden = self._hidden(parent)
        if not hidden:
            return out
        vals = _rekey(table, fk, parent, parsed)
        columns = fk.parent_columns
        policy = self._policy(parent)
        winner: Stamp | None = None
        for lkey in hidden:
            lrow = (parent.name, registers.key_identity(lkey, parent))
            lstate = parents[lrow] if parents is not None and lrow in parents \
                else self._stored(parent, lkey)
            if lstate is None or lstate.current.evicted_by is None or \
                    not self._holds(parent, lstate.current, columns, vals):
                continue
            lost = _unique_stamp(lstate.current, columns, policy)
            if (lost.site, lost.incarnation) != (generation.site, generation.incarnation) \
                    or lost.seq >= generation.seq:
                continue
            if winner is None:
                # (the publisher sees the table as it is now, maybe past the change at hand:
                # then the registers tell)
                wkey = self._holder_of(parent, columns, vals, None) or \
                    self._stored_holder(parent, columns, vals, visible=True)
                wstate = self._stored(parent, wkey) if wkey is not None else None
                if wstate is None or not wstate.current.visible:
                    return out
                winner = _unique_stamp(wstate.current, columns, policy)
            if generation < winner:
                out.add(Loss(LossKind.REPARENTED, lstate.current.generation.event,
                             generation.event, ", ".join(fk.columns), None, winner.event,
                             generation.wall))
        return out

    def _hidden(self, table: Table) -> list[Key]:
        """The rows of a table hidden by a UNIQUE clash (on record as such), read once
        while this settler lives, again once such a record changes."""
        if table.name not in self._hidden_keys:
            self._hidden_keys[table.name] = self._hidden_rows(table)
        return self._hidden_keys[table.name]

    def _reparent_by_value(self) -> None:
        """Keep the records of ``_reparented_by_value`` true for the rows naming the value of
        a row that was hidden by a UNIQUE clash, or came back (``put`` noted them): once
        every row of the change is written, so that the winner is in the table."""
        while self._clashed:
            table, key, before, image = self._clashed.pop(0)
            row = (table.name, registers.key_identity(key, table))
            for fk in table.referenced_by:
                child = self._schema.tables.get(fk.table)
                vals = [image.get(c) for c in fk.parent_columns]
                if child is None or child.name not in self._registry or \
                        fk.parent_columns == table.primary_key or any(v is None for v in vals):
                    continue
                parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore
                self._rerecord_children(child, fk, parsed, row, before)

    def _reparent_child(self, table: Table, key: Key, was: Life | None,
                        old_image: Mapping[str, bytes | None], now: Life | None,
                        policy: Policy) -> None:
        """Keep a row's ``REPARENTED`` records true after it changed: recorded when it is
        written referencing a lost life's key, dropped when it goes or points elsewhere."""
        new_image = now.image(policy) if now is not None else None
        if was is not None and now is not None and was.generation == now.generation and all(
                old_image.get(c) == new_image.get(c)  # type: ignore[union-attr]
                for fk in table.foreign_keys for c in fk.columns):
            return  # its references did not change (the usual update): nothing to look up
        had = self._reparented(table, old_image if was is not None else None,
                               was.generation if was is not None else None)
        wanted = self._reparented(table, new_image, now.generation if now else None)
        if had != wanted:
            conflicts.record(self._cur, self._registry[table.name], key,
                             registers.key_identity(key, table), wanted - had,
                             retracted=had - wanted, cache=self._sql)
            self.losses_recorded += len(wanted - had)

    def _reparent_children(self, table: Table, key: Key, before: RowState | None) -> None:
        """A life of this row lost to a concurrent insert (or stopped losing): the rows that
        reference the key and were written for that life go on record with it."""
        row = (table.name, registers.key_identity(key, table))
        for fk in table.referenced_by:
            child = self._schema.tables.get(fk.table)
            if child is None or fk.parent_columns != table.primary_key:
                continue
            self._rerecord_children(child, fk, key, row, before)

    def _rerecord_children(self, child: Table, fk: ForeignKey,
                           parent_values: Sequence[values_pb2.Value], row: RowId,
                           before: RowState | None) -> None:
        """Keep the ``REPARENTED`` records of the visible ``child`` rows naming
        ``parent_values`` through ``fk`` true, now that the parent ``row`` changed from
        ``before``."""
        self.flush()
        d = self._dialect
        keys = ", ".join(values.select_expr(c, d) for c in child.key_columns)
        self._sql.run(self._cur, f"SELECT {keys} FROM {quote(child.name, d)} WHERE "
                                 f"{self._where(fk.columns, child)}",
                      self._params(child, fk.columns, parent_values))
        found = [[values.encode(c.type, v) for c, v in zip(child.key_columns, r, strict=True)]
                 for r in self._cur.fetchall()]
        policy = self._policy(child)
        for ckey in found:
            cstate = self._stored(child, ckey)
            if cstate is None or not cstate.current.visible:
                continue
            image = cstate.current.image(policy)
            gen = cstate.current.generation
            had = self._reparented(child, image, gen, {row: before})
            wanted = self._reparented(child, image, gen)
            if had != wanted:
                conflicts.record(self._cur, self._registry[child.name], ckey,
                                 registers.key_identity(ckey, child), wanted - had,
                                 retracted=had - wanted, cache=self._sql)
                self.losses_recorded += len(wanted - had)

    # --- two referenced rows holding one UNIQUE value (DESIGN §3.5) --------------------

    def _clash_winner(self, table: Table, key: Key) -> Key | None:
        """The row in the table holding a UNIQUE value of the hidden row ``key``."""
        state = self._stored(table, key)
        if state is None:
            return None
        image = state.current.image(self._policy(table))
        for columns in table.uniques:
            vals = [image.get(c) for c in columns]
            if any(v is None for v in vals):
                continue
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            found = self._holder_of(table, columns, parsed, key)
            if found is not None:
                return found
        return None

    def _repoint_child(self, table: Table, key: Key, fk: ForeignKey, parent: Table,
                       pkey: Key) -> None:
        """A row referencing ``pkey``, which stayed hidden by a UNIQUE clash with a row
        other rows reference: it is written referencing that row instead (on record)."""
        pstate = self._stored(parent, pkey)
        if pstate is None or pstate.current.visible or pstate.current.evicted_by is None:
            return
        winner = self._clash_winner(parent, pkey)
        if winner is None:
            raise ConstraintError(
                f"{table.name} {_show(key)} references {parent.name} {_show(pkey)}, hidden "
                "by a UNIQUE clash, and no row holds its value here; an operator must look "
                "at them")
        row = (table.name, registers.key_identity(key, table))
        self._repoint_to.setdefault(row, {}).update({
            c: v.SerializeToString(deterministic=True)
            for c, v in zip(fk.columns, _child_values(parent, fk, table, winner), strict=True)})
        # Its records are decided again once both rows' registers are stored: the parent
        # may have come back and lost its clash only while this row was being written.
        self._repointed.append((table, key, parent, pkey))

    def _repoint(self, table: Table, loser: Key, winner: Key) -> None:
        """The rows of the table that reference ``loser`` by its primary key reference
        ``winner`` instead: the loser goes (a UNIQUE clash with a row other rows reference
        too), they stay. Their registers keep their own reference; the records follow
        (``_rerecord_repointed``). Rows of a table this site does not replicate cannot be
        re-pointed from events: held, saying so."""
        self.flush()
        d = self._dialect
        for fk in table.referenced_by:
            if fk.parent_columns != table.primary_key:
                continue  # (a reference to a UNIQUE value names the value: it stays)
            child = self._schema.tables.get(fk.table)
            if child is None or child.name not in self._registry:
                if self._unreplicated_refers(table, fk, loser):
                    raise ConstraintError(
                        f"{table.name} {_show(loser)} and {_show(winner)} hold the same "
                        f"UNIQUE value and other rows reference both; {fk.table}, which is "
                        "not replicated, references the one that loses: an operator must "
                        "point those rows at the other one at this site")
                continue
            keys = ", ".join(values.select_expr(c, d) for c in child.key_columns)
            loser_vals = _child_values(table, fk, child, loser)
            where = self._where(fk.columns, child)
            params = self._params(child, fk.columns, loser_vals)
            if child.name == table.name:
                where += f" AND NOT ({self._where(table.primary_key, table)})"
                params += self._params(table, table.primary_key, loser)
            self._sql.run(self._cur, f"SELECT {keys} FROM {quote(child.name, d)} WHERE "
                                     f"{where}", params)
            found = [[values.encode(c.type, v) for c, v in zip(child.key_columns, r,
                                                               strict=True)]
                     for r in self._cur.fetchall()]
            number = self._registry[child.name]
            to = dict(zip(fk.columns, _child_values(table, fk, child, winner), strict=True))
            for ckey in found:
                self._check_local(child, number, ckey)
                self._set_context(number)
                self._unique_cache.pop(child.name, None)
                self._writer.update(child, ckey, to)
                self._repointed.append((child, ckey, table, loser))

    def _free_value(self, table: Table, loser: Key, image: Mapping[str, bytes | None],
                    columns: Sequence[str], winner: Key) -> None:
        """The loser, still in the table with rows referencing it, lets go of its UNIQUE
        value (its nullable columns of it set to NULL) so that the winner can be written
        before those rows are re-pointed to it and the loser goes, in this transaction."""
        nullable = [c for c in columns if table.column(c).nullable]
        if self._referencing(table, loser, image, only=columns) is not None:
            # (rows naming the value itself: NULL would be refused, or cascade to them)
            raise ConstraintError(
                f"{table.name} {_show(loser)} and {_show(winner)} hold the same "
                f"{', '.join(columns)}; rows reference the first by its primary key and "
                "others name that value itself, so the engine cannot hold both rows while "
                "they move. An operator must change the value of one of them at one site")
        if not nullable:
            raise ConstraintError(
                f"{table.name} {_show(loser)} and {_show(winner)} hold the same "
                f"{', '.join(columns)} and other rows reference both: the rows of "
                f"{_show(loser)} (lower stamp) go to {_show(winner)}, but no column of that "
                "UNIQUE key can be NULL, so the engine cannot hold both rows while they move. "
                "An operator must change the value of one of them at one site")
        number = self._registry[table.name]
        self._check_local(table, number, loser)
        self._set_context(number)
        self._unique_cache.pop(table.name, None)
        self._writer.update(table, loser, {c: values_pb2.Value(null=True) for c in nullable})

    def _give_back(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                   depth: int) -> None:
        """A row deleted while rows re-pointed to it from a row it hid in a UNIQUE clash
        reference it: that row comes back first (its value let go here), and its rows
        reference it again (``_repoint_back``), as where the delete was made before the
        clash was seen. Only when nothing else keeps the deleted row: otherwise it stays
        (``held_by``) and the hidden row with it, until the rows keeping it go."""
        # (the value first: a table may have many hidden rows, each a read of the records)
        losers = [k for k in self._hidden(table)
                  if (st := self._stored(table, k)) is not None and st.current.exists
                  and st.current.evicted_by is not None
                  and any(self._holds(table, st.current, cols, parsed)
                          for cols in table.uniques
                          if (parsed := _parsed(image, cols)) is not None)
                  and self._reparented_rows(st)]
        if not losers or self._kept_besides(table, key, losers):
            return
        for columns in table.uniques:
            if _parsed(image, columns) is not None:
                self._free_value(table, key, image, columns, losers[0])
        for loser in losers:
            state = self._stored(table, loser)
            assert state is not None
            self.settle(table, loser, state, state, depth=depth + 1)

    def _unreplicated_refers(self, table: Table, fk: ForeignKey, key: Key) -> bool:
        """Does a row of ``fk``'s table, which this site does not replicate, reference
        ``key``? (Such rows cannot be moved from events.)"""
        self._sql.run(self._cur, f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM "
                                 f"{quote(fk.table, self._dialect)} WHERE "
                                 f"{self._where(fk.columns, None)})",
                      self._params(table, table.primary_key, key))
        return self._cur.fetchone() is not None

    def _repointed_from(self, hidden: RowState) -> Iterator[tuple[Table, int, Key, RowState]]:
        """The visible rows on record as re-pointed from the life of ``hidden`` (a row a
        UNIQUE clash hides): table, table number, key, registers."""
        names = {number: name for name, number in self._registry.items()}
        for number, data in self._reparented_rows(hidden):
            child = self.table(names.get(number, ""))
            if child is None:
                continue
            ckey = registers.key_values(data)
            cstate = self._stored(child, ckey)
            if cstate is not None and cstate.current.visible:
                yield child, number, ckey, cstate

    def _reparented_rows(self, state: RowState) -> list[tuple[int, bytes]]:
        """The rows on record as re-pointed from this row's life (table number, key)."""
        gen = state.current.generation.event
        self.flush()
        self._sql.run(self._cur, f"SELECT DISTINCT TBL_NO, KEY_DATA FROM {CONFLICTS_TABLE} "
                                 "WHERE KIND = ? AND GEN = ?",
                      (LossKind.REPARENTED.value, f"{gen.site}/{gen.incarnation}#{gen.seq}"))
        return [(number, data) for number, data in self._cur.fetchall()]

    def _kept_besides(self, table: Table, key: Key, losers: Sequence[Key]) -> bool:
        """Does a row reference ``key`` other than the rows re-pointed to it from
        ``losers`` (rows whose own reference names one of them)?"""
        self.flush()
        d = self._dialect
        theirs = {registers.key_identity(k, table) for k in losers}
        for fk in table.referenced_by:
            if fk.parent_columns != table.primary_key:
                continue
            child = self._schema.tables.get(fk.table)
            if child is None or child.name not in self._registry:
                if self._unreplicated_refers(table, fk, key):
                    return True
                continue
            keys = ", ".join(values.select_expr(c, d) for c in child.key_columns)
            self._sql.run(self._cur, f"SELECT {keys} FROM {quote(child.name, d)} WHERE "
                                     f"{self._where(fk.columns, child)}",
                          self._params(child, fk.columns, _child_values(table, fk, child, key)))
            for r in self._cur.fetchall():
                ckey = [values.encode(c.type, v) for c, v in zip(child.key_columns, r,
                                                                 strict=True)]
                if _same_row(child, ckey, table, key):
                    continue
                cstate = self._stored(child, ckey)
                parsed = _parsed(cstate.current.image(self._policy(child)), fk.columns) \
                    if cstate is not None else None
                if parsed is None or registers.key_identity(
                        _rekey(child, fk, table, parsed), table) not in theirs:
                    return True
        return False

    def _repoint_back(self, table: Table, key: Key, hidden: RowState) -> None:
        """A row hidden by a UNIQUE clash is back (the clash is gone): the rows re-pointed
        from it (its ``REPARENTED`` records name its life) reference it again, as their
        registers say (their records follow when ``put`` stores the row)."""
        mine = registers.key_identity(key, table)
        for child, number, ckey, cstate in self._repointed_from(hidden):
            if (number, registers.key_identity(ckey, child)) in self.later_refs:
                continue
            image = cstate.current.image(self._policy(child))
            for fk in child.foreign_keys:
                if fk.parent != table.name or fk.parent_columns != table.primary_key:
                    continue
                parsed = _parsed(image, fk.columns)
                if parsed is None or \
                        registers.key_identity(_rekey(child, fk, table, parsed), table) != mine:
                    continue
                self._check_local(child, number, ckey)
                self._set_context(number)
                self._unique_cache.pop(child.name, None)
                self._writer.update(child, ckey, dict(zip(fk.columns, parsed, strict=True)))

    def _rerecord_from(self, table: Table, key: Key, hidden: RowState,
                       now: RowState | None = None) -> None:
        """A row hidden by a UNIQUE clash changed (back, deleted, another life, another
        winner): the ``REPARENTED`` records of the rows re-pointed from it follow."""
        row = (table.name, registers.key_identity(key, table))
        for child, number, ckey, cstate in self._repointed_from(hidden):
            image = cstate.current.image(self._policy(child))
            had = self._reparented(child, image, cstate.current.generation, {row: hidden})
            wanted = self._reparented(child, image, cstate.current.generation,
                                      {row: now} if now is not None else None)
            if had != wanted:
                conflicts.record(self._cur, number, ckey, registers.key_identity(ckey, child),
                                 wanted - had, retracted=had - wanted, cache=self._sql)
                self.losses_recorded += len(wanted - had)

    def _follow_new_winners(self) -> None:
        """Rows hidden by a UNIQUE clash that another row hides now (the winner changed
        its value or went, and an older holder came back): the rows re-pointed from them
        reference the new winner, as at a site that never saw the old one win."""
        while self._rewon:
            table, key = self._rewon.pop(0)
            state = self._stored(table, key)
            if state is None or _hidden_as(state.current) is None:
                continue
            winner = self._clash_winner(table, key)
            if winner is None:
                continue
            mine = registers.key_identity(key, table)
            for child, number, ckey, cstate in self._repointed_from(state):
                image = cstate.current.image(self._policy(child))
                for fk in child.foreign_keys:
                    if fk.parent != table.name or fk.parent_columns != table.primary_key:
                        continue
                    parsed = _parsed(image, fk.columns)
                    if parsed is None or registers.key_identity(
                            _rekey(child, fk, table, parsed), table) != mine:
                        continue
                    self._check_local(child, number, ckey)
                    self._set_context(number)
                    self._unique_cache.pop(child.name, None)
                    self._writer.update(child, ckey, dict(zip(
                        fk.columns, _child_values(table, fk, child, winner), strict=True)))

    def _rerecord_repointed(self) -> None:
        """The ``REPARENTED`` records of the rows ``_repoint`` moved, now that their
        loser's registers say it is hidden."""
        while self._repointed:
            child, ckey, parent, pkey = self._repointed.pop(0)
            cstate = self._stored(child, ckey)
            pstate = self._stored(parent, pkey)
            if cstate is None or not cstate.current.visible or pstate is None:
                continue
            image = cstate.current.image(self._policy(child))
            gen = cstate.current.generation
            prow = (parent.name, registers.key_identity(pkey, parent))
            shown = replace(pstate, current=replace(pstate.current, evicted_by=None))
            had = self._reparented(child, image, gen, {prow: shown})
            wanted = self._reparented(child, image, gen)
            if had != wanted:
                conflicts.record(self._cur, self._registry[child.name], ckey,
                                 registers.key_identity(ckey, child), wanted - had,
                                 retracted=had - wanted, cache=self._sql)
                self.losses_recorded += len(wanted - had)

    # --- the database ------------------------------------------------------------------

    def _where(self, table_columns: Sequence[str], table: Table | None) -> str:
        d = self._dialect
        if table is None:
            return " AND ".join(f"{quote(c, d)} = ?" for c in table_columns)
        return " AND ".join(f"{quote(c, d)} = {values.param_expr(table.column(c))}"
                            for c in table_columns)

    def _params(self, table: Table, columns: Sequence[str], vals: Sequence[values_pb2.Value]
                ) -> list[object]:
        return [values.decode(table.column(c).type, v) for c, v in zip(columns, vals,
                                                                        strict=True)]

    def _read_row(self, table: Table, key: Key) -> dict[str, bytes | None] | None:
        self.flush()
        d = self._dialect
        cols = ", ".join(values.select_expr(c, d) for c in table.columns)
        self._sql.run(self._cur, f"SELECT {cols} FROM {quote(table.name, d)} WHERE "
                                 f"{self._where(table.primary_key, table)}",
                      self._params(table, table.primary_key, key))
        row = self._cur.fetchone()
        if row is None:
            return None
        out = {}
        for col, raw in zip(table.columns, row, strict=True):
            if hasattr(raw, "read"):
                reader = raw
                raw = reader.read()
                reader.close()
            out[col.name] = values.encode(col.type, raw, self._blobs).SerializeToString(
                deterministic=True)
        return out

    def _exists(self, name: str, columns: Sequence[str], vals: Sequence[values_pb2.Value],
                table: Table | None, child: Table, fk: ForeignKey) -> bool:
        """Does the parent row a reference names (the child's values) exist here? Compared
        by the engine. ``table`` None: a parent table this site does not know (not even
        one it could replicate: no primary key), compared in the child's types."""
        if table is not None and tuple(columns) == table.primary_key and (
                name, registers.key_data(list(vals))) in self._written:
            return True  # written by this transaction (an invoice, then its lines)
        if table is not None and tuple(columns) != table.primary_key:
            return self._unique_holder(table, columns, _rekey(child, fk, table, vals)) \
                is not None
        # A parent seen here stays until this settler writes its table: lines name the same
        # few parents, and each look-up flushed the writes buffered so far (measured: 2,000
        # lines naming 20 parents applied 2.4 times slower than by a remembered code).
        seen = self._unique_cache.setdefault(name, {}) if table is not None else {}
        ident = ((), registers.key_identity(list(vals), table)) if table is not None else None
        if ident is not None and ident in seen:
            return True
        self.flush()
        self._sql.run(self._cur, f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM "
                                 f"{quote(name, self._dialect)} WHERE "
                                 f"{self._where(columns, table)})",
                      self._params(table, columns, vals) if table is not None
                      else self._params(child, fk.columns, vals))
        found = self._cur.fetchone() is not None
        if found and ident is not None:
            seen[ident] = list(vals)
        return found

    def _holder_of(self, table: Table, columns: Sequence[str],
                   vals: Sequence[values_pb2.Value], key: Key | None) -> Key | None:
        """The key of another row (than ``key``; None: any row) holding these UNIQUE values
        in the table, if any. The engine compares them (collation, trailing blanks)."""
        self.flush()
        d = self._dialect
        keys = ", ".join(values.select_expr(c, d) for c in table.key_columns)
        self._sql.run(self._cur, f"SELECT {keys} FROM {quote(table.name, d)} WHERE "
                                 f"{self._where(columns, table)}",
                      self._params(table, columns, vals))
        mine = registers.key_identity(key, table) if key is not None else None
        for row in self._cur.fetchall():
            found = [values.encode(c.type, v) for c, v in zip(table.key_columns, row,
                                                              strict=True)]
            if registers.key_identity(found, table) != mine:  # not this row in other bytes
                return found
        return None

    def _parent_key(self, table: Table, fk: ForeignKey, parent: Table,
                    parsed: Sequence[values_pb2.Value], stored_too: bool = True
                    ) -> Key | None:
        """The primary key of the parent row a reference (the child's values ``parsed``)
        names. A reference to the primary key names it itself; one to a UNIQUE key names
        the row holding those values as the engine compares them: in the table, else
        (``stored_too``: a row deleted, or hidden by a UNIQUE clash, that the reference may
        bring back) the registers' row whose current life holds them. None: no such row
        here (not arrived; or a table this site does not replicate)."""
        vals = _rekey(table, fk, parent, parsed)
        if fk.parent_columns == parent.primary_key:
            return vals
        named = self._named(table, fk, parent, vals)
        if named is not None:
            return named
        found = self._unique_holder(parent, fk.parent_columns, vals)
        if found is not None or not stored_too:
            return found
        return self._stored_holder(parent, fk.parent_columns, vals)

    def _named(self, table: Table, fk: ForeignKey, parent: Table,
               vals: Sequence[values_pb2.Value]) -> Key | None:
        """The parent key the event at hand names for this reference, when it names one
        and the value is its own (a reference the event writes, not an older one)."""
        key = self.named.get(fk.name)
        if key is None or len(key) != len(parent.primary_key) or fk.name not in \
                self._named_values:
            return None
        return key if self._named_values[fk.name] == _identity(parent, fk, vals) else None

    def name_parents(self, table: Table, named: Mapping[str, Key],
                     written: Mapping[str, bytes | None]) -> None:
        """The parent keys an event names (``named``), for the values it writes
        (``written``: its encoded columns); empty for an event that names none."""
        self.named = named
        self._named_values = {}
        for fk in table.foreign_keys:
            parent = self._schema.tables.get(fk.parent)
            raw = [written.get(c) for c in fk.columns]
            if fk.name not in named or parent is None or any(v is None for v in raw):
                continue
            parsed = [values_pb2.Value.FromString(v) for v in raw]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            try:
                self._named_values[fk.name] = _identity(
                    parent, fk, _rekey(table, fk, parent, parsed))
            except ValueError:
                continue

    def _unique_holder(self, table: Table, columns: Sequence[str],
                       vals: Sequence[values_pb2.Value]) -> Key | None:
        """``_holder_of`` any row, remembered until this settler writes that table: the
        lines of an invoice name the same few codes, and each look-up would also flush the
        writes buffered so far (measured: +40% on publish and apply of 2,000 trips)."""
        types = [table.column(c).type for c in columns]
        ident = (tuple(columns), registers.key_data(
            [identity_value(t, v) for t, v in zip(types, vals, strict=True)]))
        known = self._unique_cache.setdefault(table.name, {})
        if ident in known:
            return known[ident]
        found = self._holder_of(table, columns, vals, None)
        if found is not None:
            known[ident] = found
        return found

    def _stored_holder(self, table: Table, columns: Sequence[str],
                       vals: Sequence[values_pb2.Value], visible: bool = False) -> Key | None:
        """The key of the row whose registers hold these UNIQUE values in its current life
        (compared as the engine does, ``collation.identity_value``), not necessarily in
        the table; of several, the one whose values were written last (the same choice
        at every site; ``visible``: among the rows the table should show). Reads every
        register of the table: only asked when the table has no such row."""
        number = self._registry.get(table.name)
        if number is None:
            return None
        policy = self._policy(table)
        best: tuple[Stamp, Key] | None = None
        self.flush()
        for _khash, state in list(self._rows.scan(number)):
            life = state.current
            if visible and not life.visible:
                continue
            key = [life.image(policy).get(c) for c in table.primary_key]
            if any(v is None for v in key) or not self._holds(table, life, columns, vals):
                continue  # (a key not known here: a pre-existing row)
            stamp = _unique_stamp(life, columns, policy)
            if best is None or stamp > best[0]:
                best = (stamp, [values_pb2.Value.FromString(v)  # type: ignore[arg-type]
                                for v in key])
        return None if best is None else best[1]

    def _referencing_row(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                         besides: Sequence[str] = ()) -> EventId | None:
        """A row (of any table) that references this one: who keeps it from being deleted.
        ``besides``: not through a reference to these columns."""
        found = self._referencing(table, key, image, besides=besides)
        return None if found is None else found[3]

    def _referencing(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                     besides: Sequence[str] = (), only: Sequence[str] = ()
                     ) -> tuple[ForeignKey, Table | None, Key | None, EventId] | None:
        """A row (of any table) that references this one — never the row itself (a root
        pointing at itself does not keep itself) —: the reference, the referencing table
        and key (None when that table is not replicated), its writer. ``besides``: not
        through a reference to these columns; ``only``: through one to these only."""
        if not table.referenced_by:
            return None  # (no flush: a leaf table's deletes stay in the writer's block)
        self.flush()
        for fk in table.referenced_by:
            if (besides and set(fk.parent_columns) == set(besides)) or (
                    only and set(fk.parent_columns) != set(only)):
                continue
            vals = [image.get(c) for c in fk.parent_columns]
            if any(v is None for v in vals):
                if fk.parent_columns != table.primary_key:
                    continue
                vals = [v.SerializeToString(deterministic=True) for v in key]
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            child = self._schema.tables.get(fk.table)
            d = self._dialect
            if child is None:  # not replicated: it keeps the row all the same
                self._sql.run(self._cur, f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 "
                                         f"FROM {quote(fk.table, d)} WHERE "
                                         f"{self._where(fk.columns, None)})",
                              [values.decode(table.column(p).type, v) for p, v in
                               zip(fk.parent_columns, parsed, strict=True)])
                if self._cur.fetchone() is not None:
                    return fk, None, None, PREEXISTING.event
                continue
            keys = ", ".join(values.select_expr(c, d) for c in child.key_columns)
            where = self._where(fk.columns, child)
            params = self._params(child, fk.columns, parsed)
            if child.name == table.name:
                where += f" AND NOT ({self._where(table.primary_key, table)})"
                params += self._params(table, table.primary_key, key)
            self._sql.run(self._cur, f"SELECT FIRST 1 {keys} FROM {quote(child.name, d)} WHERE "
                                     f"{where}", params)
            row = self._cur.fetchone()
            if row is not None:
                ckey = [values.encode(c.type, v) for c, v in zip(child.key_columns, row,
                                                                 strict=True)]
                cstate = self._stored(child, ckey)
                return (fk, child, ckey,
                        cstate.current.generation.event if cstate else PREEXISTING.event)
        return None

    def _refuse_if_referenced(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                              why: str, besides: Sequence[str] = ()) -> None:
        if self._referencing_row(table, key, image, besides=besides) is not None:
            raise ConstraintError(f"{table.name} {_show(key)} would be {why}, but other rows "
                                  "reference it; an operator must decide which row stays")
        # (_unique_outcome re-points the rows referencing a loser by its primary key first:
        # this is the last line of defence)

    def _hidden_rows(self, table: Table) -> list[Key]:
        self.flush()
        self._sql.run(self._cur, f"SELECT DISTINCT KEY_DATA FROM {CONFLICTS_TABLE} "
                                 "WHERE TBL_NO = ? AND KIND = ?",
                      (self._registry[table.name], LossKind.UNIQUE_CLASH.value))
        return [registers.key_values(data) for (data,) in self._cur.fetchall()]

    def _check_local(self, table: Table, number: int, key: Key) -> None:
        if number not in self._local_pending:
            return
        self.flush()
        self._sql.run(self._cur, f"SELECT 1 FROM RDB$DATABASE WHERE EXISTS (SELECT 1 FROM "
                                 f"{IMAGE_PREFIX}{number} WHERE "
                                 f"{self._where(table.primary_key, table)})",
                      self._params(table, table.primary_key, key))
        if self._cur.fetchone() is not None:
            raise LocalChangePending

    def _saved_later(self, table: Table, key: Key) -> bool:
        """Did the application save this row in a later transaction of the step being
        published (``later_local``)? Then the table keeps what it saved."""
        return bool(self.later_local) and (
            self._registry[table.name], registers.key_identity(key, table)) in self.later_local

    def _delete(self, table: Table, key: Key) -> None:
        if self._saved_later(table, key):
            return
        number = self._registry[table.name]
        self._check_local(table, number, key)
        self._set_context(number)
        self._unique_cache.pop(table.name, None)
        self._writer.delete(table, key)
        self._written.discard((table.name, registers.key_data(key)))

    def _write(self, table: Table, key: Key, life: Life,
               shown: Mapping[str, bytes | None] | None, left: set[str] | None = None,
               fresh: bool = False) -> Life:
        """Write the row's image (only the columns that differ from what is shown), the
        ``left`` columns as NULL for now (a cycle's reference, put back later); on a CHECK
        refusal, fall back to whole-row last-writer-wins. ``fresh``: the row has no
        registers here (usually not in the table either: written as new)."""
        if self._saved_later(table, key):
            return life
        policy = self._policy(table)
        null = values_pb2.Value(null=True).SerializeToString(deterministic=True)

        instead = self._repoint_to.pop((table.name, registers.key_identity(key, table)), {})

        def image(of: Life) -> dict[str, bytes | None]:
            return {**of.image(policy), **instead, **{c: null for c in left or ()}}

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
            f"{table.name} {_show(key)}: its {', '.join(fk.parent_columns)} changes, but "
            f"{child} {_show(ckey) if ckey else ''} here still names the old value through "
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
                f"{table.name} {_show(key)}: merging concurrent changes of its columns "
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
                f"{table.name} {_show(key)}: merging concurrent changes of its columns "
                f"breaks a CHECK constraint, and even the whole row of its latest write "
                f"({latest.site}) breaks one here ({' '.join(str(again).split())}): the "
                "constraint differs between sites; `siege-node held` says what to do"
            ) from again
        log.info("%s %s: merged columns broke a CHECK; the whole row of %s's latest write "
                 "kept", table.name, _show(key), latest.site)
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
            if self._holds(table, _shown_life(shown), columns,
                           [values_pb2.Value.FromString(v) for v in new]):  # type: ignore
                continue  # engine-equal: nothing changes for the references
            found = self._referencing(table, key, shown, only=columns)
            if found is not None:
                fk, child, ckey, _writer = found
                return fk, child.name if child is not None else fk.table, ckey
        return None

    @staticmethod
    def plain(table: Table) -> bool:
        """A table no constraint between rows involves (no foreign key either way, no
        UNIQUE besides its key): a new row of it is settled by ``write_new``."""
        return not (table.foreign_keys or table.referenced_by or table.uniques)

    def write_new(self, table: Table, key: Key, state: RowState,
                  given: Mapping[str, values_pb2.Value]) -> None:
        """A row new here (no registers) of a ``plain`` table, whose registers ``state`` are
        one insert's: what ``settle`` does for it, without its general steps — nothing can
        be lost (one write per column) or refer to it, so no flag changes and nothing is
        put on record. ``given``: the insert's values by column (the registers hold the same
        bytes). A CHECK refusing it is final: only its origin wrote it."""
        assert state.current.visible and not state.past
        if not self._saved_later(table, key):
            number = self._registry[table.name]
            self._check_local(table, number, key)
            columns = {}
            for c in table.columns:
                value = given.get(c.name)
                if (value is not None and c.name not in table.primary_key
                        and self._writable(table, key, c, value)):
                    columns[c.name] = value
            self._set_context(number)
            self._unique_cache.pop(table.name, None)
            try:
                self._writer.write_new(table, key, columns)
            except ValueError as exc:  # a value that does not fit its column
                raise ValueError(f"{table.name} {_show(key)}: {exc}") from exc
            except RowWriteError as exc:  # another buffered row, flushed to make room
                if _CHECK_FAILED in (exc.gds_codes or ()):
                    raise _unmerged_check(exc.table or "?", exc.key, exc) from exc
                raise
            self._written.add((table.name, registers.key_data(key)))
        self._rows.put(self._registry[table.name], registers.key_identity(key, table), state)

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
                raise NotArrived(f"{table.name} {_show(key)}: the {column.name} BLOB "
                                 f"({value.blob.length} bytes) has not arrived") from exc
        return True

    def _upsert(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                shown: Mapping[str, bytes | None], fresh: bool = False) -> None:
        number = self._registry[table.name]
        self._check_local(table, number, key)
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
            self._unique_cache.pop(table.name, None)
            (self._writer.write_new if fresh else self._writer.upsert)(table, key, columns)
        except ValueError as exc:  # a value that does not fit its column
            raise ValueError(f"{table.name} {_show(key)}: {exc}") from exc
        self._written.add((table.name, registers.key_data(key)))


def constrained(state: RowState) -> bool:
    """A row whose constraint flags may change with any write of it."""
    life = state.current
    return (life.held_by is not None or life.evicted_by is not None
            or life.whole_row is not None or life.whole_row_site is not None)


def _identity(parent: Table, fk: ForeignKey, vals: Sequence[values_pb2.Value]) -> bytes:
    """A UNIQUE value (in the parent's types) as the engine compares it."""
    return registers.key_data([identity_value(parent.column(c).type, v)
                               for c, v in zip(fk.parent_columns, vals, strict=True)])


def _shown_life(image: Mapping[str, bytes | None]) -> Life:
    """A life holding ``image`` (what the table shows), to compare values with."""
    return Life(PREEXISTING, frozenset(), {
        c: frozenset({Head(PREEXISTING, v)}) for c, v in image.items()})


def _shared_refs(a: Refs, b: Refs) -> Refs:
    """The references counted by either of two rows (per origin, the highest)."""
    return {o: max(a.get(o, 0), b.get(o, 0)) for o in sorted({*a, *b})}


def _unique_stamp(life: Life, columns: Sequence[str], policy: Policy) -> Stamp:
    """When a row got its UNIQUE value: the latest winning write of those columns."""
    return max(life.winner(c, policy).stamp for c in columns)


def _same_row(table: Table, key: Key, other: Table, other_key: Key) -> bool:
    return table.name == other.name and registers.key_data(key) == registers.key_data(other_key)


def _hidden_as(life: Life) -> tuple[Stamp, EventId] | None:
    """A life hidden by a UNIQUE clash: its insert and the write it lost to."""
    if not life.exists or life.evicted_by is None:
        return None
    return life.generation, life.evicted_by


def _parsed(image: Mapping[str, bytes | None], columns: Sequence[str]
            ) -> list[values_pb2.Value] | None:
    """The image's values of these columns; None when one is unknown or NULL."""
    raw = [image.get(c) for c in columns]
    if any(v is None for v in raw):
        return None
    parsed = [values_pb2.Value.FromString(v) for v in raw]  # type: ignore[arg-type]
    return None if any(p.WhichOneof("kind") == "null" for p in parsed) else parsed


def _child_values(parent: Table, fk: ForeignKey, child: Table, pkey: Key) -> Key:
    """A parent's primary key (``fk`` references it) in the child's column types."""
    return [values.encode(child.column(c).type, values.decode(parent.column(p).type, v))
            for c, p, v in zip(fk.columns, fk.parent_columns, pkey, strict=True)]


def _rekey(table: Table, fk: ForeignKey, parent: Table,
           vals: Sequence[values_pb2.Value]) -> Key:
    """The parent's key from the child's column values, encoded by the parent's types."""
    out = []
    for child_col, parent_col, v in zip(fk.columns, fk.parent_columns, vals, strict=True):
        raw = values.decode(table.column(child_col).type, v)
        out.append(values.encode(parent.column(parent_col).type, raw))
    return out


def _show(key: Sequence[values_pb2.Value]) -> str:
    parts = []
    for v in key:
        which = v.WhichOneof("kind")
        parts.append(str(getattr(v, which)) if which else "?")
    return "(" + ", ".join(parts) + ")"
