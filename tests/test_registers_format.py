"""How a row's registers are stored (registers.py): what is written reads back as it was, and
records written before a head's stamp could be left out (it is the life's generation) read
as they always did."""

from __future__ import annotations

import random

import pytest

from siege_sync.node.model import registers
from siege_sync.node.model.merge import EventId, Head, Life, RowState, Stamp
from siege_sync.proto import registers_pb2

SITES = ("siège", "lyon", "")


def _stamp(rng: random.Random) -> Stamp:
    return Stamp(rng.randrange(1, 10**15), rng.choice(SITES), rng.randrange(1, 3),
                 rng.randrange(1, 10**6))


def _life(rng: random.Random, generation: Stamp) -> Life:
    stamps = [generation, registers.PREEXISTING, *(_stamp(rng) for _ in range(3))]
    heads = {}
    for column in ("ID", "NOM", "MONTANT", "NOTE")[:rng.randrange(1, 5)]:
        chosen = rng.sample(stamps, rng.randrange(1, 4))
        heads[column] = frozenset(
            Head(s, None if rng.random() < 0.2 else rng.randbytes(rng.randrange(0, 12)))
            for s in chosen)
    deletes = frozenset(_stamp(rng) for _ in range(rng.randrange(0, 3)))
    return Life(generation, deletes, heads,
                known_by_delete=frozenset(EventId("lyon", 1, n) for n in range(
                    rng.randrange(0, 3))),
                follows=_stamp(rng) if rng.random() < 0.3 else None,
                held_by=EventId("siège", 1, 7) if rng.random() < 0.2 else None,
                delete_refs={s: {("lyon", 1): 3} for s in deletes if rng.random() < 0.5})


def _state(rng: random.Random) -> RowState:
    generation = registers.PREEXISTING if rng.random() < 0.2 else _stamp(rng)
    past = {}
    for _ in range(rng.randrange(0, 3)):
        life = _life(rng, _stamp(rng))
        past[life.generation] = life
    return RowState(_life(rng, generation), past,
                    {("nice", 1): 4} if rng.random() < 0.3 else {})


def _old_record(life: Life) -> registers_pb2.LifeRecord:
    """A life as stored before: every head with its stamp (only the parts _life sets)."""
    rec = registers._life_record(life)
    for column in rec.columns:
        name = column.column
        for stored, head in zip(column.heads, sorted(life.heads[name]), strict=True):
            stored.stamp.CopyFrom(registers.stamp_ref(head.stamp))
    return rec


@pytest.mark.parametrize("seed", range(4))
def test_registers_read_back_as_written_in_both_formats(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        # (read once: what the merge derives from the stored parts, ``overruled``, is set)
        state = registers.decode_state(registers.encode_state(_state(rng)))
        data = registers.encode_state(state)
        assert registers.decode_state(data) == state
        old = registers_pb2.RowRegisters(current=_old_record(state.current))
        old.past.extend(_old_record(state.past[g]) for g in sorted(state.past))
        old.refs.extend(registers._ref_list(state.refs))
        old_data = old.SerializeToString(deterministic=True)
        assert registers.decode_state(old_data) == state
        if any(h.stamp == state.generation for hs in state.current.heads.values() for h in hs):
            assert len(data) < len(old_data)


def test_a_fresh_row_keeps_its_stamp_once() -> None:
    """The common row: every value written by its insert. Its stamp is stored once."""
    stamp = Stamp(1_765_000_000_000_000, "lyon", 1, 12_345)
    state = RowState(Life(stamp, frozenset(), {
        c: frozenset({Head(stamp, b"\x12\x05Zo\xc3\xa9")}) for c in ("ID", "NOM", "VILLE")}))
    data = registers.encode_state(state)
    assert data.count(b"lyon") == 1
    assert registers.decode_state(data) == state
