"""The row-register merge as a CRDT: the same events merged in any causal order give the same
registers and the same recorded losses, and the result matches a small reference model.

Sites are simulated: each keeps its own replica of one row, makes local writes (stamps,
bases and generations taken from its replica, as the publisher does), and now and then
receives everything another site has. Then every event is delivered to fresh replicas in
several random causal orders. Seeded; the seed is in the test id.
"""

from __future__ import annotations

import os
import random

import pytest

from siege_sync.node.model.merge import (
    CausalityError,
    EventId,
    LossKind,
    Op,
    Policy,
    RowState,
    Stamp,
    Write,
    dependencies,
    losses,
    merge,
)

COLUMNS = ("A", "B", "C")
SEEDS = range(int(os.environ.get("SIEGE_MERGE_SEEDS", "300")))


class Site:
    def __init__(self, name: str, rng: random.Random, policy: Policy = Policy()) -> None:
        self.policy = policy  # a site names as base the value it shows
        self.name = name
        self.rng = rng
        self.seq = 0
        self.clock = 0
        self.state: RowState | None = None
        self.seen: list[Write] = []
        self.seen_ids: set[EventId] = set()

    def receive(self, write: Write) -> None:
        if write.id in self.seen_ids:
            return
        self.state = merge(self.state, write).state
        self.seen.append(write)
        self.seen_ids.add(write.id)
        self.clock = max(self.clock, write.stamp.wall)

    def local_write(self) -> Write | None:
        self.seq += 1
        self.clock += self.rng.randint(0, 3)  # clocks tie and stall: stamps break ties
        state = self.state
        row_walls = [h.stamp.wall for life in state.lives for hs in life.heads.values()
                     for h in hs] if state else []
        wall = max([self.clock, *(w + 1 for w in row_walls)])
        stamp = Stamp(wall, self.name, 1, self.seq)
        if state is None or not state.exists:
            values = {c: f"{self.name}{self.seq}{c}".encode() for c in COLUMNS}
            write = Write(stamp, Op.INSERT, stamp, values,
                          exist_base=max(state.current.deletes).event if state else None,
                          follows=state.generation if state else None)
        elif self.rng.random() < 0.2:
            write = Write(stamp, Op.DELETE, state.generation,
                          bases=state.current.writers(self.policy))
        else:
            cols = self.rng.sample(COLUMNS, self.rng.randint(1, len(COLUMNS)))
            write = Write(stamp, Op.UPDATE, state.generation,
                          {c: f"{self.name}{self.seq}{c}".encode() for c in cols},
                          bases={c: state.current.writers(self.policy)[c] for c in cols})
        self.receive(write)
        return write


def causal_order(writes: list[Write], rng: random.Random) -> list[Write]:
    """A random order in which every event comes after its dependencies and after the
    previous event of its origin."""
    by_id = {w.id: w for w in writes}
    pending = list(writes)
    done: set[EventId] = set()
    out = []
    while pending:
        ready = [w for w in pending
                 if all(d in done for d in dependencies(w) if d in by_id)
                 and (w.id.seq == 1 or EventId(w.id.site, 1, w.id.seq - 1) in done
                      or EventId(w.id.site, 1, w.id.seq - 1) not in by_id)]
        assert ready, "dependency cycle"
        w = rng.choice(ready)
        pending.remove(w)
        done.add(w.id)
        out.append(w)
    return out


def reference(writes: list[Write], prefer: str | None = None):
    """What the rules say, computed directly from the set of events (no merge code): the
    life with the highest insert stamp is current; per life and column, the heads are the
    writes no other write named as its base; a column's value is its highest head; losses are
    the other heads, the heads of an ended life that no delete saw (a delete saw the writers
    it names and every earlier write of its own origin), and the past lives no insert
    followed."""
    inserts = sorted((w for w in writes if w.op is Op.INSERT), key=lambda w: w.stamp)
    current = inserts[-1].stamp
    followed = {w.follows for w in inserts}
    recorded = set()
    result = None
    for ins in inserts:
        life = [w for w in writes if w.generation == ins.stamp]
        gen = ins.id
        if ins.stamp != current and ins.stamp not in followed:
            recorded.add((LossKind.GENERATION, gen, gen, None))
            continue
        deletes = [w for w in life if w.op is Op.DELETE]
        seen_by_delete = {b for d in deletes for b in d.bases.values()}
        values = {}
        for column in COLUMNS:
            writes_c = [w for w in life if column in w.columns]
            overwritten = {w.bases[column] for w in writes_c if column in w.bases}
            heads = [w for w in writes_c if w.id not in overwritten]
            win = max(heads, key=lambda w: (w.stamp.site == prefer, w.stamp))
            values[column] = win.columns[column]
            for h in heads:
                if h is not win:
                    recorded.add((LossKind.COLUMN, gen, h.id, column))
                own_delete_after = any(
                    d.id.site == h.id.site and d.id.incarnation == h.id.incarnation
                    and d.id.seq > h.id.seq for d in deletes)
                if (deletes and h.op is not Op.INSERT and h.id not in seen_by_delete
                        and not own_delete_after):
                    recorded.add((LossKind.UPDATE_OF_DEAD_ROW, gen, h.id, column))
        if ins.stamp == current:
            result = (not deletes, values)
    return result, recorded


def identities(found) -> set:
    return {loss.identity for loss in found}


@pytest.mark.parametrize("prefer", [None, "nice"], ids=["lww", "prefer-nice"])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_any_causal_order_converges_with_the_same_losses(seed, prefer):
    policy = Policy(prefer_site=prefer)
    rng = random.Random(seed)
    sites = [Site(n, rng, policy) for n in ("lyon", "nice", "siege")]
    for _ in range(rng.randint(3, 25)):
        site = rng.choice(sites)
        if rng.random() < 0.3:
            other = rng.choice(sites)
            for w in causal_order(other.seen, rng):  # anti-entropy: all it lacks
                site.receive(w)
        elif site.state is not None or site is sites[0] or rng.random() < 0.3:
            site.local_write()
    writes = [w for s in sites for w in s.seen]
    writes = list({w.id: w for w in writes}.values())
    if not writes:
        return
    results = []
    for _ in range(4):
        replica = Site("replica", rng)
        for w in causal_order(writes, rng):
            replica.receive(w)
            replica.state = merge(replica.state, w).state  # redelivery is a no-op
        results.append((replica.state, identities(losses(replica.state, policy))))
    first_state, first_losses = results[0]
    for state, found in results[1:]:
        assert state == first_state, f"seed {seed}: registers diverged"
        assert found == first_losses, f"seed {seed}: recorded losses diverged"
    (exists, values), recorded = reference(writes, prefer)
    assert first_state.exists == exists and first_state.image(policy) == values, f"seed {seed}"
    assert first_losses == recorded, f"seed {seed}: losses differ from the reference"


def apply_all(writes, state=None):
    for w in writes:
        state = merge(state, w).state
    return state


def test_sequential_overwrites_are_not_conflicts():
    s = [Stamp(10 * i, "a", 1, i) for i in range(1, 5)]
    state = apply_all([
        Write(s[0], Op.INSERT, s[0], {"A": b"1"}),
        Write(s[1], Op.UPDATE, s[0], {"A": b"2"}, bases={"A": s[0].event}),
        Write(s[2], Op.DELETE, s[0], bases={"A": s[1].event}),
        Write(s[3], Op.INSERT, s[3], {"A": b"3"}, exist_base=s[2].event, follows=s[0]),
    ])
    assert losses(state) == set() and state.image() == {"A": b"3"}


def test_concurrent_updates_of_different_columns_both_survive():
    i = Stamp(1, "a", 1, 1)
    insert = Write(i, Op.INSERT, i, {"ADDR": b"old", "PAID": b"0"})
    addr = Write(Stamp(5, "a", 1, 2), Op.UPDATE, i, {"ADDR": b"new"}, bases={"ADDR": i.event})
    paid = Write(Stamp(6, "b", 1, 1), Op.UPDATE, i, {"PAID": b"100"}, bases={"PAID": i.event})
    for order in ((insert, addr, paid), (insert, paid, addr)):
        state = apply_all(order)
        assert state.image() == {"ADDR": b"new", "PAID": b"100"} and losses(state) == set()


def test_concurrent_writes_of_one_column_keep_the_higher_stamp_and_record_the_other():
    i = Stamp(1, "a", 1, 1)
    insert = Write(i, Op.INSERT, i, {"A": b"0"})
    low = Write(Stamp(5, "a", 1, 2), Op.UPDATE, i, {"A": b"low"}, bases={"A": i.event})
    high = Write(Stamp(5, "b", 1, 1), Op.UPDATE, i, {"A": b"high"}, bases={"A": i.event})
    for order in ((insert, low, high), (insert, high, low)):
        state = apply_all(order)
        assert state.image() == {"A": b"high"}
        assert identities(losses(state)) == {(LossKind.COLUMN, i.event, low.id, "A")}
    # The losing site later overwrites its own value knowingly: its new value is a head
    # that still loses; the old one is no longer a loss of its own.
    again = Write(Stamp(4, "a", 1, 3), Op.UPDATE, i, {"A": b"again"}, bases={"A": low.id})
    state = apply_all([insert, low, high, again])
    assert identities(losses(state)) == {(LossKind.COLUMN, i.event, again.id, "A")}


def test_update_of_a_deleted_row_is_a_loser_never_a_reinsert():
    i = Stamp(1, "a", 1, 1)
    insert = Write(i, Op.INSERT, i, {"A": b"1"})
    delete = Write(Stamp(5, "a", 1, 2), Op.DELETE, i, bases={"A": i.event})
    late = Write(Stamp(9, "b", 1, 1), Op.UPDATE, i, {"A": b"2"}, bases={"A": i.event})
    for order in ((insert, delete, late), (insert, late, delete)):
        state = apply_all(order)
        assert not state.exists
        assert identities(losses(state)) == {
            (LossKind.UPDATE_OF_DEAD_ROW, i.event, late.id, "A")}


def test_insert_against_insert_keeps_the_higher_stamp_and_records_the_other():
    a, b = Stamp(5, "a", 1, 1), Stamp(5, "b", 1, 1)  # same wall time: site id decides
    ins_a = Write(a, Op.INSERT, a, {"A": b"from a"})
    ins_b = Write(b, Op.INSERT, b, {"A": b"from b"})
    for order in ((ins_a, ins_b), (ins_b, ins_a)):
        state = apply_all(order)
        assert state.image() == {"A": b"from b"}
        assert identities(losses(state)) == {(LossKind.GENERATION, a.event, a.event, None)}


def test_merging_before_a_dependency_is_refused():
    i = Stamp(1, "a", 1, 1)
    with pytest.raises(CausalityError):
        merge(None, Write(Stamp(2, "a", 1, 2), Op.UPDATE, i, {"A": b"x"}))
