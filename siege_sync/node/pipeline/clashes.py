"""UNIQUE clashes between rows other rows reference: which row is hidden, and where the
rows that reference it go (DESIGN §3.5).

Of two rows holding the same UNIQUE value (other than the key), the one whose value was
written with the lower stamp is hidden everywhere and on record (``evicted_by``); it comes
back when the clash is gone (``outcome``). Two referenced rows holding one value are the same
thing registered twice (two sites registered one customer at once):

* the rows referencing the loser by its primary key reference the winner instead, in the
  table only (``repoint``; a row arriving later for the loser, ``repoint_child``); their
  registers keep their own reference, on record (``reparenting.Reparenting``);
* when the loser's key shows a row again, they reference it again (``repoint_back``); when
  another row hides it now, they follow that row (``follow_new_winners``); a winner deleted
  where the loser was never seen gives them back (``give_back``);
* the engine checks each statement, so the loser lets go of its value (its nullable columns
  of the UNIQUE key set to NULL, in this transaction only: ``_free_value``) while the rows
  move; a UNIQUE key without a nullable column, or rows of a table this site does not
  replicate referencing the loser, hold the transaction, saying so;
* references through the clashing columns themselves name the value, which stays: the
  loser's row takes the winner's key in place (``_hand_over``), so the value never leaves
  the table.

Part of one ``constraints.Settler``: it settles the rows it hides or brings back through
that settler (``settle``, ``put``) and writes only through it (``update_row``,
``rekey_row``), in the settler's transaction. Must never decide anything but the clash: the
other flags are the settler's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from ...proto import values_pb2
from ..db.schema import ForeignKey, Schema, Table
from ..model import registers
from ..model.merge import EventId, Life, Refs, RowState, Stamp, with_refs
from .lookup import (
    Key,
    Lookup,
    RowId,
    child_values,
    parsed_values,
    rekey,
    same_row,
    show,
    unique_stamp,
)
from .refusals import ConstraintError
from .reparenting import Reparenting
from .tablewrites import TableWrites


class Settling(Protocol):
    """What clashes need of the settler they are part of (``constraints.Settler``)."""

    later_refs: set[tuple[int, bytes]]

    def state(self, table: Table, key: Key, inserting: bool = False) -> RowState | None: ...

    def put(self, table: Table, key: Key, before: RowState | None,
            after: RowState) -> None: ...

    def settle(self, table: Table, key: Key, before: RowState | None, after: RowState,
               holder: EventId | None = None, hide: EventId | None = None,
               depth: int = 0, hidden_for: tuple[str, ...] = ()) -> None: ...


class Clashes:
    """One settler's UNIQUE clashes between referenced rows (see the module's docstring)."""

    def __init__(self, settler: Settling, schema: Schema, registry: Mapping[str, int],
                 look: Lookup, reparenting: Reparenting, out: TableWrites) -> None:
        self._settler = settler
        self._schema = schema
        self._registry = registry
        self._look = look
        self._reparenting = reparenting
        self._out = out
        # By the winner not yet written, the losers (key, registers, the winner's value
        # event, the columns) whose rows are re-pointed to it once it is
        # (``after_winner_written``).
        self._merge_after: dict[RowId, list[tuple[Key, RowState, EventId, tuple[str, ...]]]] \
            = {}
        # By child row, the reference columns written with the winner's key instead of a
        # hidden loser's (``instead``).
        self._repoint_to: dict[RowId, dict[str, bytes]] = {}
        self._rewon: list[tuple[Table, Key]] = []  # hidden rows another row hides now

    def instead(self, table: Table, key: Key) -> dict[str, bytes]:
        """The reference columns to write for this row instead of its registers' (a hidden
        loser's key replaced by its winner's), once."""
        return self._repoint_to.pop((table.name, registers.key_identity(key, table)), {})

    def rewon(self, table: Table, key: Key) -> None:
        """A hidden row is hidden by another row now (the winner let go of the value): the
        rows re-pointed from it follow the new winner (``follow_new_winners``)."""
        self._rewon.append((table, key))

    def after_winner_written(self, table: Table, key: Key, depth: int) -> None:
        """The row ``key`` is written: the losers waiting for it are hidden now, their rows
        re-pointed to it."""
        for loser, lstate, event, columns in self._merge_after.pop(
                (table.name, registers.key_identity(key, table)), ()):
            self.repoint(table, loser, key)
            self._settler.settle(table, loser, lstate, lstate, hide=event, depth=depth + 1,
                                 hidden_for=columns)

    def holders_of_value(self, table: Table, fk: ForeignKey, parent: Table,
                        parsed: Sequence[values_pb2.Value], besides: Key) -> list[Key]:
        """The rows hidden by a UNIQUE clash whose value a reference to a UNIQUE key names
        (``besides`` excepted)."""
        if fk.parent_columns == parent.primary_key:
            return []
        hidden = self._look.hidden(parent)
        if not hidden:
            return []
        vals = rekey(table, fk, parent, parsed)
        mine = registers.key_identity(besides, parent)
        return [k for k in hidden if registers.key_identity(k, parent) != mine
                and (state := self._look.stored(parent, k)) is not None
                and self._look.holds(parent, state.current, fk.parent_columns, vals)]

    def outcome(self, table: Table, key: Key, life: Life, refs: Refs, kept: bool,
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
        policy = self._look.policy(table)
        image = life.image(policy)
        for columns in table.uniques:
            vals = [image.get(c) for c in columns]
            if any(v is None for v in vals):
                continue  # not known here (pre-existing value)
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue  # NULLs never clash
            if (shown is not None and [shown.get(c) for c in columns] == vals
                    and not self._look.pending(table)):
                # The table's row already holds these values (no local change pending in
                # it): the engine's own UNIQUE lets no other row hold them. Asked anyway,
                # every update of such a table (totals kept by triggers) flushed the
                # buffered writes and read the table: one statement per event, not a block.
                continue
            other_key = self._look.holder_of(table, columns, parsed, key)
            if other_key is None:
                continue
            other = self._settler.state(table, other_key)
            assert other is not None
            if any(fk.parent_columns != table.primary_key for fk in table.referenced_by):
                shared = _shared_refs(refs, other.refs)
                if shared != other.refs:
                    self._settler.put(table, other_key, other, with_refs(other, shared))
                    other = self._look.stored(table, other_key) or other
                refs = shared
            mine, theirs = unique_stamp(life, columns, policy), \
                unique_stamp(other.current, columns, policy)
            # The lower stamp loses, referenced or not: the rows referencing it by its
            # primary key reference the winner instead (``_repoint``; a row about to
            # reference it, ``_repoint_child``) — the same row registered twice.
            other_image = other.current.image(policy)
            if theirs > mine:
                if shown is not None and self._look.referencing_row(
                        table, key, shown, besides=columns) is not None:
                    self.repoint(table, key, other_key)
                    self.refuse_if_referenced(table, key, shown, "hidden by a UNIQUE clash",
                                               besides=columns)
                return replace(life, evicted_by=theirs.event), refs
            if self._look.referencing_row(table, other_key, other_image,
                                     besides=columns) is not None:
                if shown is not None:
                    self.repoint(table, other_key, key)
                else:
                    # This row is not in the table yet and the loser's rows cannot point
                    # at it before it is: the loser lets go of the value first, its rows
                    # follow once this row is written (settle, ``_merge_after``).
                    self._free_value(table, other_key, other_image, columns, key)
                    self._merge_after.setdefault(
                        (table.name, registers.key_identity(key, table)), []).append(
                        (other_key, other, mine.event, columns))
                    continue
                self._settler.settle(table, other_key, other, other, hide=mine.event,
                            depth=depth + 1, hidden_for=columns)
                continue
            if shown is None and self._look.referencing(
                    table, other_key, other_image, only=columns) is not None:
                self._hand_over(table, other_key, key)
            self._settler.settle(table, other_key, other, other, hide=mine.event, depth=depth + 1,
                        hidden_for=columns)
        return life, refs

    def _hand_over(self, table: Table, loser: Key, winner: Key) -> None:
        """The loser's row takes the winner's key in place; the winner's write that follows
        gives it the winner's values. Rows naming the UNIQUE value never see it go."""
        self._out.rekey(table, loser, winner)

    def _winner_of(self, table: Table, key: Key) -> Key | None:
        """The row in the table holding a UNIQUE value of the hidden row ``key``."""
        state = self._look.stored(table, key)
        if state is None:
            return None
        image = state.current.image(self._look.policy(table))
        for columns in table.uniques:
            vals = [image.get(c) for c in columns]
            if any(v is None for v in vals):
                continue
            parsed = [values_pb2.Value.FromString(v) for v in vals]  # type: ignore[arg-type]
            if any(p.WhichOneof("kind") == "null" for p in parsed):
                continue
            found = self._look.holder_of(table, columns, parsed, key)
            if found is not None:
                return found
        return None

    def repoint_child(self, table: Table, key: Key, fk: ForeignKey, parent: Table,
                       pkey: Key) -> None:
        """A row referencing ``pkey``, which stayed hidden by a UNIQUE clash with a row
        other rows reference: it is written referencing that row instead (on record)."""
        pstate = self._look.stored(parent, pkey)
        if pstate is None or pstate.current.visible or pstate.current.evicted_by is None:
            return
        winner = self._winner_of(parent, pkey)
        if winner is None:
            raise ConstraintError(
                f"{table.name} {show(key)} references {parent.name} {show(pkey)}, hidden "
                "by a UNIQUE clash, and no row holds its value here; an operator must look "
                "at them")
        row = (table.name, registers.key_identity(key, table))
        self._repoint_to.setdefault(row, {}).update({
            c: v.SerializeToString(deterministic=True)
            for c, v in zip(fk.columns, child_values(parent, fk, table, winner), strict=True)})
        # Its records are decided again once both rows' registers are stored: the parent
        # may have come back and lost its clash only while this row was being written.
        self._reparenting.repointed.append((table, key, parent, pkey))

    def repoint(self, table: Table, loser: Key, winner: Key) -> None:
        """The rows of the table that reference ``loser`` by its primary key reference
        ``winner`` instead: the loser goes (a UNIQUE clash with a row other rows reference
        too), they stay. Their registers keep their own reference; the records follow
        (``_rerecord_repointed``). Rows of a table this site does not replicate cannot be
        re-pointed from events: held, saying so."""
        self._look.flush()
        for fk in table.referenced_by:
            if fk.parent_columns != table.primary_key:
                continue  # (a reference to a UNIQUE value names the value: it stays)
            child = self._schema.tables.get(fk.table)
            if child is None or child.name not in self._registry:
                if self._look.unreplicated_refers(table, fk, loser):
                    raise ConstraintError(
                        f"{table.name} {show(loser)} and {show(winner)} hold the same "
                        f"UNIQUE value and other rows reference both; {fk.table}, which is "
                        "not replicated, references the one that loses: an operator must "
                        "point those rows at the other one at this site")
                continue
            found = self._look.referencing_keys(table, fk, child, loser)
            to = dict(zip(fk.columns, child_values(table, fk, child, winner), strict=True))
            for ckey in found:
                self._out.update(child, ckey, to, check_local=True)
                self._reparenting.repointed.append((child, ckey, table, loser))

    def _free_value(self, table: Table, loser: Key, image: Mapping[str, bytes | None],
                    columns: Sequence[str], winner: Key) -> None:
        """The loser, still in the table with rows referencing it, lets go of its UNIQUE
        value (its nullable columns of it set to NULL) so that the winner can be written
        before those rows are re-pointed to it and the loser goes, in this transaction."""
        nullable = [c for c in columns if table.column(c).nullable]
        if self._look.referencing(table, loser, image, only=columns) is not None:
            # (rows naming the value itself: NULL would be refused, or cascade to them)
            raise ConstraintError(
                f"{table.name} {show(loser)} and {show(winner)} hold the same "
                f"{', '.join(columns)}; rows reference the first by its primary key and "
                "others name that value itself, so the engine cannot hold both rows while "
                "they move. An operator must change the value of one of them at one site")
        if not nullable:
            raise ConstraintError(
                f"{table.name} {show(loser)} and {show(winner)} hold the same "
                f"{', '.join(columns)} and other rows reference both: the rows of "
                f"{show(loser)} (lower stamp) go to {show(winner)}, but no column of that "
                "UNIQUE key can be NULL, so the engine cannot hold both rows while they move. "
                "An operator must change the value of one of them at one site")
        self._out.update(table, loser, {c: values_pb2.Value(null=True)
                                                for c in nullable}, check_local=True)

    def give_back(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                   depth: int) -> None:
        """A row deleted while rows re-pointed to it from a row it hid in a UNIQUE clash
        reference it: that row comes back first (its value let go here), and its rows
        reference it again (``_repoint_back``), as where the delete was made before the
        clash was seen. Only when nothing else keeps the deleted row: otherwise it stays
        (``held_by``) and the hidden row with it, until the rows keeping it go."""
        # (the value first: a table may have many hidden rows, each a read of the records)
        losers = [k for k in self._look.hidden(table)
                  if (st := self._look.stored(table, k)) is not None and st.current.exists
                  and st.current.evicted_by is not None
                  and any(self._look.holds(table, st.current, cols, parsed)
                          for cols in table.uniques
                          if (parsed := parsed_values(image, cols)) is not None)
                  and self._look.reparented_rows(st)]
        if not losers or self._kept_besides(table, key, losers):
            return
        for columns in table.uniques:
            if parsed_values(image, columns) is not None:
                self._free_value(table, key, image, columns, losers[0])
        for loser in losers:
            state = self._look.stored(table, loser)
            assert state is not None
            self._settler.settle(table, loser, state, state, depth=depth + 1)

    def _kept_besides(self, table: Table, key: Key, losers: Sequence[Key]) -> bool:
        """Does a row reference ``key`` other than the rows re-pointed to it from
        ``losers`` (rows whose own reference names one of them)?"""
        theirs = {registers.key_identity(k, table) for k in losers}
        for fk in table.referenced_by:
            if fk.parent_columns != table.primary_key:
                continue
            child = self._schema.tables.get(fk.table)
            if child is None or child.name not in self._registry:
                if self._look.unreplicated_refers(table, fk, key):
                    return True
                continue
            for ckey in self._look.keys_where(
                    child, self._look.where(fk.columns, child),
                    self._look.params(child, fk.columns, child_values(table, fk, child, key))):
                if same_row(child, ckey, table, key):
                    continue
                cstate = self._look.stored(child, ckey)
                parsed = parsed_values(cstate.current.image(self._look.policy(child)), fk.columns) \
                    if cstate is not None else None
                if parsed is None or registers.key_identity(
                        rekey(child, fk, table, parsed), table) not in theirs:
                    return True
        return False

    def repoint_back(self, table: Table, key: Key, hidden: RowState) -> None:
        """A row hidden by a UNIQUE clash is back (the clash is gone): the rows re-pointed
        from it (its ``REPARENTED`` records name its life) reference it again, as their
        registers say (their records follow when ``put`` stores the row)."""
        mine = registers.key_identity(key, table)
        for child, number, ckey, cstate in self._look.repointed_from(hidden):
            if (number, registers.key_identity(ckey, child)) in self._settler.later_refs:
                continue
            image = cstate.current.image(self._look.policy(child))
            for fk in child.foreign_keys:
                if fk.parent != table.name or fk.parent_columns != table.primary_key:
                    continue
                parsed = parsed_values(image, fk.columns)
                if parsed is None or \
                        registers.key_identity(rekey(child, fk, table, parsed), table) != mine:
                    continue
                self._out.update(child, ckey, dict(zip(fk.columns, parsed, strict=True)),
                                         check_local=True)

    def follow_new_winners(self) -> None:
        """Rows hidden by a UNIQUE clash that another row hides now (the winner changed
        its value or went, and an older holder came back): the rows re-pointed from them
        reference the new winner, as at a site that never saw the old one win."""
        while self._rewon:
            table, key = self._rewon.pop(0)
            state = self._look.stored(table, key)
            if state is None or hidden_as(state.current) is None:
                continue
            winner = self._winner_of(table, key)
            if winner is None:
                continue
            mine = registers.key_identity(key, table)
            for child, _number, ckey, cstate in self._look.repointed_from(state):
                image = cstate.current.image(self._look.policy(child))
                for fk in child.foreign_keys:
                    if fk.parent != table.name or fk.parent_columns != table.primary_key:
                        continue
                    parsed = parsed_values(image, fk.columns)
                    if parsed is None or registers.key_identity(
                            rekey(child, fk, table, parsed), table) != mine:
                        continue
                    self._out.update(child, ckey, dict(zip(
                        fk.columns, child_values(table, fk, child, winner), strict=True)),
                        check_local=True)

    def refuse_if_referenced(self, table: Table, key: Key, image: Mapping[str, bytes | None],
                              why: str, besides: Sequence[str] = ()) -> None:
        if self._look.referencing_row(table, key, image, besides=besides) is not None:
            raise ConstraintError(f"{table.name} {show(key)} would be {why}, but other rows "
                                  "reference it; an operator must decide which row stays")
        # (``outcome`` re-points the rows referencing a loser by its primary key first: this
        # is the last line of defence)


def _shared_refs(a: Refs, b: Refs) -> Refs:
    """The references counted by either of two rows (per origin, the highest)."""
    return {o: max(a.get(o, 0), b.get(o, 0)) for o in sorted({*a, *b})}


def hidden_as(life: Life) -> tuple[Stamp, EventId] | None:
    """A life hidden by a UNIQUE clash: its insert and the write it lost to."""
    if not life.exists or life.evicted_by is None:
        return None
    return life.generation, life.evicted_by
