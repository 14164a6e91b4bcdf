"""Held transactions (``SYNC$PARKED``): an origin whose next transaction cannot be applied
here for a cause outside the data (DESIGN §3.5).

Operators read the word *held* (``siege-node held``, ``siege-ctl held``, the round's report
and email); the table keeps its older name ``SYNC$PARKED`` internally (renaming it would
need an upgrade step of every installed database for no gain).

Owns the record of what is held, since when, how often it was tried and why: one row per
origin, the transaction at the head of that origin's stream. It is retried at every exchange
(its sender sends it again); past ``LIMIT`` it is shown as waiting for an operator, who fixes
the cause (a missing table or column, a constraint that differs, a rewound site to resync).
The origin's later events wait behind it — they may depend on it — while every other origin
goes on. Holding never hides a row and never skips a transaction.

Two kinds, always said apart: *refused* — the database said no (a constraint from outside
the mesh, a value that cannot fit, a table it lacks); its own message is kept, and an
operator must act — and *waiting* — it needs something still to come (another site's event
it names, a parent's insert, a BLOB's bytes), recorded so that a wait that lasts is seen in
``status`` and the round's report; it is cleared as soon as the transaction applies.

Also owns saying it to a person (``Held``): the database's own message taken out of the
record, what to do in words, and the rows and values from the stored events when this
database has them (``held_rows``).

Records in its own short transaction; must never touch the replicated tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from firebird.driver import Connection

from ...i18n import _, ngettext, when
from ...proto import coordinator_pb2, events_pb2
from ..db import values
from ..db.database import READ_COMMITTED_RW, transaction
from ..model import registers
from . import eventlog
from .capture import PARKED_TABLE

LIMIT = timedelta(hours=24)


@dataclass(frozen=True)
class Parked:
    origin: str
    incarnation: int
    seq: int
    reason: str
    first_seen: datetime
    last_seen: datetime
    attempts: int

    def past_limit(self, now: datetime | None = None) -> bool:
        return (now or datetime.now()) - self.first_seen > LIMIT


def park(con: Connection, origin: str, incarnation: int, seq: int, reason: str) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT SEQ FROM {PARKED_TABLE} WHERE ORIGIN = ? AND INCARNATION = ?",
                    (origin, incarnation))
        row = cur.fetchone()
        if row is not None and int(row[0]) == seq:
            cur.execute(f"UPDATE {PARKED_TABLE} SET LAST_SEEN = CAST('NOW' AS TIMESTAMP), "
                        "ATTEMPTS = ATTEMPTS + 1, REASON = ? WHERE ORIGIN = ? AND "
                        "INCARNATION = ?", (reason[:2000], origin, incarnation))
        else:
            cur.execute(f"UPDATE OR INSERT INTO {PARKED_TABLE} (ORIGIN, INCARNATION, SEQ, "
                        "REASON, FIRST_SEEN, LAST_SEEN, ATTEMPTS) VALUES (?, ?, ?, ?, "
                        "CAST('NOW' AS TIMESTAMP), CAST('NOW' AS TIMESTAMP), 1) "
                        "MATCHING (ORIGIN, INCARNATION)", (origin, incarnation, seq,
                                                           reason[:2000]))
        cur.close()


def unpark(con: Connection, origins: set[tuple[str, int]]) -> None:
    if not origins:
        return
    with transaction(con) as tm:
        cur = tm.cursor()
        for origin, incarnation in sorted(origins):
            cur.execute(f"DELETE FROM {PARKED_TABLE} WHERE ORIGIN = ? AND INCARNATION = ?",
                        (origin, incarnation))
        cur.close()


def listing(con: Connection) -> list[Parked]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT ORIGIN, INCARNATION, SEQ, REASON, FIRST_SEEN, LAST_SEEN, ATTEMPTS "
                    f"FROM {PARKED_TABLE} ORDER BY FIRST_SEEN")
        out = [Parked(o, int(i), int(s), r, f, last, int(a))
               for o, i, s, r, f, last, a in cur.fetchall()]
        cur.close()
    return out


# --- saying it to a person ---------------------------------------------------------------

REFUSED = "refused"  # the database said no: an operator acts
WAITING = "waiting"  # something still to come: it applies by itself once it is here

_OPS = {events_pb2.OP_INSERT: "insert", events_pb2.OP_UPDATE: "update",
        events_pb2.OP_DELETE: "delete"}
# What apply.py wraps around the database's message (ApplyError texts).
_WRAPPED = re.compile(r"^applying \S+#\d+(?: \([^)]*\))?(?: failed)?: (?P<msg>.*?)"
                      r"(?: \((?:do the sites'|the event names)[^)]*\))?"
                      r"(?:\.? Nothing of (?:it|that transaction) was applied.*)?$", re.S)


@dataclass(frozen=True)
class HeldRow:
    """One row a held transaction writes, readable."""
    table: str
    op: str
    key: str
    values: list[str]  # "COLUMN = value"
    key_data: bytes  # registers.key_data of the key: the row's exact identity

    def line(self) -> str:
        return (f"{self.op} {self.table} key {self.key}"
                + (f": {', '.join(self.values)}" if self.values else ""))


@dataclass
class Held:
    """A held transaction as an operator reads it."""
    site: str  # where it is held
    parked: Parked
    last_seq: int = 0  # 0: its events are not stored here
    rows: list[HeldRow] = field(default_factory=list)
    rows_note: str = ""

    @property
    def state(self) -> str:
        return state_of(self.parked.reason)

    @property
    def message(self) -> str:
        return database_message(self.parked.reason)

    @property
    def todo(self) -> str:
        return what_to_do(self.site, self.parked.origin, self.parked.reason)

    @property
    def events(self) -> str:
        p = self.parked
        last = f"..{self.last_seq}" if self.last_seq > p.seq else ""
        return f"{p.origin}#{p.seq}{last} (incarnation {p.incarnation})"

    def lines(self) -> list[str]:
        """The facts, one per line, the same in every place an operator reads them."""
        p = self.parked
        return render(self.state, self.site, p.origin, self.events,
                      f"{p.first_seen:%Y-%m-%d %H:%M:%S}", p.attempts,
                      f"{p.last_seen:%Y-%m-%d %H:%M:%S}", p.past_limit(), self.message,
                      [r.line() for r in self.rows], self.rows_note, self.todo)


def render(state: str, site: str, origin: str, events: str, since: str, attempts: int,
           last: str, past_limit: bool, message: str, rows: list[str], rows_note: str,
           todo: str) -> list[str]:
    """A held transaction's facts as lines (siege-node held, siege-ctl held, the round's
    report and email all print these)."""
    out = [_("{state} at {site}: {origin}'s transaction {events}").format(
               state=_(state).upper(), site=site, origin=origin, events=events),
           "  " + ngettext("since {since}, {count} attempt", "since {since}, {count} attempts",
                           attempts).format(since=when(since), count=attempts)
           + (", " + _("last {when}").format(when=when(last)) if last else "")
           + (" — " + _("PAST THE TIME LIMIT") if past_limit else ""),
           "  " + (_("the database says: {message}") if state == REFUSED
                   else _("it waits: {message}")).format(message=message)]
    out += ["  " + _("row: {row}").format(row=row) for row in rows]
    if rows_note:
        out.append("  " + _("rows: {note}").format(note=rows_note))
    out.append("  " + _("what to do: {todo}").format(todo=todo))
    return out


def state_of(reason: str) -> str:
    """Waiting (something still to come) or refused (the database, or the events, said no)."""
    return WAITING if re.match(r"^\S+#\d+ waits: ", reason) else REFUSED


def database_message(reason: str) -> str:
    """The database's own words (or what it waits for), without our wrapping."""
    waits = re.match(r"^\S+#\d+ waits: (.*)$", reason, re.S)
    if waits:
        return waits.group(1)
    found = _WRAPPED.match(reason)
    return found.group("msg").strip() if found else reason


def what_to_do(site: str, origin: str, reason: str) -> str:
    """What an operator does about it, in words they can follow."""
    retry = (f"then `siege-ctl held --retry` at the siège (or `siege-node held --retry` at "
             f"{site}). Until then {origin}'s later transactions wait behind it at {site}; "
             "every other site's go on")
    low = reason.lower()
    if state_of(reason) == WAITING:
        return ("nothing, unless it lasts: it applies by itself as soon as what it waits "
                f"for reaches {site} (the next exchange). If it lasts past a round, the "
                "site it waits for does not reach the siège: check it with siege-ctl status")
    check = re.search(r"check constraint (\S+) on view or table (\S+)", reason, re.I)
    if check:
        return (f"{site}'s database refuses these values: its CHECK constraint {check.group(1)} "
                f"on {check.group(2)} says no, yet {origin} accepted them — that constraint "
                f"exists at {site} only (added outside the mesh?) or differs between the "
                f"sites. Make it the same at every site: drop or change it at {site} (or, if "
                f"it is right, correct the rows at {origin}: the correction travels too), "
                + retry)
    if "[tables] leaves it out" in low:
        table = re.search(r"and (\S+) is not replicated \(\[tables\]", reason)
        name = table.group(1) if table else "the referenced table"
        return (f"a row {origin} wrote references a row of {name}, which [tables] leaves out "
                f"(each site keeps its own rows there) and which {site} lacks: create that "
                f"row at {site} — or replicate {name} at every site (its [tables] "
                "include/exclude the same everywhere), or drop the foreign key — " + retry)
    if "does not follow such changes" in low or "holds another value here now" in low:
        return ("a value of a UNIQUE key that rows name was changed at one site while "
                "another site wrote a row naming the old value (the merge does not settle "
                "that yet): point the row that names the old value at another one, or "
                "delete it, at the site that wrote it — or change the value back where it "
                "was changed — " + retry)
    if "primary or unique key" in low:
        return (f"{site} already holds a row with the same value in a UNIQUE key or index "
                f"that {origin} does not have (an index added outside the mesh, or a row "
                f"written at {site} behind the sync's back): compare with siege-ctl analyse, "
                f"remove the duplicate or the extra index at {site}, " + retry)
    if "foreign key" in low:
        return (f"a FOREIGN KEY at {site} needs a row {site} lacks (a constraint added "
                f"outside the mesh, or a row deleted at {site} behind the sync's back): "
                "compare with siege-ctl analyse, make the constraint the same at every site "
                "or restore the row, " + retry)
    if any(w in low for w in ("truncation", "out of range", "arithmetic exception",
                              "does not fit", "string of", "overflow")):
        return (f"a value does not fit its column at {site}: the column is narrower there "
                f"than at {origin}. Give every site the same schema (siege-node upgrade at "
                f"{site}), " + retry)
    if "not replicated here" in low or "column unknown" in low or "table unknown" in low:
        return (f"a table or column {origin} writes is missing at {site}: give every site the "
                f"same schema (siege-node upgrade, then siege-node install at {site}), " + retry)
    if "do not chain" in low:
        return (f"{origin} went back to an older copy of its database: nothing of it applies "
                f"any more anywhere; rebuild it with `siege-ctl resync {origin}`")
    if "lock" in low or "deadlock" in low:
        return (f"a transaction at {site} holds the rows: siege-node status at {site} lists "
                "the open transactions; end it in the application, " + retry)
    if "malformed" in low or "not a valid message" in low or "forged" in low:
        return ("the events themselves are wrong (a bug or a hostile sender): keep the logs "
                f"of {origin} and {site} and report it; nothing of them was applied")
    return (f"read the database's message above and fix its cause at {site} (its schema or "
            f"data differ from {origin}'s), " + retry + ". If the values come from the "
            "mesh's own merge and every site has the same constraints, it is a bug of "
            "siege-sync: report it")


def held_rows(con: Connection, p: Parked) -> tuple[list[HeldRow], int]:
    """The rows and values of the transaction ``p`` names, from this database's stored events
    (a site stores only what it applied: a holding site does not have them, the siège has
    every event that passed through it). Returns the rows and the transaction's last seq,
    or ``([], 0)`` when the events are not stored here."""
    rows: list[HeldRow] = []
    last = 0
    count = 0
    for body in eventlog.read(con, p.origin, p.seq - 1, p.incarnation):
        event = events_pb2.Event.FromString(body)
        if not rows:
            if event.seq != p.seq:
                break
            count = max(event.tx.count, 1)
        rows.append(row_of(event))
        last = event.seq
        if len(rows) >= count:
            break
    return rows, last


def row_of(event: events_pb2.Event) -> HeldRow:
    return HeldRow(event.table, _OPS.get(event.op, "?"),
                   ", ".join(values.describe(k) for k in event.key),
                   [f"{c.column} = {values.describe(c.value)}" for c in event.columns],
                   registers.key_data(list(event.key)))


def held_here(con: Connection, site: str) -> list[Held]:
    """Every transaction held at this database, described as far as it can be here."""
    out = []
    for p in listing(con):
        rows, last = held_rows(con, p)
        out.append(Held(site, p, last, rows, "" if rows else
                        f"its events are not stored at {site} (it keeps only what it "
                        "applied); the siège describes them (siege-ctl held)"))
    return out


def to_proto(h: Held) -> coordinator_pb2.HeldTransaction:
    """A held transaction as the wire carries it (siege-ctl held, reports, ReportHeld)."""
    p = h.parked
    out = coordinator_pb2.HeldTransaction(
        site=h.site, origin=p.origin, incarnation=p.incarnation, first_seq=p.seq,
        last_seq=h.last_seq, state=h.state, message=h.message,
        since=p.first_seen.isoformat(sep=" ", timespec="seconds"),
        last_tried=p.last_seen.isoformat(sep=" ", timespec="seconds"),
        attempts=p.attempts, past_limit=p.past_limit(), rows_note=h.rows_note, todo=h.todo,
        reason=p.reason)
    for r in h.rows:
        out.rows.add(table=r.table, op=r.op, key=r.key, values=r.values, key_data=r.key_data)
    return out


def report(held: list[Held]) -> coordinator_pb2.HeldReply:
    """What a site tells the siège is held there (``Coordinator.ReportHeld``): a site that
    dials in cannot be asked. An empty report says nothing is held any more."""
    return coordinator_pb2.HeldReply(held=[to_proto(h) for h in held])
