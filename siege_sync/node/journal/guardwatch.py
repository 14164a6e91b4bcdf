"""Watching the guards in a live database: which application triggers lost theirs, since
when, and what fired unguarded meanwhile (DESIGN §3.1).

A vendor's ``CREATE OR ALTER TRIGGER`` replaces the guarded source with its own: from then
on every change the node applies to that table fires the trigger again, and its effects (a
salary-history row, a stock movement) are doubled at every site. Every hello (both sides),
every round and ``status`` call ``check``; ``siege-node install`` puts the guards back and
says what fired meanwhile (the check just before), and the next check forgets the record.

What a report can honestly say, and what it cannot:
* which triggers lack their guard — exact, read from ``RDB$TRIGGERS`` (active triggers on
  replicated tables, not in ``[triggers] fire``);
* since when — the first check that found it missing, not the moment of the vendor's
  upgrade (the engine keeps no such date);
* what fired meanwhile — rows of *replicated* tables that something other than the node
  wrote inside a transaction the node was applying (capture flags them
  ``FLAG_DURING_APPLY``): counted per table at each check while a guard is lost, until they
  are published. A lower bound: rows published between two checks (a pull served, a second
  batch of one stream) are not counted, and neither are writes to tables that are not
  replicated — those leave no trace here. Cascades and triggers configured to fire write
  such rows too; repairs (repair.py) are not flagged (capture tells them apart).

Owns the ``guard:`` rows of ``SYNC$STATE``. Never changes a trigger (capture.install does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from firebird.driver import Connection, Cursor

from ..db import guard
from ..db.database import READ_COMMITTED_RW, transaction
from . import capture

log = logging.getLogger(__name__)

_PREFIX = "guard:"
FIRE_STATE = "guard:fire"  # triggers `[triggers] fire` leaves unguarded, as at install
GUARDED_STATE = "guard:guarded"  # triggers guarded at install (a later stripped source)
LOST_STATE = "guard:lost:"  # + trigger: "<first found missing>|<table>"
EFFECTS_STATE = "guard:effects:"  # + table: rows captured during applies since
UPTO_STATE = "guard:upto"  # the last image id counted


@dataclass(frozen=True)
class LostGuard:
    trigger: str
    table: str
    since: str  # when a check first found it missing (local time)
    no_source: bool = False  # the vendor stripped the source too: install cannot guard it

    def describe(self) -> str:
        what = ("its source is no longer stored, so it cannot be guarded again until the "
                "vendor ships it" if self.no_source
                else "run `siege-node install` there to restore it")
        return (f"guard LOST in trigger {self.trigger} on {self.table} (found missing "
                f"{self.since}): it fires again for every change applied from other sites, "
                f"so its effects are doubled; {what}")


@dataclass
class GuardState:
    lost: list[LostGuard] = field(default_factory=list)
    # Per replicated table: rows written during applies (not by the node) since a guard
    # was found missing.
    effects: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What hellos, status, round reports and alerts say (nothing when all is well)."""
        if not self.lost:
            return []
        out = [g.describe() for g in self.lost]
        if self.effects:
            touched = ", ".join(f"{t} {n} row(s)" for t, n in sorted(self.effects.items()))
            out.append(f"meanwhile, written during applies of other sites' changes (side "
                       f"effects: of the unguarded triggers, cascades or [triggers] fire): "
                       f"{touched}. They travel to every site as this site's changes; "
                       "effects on tables that are not replicated are not seen (at least "
                       "these)")
        else:
            out.append("meanwhile no side effect on a replicated table was seen here "
                       "(effects on tables that are not replicated are not seen)")
        return out


def remember_install(con: Connection, fire: Iterable[str]) -> None:
    """Once install has put the guards in: what is meant to fire and what was guarded."""
    found = _triggers(con)
    before = _names(capture.get_state(con, GUARDED_STATE))
    # One stripped since it was guarded stays known as such (install cannot guard it).
    guarded = [name for name, _table, source in found
               if (source is not None and guard.is_guarded(source))
               or (source is None and name in before)]
    capture.set_state(con, FIRE_STATE, ",".join(sorted(set(fire))))
    capture.set_state(con, GUARDED_STATE, ",".join(sorted(guarded))[:3900])


def check(con: Connection, fire: Iterable[str] | None = None) -> GuardState:
    """The guard state of this database now; records a newly lost guard and counts the side
    effects captured since the last check while any is lost. ``fire``: the triggers meant
    to fire (``[triggers] fire``); by default, as the last install recorded them. A guard
    back in place (install, ``siege-node upgrade``) is forgotten, with what it counted."""
    if not capture.is_installed(con):
        return GuardState()
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            state = _read_state(cur)
            firing = set(fire) if fire is not None else _names(state.get(FIRE_STATE))
            guarded = _names(state.get(GUARDED_STATE))
            missing = []
            for name, table, source in _triggers_in(cur):
                if name in firing:
                    continue
                if source is None:
                    if name in guarded:  # guarded at install, stripped since
                        missing.append((name, table, True))
                elif not guard.is_guarded(source):
                    missing.append((name, table, False))
            now = datetime.now().isoformat(sep=" ", timespec="seconds")
            lost = []
            for name, table, stripped in missing:
                recorded = state.get(f"{LOST_STATE}{name}")
                if recorded is None:
                    log.warning("guard lost in trigger %s on %s: it fires again for every "
                                "change applied here; run siege-node install", name, table)
                    _put(cur, f"{LOST_STATE}{name}", f"{now}|{table}")
                    since = now
                else:
                    since = recorded.split("|", 1)[0]
                lost.append(LostGuard(name, table, since, stripped))
            effects = {k[len(EFFECTS_STATE):]: int(v) for k, v in state.items()
                       if k.startswith(EFFECTS_STATE)}
            if lost:
                _count_effects(cur, state, effects)
            else:
                effects = {}
            _forget(cur, state, {g.trigger for g in lost})
        finally:
            cur.close()
    return GuardState(lost, effects)


def _forget(cur: Cursor, state: dict[str, str], still_lost: set[str]) -> None:
    """Guards back in place leave no record; once none is lost, neither do the counts."""
    stale = [k for k in state if k.startswith(LOST_STATE)
             and k[len(LOST_STATE):] not in still_lost]
    if not still_lost:
        stale += [k for k in state if k.startswith(EFFECTS_STATE) or k == UPTO_STATE]
    for name in stale:
        cur.execute(f"DELETE FROM {capture.STATE_TABLE} WHERE NAME = ?", (name,))


def _count_effects(cur: Cursor, state: dict[str, str], effects: dict[str, int]) -> None:
    upto = int(state.get(UPTO_STATE) or 0)
    cur.execute(f"SELECT TBL_NO, NAME FROM {capture.TABLES_TABLE}")
    names = {int(no): str(name) for no, name in cur.fetchall()}
    cur.execute("SELECT TRIM(RDB$RELATION_NAME) FROM RDB$RELATIONS "
                f"WHERE RDB$RELATION_NAME STARTING WITH '{capture.IMAGE_PREFIX}'")
    images = {str(r[0]) for r in cur.fetchall()}
    top = upto
    for no, name in sorted(names.items()):
        if f"{capture.IMAGE_PREFIX}{no}" not in images or no == capture.HEARTBEAT_NO:
            continue
        # SYNC$ID is the image's primary key: only what arrived since the last check is read.
        cur.execute(f"SELECT COUNT(*), MAX(SYNC$ID) FROM {capture.IMAGE_PREFIX}{no} "
                    f"WHERE SYNC$ID > ? AND BIN_AND(SYNC$FLAGS, "
                    f"{capture.FLAG_DURING_APPLY}) <> 0", (upto,))
        count, last = cur.fetchone()
        if count:
            effects[name] = effects.get(name, 0) + int(count)
            _put(cur, f"{EFFECTS_STATE}{name}", str(effects[name]))
            top = max(top, int(last))
    if top != upto:
        _put(cur, UPTO_STATE, str(top))


def _triggers(con: Connection) -> list[tuple[str, str, str | None]]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            return _triggers_in(cur)
        finally:
            cur.close()


def _triggers_in(cur: Cursor) -> list[tuple[str, str, str | None]]:
    """Active application triggers on replicated tables: (name, table, source or None)."""
    cur.execute(
        "SELECT TRIM(t.RDB$TRIGGER_NAME), TRIM(t.RDB$RELATION_NAME), t.RDB$TRIGGER_SOURCE "
        f"FROM RDB$TRIGGERS t JOIN {capture.TABLES_TABLE} s ON s.NAME = t.RDB$RELATION_NAME "
        "WHERE COALESCE(t.RDB$SYSTEM_FLAG, 0) = 0 AND COALESCE(t.RDB$TRIGGER_INACTIVE, 0) = 0 "
        "AND s.ACTIVE = 1 AND t.RDB$TRIGGER_NAME NOT STARTING WITH 'SYNC$' "
        "ORDER BY 2, 1")
    out = []
    for name, table, source in cur.fetchall():
        if hasattr(source, "read"):
            reader = source
            source = reader.read()
            reader.close()
        if isinstance(source, bytes):
            source = source.decode("utf-8", "replace")
        out.append((str(name), str(table), source or None))
    return out


def _read_state(cur: Cursor) -> dict[str, str]:
    cur.execute(f"SELECT NAME, VAL FROM {capture.STATE_TABLE} WHERE NAME STARTING WITH ?",
                (_PREFIX,))
    return {str(n): str(v or "") for n, v in cur.fetchall()}


def _put(cur: Cursor, name: str, value: str) -> None:
    cur.execute(f"UPDATE OR INSERT INTO {capture.STATE_TABLE} (NAME, VAL) VALUES (?, ?) "
                "MATCHING (NAME)", (name, value))


def _names(value: str | None) -> set[str]:
    return {n for n in (value or "").split(",") if n}
