"""Retention (DESIGN §3.7): what a site may forget, given what every site has applied.

Owns the purge of stored events and of the registers of ended lives. Both are kept only while
an event published without knowledge of them can still arrive somewhere:

* an event every site has applied is no longer needed for relaying: its segment goes once
  all its events are below the mesh's *applied-everywhere* vector;
* an ended life (deleted, or replaced by another insert) is forgotten once the event that
  ended it was held by every site at a snapshot (``held_then``), and everything any site had
  published by that snapshot (``published_then``) is now applied everywhere
  (``applied_now``; it may be the same snapshot). Any event published without knowledge of
  the end was published before its site held it, so it has arrived everywhere: no late
  event can still look for the life. Each site's part of a snapshot (its applied vector and
  its own published position) must be read at one moment.

A dead key's last life is never forgotten whole: its register row is reduced to a *stub*
(:func:`stub`: the life's generation and the stamps of the deletes that ended it, and the
row's reference counts ``RowState.refs``, which a later life's delete is judged by; issue 17
item 1).
The stub is the key's stamp floor: the next insert of the key here is stamped above it
(``registers.max_wall``) and follows it (``registers.link``: ``follows`` and its delete as
``exist_base``), so that life is ordered after every life purged — at a site that still
holds the whole dead life as at one that purged it, whatever the clocks. A stub records no
loss (no column heads; it is the current life, or a past life its re-insert follows), and
is identical at every site that purged (every event of the life was applied everywhere
before the purge), so it is written once and never counted again.

The vectors come from the coordinator (it sees every site); a site lagging past the limit or
decommissioned must be dropped from them (it then needs ``resync``). Conflict records are
never purged here: they belong to the operators. Never purges anything the vectors do not
prove safe, and never deletes a key's register row (the stub stays: without it a re-insert
stamped by a clock behind the dead life's would lose to it at a site that purges later).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from firebird.driver import Connection, Cursor

from ..db.database import SNAPSHOT_RW, transaction
from ..model import registers
from ..model.merge import Life, RowState, Stamp
from .capture import EVENTS_TABLE, ROWS_TABLE

Vector = Mapping[tuple[str, int], int]  # (site, incarnation) -> seq


@dataclass
class PurgeResult:
    segments: int = 0  # stored event segments deleted
    lives: int = 0  # ended lives forgotten (a dead key's last life once, when stubbed)
    rows: int = 0  # register rows of dead keys reduced to their stub


def stub(life: Life) -> Life:
    """What a dead key keeps of its purged last life: the stamps that order its next life
    after it (generation, the deletes that took effect). Its values, the writers its
    deletes saw, overruled deletes, the life it followed and the constraint flags go: no
    event can look for them any more."""
    return Life(generation=life.generation, deletes=life.ended, heads={})


def _covered(stamp: Stamp, vector: Vector) -> bool:
    return stamp.seq <= vector.get((stamp.site, stamp.incarnation), 0)


def _settled(published_then: Vector, applied_now: Vector) -> bool:
    return all(applied_now.get(origin, 0) >= seq for origin, seq in published_then.items())


def _ended_by(state: RowState, life: Life) -> Stamp | None:
    """The event that ended a life: its (earliest) delete, or the insert that replaced it."""
    if life.ended:  # (a delete overruled by a reference it did not know ended nothing)
        return min(life.ended)
    later = [other.generation for other in state.lives if other.generation > life.generation]
    return min(later) if later else None


def purge(con: Connection, applied_now: Vector, held_then: Vector | None = None,
          published_then: Vector | None = None) -> PurgeResult:
    result = PurgeResult()
    lives_ok = (held_then is not None and published_then is not None
                and _settled(published_then, applied_now))
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            for (site, incarnation), seq in applied_now.items():
                cur.execute(f"DELETE FROM {EVENTS_TABLE} WHERE ORIGIN = ? AND INCARNATION = ? "
                            "AND LAST_SEQ <= ?", (site, incarnation, seq))
                result.segments += cur.affected_rows
            if not lives_ok:
                return result
            assert held_then is not None
            cur.execute(f"SELECT TBL_NO, KEY_HASH, REGS, REGS_BLOB FROM {ROWS_TABLE}")
            found = cur.fetchall()
            for table_no, khash, inline, blob in found:
                data = inline if inline is not None else blob
                if hasattr(data, "read"):
                    reader = data
                    data = reader.read()
                    reader.close()
                state = registers.decode_state(data)
                kept = {g: life for g, life in state.past.items()
                        if not _stable_end(state, life, held_then)}
                result.lives += len(state.past) - len(kept)
                # (A deleted row kept by a reference is still in its table: not gone.)
                current_gone = (not state.current.visible and not state.exists and not kept
                                and _stable_end(state, state.current, held_then))
                if current_gone:
                    # (The references it had stay counted: a later life's delete names
                    # what its origin knew, at sites that purged or not.)
                    compact = RowState(stub(state.current), refs=state.refs)
                    if compact == state:
                        continue  # a stub already: nothing left to forget
                    result.rows += 1
                    result.lives += 1
                    _write(cur, table_no, khash, compact)
                elif len(kept) != len(state.past):
                    _write(cur, table_no, khash, replace(state, past=kept))
        finally:
            cur.close()
    return result


def _write(cur: Cursor, table_no: int, khash: bytes, state: RowState) -> None:
    data = registers.encode_state(state)
    inline, blob = ((data, None) if len(data) <= registers.INLINE_REGISTERS else (None, data))
    cur.execute(f"UPDATE {ROWS_TABLE} SET MAX_WALL = ?, REGS = ?, REGS_BLOB = ? "
                "WHERE TBL_NO = ? AND KEY_HASH = ?",
                (registers.max_wall(state), inline, blob, table_no, khash))


def _stable_end(state: RowState, life: Life, held_then: Vector) -> bool:
    end = _ended_by(state, life)
    return end is not None and _covered(end, held_then)
