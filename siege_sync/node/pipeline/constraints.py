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
  ``Lookup.parent_key``). Such a reference names the value, not a row: it never keeps a row from
  losing a UNIQUE clash (the value stays, the winner holds it); the loser's row takes the
  winner's key in place (``Clashes._hand_over``), so the value never leaves the table; the rows
  written for the loser go on record (``REPARENTED``), and both rows count the references
  made through the value (``clashes._shared_refs``), whichever row held it where they arrived. An
  event can name the parent row its origin met (``name_parents``; the publisher reads
  ``resolved``): then every site counts the reference on that row, as for a primary key. A
  change of such a value while a row elsewhere names the old one (ON UPDATE NO ACTION) is
  not settled by the merge yet: the transaction is held, saying so.
* **UNIQUE** (other than the key): of two rows holding the same value, the one whose value
  was written with the lower stamp is hidden everywhere and on record (``evicted_by``); it
  comes back when the clash is gone. Referenced or not: two referenced rows holding one
  value are the same thing registered twice (two sites registered one customer at once),
  and the rows referencing the loser by its primary key reference the winner instead
  (``Clashes.repoint``; a row arriving later for the loser too, ``repoint_child``) — in
  the table only: their registers keep their own reference, on record (``REPARENTED``,
  naming the loser's life; kept true by ``Reparenting.after_hidden_changed`` when the hidden
  row changes). So the table follows from the registers: when the loser's key shows a row
  again, they reference it again (``repoint_back``); a winner deleted where the loser was
  never seen gives them back (``give_back``). The engine checks each statement, so the loser lets go
  of its value (its nullable columns of the UNIQUE key set to NULL, in this transaction
  only) while the rows move; a UNIQUE key without a nullable column, or rows of a table
  this site does not replicate referencing the loser, hold the transaction, saying so.
* **colliding keys**: when a life of a key loses to a concurrent insert (merge.py's
  ``GENERATION``), the rows referencing that key that were written for the lost life — by its
  origin, after it, stamped below the insert that replaced it — are on record with it
  (``REPARENTED``, naming the lost life and the winner) and stay visible. Kept true both ways:
  when the parent's life loses (``Reparenting.after_lost_life``) and when such a row is
  written, goes or points elsewhere (``Reparenting.after_write``, also for local changes the
  publisher shows).
* **CHECK**: when merging concurrent column writes gives a row a CHECK refuses, the row falls
  back to whole-row last-writer-wins (``TableWrites._check_fallback``): it becomes the whole
  row of its latest write — the update with the highest stamp, whose event carries, besides
  what it wrote, what its origin's row held in the other columns (``Event.seen``, kept as the
  life's ``latest_row``, merge.py) — and ``whole_row`` names that write. A column that row has
  no value for (a BLOB it did not write: not in an update's image) keeps the merged value.
  Every head it overrides is on record at every site (``WHOLE_ROW``; in the columns it wrote,
  the usual ``COLUMN`` losses to it). Decided again at each write of the row (a later write
  whose merged row satisfies the CHECK ends it; the records of the overridden heads then
  follow the merge). A local edit of a row showing such a row also writes the columns whose
  shown value is not the merged one (publish.py), so every site keeps the row its user saved.
  Refused (the transaction held, with the row and the constraint named) only when even that
  whole row breaks a CHECK here — the constraint differs between sites — or when the latest
  write carries no whole row (published by an older node, or captured by an older trigger).

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

``Settler`` decides the flags of foreign keys (holds, parents brought back, cycles, the
order inside a source transaction) and stores the registers; its parts, one settler's each:

* ``lookup.Lookup``           — its reads of tables, registers and records, and their caches;
* ``clashes.Clashes``         — UNIQUE clashes between referenced rows, and re-pointing;
* ``reparenting.Reparenting`` — the ``REPARENTED`` records;
* ``tablewrites.TableWrites`` — its writes to the tables, and the CHECK fall-back;
* ``refusals``                — what it answers instead of writing (held, wait, defer).

Runs inside its caller's transaction (the applier's, or the publisher's for local writes);
must never commit or open one, and never write a row the registers do not decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from firebird.driver import Cursor

from ...proto import values_pb2
from ..db.database import StatementCache
from ..db.schema import ForeignKey, Schema, Table
from ..journal import conflicts
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import (
    EventId,
    Head,
    Life,
    LossKind,
    Policy,
    RowState,
    losses,
    referenced,
    with_refs,
)
from ..model.registers import PREEXISTING
from .clashes import Clashes, hidden_as
from .lookup import (
    Key,
    Lookup,
    RowId,
    rekey,
    same_row,
    show,
)
from .refusals import ConstraintError, Deferred, NotArrived
from .reparenting import Reparenting
from .tablewrites import TableWrites

_MAX_DEPTH = 64  # rows settled because another one changed, nested


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


class Settler:
    """Writes merged rows of one transaction, deciding the constraint flags."""

    def __init__(self, cur: Cursor, schema: Schema, registry: Mapping[str, int],
                 rows: registers.RowStates, sql: StatementCache,
                 policies: Mapping[str, Policy], local_pending: set[int],
                 blobs: DatabaseBlobStore | None = None) -> None:
        self._cur = cur
        self._schema = schema
        self._registry = registry
        self._rows = rows
        self._sql = sql
        self._look = Lookup(cur, schema, registry, rows, sql, policies, local_pending, blobs,
                            self.flush)
        self._out = TableWrites(cur, schema, registry, sql, blobs, self._look)
        self._reparenting = Reparenting(cur, sql, schema, registry, self._look)
        self._recorded = 0  # losses put on record by ``put``
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
        # The publisher's view: rows a later local transaction of the step being published
        # inserts (table number, key identity). The table shows what the application saved
        # there since: this step never writes them (that transaction's own event settles
        # them), e.g. a hidden row coming back where the application inserted its key anew.
        self.later_local: set[tuple[int, bytes]] = set()
        # Rows whose reference a local change of the step not published yet writes (even
        # later in the transaction being published): the table holds what it saved.
        self.later_refs: set[tuple[int, bytes]] = set()
        # References to a UNIQUE key: what ``note_references`` found, for the publisher to
        # put in the event (foreign key name -> the parent's primary key). The applier gives
        # what the event names (``name_parents``): every site then counts the reference on
        # that row, and brings it back from its tombstone, whatever row holds the value here.
        self.resolved: dict[str, Key] = {}
        # References set to NULL to untie a cycle of deletes: (table, key, columns).
        self._nulled: list[tuple[Table, Key, tuple[str, ...]]] = []
        # Rows being brought back because a row references them, outermost first. A parent
        # already among them is a cycle (rows referencing each other, deleted together).
        self._restoring: list[_Step] = []
        # References of such a cycle written as NULL, by the row whose write lets them be
        # put back (the row of the cycle that was being brought back first).
        self._left: dict[RowId, list[_Step]] = {}
        # Two referenced rows holding one UNIQUE value: which is hidden, where the rows
        # referencing it go.
        self._clashes = Clashes(self, schema, registry, self._look, self._reparenting, self._out)

    @property
    def losses_recorded(self) -> int:
        """Losses this settler put on record (retractions not counted)."""
        return self._recorded + self._reparenting.recorded

    def table(self, name: str) -> Table | None:
        return self._look.table(name)

    def held_rows(self, by: EventId | None = None) -> list[tuple[Table, Key]]:
        """The rows on record as kept by a reference (``kept-by-reference``), some held now;
        ``by``: only those kept by that writer."""
        return self._look.held_rows(by)

    def name_parents(self, table: Table, named: Mapping[str, Key],
                     written: Mapping[str, bytes | None]) -> None:
        """The parent keys an event names (``named``), for the values it writes
        (``written``: its encoded columns); empty for an event that names none."""
        self._look.name_parents(table, named, written)

    # --- registers ---------------------------------------------------------------------

    def state(self, table: Table, key: Key, inserting: bool = False) -> RowState | None:
        """A row's registers. A row that predates capture (or an insert's) has none: unless
        inserting, it gets a pre-existing life with the values the database holds, so that
        it can be restored or shown later (unknown when the row is not here)."""
        state = self._look.stored(table, key)
        if state is None and not inserting:
            image = self._look.row(table, key) or {}
            state = RowState(Life(PREEXISTING, frozenset(), {
                c.name: frozenset({Head(PREEXISTING, image.get(c.name))})
                for c in table.columns}))
        return state

    def put(self, table: Table, key: Key, before: RowState | None, after: RowState) -> None:
        """Store a row's registers and put the losses that changed on record."""
        number = self._registry[table.name]
        policy = self._look.policy(table)
        row = registers.key_identity(key, table)
        self._rows.put(number, row, after)
        if table.referenced_by and before is not None and hidden_as(before.current) \
                not in (None, hidden_as(after.current)):
            self._reparenting.after_hidden_changed(table, key, before)
            if hidden_as(after.current) is not None:
                # Still hidden, by another row now (the winner let go of the value).
                self._clashes.rewon(table, key)
        old = losses(before, policy) if before is not None else set()
        new = losses(after, policy)
        if new != old:
            conflicts.record(self._cur, number, key, row, new - old, retracted=old - new,
                             decide=policy.manual, cache=self._sql)
            self._recorded += len(new - old)
            if table.referenced_by and any(loss.kind is LossKind.GENERATION
                                           for loss in new ^ old):
                self._reparenting.after_lost_life(table, key, before)
            if any(loss.kind is LossKind.UNIQUE_CLASH for loss in new ^ old):
                self._look.forget_hidden(table)
                if any(fk.parent_columns != table.primary_key for fk in table.referenced_by):
                    self._reparenting.clashed.append(
                        (table, key, before, after.current.image(policy)))

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
                pkey = self._look.parent_key(table, fk, parent, parsed)
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
            # is not the same everywhere (see ``Clashes.outcome``).
            also = [] if fk.parent_columns == parent.primary_key or self._look.named_key(
                fk, parent, rekey(table, fk, parent, parsed)) is not None \
                else self._clashes.holders_of_value(table, fk, parent, parsed, pkey)
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
        policy = self._look.policy(table)
        was = before is not None and before.current.visible
        old_image = before.current.image(policy) if was and before is not None else {}
        if depth == 0 and self.later is not None:
            self._in_order(table, key, after, old_image if was else None, policy)
        life = replace(after.current, held_by=None, evicted_by=hide, whole_row=None,
                       whole_row_site=None)
        if not life.exists and was and table.uniques and table.referenced_by:
            self._clashes.give_back(table, key, old_image, depth)
        if not life.exists:
            held = holder or (self._look.referencing_row(table, key, old_image) if was else None)
            life = replace(life, held_by=held)
            if held is not None and holder is None:
                self.holds[(table.name, registers.key_identity(key, table))] = key
        if life.visible and table.uniques:
            kept = holder is not None or life.held_by is not None
            life, refs = self._clashes.outcome(table, key, life, after.refs, kept,
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
            self._clashes.after_winner_written(table, key, depth)
        elif was:
            if hide is not None:
                self._clashes.refuse_if_referenced(table, key, old_image,
                                                   "hidden by a UNIQUE clash",
                                                   besides=hidden_for)
            self._delete(table, key)
        if life.visible and before is not None and before.current.exists and \
                before.current.evicted_by is not None and table.referenced_by:
            self._clashes.repoint_back(table, key, before)  # (before ``put`` drops their records)
        self.put(table, key, before, replace(after, current=life))
        if table.foreign_keys:
            self._reparenting.after_write(
                table, key, before.current if was and before else None, old_image,
                life if life.visible else None, policy)
        if life.visible:
            self._put_back((table.name, registers.key_identity(key, table)), depth)
        if depth == 0 and not self._restoring:
            self._put_back(None, depth)
            self._reparenting.follow_values()
            self._reparenting.follow_repointed()
        if was:
            new_image = life.image(policy) if life.visible else {}
            # The row that hides this one is not written yet: hidden rows wait for it.
            self._release(table, old_image, new_image, depth, hidden_too=hide is None)
        if depth == 0 and not self._restoring:
            self._clashes.follow_new_winners()

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
                if self.later(row) and not self._look.exists(
                        parent.name, parent.primary_key, pkey, parent, table, fk):
                    raise Deferred(row, f"{table.name} {show(key)} references {parent.name} "
                                        f"{show(pkey)}, inserted later in its transaction")
            return
        if shown is None:
            return  # not in the table: nothing to delete
        while True:
            found = self._look.referencing(table, key, shown)
            if found is None:
                return
            fk, child, ckey, _writer = found
            if child is None or ckey is None:
                return
            row = (child.name, registers.key_identity(ckey, child))
            if not self.later(row):
                return  # kept by a row that stays: settle() decides
            if not self.untie or not all(child.column(c).nullable for c in fk.columns):
                raise Deferred(row, f"{table.name} {show(key)} is referenced by {child.name} "
                                    f"{show(ckey)}, deleted later in its transaction")
            self._out.update(child, ckey, {c: values_pb2.Value(null=True)
                                              for c in fk.columns})
            self._nulled.append((child, ckey, fk.columns))

    def restore_untied(self) -> None:
        """Put back the references ``_in_order`` set to NULL, in the rows that stayed (a row
        referencing them from outside the transaction keeps them)."""
        for child, ckey, columns in self._nulled:
            state = self._look.stored(child, ckey)
            if state is None or not state.current.visible:
                continue
            self.flush()
            if self._look.row(child, ckey) is None:
                continue
            image = state.current.image(self._look.policy(child))
            left = self._ensure_parents(child, ckey, image, None,
                                        state.current.generation.event, 0)
            self._out.update(child, ckey, {c: values_pb2.Value.FromString(image[c])
                                              for c in columns if image.get(c) is not None
                                              and c not in left})
        self._nulled.clear()
        self._put_back(None, 0)

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
            state = self._look.stored(table, key)
            if state is None or state.current.exists or state.current.held_by is None or \
                    (by is not None and state.current.held_by != by):
                continue
            shown = self._look.row(table, key)
            if shown is not None and self._look.referencing_row(table, key, shown) is not None:
                continue  # still named here
            self.settle(table, key, state, state)
            released += 1
        return released

    def after_local_write(self, table: Table, before: RowState | None,
                          merged: RowState) -> RowState:
        """A local change (already in the table) seen by the publisher: a delete here really
        deleted the row; a row that stopped referencing a parent, or holding a UNIQUE
        value, lets go of what it held — here exactly as at the sites that apply it."""
        policy = self._look.policy(table)
        life = merged.current
        if life.deletes and life.held_by is not None and before is not None and \
                len(life.deletes) > len(before.current.deletes):
            merged = replace(merged, current=replace(life, held_by=None))
        old = before.current.image(policy) if before is not None and \
            before.current.visible else {}
        new = merged.current.image(policy) if merged.current.visible else {}
        self._release(table, old, new, 0, hidden_too=True)
        if table.referenced_by and before is not None and hidden_as(before.current) \
                not in (None, hidden_as(merged.current)):
            # A row hidden by a UNIQUE clash written here (inserted again by its key): the
            # rows re-pointed from it reference it again, as at the sites that apply it.
            key = [values_pb2.Value.FromString(new[c]) for c in table.primary_key
                   if new.get(c) is not None]  # type: ignore[arg-type]
            if len(key) == len(table.primary_key):
                # (the table may be past the change at hand: the row deleted since)
                if merged.current.visible and self._look.row(table, key) is not None:
                    self._clashes.repoint_back(table, key, before)
                self._reparenting.after_hidden_changed(table, key, before, now=merged)
        image = old or new
        key = [values_pb2.Value.FromString(image[c]) for c in table.primary_key
               if image.get(c) is not None]
        if table.foreign_keys and len(key) == len(table.primary_key):
            # (the key from the row's own image: a row the registers know was inserted whole)
            self._reparenting.after_write(
                table, key, before.current if old and before is not None else None, old,
                merged.current if merged.current.visible else None, policy)
        return merged

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
            pkey = self._look.parent_key(table, fk, parent, parsed)
            if pkey is None:
                # A UNIQUE value no row holds here, in the table or the registers: maybe
                # a row this transaction inserts later (an application trigger wrote the
                # child first). Wait for the rest of it; a row that is not in it at all
                # waits for its insert (_ensure_parents, once nothing else is left).
                raise Deferred((parent.name, b"unique:" + registers.key_data(parsed)),
                               f"{table.name} {show(key)} references {parent.name} "
                               f"({', '.join(fk.parent_columns)}) = {show(parsed)}, which "
                               "no row holds yet")
            if not same_row(table, key, parent, pkey):
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
            if parent is not None and fk.parent_columns == parent.primary_key and same_row(
                    table, key, parent, rekey(table, fk, parent, parsed)):
                continue  # the row references itself: it is being written
            if self._look.exists(fk.parent, fk.parent_columns, parsed, parent, table, fk):
                continue
            named = f"{parent.name if parent else fk.parent} " + (
                show(parsed) if parent is not None and fk.parent_columns == parent.primary_key
                else f"({', '.join(fk.parent_columns)}) = {show(parsed)}")
            if parent is None or parent.name not in self._registry:
                raise ConstraintError(
                    f"{table.name} {show(key)} references {named}, which does not exist "
                    f"here, and {fk.parent} is not replicated ([tables] leaves it out: each "
                    "site keeps its own rows there, so a row another site references may be "
                    f"missing here): create that row here, or include {fk.parent} in "
                    "[tables] at every site, or drop the foreign key; then `siege-node held "
                    "--retry`")
            pkey = self._look.parent_key(table, fk, parent, parsed)
            pstate = self._look.stored(parent, pkey) if pkey is not None else None
            if pkey is not None and pstate is not None and \
                    fk.parent_columns != parent.primary_key and not self._look.holds(
                        parent, pstate.current, fk.parent_columns,
                        rekey(table, fk, parent, parsed)):
                # The row its origin met holds another value now: changed concurrently.
                raise ConstraintError(
                    f"{table.name} {show(key)} names {named}, which {parent.name} "
                    f"{show(pkey)} held where it was written; that row holds another value "
                    "here now (changed at another site that did not know "
                    f"{table.name} {show(key)}), and no row holds the old one. An operator "
                    f"must point {table.name} {show(key)} at the new value or delete it at "
                    "its site, or change the value back where it was changed")
            if pkey is None or pstate is None:
                raise NotArrived(
                    f"{table.name} {show(key)} references {named}, whose insert has not "
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
                    self._clashes.repoint_child(table, key, fk, parent, pkey)
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
        rows = " -> ".join(f"{s.table.name} {show(s.key)}" for s in [*cycle[1:], step])
        first = cycle[0]
        raise ConstraintError(
            f"{first.table.name} {show(first.key)} brings back rows that were deleted "
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
                image = state.current.image(self._look.policy(step.table))
                mine = {c: image.get(c) for c in step.fk.columns}
                still = self._ensure_parents(step.table, step.key, mine, None,
                                             state.current.generation.event, depth + 1)
                self._out.update(step.table, step.key, {
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
            pkey = self._look.parent_key(table, fk, parent, parsed, stored_too=False)
            if pkey is None:
                continue
            pstate = self._look.stored(parent, pkey)
            if pstate is not None and pstate.current.held_by is not None:
                self.settle(parent, pkey, pstate, pstate, depth=depth + 1)
        if hidden_too and any([old.get(c) for c in cols] != [new.get(c) for c in cols]
                              for cols in table.uniques):
            for hidden_key in self._look.hidden_rows(table):
                state = self.state(table, hidden_key)
                if state is not None and state.current.evicted_by is not None:
                    self.settle(table, hidden_key, state, state, depth=depth + 1)

    # --- the database ------------------------------------------------------------------

    def flush(self) -> None:
        """Execute the buffered row writes (before any read, and before commit)."""
        self._out.flush()

    @property
    def unfit(self) -> dict[tuple[str, str], int]:
        """(table, column) -> rows whose merged value this site's column cannot hold yet."""
        return self._out.unfit

    def write_new(self, table: Table, key: Key, state: RowState,
                  given: Mapping[str, values_pb2.Value]) -> None:
        """A row new here (no registers) of a ``plain`` table, whose registers ``state`` are
        one insert's: what ``settle`` does for it, without its general steps — nothing can
        be lost (one write per column) or refer to it, so no flag changes and nothing is
        put on record. ``given``: the insert's values by column (the registers hold the same
        bytes). A CHECK refusing it is final: only its origin wrote it."""
        assert state.current.visible and not state.past
        if not self._saved_later(table, key):
            self._out.insert(table, key, given)
        self._rows.put(self._registry[table.name], registers.key_identity(key, table), state)

    def _write(self, table: Table, key: Key, life: Life,
               shown: Mapping[str, bytes | None] | None, left: set[str] | None = None,
               fresh: bool = False) -> Life:
        if self._saved_later(table, key):
            return life
        return self._out.write(table, key, life, shown, left, fresh,
                               self._clashes.instead(table, key))

    def _delete(self, table: Table, key: Key) -> None:
        if not self._saved_later(table, key):
            self._out.delete(table, key)

    def _saved_later(self, table: Table, key: Key) -> bool:
        """Did the application save this row in a later transaction of the step being
        published (``later_local``)? Then the table keeps what it saved."""
        return bool(self.later_local) and (
            self._registry[table.name], registers.key_identity(key, table)) in self.later_local

    @staticmethod
    def plain(table: Table) -> bool:
        """A table no constraint between rows involves (no foreign key either way, no
        UNIQUE besides its key): a new row of it is settled by ``write_new``."""
        return not (table.foreign_keys or table.referenced_by or table.uniques)


def constrained(state: RowState) -> bool:
    """A row whose constraint flags may change with any write of it."""
    life = state.current
    return (life.held_by is not None or life.evicted_by is not None
            or life.whole_row is not None or life.whole_row_site is not None)


