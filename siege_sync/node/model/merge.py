"""The row-register merge (DESIGN §3.3): how one event changes one row's registers.

Pure logic, no database: the applier loads a row's state, calls ``merge`` and stores what it
returns. A row (table + key) holds:

* its **lives**: a life starts with an insert (its *generation*) and ends with a delete;
  the current life is the one with the highest insert stamp, past lives stay as tombstones
  (until the retention purge) so that late events of theirs merge the same way everywhere;
* per life, an **existence** register (alive, or ended by a delete) and, per column, the
  **heads**: the writes of that column no other write has overwritten knowingly.

Every event names, per column it writes, the writer it overwrote at its origin (its *base*);
a write removes its base from the heads and becomes a head. An update of a table with CHECK
constraints also carries what its origin's row held in the columns it did not write
(``Write.seen``, with the writers it saw there); per life the registers keep the whole row of
the update with the highest stamp that carried one (``Life.latest_row``: whatever the arrival
order, the same), for the CHECK fall-back (``Life.whole_row``, ``constraints.py``). Seen values
never change the heads: they are no write. The column's value is the winning head: the
highest stamp (``Stamp``: HLC wall time, site, incarnation, seq — a total order) under the
default ``lww`` policy, the preferred site's head first under ``prefer-site`` (``Policy``),
or the life's whole row after a CHECK fall-back (``Life.winner``).

Because heads are a function of the set of events, and losses are a function of the heads,
any two replicas that merged the same events hold the same registers and the same losses,
whatever the order — provided each event is merged after the events it depends on
(``dependencies``: its generation's insert, its bases, the delete a re-insert followed).
The applier guarantees that causal order; an event that arrives early waits.

Losses (versions kept on record, DESIGN §3.3, §3.5):
* a head that is not the column's winner lost a concurrent conflict (``COLUMN``);
* a delete of a row that rows reference (``DELETE_OF_REFERENCED_ROW``). A row counts the
  writes that made a row reference it (``RowState.refs``: per origin, the highest seq; the
  applier notes them, ``referenced``), and a delete carries the count its origin knew
  (``Write.known_refs``). A delete that did not know every reference is *overruled* for
  good: it is on record and the row lives on as an ordinary row, whatever happens to the
  referencing rows later. Being a function of the set of events (counts only grow), every
  site decides it alike. A delete that knew every reference, but meets one here whose
  removal has not arrived yet, waits with the row kept (``held_by``, decided by
  ``constraints.py`` like a row hidden by a UNIQUE clash it lost, ``UNIQUE_CLASH``);
* in an ended life, a head no delete knew was an update the delete did not see
  (``UPDATE_OF_DEAD_ROW``): it died with the row, never re-inserts it. A delete knew the
  writers it names (the values its origin showed) and every earlier write of its own origin
  (``_own_earlier``): one that lost there to a concurrent value is on record once, as a
  ``COLUMN`` loss, not again as an update its own site's delete "did not see";
* a life replaced by a concurrent insert lost whole (``GENERATION``);
* a row created, by the origin of such a life, referencing it before that origin could have
  seen the life that replaced it (``REPARENTED``): a line of an invoice whose number another
  site also used. It stays (its parent's key exists, so hiding it would leave a line whose
  invoice is nowhere), but the operator sees the whole collision. A function of two rows'
  registers, so ``constraints.py`` decides it, never ``losses``.
* a head overridden by the whole row of the life's latest write (``WHOLE_ROW``): merging the
  columns broke a CHECK, so the row is that write's whole row (``Life.whole_row``, decided
  by ``constraints.py``): its written values and the values its origin saw in the other
  columns (``Write.seen``, kept per life as ``Life.latest_row``). In a column it wrote, the
  other heads lose as ``COLUMN`` losses to it; in a column it only saw, every head but the
  writer it saw there loses to it;
A head overwritten later by its own origin is no longer a loss: ``losses`` is recomputed
and the applier stores the difference.

Must never look at wall clocks or arrival order for a decision: only stamps and bases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

Origin = tuple[str, int]  # (site, incarnation)
Refs = Mapping[Origin, int]  # per origin, the highest seq of a write that referenced a row


@dataclass(frozen=True, order=True)
class EventId:
    site: str
    incarnation: int
    seq: int


@dataclass(frozen=True, order=True)
class Stamp:
    """Total order of events: (HLC wall time µs, site, incarnation, seq)."""

    wall: int
    site: str
    incarnation: int
    seq: int

    @property
    def event(self) -> EventId:
        return EventId(self.site, self.incarnation, self.seq)


@dataclass(frozen=True)
class Policy:
    """How a table's concurrent column writes are decided (DESIGN §3.3).

    ``lww`` (the default): the higher stamp. ``prefer_site``: a head written by that site
    beats any other, then the higher stamp. ``manual``: as lww, and the losses wait for an
    operator's decision. Existence (inserts, deletes) is decided as in lww for every policy:
    a re-insert must win over the life it follows, which a site preference would break.
    """

    prefer_site: str | None = None
    manual: bool = False

    def rank(self, head: Head) -> tuple[bool, Stamp]:
        return head.stamp.site == self.prefer_site, head.stamp

    @classmethod
    def parse(cls, text: str) -> Policy:
        words = text.split()
        if words == ["lww"]:
            return cls()
        if words == ["manual"]:
            return cls(manual=True)
        if len(words) == 2 and words[0] == "prefer-site":
            return cls(prefer_site=words[1])
        raise ValueError(f"policy {text!r}: use \"lww\", \"manual\" or \"prefer-site SITE\"")


class Op(Enum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Write:
    """One event as the merge sees it. Values are opaque (exact encoded bytes)."""

    stamp: Stamp
    op: Op
    generation: Stamp  # the stamp of the insert that started this life (itself for an insert)
    columns: Mapping[str, bytes | None] = field(default_factory=dict)
    # UPDATE: the writer each written column had at the origin. DELETE: the writer of every
    # column the origin had.
    bases: Mapping[str, EventId] = field(default_factory=dict)
    # INSERT after the key's previous life ended at the origin: the delete it saw (a
    # dependency) and that life's generation (the re-insert follows it, no conflict).
    exist_base: EventId | None = None
    follows: Stamp | None = None
    # DELETE: the references to the row its origin knew (None: an event that does not say,
    # never overruled).
    known_refs: Refs | None = None
    # UPDATE of a table with CHECK constraints: the values its origin held in the columns it
    # did not write (non-key, non-BLOB) and, per column, the writer it saw there (None: the
    # event does not carry them — another table, an older node).
    seen: Mapping[str, bytes | None] | None = None
    seen_bases: Mapping[str, EventId] = field(default_factory=dict)

    @property
    def id(self) -> EventId:
        return self.stamp.event


@dataclass(frozen=True)
class WholeRow:
    """The whole row one update's origin had after it: its written values and the values it
    saw in its other columns (BLOBs it did not write are not known: not in an update's image),
    with, per column, the writer of that value there (the update itself where it wrote)."""

    stamp: Stamp
    values: Mapping[str, bytes | None]
    writers: Mapping[str, EventId]


def whole_row(write: Write) -> WholeRow | None:
    """The whole row an update carries, or None."""
    if write.op is not Op.UPDATE or write.seen is None:
        return None
    return WholeRow(write.stamp, {**write.seen, **write.columns},
                    {**write.seen_bases, **{c: write.id for c in write.columns}})


@dataclass(frozen=True, order=True)
class Head:
    """A write of one column that no other write overwrote knowingly."""

    stamp: Stamp
    value: bytes | None = field(compare=False)

    @property
    def writer(self) -> EventId:
        return self.stamp.event


LWW = Policy()


@dataclass(frozen=True)
class Life:
    """One life of a key: from an insert (its generation) to now, or to its end."""

    generation: Stamp
    deletes: frozenset[Stamp]  # empty while alive
    heads: Mapping[str, frozenset[Head]]
    known_by_delete: frozenset[EventId] = frozenset()  # every writer a delete of it saw
    follows: Stamp | None = None  # the ended life its insert knowingly followed
    # What the database's constraints decided (DESIGN §3.5, see constraints.py); each is a
    # function of the rows' registers, decided again whenever a row involved changes:
    held_by: EventId | None = None  # deleted, but a row referencing it keeps it (its writer)
    evicted_by: EventId | None = None  # alive, but hidden by a UNIQUE clash it lost
    # Merged columns broke a CHECK: the row is the whole row of its latest write
    # (``latest_row``, whose id this is), in every column that row has.
    whole_row: EventId | None = None
    whole_row_site: str | None = None  # the same, as stored before whole rows were kept
    # Per delete that said so, the references to the row its origin knew; the deletes that
    # did not know every reference the row has (``overruled``: a function of these and
    # ``RowState.refs``, kept up to date by ``merge`` and ``referenced``) did not happen.
    delete_refs: Mapping[Stamp, Refs] = field(default_factory=dict)
    overruled: frozenset[Stamp] = frozenset()
    # CHECK tables: the whole row of the life's latest update that carried one (the highest
    # stamp, whatever the arrival order). One extra copy of the row per life at most.
    latest_row: WholeRow | None = None

    @property
    def ended(self) -> frozenset[Stamp]:
        """The deletes that took effect (not overruled by a reference they did not know)."""
        return self.deletes - self.overruled

    @property
    def exists(self) -> bool:
        """Alive as far as inserts and deletes go."""
        return not self.ended

    @property
    def visible(self) -> bool:
        """In the database's table: alive or kept by a reference, and not hidden."""
        return (self.exists or self.held_by is not None) and self.evicted_by is None

    def rank_policy(self, policy: Policy) -> Policy:
        return policy if self.whole_row_site is None else Policy(prefer_site=self.whole_row_site)

    @property
    def shown_row(self) -> WholeRow | None:
        """The whole row the row shows (merged columns broke a CHECK), or None."""
        row = self.latest_row
        return row if row is not None and self.whole_row == row.stamp.event else None

    def winner(self, column: str, policy: Policy = LWW) -> Head:
        """The column's value and its writer: the winning head — or, when the row shows a
        whole row that has the column, that row's value, as a head of the writer its origin
        saw there when that writer is a head, else of the whole row's write."""
        row = self.shown_row
        if row is not None and column in row.values:
            seen = row.writers.get(column)
            stamp = next((h.stamp for h in self.heads.get(column, ()) if h.writer == seen),
                         row.stamp)
            return Head(stamp, row.values[column])
        heads = self.heads[column]
        if len(heads) == 1:  # (most columns: one writer, nothing to rank)
            for head in heads:
                return head
        return max(heads, key=self.rank_policy(policy).rank)

    def image(self, policy: Policy = LWW) -> dict[str, bytes | None]:
        # Computed once per life and policy (a life never changes; asked for several times
        # for each event applied), returned as a copy the caller may change.
        images = self.__dict__.get("_images")
        if images is None:
            images = {}
            object.__setattr__(self, "_images", images)
        image = images.get(policy)
        if image is None:
            image = images[policy] = {name: self.winner(name, policy).value
                                      for name in self.heads}
        return dict(image)

    def writers(self, policy: Policy = LWW) -> dict[str, EventId]:
        """The writer of each column's value (what a local write names as its base)."""
        return {name: self.winner(name, policy).writer for name in self.heads}


@dataclass(frozen=True)
class RowState:
    current: Life
    past: Mapping[Stamp, Life] = field(default_factory=dict)
    refs: Refs = field(default_factory=dict)  # writes that made a row reference this one

    @property
    def generation(self) -> Stamp:
        return self.current.generation

    @property
    def exists(self) -> bool:
        return self.current.exists

    def image(self, policy: Policy = LWW) -> dict[str, bytes | None]:
        return self.current.image(policy)

    def life(self, generation: Stamp) -> Life | None:
        if generation == self.current.generation:
            return self.current
        return self.past.get(generation)

    def with_life(self, life: Life) -> RowState:
        if life.generation == self.current.generation:
            return replace(self, current=life)
        return replace(self, past={**self.past, life.generation: life})

    @property
    def lives(self) -> list[Life]:
        return [self.current, *self.past.values()]

    def lost(self, life: Life) -> bool:
        """A past life no insert followed was replaced by a concurrent insert: it lost."""
        return life is not self.current and not any(
            other.follows == life.generation for other in self.lives)


class LossKind(Enum):
    COLUMN = "column"
    UPDATE_OF_DEAD_ROW = "update-of-dead-row"
    GENERATION = "generation"
    DELETE_OF_REFERENCED_ROW = "kept-by-reference"  # a delete undone: a row references it
    UNIQUE_CLASH = "unique-clash"  # another row took its UNIQUE value with a higher stamp
    REPARENTED = "reparented"  # references a key whose life it was written for lost
    WHOLE_ROW = "whole-row"  # merged columns broke a CHECK: the latest write's whole row won


@dataclass(frozen=True)
class Loss:
    """A version that lost: enough to show both sides and to re-apply it by hand."""

    kind: LossKind
    generation: EventId  # the life it belongs to
    loser: EventId  # the losing write (for a whole life: its insert)
    column: str | None  # None for a whole life
    value: bytes | None
    winner: EventId  # what it lost to: the winning head, the delete, the winning insert
    # When the losing write was made (its stamp's wall time, µs UTC; 0: not known). Shown to
    # operators only: never part of what makes two losses the same.
    at: int = field(default=0, compare=False)

    @property
    def identity(self) -> tuple[LossKind, EventId, EventId, str | None]:
        return self.kind, self.generation, self.loser, self.column


@dataclass(frozen=True)
class Outcome:
    state: RowState
    changed: bool  # the row as the application sees it (current life) changed


class CausalityError(Exception):
    """An event was merged before one it depends on: the applier must order them."""


def dependencies(write: Write) -> set[EventId]:
    """Events that must be merged before ``write``."""
    deps = set(write.bases.values())
    if write.op is not Op.INSERT:
        deps.add(write.generation.event)
    if write.exist_base is not None:
        deps.add(write.exist_base)
    deps.discard(write.id)
    return deps


def merge(state: RowState | None, write: Write, policy: Policy = LWW) -> Outcome:
    """Merge one event into one row's registers. Idempotent."""
    if write.op is Op.INSERT:
        return _insert(state, write)
    life = state.life(write.generation) if state is not None else None
    if state is None or life is None:
        raise CausalityError(f"{write.op.value} {write.id} before its generation's insert")
    before = life.image(policy), life.exists
    new_life = (_update(life, write) if write.op is Op.UPDATE
                else _overrule(_delete(life, write), state.refs))
    changed = life is state.current and (new_life.image(policy), new_life.exists) != before
    return Outcome(state.with_life(new_life), changed)


def _insert(state: RowState | None, write: Write) -> Outcome:
    born = Life(
        generation=write.stamp,
        deletes=frozenset(),
        heads={c: frozenset({Head(write.stamp, v)}) for c, v in write.columns.items()},
        follows=write.follows,
    )
    if state is None:
        return Outcome(RowState(born), True)
    if state.life(write.stamp) is not None:
        return Outcome(state, False)  # already merged
    old = state.current
    if write.stamp > old.generation:
        return Outcome(replace(state, current=born,
                               past={**state.past, old.generation: old}), True)
    return Outcome(state.with_life(born), False)  # an older life arriving late


def _update(life: Life, write: Write) -> Life:
    heads = dict(life.heads)
    for name, value in write.columns.items():
        kept = {h for h in heads.get(name, frozenset())
                if h.writer != write.bases.get(name) and h.stamp != write.stamp}
        heads[name] = frozenset(kept | {Head(write.stamp, value)})
    latest = life.latest_row
    row = whole_row(write)
    if row is not None and (latest is None or row.stamp > latest.stamp):
        latest = row
    return replace(life, heads=heads, latest_row=latest)


def _delete(life: Life, write: Write) -> Life:
    known = life.delete_refs
    if write.known_refs is not None:
        known = {**known, write.stamp: dict(write.known_refs)}
    return replace(life, deletes=life.deletes | {write.stamp}, delete_refs=known,
                   known_by_delete=life.known_by_delete | frozenset(write.bases.values()))


def _unknown_ref(refs: Refs, known: Refs) -> EventId | None:
    """A reference ``known`` does not cover (the first origin's latest), or None."""
    for origin in sorted(refs):
        if refs[origin] > known.get(origin, 0):
            return EventId(origin[0], origin[1], refs[origin])
    return None


def _overrule(life: Life, refs: Refs) -> Life:
    overruled = frozenset(d for d, known in life.delete_refs.items()
                          if _unknown_ref(refs, known) is not None)
    return life if overruled == life.overruled else replace(life, overruled=overruled)


def with_refs(state: RowState, refs: Refs) -> RowState:
    """``state`` counting the references ``refs`` (what it has stored), every life's
    overruled deletes decided again."""
    return replace(state, refs=dict(refs), current=_overrule(state.current, refs),
                   past={g: _overrule(life, refs) for g, life in state.past.items()})


def referenced(state: RowState, by: EventId) -> RowState:
    """``state`` once a write (``by``) made a row reference it: a delete that did not know
    that write is overruled. Idempotent; a function of the set of such writes."""
    origin = (by.site, by.incarnation)
    if state.refs.get(origin, 0) >= by.seq:
        return state
    return with_refs(state, {**state.refs, origin: by.seq})


def _own_earlier(write: Stamp, deletes: frozenset[Stamp]) -> bool:
    """Whether a delete of the write's own origin came after it: that origin had merged the
    write before it deleted (each origin merges its own writes in order), although the delete
    names only the value it showed for the column, not a losing head."""
    return any(d.site == write.site and d.incarnation == write.incarnation
               and d.seq > write.seq for d in deletes)


def losses(state: RowState, policy: Policy = LWW) -> set[Loss]:
    """Every version on record as lost in this row: a function of the registers alone."""
    out: set[Loss] = set()
    for life in state.lives:
        gen = life.generation.event
        if state.lost(life):
            out.add(Loss(LossKind.GENERATION, gen, gen, None, None, state.generation.event,
                          life.generation.wall))
            continue
        current = life is state.current
        if current and life.evicted_by is not None:
            out.add(Loss(LossKind.UNIQUE_CLASH, gen, gen, None, None, life.evicted_by,
                          life.generation.wall))
        ended_by = max(life.ended).event if life.ended else None
        if current:
            for d in life.overruled:
                winner = _unknown_ref(state.refs, life.delete_refs[d])
                assert winner is not None
                out.add(Loss(LossKind.DELETE_OF_REFERENCED_ROW, gen, d.event, None, None,
                             winner, d.wall))
        if current and life.ended and life.held_by is not None:
            out.update(Loss(LossKind.DELETE_OF_REFERENCED_ROW, gen, d.event, None, None,
                            life.held_by, d.wall) for d in life.ended)
            ended_by = None  # the row lives on: updates a delete did not see still count
        rank = life.rank_policy(policy).rank
        row = life.shown_row
        for name, hs in life.heads.items():
            if row is not None and name in row.values:
                shown, by = row.writers.get(name), row.stamp.event
                kind = LossKind.COLUMN if shown == by else LossKind.WHOLE_ROW
                out.update(Loss(kind, gen, head.writer, name, head.value, by, head.stamp.wall)
                           for head in hs if head.writer != shown)
            else:
                win = max(hs, key=rank)
                for head in hs:
                    if head != win:
                        out.add(Loss(LossKind.COLUMN, gen, head.writer, name, head.value,
                                     win.writer, head.stamp.wall))
            if ended_by is not None:
                for head in hs:
                    if (head.stamp != life.generation
                            and head.writer not in life.known_by_delete
                            and not _own_earlier(head.stamp, life.deletes)):
                        out.add(Loss(LossKind.UPDATE_OF_DEAD_ROW, gen, head.writer, name,
                                     head.value, ended_by, head.stamp.wall))
    return out
