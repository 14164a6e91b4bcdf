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

The vectors come from the coordinator (it sees every site); a site lagging past the limit or
decommissioned must be dropped from them (it then needs ``resync``). Conflict records are
never purged here: they belong to the operators. Never purges anything the vectors do not
prove safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from firebird.driver import Connection

from . import registers
from .capture import EVENTS_TABLE, ROWS_TABLE
from .database import SNAPSHOT_RW, transaction
from .merge import Life, RowState, Stamp

Vector = Mapping[tuple[str, int], int]  # (site, incarnation) -> seq


@dataclass
class PurgeResult:
    segments: int = 0
    lives: int = 0
    rows: int = 0


def _covered(stamp: Stamp, vector: Vector) -> bool:
    return stamp.seq <= vector.get((stamp.site, stamp.incarnation), 0)


def _settled(published_then: Vector, applied_now: Vector) -> bool:
    return all(applied_now.get(origin, 0) >= seq for origin, seq in published_then.items())


def _ended_by(state: RowState, life: Life) -> Stamp | None:
    """The event that ended a life: its (earliest) delete, or the insert that replaced it."""
    if life.deletes:
        return min(life.deletes)
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
                    cur.execute(f"DELETE FROM {ROWS_TABLE} WHERE TBL_NO = ? AND KEY_HASH = ?",
                                (table_no, khash))
                    result.rows += 1
                    result.lives += 1
                elif len(kept) != len(state.past):
                    data = registers.encode_state(replace(state, past=kept))
                    inline, blob = ((data, None) if len(data) <= registers.INLINE_REGISTERS
                                    else (None, data))
                    cur.execute(f"UPDATE {ROWS_TABLE} SET REGS = ?, REGS_BLOB = ? "
                                "WHERE TBL_NO = ? AND KEY_HASH = ?",
                                (inline, blob, table_no, khash))
        finally:
            cur.close()
    return result


def _stable_end(state: RowState, life: Life, held_then: Vector) -> bool:
    end = _ended_by(state, life)
    return end is not None and _covered(end, held_then)
