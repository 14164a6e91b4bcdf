"""The ``REPARENTED`` records: rows that reference a parent other than the one they were
written for, on record at every site (DESIGN §3.5).

A row is re-parented, without any write of its own, when

* the life of its parent's key that it was written for lost to a concurrent insert of the
  same key (merge.py's ``GENERATION``: an invoice and its lines saved at two sites under one
  number): the rows written for the lost life now reference the winner's;
* its parent lost a UNIQUE clash while rows referenced it by its primary key: they
  reference the winner in the table (``clashes.Clashes`` moves them), their registers keep
  their own reference;
* it names, through a UNIQUE key, a value whose holder lost it to a concurrent row.

Owns deciding those records from the registers alone (``wanted``), so that every site
records the same, and keeping them true whenever the row, its parent, or a hidden row it was
moved from changes. Must never write a row or a register: it only reads (``lookup.Lookup``)
and puts records on record (``conflicts.record``), in its caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from firebird.driver import Cursor

from ...proto import values_pb2
from ..db.database import StatementCache
from ..db.schema import ForeignKey, Schema, Table
from ..journal import conflicts
from ..model import registers
from ..model.merge import Life, Loss, LossKind, Policy, RowState, Stamp
from .lookup import Key, Lookup, RowId, rekey, unique_stamp


class Reparenting:
    """One settler's ``REPARENTED`` records (see the module's docstring)."""

    def __init__(self, cur: Cursor, sql: StatementCache, schema: Schema,
                 registry: Mapping[str, int], look: Lookup) -> None:
        self._cur = cur
        self._sql = sql
        self._schema = schema
        self._registry = registry
        self._look = look
        self.recorded = 0  # records put on record (retractions not counted)
        # Rows hidden by a UNIQUE clash or back since, whose value rows reference by a
        # UNIQUE key: (table, key, registers before, image), for ``follow_values``.
        self.clashed: list[tuple[Table, Key, RowState | None, dict[str, bytes | None]]] = []
        # Rows the settler re-pointed from a hidden loser to its winner: (child table, key,
        # parent table, the loser's key), for ``follow_repointed``.
        self.repointed: list[tuple[Table, Key, Table, Key]] = []

    def _record(self, table: Table, key: Key, had: set[Loss], wanted: set[Loss]) -> None:
        if had != wanted:
            conflicts.record(self._cur, self._registry[table.name], key,
                             registers.key_identity(key, table), wanted - had,
                             retracted=had - wanted, cache=self._sql)
            self.recorded += len(wanted - had)

    def wanted(self, table: Table, image: Mapping[str, bytes | None] | None,
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
                out |= self._by_value(table, fk, parent, parsed, generation, parents)
                continue
            pkey = rekey(table, fk, parent, parsed)
            prow = (parent.name, registers.key_identity(pkey, parent))
            if parents is not None and prow in parents:
                pstate = parents[prow]
            else:
                pstate = self._look.stored(parent, pkey)
            if pstate is not None and not pstate.current.visible and \
                    pstate.current.evicted_by is not None:
                # Its parent lost a UNIQUE clash while referenced: the row references the
                # winner instead (``Clashes.repoint``, ``Clashes.repoint_child``: also while
                # the parent's delete has not yet been overruled by the reference), its own
                # reference on record.
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

    def _by_value(self, table: Table, fk: ForeignKey, parent: Table,
                  parsed: Sequence[values_pb2.Value], generation: Stamp,
                  parents: Mapping[RowId, RowState | None] | None) -> set[Loss]:
        """``wanted`` for a reference to a UNIQUE key: the row holding the value lost it to
        a concurrent row (a UNIQUE clash: two sites created a vehicle with the same code)
        and this row was written for the loser — by the origin of the loser's value, after
        it, stamped below the winner's value. It now names the winner (the value it names
        is the winner's): on record with the clash, never re-pointed silently."""
        out: set[Loss] = set()
        hidden = self._look.hidden(parent)
        if not hidden:
            return out
        vals = rekey(table, fk, parent, parsed)
        columns = fk.parent_columns
        policy = self._look.policy(parent)
        winner: Stamp | None = None
        for lkey in hidden:
            lrow = (parent.name, registers.key_identity(lkey, parent))
            lstate = parents[lrow] if parents is not None and lrow in parents \
                else self._look.stored(parent, lkey)
            if lstate is None or lstate.current.evicted_by is None or \
                    not self._look.holds(parent, lstate.current, columns, vals):
                continue
            lost = unique_stamp(lstate.current, columns, policy)
            if (lost.site, lost.incarnation) != (generation.site, generation.incarnation) \
                    or lost.seq >= generation.seq:
                continue
            if winner is None:
                # (the publisher sees the table as it is now, maybe past the change at hand:
                # then the registers tell)
                wkey = self._look.holder_of(parent, columns, vals, None) or \
                    self._look.stored_holder(parent, columns, vals, visible=True)
                wstate = self._look.stored(parent, wkey) if wkey is not None else None
                if wstate is None or not wstate.current.visible:
                    return out
                winner = unique_stamp(wstate.current, columns, policy)
            if generation < winner:
                out.add(Loss(LossKind.REPARENTED, lstate.current.generation.event,
                             generation.event, ", ".join(fk.columns), None, winner.event,
                             generation.wall))
        return out

    def after_write(self, table: Table, key: Key, was: Life | None,
                    old_image: Mapping[str, bytes | None], now: Life | None,
                    policy: Policy) -> None:
        """Keep a row's records true after it changed: recorded when it is written
        referencing a lost life's key, dropped when it goes or points elsewhere."""
        new_image = now.image(policy) if now is not None else None
        if was is not None and now is not None and was.generation == now.generation and all(
                old_image.get(c) == new_image.get(c)  # type: ignore[union-attr]
                for fk in table.foreign_keys for c in fk.columns):
            return  # its references did not change (the usual update): nothing to look up
        had = self.wanted(table, old_image if was is not None else None,
                          was.generation if was is not None else None)
        wanted = self.wanted(table, new_image, now.generation if now else None)
        self._record(table, key, had, wanted)

    def after_lost_life(self, table: Table, key: Key, before: RowState | None) -> None:
        """A life of this row lost to a concurrent insert (or stopped losing): the rows that
        reference the key and were written for that life go on record with it."""
        row = (table.name, registers.key_identity(key, table))
        for fk in table.referenced_by:
            child = self._schema.tables.get(fk.table)
            if child is None or fk.parent_columns != table.primary_key:
                continue
            self._children(child, fk, key, row, before)

    def after_hidden_changed(self, table: Table, key: Key, hidden: RowState,
                             now: RowState | None = None) -> None:
        """A row hidden by a UNIQUE clash changed (back, deleted, another life, another
        winner): the records of the rows re-pointed from it follow."""
        row = (table.name, registers.key_identity(key, table))
        for child, _number, ckey, cstate in self._look.repointed_from(hidden):
            image = cstate.current.image(self._look.policy(child))
            had = self.wanted(child, image, cstate.current.generation, {row: hidden})
            wanted = self.wanted(child, image, cstate.current.generation,
                                 {row: now} if now is not None else None)
            self._record(child, ckey, had, wanted)

    def follow_values(self) -> None:
        """Keep the records of ``_by_value`` true for the rows naming the value of a row
        that was hidden by a UNIQUE clash, or came back (``clashed``): once every row of
        the change is written, so that the winner is in the table."""
        while self.clashed:
            table, key, before, image = self.clashed.pop(0)
            row = (table.name, registers.key_identity(key, table))
            for fk in table.referenced_by:
                child = self._schema.tables.get(fk.table)
                vals = [image.get(c) for c in fk.parent_columns]
                if child is None or child.name not in self._registry or \
                        fk.parent_columns == table.primary_key or any(v is None for v in vals):
                    continue
                parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore
                self._children(child, fk, parsed, row, before)

    def follow_repointed(self) -> None:
        """The records of the rows the settler re-pointed (``repointed``), now that their
        loser's registers say it is hidden."""
        while self.repointed:
            child, ckey, parent, pkey = self.repointed.pop(0)
            cstate = self._look.stored(child, ckey)
            pstate = self._look.stored(parent, pkey)
            if cstate is None or not cstate.current.visible or pstate is None:
                continue
            image = cstate.current.image(self._look.policy(child))
            gen = cstate.current.generation
            prow = (parent.name, registers.key_identity(pkey, parent))
            shown = replace(pstate, current=replace(pstate.current, evicted_by=None))
            self._record(child, ckey, self.wanted(child, image, gen, {prow: shown}),
                         self.wanted(child, image, gen))

    def _children(self, child: Table, fk: ForeignKey,
                  parent_values: Sequence[values_pb2.Value], row: RowId,
                  before: RowState | None) -> None:
        """Keep the records of the visible ``child`` rows naming ``parent_values`` through
        ``fk`` true, now that the parent ``row`` changed from ``before``."""
        found = self._look.keys_where(child, self._look.where(fk.columns, child),
                                      self._look.params(child, fk.columns, parent_values))
        policy = self._look.policy(child)
        for ckey in found:
            cstate = self._look.stored(child, ckey)
            if cstate is None or not cstate.current.visible:
                continue
            image = cstate.current.image(policy)
            gen = cstate.current.generation
            self._record(child, ckey, self.wanted(child, image, gen, {row: before}),
                         self.wanted(child, image, gen))
