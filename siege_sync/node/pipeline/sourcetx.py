"""A received source transaction, from its events to settled rows (DESIGN §3.1, §3.4).

Owns what the applier does with one source transaction once it has it: whether it is ready
(``next_ready``: whole, next in its origin's sequence, every event it depends on applied —
else what it waits for), and applying its events inside the applier's database transaction
in the order the engine needs (``apply_in_engine_order``): an event whose row must wait for a
later event of the same transaction (``Deferred``: a parent an application trigger captured
after its child, a referencing row deleted later) goes right after that event; rows that wait
for each other are untied. Each event is checked (``_check_values``), merged (``merge.py``)
and settled against the constraints (``constraints.Settler``), or written straight from its
insert when no constraint between rows can be involved (``Settler.write_new``). Also why
received events are not applied (``ApplyError``), in words an operator can read.

The order depends on the events and the registers only, so every site applies a transaction
alike. Runs in its caller's transaction: must never commit, nor decide which transactions
go together (``apply.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from firebird.driver import Cursor

from ...proto import events_pb2, values_pb2
from ..db.schema import Kind, Table
from ..journal.capture import BLOBS_TABLE
from ..model import registers
from ..model.merge import LWW, EventId, Op, Policy, Write, dependencies, merge
from ..model.registers import PREEXISTING
from .constraints import Settler, constrained
from .lookup import RowId
from .refusals import Deferred


class ApplyError(Exception):
    """Why received events are not applied. The message quotes names and values the sender
    chose; it is made printable and bounded here, since operators read it in `status`, in
    logs and in the sender's refusal (a table named with control characters, or 5 MB long,
    went there verbatim; found by tests/test_hostile.py)."""

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


MESSAGE_LIMIT = 1500  # characters of a refusal an operator reads (SYNC$PARKED keeps 2000)


def printable(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` with control and other unprintable characters escaped, cut at ``limit``."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class Incoming:
    """A received event, parsed once."""

    event: events_pb2.Event
    body: bytes

    @property
    def origin(self) -> tuple[str, int]:
        return self.event.origin.site, self.event.origin.incarnation

    @cached_property
    def values(self) -> dict[str, values_pb2.Value]:
        """The values it writes, by column (read from the message once: each read of a
        value from it costs as much as using it)."""
        return {c.column: c.value for c in self.event.columns}

    @cached_property
    def write(self) -> Write:
        """The merge's view of the event (read for its dependencies, then to apply it)."""
        return registers.write_of(self.event, self.values)


def next_ready(origin: tuple[str, int], by_seq: dict[int, Incoming],
                applied: dict[tuple[str, int], int],
                waiting: dict[tuple[str, int], str]) -> list[Incoming] | None:
    """The origin's next transaction if it can be applied now; when it waits for an event
    of another origin it names, ``waiting`` says which."""
    first = applied.get(origin, 0) + 1
    head = by_seq.get(first)
    if head is None:
        return None
    if head.event.tx.first_seq != first:
        raise ApplyError(f"event {origin}#{first} claims its transaction starts at "
                         f"{head.event.tx.first_seq}: malformed or rewound origin")
    count = head.event.tx.count
    if count < 1:
        # A transaction of no events would be "applied" as an empty list (and crash
        # the call): the event is malformed (found by tests/test_hostile.py).
        raise ApplyError(f"event {origin}#{first} claims a transaction of {count} "
                         "events: malformed, nothing applied")
    if count > len(by_seq):
        # Not received whole yet. Checked before listing the range: a hostile count of
        # 2**32 - 1 would otherwise build a list of billions (tests/test_hostile.py).
        return None
    tx = [by_seq.get(s) for s in range(first, first + count)]
    if any(item is None for item in tx):
        return None  # not received whole yet
    ready = [item for item in tx if item is not None]
    inside = {EventId(origin[0], origin[1], item.event.seq) for item in ready}
    for item in ready:
        for dep in dependencies(item.write):
            if dep.site == PREEXISTING.site or dep in inside:
                continue
            if dep.seq > applied.get((dep.site, dep.incarnation), 0):
                waiting[origin] = printable(
                    f"{origin[0]}#{first} waits: it changes {item.event.table} "
                    f"{_show_key(item.event)} as {dep.site}#{dep.seq} (incarnation "
                    f"{dep.incarnation}) left it, which has not been applied here yet")
                return None
    return ready


def apply_in_engine_order(settler: Settler, table_of: Callable[[str], Table],
                          policies: Mapping[str, Policy], tx: list[Incoming],
                          in_rows: bool = False) -> None:
    """Apply a source transaction's events in the order the engine needs, which is not
    always the capture order (DESIGN §3.1): an event whose row must wait for a later
    event of the transaction (``Deferred``: a parent inserted later, a referencing row
    deleted later) is applied right after that event, and so are its row's next events
    (a row's own events keep their order). Rows that wait for each other (a cycle) are
    untied, the earliest that can be first; when none can, the earliest is applied as if
    the others stayed. The order depends on the events and the registers only, so every
    site applies the transaction alike."""
    rows: list[RowId] = [(i.event.table, registers.key_identity(
        i.event.key, table_of(i.event.table))) for i in tx]
    remaining: dict[RowId, int] = {}
    for row in rows:
        remaining[row] = remaining.get(row, 0) + 1
    blocked: dict[RowId, list[int]] = {}  # a row's events held back, in order
    waiters: dict[RowId, list[RowId]] = {}  # rows waiting for a row's next event
    woken: list[RowId] = []

    def attempt(at: int, untie: bool = False, force: bool = False) -> bool:
        settler.untie, settler.force = untie, force
        try:
            apply_event(settler, table_of(tx[at].event.table), tx[at], policies, in_rows)
        except Deferred as exc:
            waiters.setdefault(exc.row, []).append(rows[at])
            return False
        finally:
            settler.untie = settler.force = False
        remaining[rows[at]] -= 1
        woken.extend(waiters.pop(rows[at], ()))
        return True

    def drain() -> None:
        while woken:
            row = woken.pop()
            queue = blocked.get(row)
            while queue and attempt(queue[0]):
                queue.pop(0)
            if queue is not None and not queue:
                del blocked[row]

    settler.later = lambda row: remaining.get(row, 0) > 0
    try:
        for at, row in enumerate(rows):
            if row in blocked:
                blocked[row].append(at)
            elif not attempt(at):
                blocked[row] = [at]
            drain()
        while blocked:
            cycle = sorted(blocked, key=lambda r: blocked[r][0])
            row = next((r for r in cycle if attempt(blocked[r][0], untie=True)), None)
            if row is None:
                row = cycle[0]
                attempt(blocked[row][0], force=True)
            blocked[row].pop(0)
            woken.append(row)
            drain()
            blocked = {r: q for r, q in blocked.items() if q}
        settler.restore_untied()
    finally:
        settler.later = None


def apply_event(settler: Settler, table: Table, item: Incoming,
                policies: Mapping[str, Policy], in_rows: bool = False) -> None:
    """``in_rows``: the event is this site's own, already in the rows (a restored copy
    captured it): merged into the registers only, as its publisher did."""
    event = item.event
    key = list(event.key)
    if len(key) != len(table.primary_key):
        # Said plainly (it surfaced as "zip() argument 2 is shorter than argument 1").
        raise ValueError(f"{len(key)} key values for {table.name}, whose primary key has "
                         f"{len(table.primary_key)} ({', '.join(table.primary_key)})")
    _check_values(table, zip(table.primary_key, key, strict=True), item.values.items())
    write = item.write
    state = settler.state(table, key, inserting=write.op is Op.INSERT)
    if (state is None and write.op is Op.INSERT and not in_rows and not event.prior
            and not event.parents and write.follows is None and write.exist_base is None
            and settler.plain(table)):
        # A new row of a table without constraints between rows: most events a site
        # catching up applies. Its registers are the merge's, as ever.
        settler.write_new(table, key, merge(None, write, policies.get(
            table.name, LWW)).state, item.values)
        return
    if event.prior and state is not None and not registers.knows_preexisting(state):
        # What the origin held in a row that predates install: its unknown values here
        # (the row is not in this database) become known, so a restore is whole.
        state = registers.with_prior(state, registers.prior_of(event))
    # The parent rows its references to a UNIQUE key met at its origin (constraints).
    settler.name_parents(table, {p.foreign_key: list(p.key) for p in event.parents},
                         write.columns)
    outcome = merge(state, write, policies.get(table.name, LWW))
    if in_rows:
        merged = outcome.state
        if table.foreign_keys or (write.op is not Op.INSERT and (
                table.uniques or (state is not None and constrained(state)))):
            merged = settler.after_local_write(table, state, merged)
        settler.put(table, key, state, merged)
    elif outcome.changed or write.op is Op.DELETE or (
            state is not None and constrained(state)):
        settler.settle(table, key, state, outcome.state)
    else:
        settler.put(table, key, state, outcome.state)
    if table.foreign_keys and write.op is not Op.DELETE:
        settler.note_references(table, write.id, write.columns)


# The longest CHAR/VARCHAR value Firebird stores, in bytes. A longer string parameter is not
# refused on its way to the engine: its length is sent on 16 bits, so 65,536 characters
# arrived as '' and 65,537 as one character, written as if they were the value (found by
# tests/test_hostile.py: an event from a site whose column is a BLOB, or a hostile one).
_MAX_STRING_BYTES = 32767


def _check_values(table: Table, *given: Iterable[tuple[str, values_pb2.Value]]) -> None:
    """Refuse (ValueError) what the writer cannot be trusted to refuse: a CHAR/VARCHAR value
    no such column holds, and a BLOB reference for a column that is not a BLOB (it waited
    for those bytes forever instead of being refused as the wrong type). ``given``: the
    event's values by column name, its key's included."""
    columns = table.by_name
    for name, value in itertools.chain(*given):
        column = columns.get(name)
        if column is None:  # a column this site lacks: kept in the registers (DESIGN §3.8)
            continue
        ctype = column.type
        which = value.WhichOneof("kind")
        if which == "blob" and not ctype.is_blob:
            raise ValueError(f"{name} gets a BLOB reference, but it is {ctype.ddl()}")
        if ctype.kind in (Kind.CHAR, Kind.VARCHAR):
            size = (len(value.text.encode("utf-8")) if which == "text"
                    else len(value.octets) if which == "octets" else 0)
            if size > _MAX_STRING_BYTES:
                raise ValueError(f"{name} gets a string of {size} bytes, more than any "
                                 f"{ctype.ddl()} holds")


def _show_key(event: events_pb2.Event) -> str:
    parts = []
    for value in event.key:
        which = value.WhichOneof("kind")
        parts.append(str(getattr(value, which)) if which else "?")
    return "(" + ", ".join(parts) + ")"


def check_blob_lengths(cur: Cursor, tx: list[Incoming]) -> None:
    """BLOBs are stored by sha256 alone, so an event naming stored bytes with another
    length was applied with those bytes while it still says that length — and a relay
    then sends that many bytes of it, which every later receiver refuses as damaged
    (found by tests/test_hostile.py). Such an event is malformed."""
    for item in tx:
        for column in item.event.columns:
            if column.value.WhichOneof("kind") != "blob":
                continue
            ref = column.value.blob
            cur.execute(f"SELECT LEN FROM {BLOBS_TABLE} WHERE SHA256 = ?", (ref.sha256,))
            row = cur.fetchone()
            if row is not None and int(row[0]) != ref.length:
                event = item.event
                raise ApplyError(
                    f"applying {event.origin.site}#{event.seq}: its {event.table}."
                    f"{column.column} BLOB {ref.sha256.hex()[:12]} says {ref.length} bytes, "
                    f"but the bytes with that sha256 are {int(row[0])} long (a malformed "
                    "event). Nothing of that transaction was applied; it and the later "
                    "events of that site wait")
