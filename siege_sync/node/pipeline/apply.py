"""Applying other sites' events to this site's database (DESIGN §3.4).

Owns the step from received events to rows: which source transactions are ready (whole,
next in their origin's sequence, every event they depend on already applied — the causal
order the merge needs), and applying them: the row registers merged (``merge.py``), only
the rows whose visible value changed written, the losses put on record
(``SYNC$CONFLICTS``), the events stored verbatim for relaying (``eventlog.py``) and the
origin's applied counter advanced. Ready source transactions go together, up to
``GROUP_EVENTS`` events, in one database transaction (a site catching up meets thousands of
small ones, whose commits and bookkeeping cost more than their rows); each is whole in it,
so a crash leaves every source transaction applied or not at all and a redelivered batch is
a no-op. A group that fails is undone whole and its transactions go again one by one, where
each failure has its own answer. A new row of a table that no constraint between rows
involves is written straight from its event (``Settler.write_new``); every other event goes
through the constraint outcomes.

Publish, then apply: local committed changes are published first (their registers then know
them). Inside the apply transaction, a row that still has a captured change not yet published
(committed between the two steps) aborts the transaction, which is retried after publishing
again; a change committed after the apply transaction began makes our write fail with an
update conflict, retried the same way. A local edit is never overwritten as if it did not
exist. After a restore (``rewind.py``) this site's own older events come back: one that the
restored copy had captured is already in the rows, so it is merged into the registers only
and its restored entries are dropped (never published twice); another origin's change of a
row whose restored or new local change waits for those events waits with it.

While applying, ``SYNC$APPLY`` holds the number of the table being written: its capture
trigger skips our own writes, guarded application triggers skip, and any other change (an
unguarded trigger, a cascade) is captured as a local change flagged as made during an apply.

What one source transaction needs to be ready, and its events applied in the order the
engine needs, merged and settled, are ``sourcetx.py``'s. Constraint outcomes (DESIGN §3.5)
are decided by ``constraints.py`` from the registers, the same everywhere; an event of a row
that predates install fills the row's unknown pre-existing values from the prior image it
carries (DESIGN §3.1).

A node's applier checks each transaction's signature first (``seal.py``): one its origin did
not sign as it is is refused as the sender's fault and its origin is not stopped. An origin
whose events do not chain (rewound) or whose transaction the database refuses for a reason
no event explains (a schema difference, a lock) is stopped with a clear message, and what a
waiting origin waits for is said (``SYNC$PARKED``, status, the exchange); the other origins
go on. Received events are not kept while they wait: the sender resends them next round.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from firebird.driver import Connection, Cursor, DatabaseError, TransactionManager

from ...proto import events_pb2
from ..db import lockholder
from ..db.database import SNAPSHOT_APPLY, StatementCache, is_concurrent_write, transaction
from ..db.schema import Schema, Table
from ..journal import capture, catchup, eventlog, parking, rewind
from ..journal.capture import HEARTBEAT_TABLE, STATE_TABLE, VECTOR_TABLE
from ..journal.seal import Forged, Sealer, Unknown, Verifier
from ..journal.storage import DatabaseBlobStore
from ..model import registers
from ..model.merge import CausalityError, Policy
from .constraints import Settler
from .heldcheck import HeldDeletes, tables_with_pending_changes
from .publish import Publisher
from .refusals import ConstraintError, LocalChangePending, NotArrived
from .sourcetx import (
    ApplyError,
    Incoming,
    apply_in_engine_order,
    check_blob_lengths,
    next_ready,
    printable,
)

log = logging.getLogger(__name__)

_MAX_RETRIES = 5


class Superseded(Exception):
    """Another applier applied one of a group's transactions meanwhile: the group goes
    again one by one (each then finds its own work done, or not)."""


class RowBusy(Exception):
    """A row the transaction writes is held by a local transaction still open: it waits."""


@dataclass
class ApplyResult:
    applied_events: int = 0
    applied_transactions: int = 0
    already_applied: int = 0
    waiting: int = 0  # events not applicable yet (a gap or a dependency missing)
    losses_recorded: int = 0
    retries: int = 0
    pending: list[bytes] = field(default_factory=list)  # bodies still waiting
    waiting_for: list[str] = field(default_factory=list)  # why a ready transaction waits
    refused: list[str] = field(default_factory=list)  # per origin: why its events stopped
    # Per origin: its next transaction needs a row an open local transaction holds.
    busy: dict[tuple[str, int], str] = field(default_factory=dict)
    # The sites whose applied transactions changed more than their heartbeat (tidings.py).
    news_from: set[str] = field(default_factory=set)
    heartbeats: int = 0  # of applied_events: heartbeats (not changes an operator counts)
    tables: Counter[str] = field(default_factory=Counter)  # the other ones, per table


# Events applied in one database transaction when many small source transactions are ready
# (a site catching up): each transaction's own costs — a commit, the registers' and the
# relay log's writes, the counter — are paid once for all of them. Measured: transactions of
# five inserts applied three to five times faster (~420 -> ~1,400-2,200 events/s; issue 21);
# 300 events did as well as 2,000, and keep each database transaction (its snapshot, its
# locks) short: a decision read from the snapshot — a row kept because a local row still
# references it — can be outdated by a local commit meanwhile (see README, chaos seed 4).
GROUP_EVENTS = 300


@dataclass
class _Pace:
    """How the applier groups ready source transactions in one call: the transactions of
    the group being formed (their origin's counter and head before them, to put back if the
    group fails), the origins that wait for the others to progress, and how many
    transactions go one by one after a group failed."""

    deferred: set[tuple[str, int]] = field(default_factory=set)
    alone: int = 0
    _before: dict[tuple[str, int], tuple[int | None, bytes | None]] = field(
        default_factory=dict)

    def start(self) -> bool:
        """A new group begins; whether it is of one transaction only."""
        self._before = {}
        if self.alone:
            self.alone -= 1
            return True
        return False

    def count(self, origin: tuple[str, int], tx: list[Incoming],
              applied: dict[tuple[str, int], int], heads: dict[tuple[str, int], bytes]) -> None:
        """``tx`` joins the group: its origin's counter and head count it from now on."""
        self._before.setdefault(origin, (applied.get(origin), heads.get(origin)))
        applied[origin] = tx[-1].event.seq
        heads[origin] = hashlib.sha256(tx[-1].body).digest()

    def undo(self, origin: tuple[str, int], applied: dict[tuple[str, int], int],
             heads: dict[tuple[str, int], bytes]) -> None:
        """The origin's transactions of the group were not applied."""
        if origin not in self._before:
            return
        old_applied, old_head = self._before.pop(origin)
        for where, old in ((applied, old_applied), (heads, old_head)):
            if old is None:
                where.pop(origin, None)
            else:
                where[origin] = old  # type: ignore[index]

    def alone_after_failure(self, group: list[tuple[tuple[str, int], list[Incoming]]],
                            applied: dict[tuple[str, int], int],
                            heads: dict[tuple[str, int], bytes]) -> None:
        """The group failed, nothing of it applied: its transactions go one by one."""
        for origin in list(self._before):
            self.undo(origin, applied, heads)
        self.alone = len(group)

    def applied(self) -> None:
        """A group was applied: the origins that waited may be ready now."""
        self.deferred.clear()


class Applier:
    """Applies events to one database. One per database (the publisher's counter lock and
    the vector rows serialize concurrent appliers)."""

    def __init__(self, con: Connection, site: str, publisher: Publisher | None = None,
                 policies: Mapping[str, Policy] | None = None,
                 verifier: Verifier | None = None) -> None:
        """``verifier``: checks each transaction's seal before it applies (seal.py); a node
        always has one."""
        self._con = con
        self._site = site
        self._verifier = verifier
        self._deferred: dict[str, int] | None = None  # events kept aside per origin
        self._policies = dict(policies or {})
        self._publisher = publisher or Publisher(con, site, policies=self._policies)
        self._schema: Schema | None = None
        self._registry: dict[str, int] = {}  # table name -> number, read once per apply
        # Deletes made to wait for a row read in an apply's snapshot, checked again once
        # committed (heldcheck.py).
        self._held = HeldDeletes(site)
        self._sql = StatementCache()

    # --- vectors ---------------------------------------------------------------------

    def applied(self) -> dict[tuple[str, int], int]:
        """Per origin (site, incarnation): the last seq applied (or published, for us)."""
        return self.vector()[0]

    def vector(self) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], bytes]]:
        """Applied counters and the hash of the last applied event, per origin."""
        with transaction(self._con) as tm:
            cur = tm.cursor()
            cur.execute(f"SELECT ORIGIN, INCARNATION, APPLIED, HEAD FROM {VECTOR_TABLE}")
            rows = cur.fetchall()
            out = {(o, int(i)): int(a) for o, i, a, _h in rows}
            heads = {(o, int(i)): h or b"" for o, i, _a, h in rows}
            cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN "
                        "('seq', 'incarnation', 'chain_head')")
            state = dict(cur.fetchall())
            cur.close()
        own = (self._site, int(state.get("incarnation", "1")))
        out[own] = int(state.get("seq", "0"))
        heads[own] = bytes.fromhex(state.get("chain_head", "") or "")
        return out, heads

    # --- the pipeline ----------------------------------------------------------------

    def apply(self, bodies: Iterable[bytes],
              hold: frozenset[tuple[str, int]] = frozenset()) -> ApplyResult:
        """``hold``: origins not to try in this call (their events come back as pending),
        e.g. those a held row stopped earlier in the same stream."""
        try:
            result = self._apply(bodies, hold)
            if self._schema is not None:
                self._held.check(self._con, self._schema, self._registry, self._sql,
                                 self._policies)
            return result
        finally:
            self._sql.close()

    def _load_schema(self) -> None:
        # The publisher's schema cache: read again only after DDL (schemacache.py).
        schemas = self._publisher.schemas
        schemas.check()
        shared = schemas.schema()
        self._schema = replace(shared, tables=dict(shared.tables))
        # The heartbeat table travels like a replicated table (capture.beat).
        self._schema.tables[HEARTBEAT_TABLE] = capture.heartbeat_table(self._con.sql_dialect)
        self._registry = {name: no for no, (name, _k) in schemas.registry().items()}

    def catch_up(self) -> int:
        """Apply the events kept aside for tables installed here since (catchup.py), in the
        order they arrived; returns how many."""
        self._publisher.publish()
        self._load_schema()
        done = 0
        try:
            for body in catchup.ready(self._con, set(self._registry)):
                event = _parse(body)
                self._apply_tx([Incoming(event, body)], replay=True)
                catchup.forget(self._con, event)
                done += 1
        finally:
            self._sql.close()
        return done

    def _keep_aside(self, cur: Cursor, item: Incoming) -> None:
        """An event of a table this site lacks, kept aside (catchup.py), within its origin's
        bound."""
        if self._deferred is None:
            self._deferred = catchup.deferred_counts(cur)
        site = item.event.origin.site
        kept = self._deferred.get(site, 0)
        if kept >= catchup.MAX_DEFERRED_PER_ORIGIN:
            raise ApplyError(printable(
                f"{site} sent {kept} events of tables this site lacks (now "
                f"{item.event.table}), the most kept aside per site: install those tables "
                "here (siege-node install after the vendor's upgrade) or leave them out of "
                "every site's [tables]; its transaction waits until then"))
        catchup.defer(cur, item.event, item.body)
        self._deferred[site] = kept + 1

    def _apply(self, bodies: Iterable[bytes], hold: frozenset[tuple[str, int]]) -> ApplyResult:
        result = ApplyResult()
        self._publisher.publish()
        self._load_schema()
        applied, heads = self.vector()
        own = (self._site, int(capture.get_state(self._con, "incarnation") or "1"))
        parked = {(p.origin, p.incarnation) for p in parking.listing(self._con)}
        incoming: dict[tuple[str, int], dict[int, Incoming]] = {}
        stopped: set[tuple[str, int]] = set(hold)
        for body in bodies:
            event = _parse(body)
            item = Incoming(event, body)
            done = applied.get(item.origin, 0)
            if item.origin == own and (event.seq > done or (
                    event.seq == done and hashlib.sha256(body).digest() != heads.get(own))):
                # Only this database publishes under its current incarnation: such an event
                # it did not publish is forged. Applied, it wrote its rows as this site's own
                # and took the publisher's next number, which then failed on every publish —
                # the site could neither publish nor serve a pull again (found by
                # tests/test_hostile.py). Refused, not parked: nothing here waits for it.
                if own not in stopped:
                    message = printable(
                        f"events numbered as this site's own ({own[0]}, incarnation {own[1]}, "
                        f"#{event.seq}) were sent here, but only this database publishes "
                        "them: they are forged, or this database went on from an older copy "
                        "(resync). Nothing of them was applied")
                    log.error("[%s] %s", self._site, message)
                    result.refused.append(message)
                stopped.add(own)
                continue
            if event.seq <= done:
                if (event.seq == done and item.origin in heads
                        and hashlib.sha256(body).digest() != heads[item.origin]):
                    # Same number, other content: the origin went back to an older copy.
                    message = _rewound(item.origin, event.seq)
                    if item.origin not in stopped:
                        log.error("[%s] %s", self._site, message)
                        result.refused.append(message)
                        parking.park(self._con, *item.origin, event.seq + 1, message)
                    stopped.add(item.origin)
                result.already_applied += 1
                continue
            incoming.setdefault(item.origin, {})[event.seq] = item
        waiting: dict[tuple[str, int], str] = {}
        pace = _Pace()
        while True:
            group = self._ready_group(incoming, stopped, applied, heads, waiting, pace, result)
            if not group:
                break
            if len(group) > 1:
                try:
                    result.losses_recorded += self._apply_txs([tx for _o, tx in group])
                except Exception as exc:  # noqa: BLE001 - each applies again alone, below
                    # Nothing of the group was applied. Each transaction goes again on its
                    # own, where a failure has its own answer (a wait, a retry, a refusal).
                    log.info("[%s] %d source transactions applied together failed (%s); "
                             "applying them one by one", self._site, len(group),
                             " ".join(str(exc).split())[:300])
                    pace.alone_after_failure(group, applied, heads)
                    continue
            else:
                origin, tx = group[0]
                try:
                    result.losses_recorded += self._apply_with_retries(tx, result)
                except (NotArrived, RowBusy, ApplyError) as exc:
                    pace.undo(origin, applied, heads)
                    self._stop_or_wait(origin, tx, exc, stopped, waiting, pace, result)
                    continue
            for origin, tx in group:
                waiting.pop(origin, None)
                if origin in parked:
                    parking.unpark(self._con, {origin})
                    parked.discard(origin)
                for item in tx:
                    del incoming[origin][item.event.seq]
                result.applied_events += len(tx)
                result.applied_transactions += 1
                if len(tx) > 1 or tx[0].event.table != HEARTBEAT_TABLE:
                    result.news_from.add(origin[0])
                    for item in tx:
                        result.tables[item.event.table] += 1
                else:
                    result.heartbeats += 1
            pace.applied()
        for origin, reason in sorted(waiting.items()):
            log.info("[%s] %s", self._site, reason)
            result.waiting_for.append(reason)
            if origin not in hold:
                # Said where operators look (status, the round's report), not only in this
                # call's result: a wait that lasts is a stream stopped at this site. Cleared
                # as soon as the transaction applies (above).
                parking.park(self._con, *origin, applied.get(origin, 0) + 1, reason)
        for origin, by_seq in incoming.items():
            if origin in hold or origin in result.busy:
                continue  # not tried again in this stream: its sender sends them again
            result.pending.extend(by_seq[s].body for s in sorted(by_seq))
        result.waiting = len(result.pending)
        return result

    def _ready_group(self, incoming: dict[tuple[str, int], dict[int, Incoming]],
                     stopped: set[tuple[str, int]], applied: dict[tuple[str, int], int],
                     heads: dict[tuple[str, int], bytes], waiting: dict[tuple[str, int], str],
                     pace: _Pace, result: ApplyResult) -> list[tuple[tuple[str, int],
                                                                 list[Incoming]]]:
        """The next source transactions to apply together, each whole, checked (seal and
        chain) and ready once the ones before it in the list are applied: up to
        ``GROUP_EVENTS`` events, or one transaction while ``pace`` says so. ``applied`` and
        ``heads`` already count them (``pace`` puts them back if they fail)."""
        one = pace.start()
        group: list[tuple[tuple[str, int], list[Incoming]]] = []
        size = 0
        for origin, by_seq in incoming.items():
            while origin not in stopped and origin not in pace.deferred:
                if group and (one or size >= GROUP_EVENTS):
                    return group
                tx = next_ready(origin, by_seq, applied, waiting)
                if tx is None:
                    break
                try:
                    if self._verifier is not None:
                        self._verifier.check(self._con, origin[0], [i.event for i in tx],
                                             [i.body for i in tx])
                    _check_chain(origin, tx, heads.get(origin, b""))
                except (Forged, Unknown, ApplyError) as exc:
                    self._stop_or_wait(origin, tx, exc, stopped, waiting, pace, result)
                    break
                pace.count(origin, tx, applied, heads)
                group.append((origin, tx))
                size += len(tx)
        return group

    def _stop_or_wait(self, origin: tuple[str, int], tx: list[Incoming], exc: Exception,
                      stopped: set[tuple[str, int]], waiting: dict[tuple[str, int], str],
                      pace: _Pace, result: ApplyResult) -> None:
        """What a transaction that cannot be applied now means for its origin."""
        seq = tx[0].event.seq
        if isinstance(exc, Forged):
            # The sender's fault, not the origin's: not parked (the genuine copy may come by
            # another path); its later events wait for this call.
            message = printable(f"refused: {exc}; nothing of it was applied")
            log.error("[%s] %s", self._site, message)
            result.refused.append(message)
            stopped.add(origin)
        elif isinstance(exc, (Unknown, NotArrived)):
            # A certificate, a parent's insert from another origin or a BLOB's bytes, maybe
            # later in this batch: tried again after the others progressed.
            waiting[origin] = printable(f"{origin[0]}#{seq} waits: {exc}")
            pace.deferred.add(origin)
        elif isinstance(exc, RowBusy):
            # Not parked: it is applied as soon as the holder ends. The origin's later
            # events wait behind it; other origins go on.
            message = printable(f"{origin[0]}#{seq} waits: {exc}")
            log.warning("[%s] %s", self._site, message)
            result.busy[origin] = message
            stopped.add(origin)
        else:
            # Nothing of that transaction was applied; the origin's later events wait
            # behind it. Other origins go on.
            log.error("[%s] %s", self._site, exc)
            result.refused.append(str(exc))
            stopped.add(origin)
            parking.park(self._con, *origin, seq, str(exc))

    def _apply_with_retries(self, tx: list[Incoming], result: ApplyResult) -> int:
        blocker: int | None = None  # the open transaction the last attempt met
        for attempt in range(_MAX_RETRIES + 1):
            try:
                return self._apply_tx(tx)
            except LocalChangePending:
                restored = rewind.holding_back(self._con, self._site)
                if restored is not None:
                    origin = tx[0].event.origin
                    if origin.site != self._site:
                        # Published once this site's own older events are back: it waits.
                        raise NotArrived("a row it changes has a captured change not "
                                         f"published yet; this site was {restored}") from None
                    # This site's own older event meets a change made here since the
                    # restore: waiting for the gate would wait for this very event.
                    rewind.release(self._con, self._site, f"{origin.site}#{tx[0].event.seq} "
                                   f"(incarnation {origin.incarnation}) changes a row with "
                                   "a local change made since the restore")
            except ValueError as exc:  # values.decode: a value that does not fit its column
                first = tx[0].event
                raise ApplyError(f"applying {first.origin.site}#{first.seq}: {exc} (do the "
                                 "sites' schemas differ, or is the event malformed?). Nothing "
                                 "of that transaction was applied; it and the later events of "
                                 "that site wait") from exc
            except CausalityError as exc:
                # The applier waited for every event this one names, so a life still
                # missing means the event names the wrong one (e.g. an update or delete
                # claiming to start its own life): malformed, refused like a bad value
                # rather than failing the whole call (found by tests/test_hostile.py).
                first = tx[0].event
                raise ApplyError(f"applying {first.origin.site}#{first.seq}: {exc} (the "
                                 "event names a life of the row that does not exist here: "
                                 "malformed). Nothing of that transaction was applied; it "
                                 "and the later events of that site wait") from exc
            except ConstraintError as exc:
                first = tx[0].event
                raise ApplyError(f"applying {first.origin.site}#{first.seq}: {exc}. Nothing of "
                                 "that transaction was applied; it and the later events of "
                                 "that site wait") from exc
            except DatabaseError as exc:
                if not is_concurrent_write(exc):
                    first = tx[0].event
                    raise ApplyError(
                        f"applying {first.origin.site}#{first.seq} (a transaction of "
                        f"{len(tx)} changes, table {first.table}) failed: "
                        f"{' '.join(str(exc).split())}. Nothing of it was applied; it and the "
                        "later events of that site wait (a constraint or schema difference "
                        "between sites: `siege-node held` says what to do)") from exc
                # The same transaction in the way after a wait and a retry: it is still
                # open (a form left open), and may stay so for hours. Waiting longer, or
                # retrying, would only hold every other change up.
                number = lockholder.transaction_number(exc)
                if number is not None and number == blocker:
                    tables = ", ".join(sorted({item.event.table for item in tx}))
                    raise RowBusy(
                        f"an open transaction here, {lockholder.describe(self._con, number)}, "
                        f"holds a row it changes (table {tables}); it is applied once that "
                        "transaction ends (commit or roll back in the application)") from exc
                blocker = number
            result.retries += 1
            log.info("[%s] apply of %s#%d met a local change; publishing and retrying (%d)",
                     self._site, tx[0].event.origin.site, tx[0].event.seq, attempt + 1)
            self._publisher.publish()
        raise ApplyError(f"could not apply {tx[0].event.origin.site}#{tx[0].event.seq}: "
                         "local writers kept changing the same rows")

    def _apply_tx(self, tx: list[Incoming], replay: bool = False) -> int:
        """``replay``: events kept aside earlier (catchup.py), applied now that their table
        is here; their origin's counter and the event log already count them."""
        return self._apply_txs([tx], replay)

    def _apply_txs(self, txs: list[list[Incoming]], replay: bool = False) -> int:
        """Apply source transactions, in order, in one database transaction (all or
        nothing); returns the losses put on record. Several only when each is ready once the
        ones before it are applied (``_ready_group``): one that another applier applied
        meanwhile then fails the whole group (``Superseded``), which goes again one by one."""
        everything = [item for tx in txs for item in tx]
        # Counted again from what this transaction sees, at the first event kept aside: a
        # count kept from an attempt rolled back (a failed group) refused the next for good.
        self._deferred = None
        self._held.begin()
        recorded = self._apply_txs_once(txs, replay, everything)
        self._held.committed()
        return recorded

    def _apply_txs_once(self, txs: list[list[Incoming]], replay: bool,
                        everything: list[Incoming]) -> int:
        assert self._schema is not None
        recorded = 0
        with transaction(self._con, SNAPSHOT_APPLY) as tm:
            cur = tm.cursor()
            try:
                # One applier per database: the origins' counter rows are locked for the
                # whole transaction; another applier waits, then finds the work done.
                firsts: dict[tuple[str, int], int] = {}
                for tx in txs:
                    firsts.setdefault((tx[0].event.origin.site, tx[0].event.origin.incarnation),
                                      tx[0].event.seq)
                for (site, incarnation), first in firsts.items():
                    cur.execute(f"SELECT APPLIED FROM {VECTOR_TABLE} WHERE ORIGIN = ? "
                                "AND INCARNATION = ? WITH LOCK", (site, incarnation))
                    row = cur.fetchone()
                    if not replay and row is not None and int(row[0]) >= first:
                        if len(txs) > 1:
                            raise Superseded(f"{site}#{first} was applied meanwhile")
                        return 0
                check_blob_lengths(cur, everything)
                # This site's own older transaction, captured in the copy it was restored
                # from: its rows show it already; its restored entries go (rewind.py) —
                # before looking for local changes not published yet.
                in_rows = [not replay and rewind.forget_republished(
                    self._con, cur, self._site, [item.event for item in tx]) for tx in txs]
                rows = registers.RowStates(cur, self._sql)
                registry = self._registry
                touched = {registry[i.event.table] for i in everything
                           if i.event.table in registry}
                pending_local = tables_with_pending_changes(cur, touched)
                by_table: dict[int, list[bytes]] = {}
                for item in everything:
                    if item.event.table in registry:
                        by_table.setdefault(registry[item.event.table], []).append(
                            registers.key_identity(item.event.key, self._schema.tables.get(
                                item.event.table)))
                for number, khashes in by_table.items():
                    rows.prefetch(number, khashes)
                for tx, shown in zip(txs, in_rows, strict=True):
                    recorded += self._settle_tx(tm, cur, rows, pending_local, tx, replay,
                                                shown)
                rows.flush()
                if replay:
                    return recorded
                runs: dict[tuple[str, int], list[Incoming]] = {}
                for item in everything:
                    runs.setdefault(item.origin, []).append(item)
                for (site, incarnation), run in runs.items():
                    eventlog.append(cur, site, incarnation, [
                        eventlog.StoredEvent(i.event.seq, i.event.stamp,
                                             hashlib.sha256(i.body).digest(), i.body)
                        for i in run])
                    cur.execute(
                        f"UPDATE OR INSERT INTO {VECTOR_TABLE} (ORIGIN, INCARNATION, APPLIED, "
                        "HEAD) VALUES (?, ?, ?, ?) MATCHING (ORIGIN, INCARNATION)",
                        (site, incarnation, run[-1].event.seq,
                         hashlib.sha256(run[-1].body).digest()))
            finally:
                cur.close()
        return recorded

    def _settle_tx(self, tm: TransactionManager, cur: Cursor, rows: registers.RowStates,
                   pending_local: set[int], tx: list[Incoming], replay: bool,
                   in_rows: bool) -> int:
        """One source transaction's rows and registers, in the caller's transaction;
        returns the losses put on record. ``in_rows``: this site's own, already in the
        rows (``_apply_event``)."""
        assert self._schema is not None
        registry = self._registry
        settler = Settler(cur, self._schema, registry, rows, self._sql, self._policies,
                          pending_local, DatabaseBlobStore(tm))
        kept_aside = []
        for item in tx:
            if (item.event.table not in registry and not replay
                    and catchup.plausible_table(item.event.table)):
                # A table another site has and this one not yet (DESIGN §3.8): kept aside,
                # the rest of the transaction applies; applied once the table is installed
                # here (catchup.py).
                self._keep_aside(cur, item)
                kept_aside.append(item)
        apply_in_engine_order(settler, self._table, self._policies,
                              [item for item in tx if item not in kept_aside], in_rows)
        settler.flush()
        self._held.decided(settler.holds)
        for (name, column), count in settler.unfit.items():
            catchup.mark_unfit(cur, registry[name], self._table(name).column(column), count)
        return settler.losses_recorded

    def _table(self, name: str) -> Table:
        assert self._schema is not None
        table = self._schema.tables.get(name)
        if table is None:
            raise ApplyError(f"events for table {name}, which is not replicated here "
                             "(schema differs between sites?)")
        return table



def _check_chain(origin: tuple[str, int], tx: list[Incoming], head: bytes) -> None:
    """Each event names the hash of the previous one of its origin: a site restored from an
    old copy (rewound) reuses numbers with other content, and altered events break it."""
    previous = head
    for item in tx:
        if item.event.prev_hash != previous:
            raise ApplyError(_rewound(origin, item.event.seq))
        previous = hashlib.sha256(item.body).digest()


def _rewound(origin: tuple[str, int], seq: int) -> str:
    return printable(
        f"events of {origin[0]} (incarnation {origin[1]}) do not chain at seq {seq}: that "
        "site was restored from an older copy (rewound) or its events were altered. Nothing "
        "of it is applied from there on; the site must take a new incarnation (resync)")


def _parse(body: bytes) -> events_pb2.Event:
    try:
        event = events_pb2.Event.FromString(body)
    except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
        raise ApplyError(f"a received event is not a valid message ({exc}); the sender's "
                         "version or the link is at fault, nothing was applied") from exc
    if not event.origin.site or event.seq < 1 or event.op == events_pb2.OP_UNSPECIFIED:
        raise ApplyError(f"a received event lacks its origin, sequence or operation "
                         f"(origin {event.origin.site!r}, seq {event.seq}); nothing applied")
    if event.op not in _KNOWN_OPS:
        # proto3 keeps an unknown enum number as is; the merge has no meaning for it (it
        # failed the whole call with a KeyError; found by tests/test_hostile.py).
        raise ApplyError(f"event {event.origin.site}#{event.seq} has an unknown operation "
                         f"({event.op}): a newer sender's version, or malformed; nothing "
                         "applied")
    return event


_KNOWN_OPS = frozenset({events_pb2.OP_INSERT, events_pb2.OP_UPDATE, events_pb2.OP_DELETE})


def catch_up(con: Connection, site: str, policies: Mapping[str, Policy] | None = None,
             publisher: Publisher | None = None, sealer: Sealer | None = None) -> list[str]:
    """After an install that added tables or columns or widened columns (catchup.py): fill
    the new columns and the widened ones from the registers, apply the events kept for the
    new tables. Returns what it did. ``publisher``: a running node's (its schema cache);
    otherwise one signing with ``sealer`` (seal.py)."""
    # What users wrote is published first: a widened column is written only where the
    # registers know the row's latest value.
    publisher = publisher or Publisher(con, site, policies=policies, sealer=sealer)
    publisher.publish()
    # One schema read for all of it (a second each with hundreds of tables).
    schema = publisher.schemas.schema()
    done = catchup.fill_new_columns(con, dict(policies or {}), schema)
    done += [f"values kept for a narrower column written: {item}"
             for item in catchup.write_widened(con, dict(policies or {}), schema)]
    applied = Applier(con, site, publisher, policies=policies).catch_up()
    if applied:
        done.append(f"{applied} kept events of newly installed tables applied")
    return done
