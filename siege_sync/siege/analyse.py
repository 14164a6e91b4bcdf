"""``siege-ctl analyse``: compare every site's tables with a reference site by primary-key
range digests, drill down only where they differ, and repair on request.

The reference is the site the operator prefers (``--prefer``), else the siège. For each
other site and table: the reference cuts the key space into ranges of about equal row counts
(``node/journal/ranges.py``); both sides digest the same ranges (the engine decides what falls in a
range); equal digests are done, differing ranges are cut again, by the side holding more rows
there, until a range holds few enough rows to compare row by row. Only digests and the rows
of differing small ranges cross the mesh.

Pending events are not differences: every compared site is first synced with the siège (the
reference too), and rows found different are re-checked after syncing that site once more;
what still differs was changed behind the sync's back.

``--repair`` asks each differing site to write the reference's rows as ordinary local
writes (``node/operations/repair.py``): the next round carries them, and every value overwritten or
deleted is first on record as a conflict loser. Never repairs without a preferred site named
by the operator.

Rows a held transaction touches (``siege-ctl held``: a transaction a site's database refused,
or one waiting there) differ until it applies: they are listed as *held*, naming the held
transaction, never as differences, and ``--repair`` leaves them alone — a repair would write
over what the held transaction is about to write, and the hold's cause is the operator's
to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from firebird.driver import Connection

from ..node.db.schema import fingerprints_comparable, introspect
from ..node.journal import capture
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..node.model import registers
from ..proto import coordinator_pb2, sync_pb2, sync_pb2_grpc
from . import reports
from .rounds import held_everywhere

log = logging.getLogger(__name__)

PARTS = 32  # ranges per cut
LEAF = 64  # rows: at most this many on both sides, compare row by row
EXAMPLES = 10
CALL_TIMEOUT = 3600.0  # a digest of a large table's ranges takes a while
CONFIRMATIONS = 2
REPAIR_BATCH = 500  # rows read from the reference per request, to repair

Progress = Callable[[coordinator_pb2.AnalyseProgress], None]


class AnalyseError(Exception):
    pass


@dataclass
class _Side:
    site: str
    stub: sync_pb2_grpc.SyncNodeStub
    bytes_in: int = 0

    def ranges(self, request: sync_pb2.RangesRequest) -> sync_pb2.RangesReply:
        reply = self.stub.Ranges(request, timeout=CALL_TIMEOUT)
        self.bytes_in += request.ByteSize() + reply.ByteSize()
        return reply

    def rows(self, request: sync_pb2.RowsRequest) -> sync_pb2.RowsReply:
        reply = self.stub.Rows(request, timeout=CALL_TIMEOUT)
        self.bytes_in += request.ByteSize() + reply.ByteSize()
        return reply


@dataclass
class _Range:
    lo: sync_pb2.Key | None
    hi: sync_pb2.Key | None
    ref_rows: int = 0  # rows each side holds there, once known
    other_rows: int = 0


@dataclass
class _Diff:
    missing: dict[bytes, sync_pb2.RowImage] = field(default_factory=dict)  # at the reference
    extra: dict[bytes, sync_pb2.RowImage] = field(default_factory=dict)  # at the site
    different: dict[bytes, sync_pb2.RowImage] = field(default_factory=dict)  # reference's
    theirs: dict[bytes, sync_pb2.RowImage] = field(default_factory=dict)  # the site's
    leaves: list[_Range] = field(default_factory=list)  # ranges compared row by row
    matched: int = 0  # rows of ranges whose digests matched
    leaf_matched: int = 0  # rows compared one by one and equal


class Analyser:
    def __init__(self, node: Node, progress: Progress,
                 reported: dict[str, tuple[float, coordinator_pb2.HeldReply]] | None = None
                 ) -> None:
        """``reported``: what sites that dial in said is held there (rounds.held_reported)."""
        self._node = node
        self._progress = progress
        self._bundle, _ = node.watcher.refresh()
        self._reported = reported
        # (site, table) -> key_data -> the held transaction touching it, named
        self._held: dict[tuple[str, str], dict[bytes, str]] = {}

    def run(self, request: coordinator_pb2.AnalyseRequest) -> coordinator_pb2.RoundReport:
        site_id = self._node.cfg.site
        peers = sorted(self._node.service_cfg.peers)
        everyone = [site_id, *peers]
        reference = request.prefer or site_id
        if reference not in everyone:
            raise AnalyseError(f"--prefer {reference}: not a site of this siège (sites: "
                               f"{', '.join(everyone)})")
        if request.adopt and (request.repair or request.tables or request.sites):
            raise AnalyseError("adopt compares every table at every site, and repairs "
                               "nothing: settle what it lists with analyse --repair --prefer")
        if request.repair and not request.prefer:
            raise AnalyseError("--repair needs --prefer SITE: rows changed behind the sync's "
                               "back have no version to compare, so say which site is right")
        unknown = [s for s in request.sites if s not in everyone]
        if unknown:
            raise AnalyseError(f"unknown sites {unknown} (sites: {', '.join(everyone)})")
        with self._node.replica.database() as con:
            # Read once: the schema of hundreds of tables takes about a second to read.
            replicable = introspect(con).tables
            replicated = sorted(name for name, _k in capture.table_registry(con).values()
                                if name != capture.HEARTBEAT_TABLE and name in replicable)
        tables = list(request.tables) or replicated
        missing = [t for t in tables if t not in replicated]
        if missing:
            raise AnalyseError(f"not replicated tables {missing} (replicated: "
                               f"{', '.join(replicated)})")
        sites = [s for s in (request.sites or everyone) if s != reference]
        # Asked before the database is taken: asking reads the address book through it.
        held = held_everywhere(self._node, self._reported)
        with self._node.replica.database() as con:
            self._held = _held_keys(con, held)
        report = coordinator_pb2.RoundReport(  # its id is taken when it is stored
            trigger="adopt" if request.adopt else
            "analyse" + (" --repair" if request.repair else ""),
            started=datetime.now().isoformat(timespec="seconds"))
        for site in sites:
            self._one_site(site, reference, tables, request.repair, report)
        report.ended = datetime.now().isoformat(timespec="seconds")
        differing = any(a.missing or a.extra or a.different for a in report.analysis)
        failed = any(a.error for a in report.analysis)
        held = any(a.held for a in report.analysis)
        report.outcome = ("failed" if failed else "repaired" if request.repair and differing
                          else "differences" if differing else "held" if held
                          else "adopted" if request.adopt else "equal")
        for site in sites:
            report.sites.add(site=site, outcome="failed" if any(
                a.error for a in report.analysis if a.site == site) else "complete")
        with self._node.replica.database() as con:
            reports.store(con, report)
        return report

    # --- one site ----------------------------------------------------------------------

    def _one_site(self, site: str, reference: str, tables: list[str], repair: bool,
                  report: coordinator_pb2.RoundReport) -> None:
        for t in tables:
            self._say(site, t, "syncing")
        problem = self._sync(site, reference)
        if problem:
            for table in tables:
                report.analysis.add(site=site, table=table, reference=reference,
                                    error=problem)
                self._say(site, table, "failed")
            return
        with self._open(reference) as ref_ch, self._open(site) as ch:
            ref = _Side(reference, sync_pb2_grpc.SyncNodeStub(ref_ch))
            other = _Side(site, sync_pb2_grpc.SyncNodeStub(ch))
            if not problem:
                problem = _schemas_differ(ref, other)
            for table in tables:
                out = report.analysis.add(site=site, table=table, reference=reference)
                if problem:
                    out.error = problem
                    self._say(site, table, "failed")
                    continue
                try:
                    diff = self._compare(ref, other, table)
                    if diff.missing or diff.extra or diff.different:
                        self._say(site, table, "confirming")
                        for _ in range(CONFIRMATIONS):
                            self._sync(site, reference)
                            diff = self._recheck(ref, other, table, diff)
                            if not (diff.missing or diff.extra or diff.different):
                                break
                    self._set_aside_held(site, reference, table, diff, out, repair)
                    out.matched = diff.matched + diff.leaf_matched
                    out.missing, out.extra = len(diff.missing), len(diff.extra)
                    out.different = len(diff.different)
                    out.examples.extend(_examples(diff, ref, other, table))
                    if repair and (diff.missing or diff.extra or diff.different):
                        self._say(site, table, "repairing")
                        out.repaired = self._repair(ref, other, table, diff)
                        left = len(diff.missing) + len(diff.extra) + len(diff.different) \
                            - out.repaired
                        if left:
                            out.error = (f"{left} rows changed since they were compared "
                                         "and were left alone: run analyse again")
                    self._say(site, table, "done")
                except grpc.RpcError as exc:
                    out.error = f"{exc.code().name}: {exc.details()}"
                    self._say(site, table, "failed")
                out.bytes_moved = ref.bytes_in + other.bytes_in
                ref.bytes_in = other.bytes_in = 0

    def _set_aside_held(self, site: str, reference: str, table: str, diff: _Diff,
                        out: coordinator_pb2.TableAnalysis, repair: bool) -> None:
        """Rows a held transaction touches (at either side) are not differences: out of the
        diff (so never repaired), into ``out.held_keys`` with the transaction named."""
        from ..node.db import values

        held = {**self._held.get((reference, table), {}), **self._held.get((site, table), {})}
        if not held:
            return
        for found in (diff.missing, diff.extra, diff.different):
            for k in [k for k in found if k in held]:
                image = found.pop(k)
                diff.theirs.pop(k, None)
                out.held += 1
                key = ", ".join(values.describe(v) for v in image.key.values)
                out.held_keys.append(
                    f"key {key}: touched by {held[k]}"
                    + ("; NOT repaired (siege-ctl held; fix its cause, then "
                       "siege-ctl held --retry)" if repair else ""))

    def _sync(self, site: str, reference: str) -> str:
        """Bring the site (and the reference) level with the siège: pending events are not
        differences. Returns a problem, or ""."""
        me = self._node.cfg.site
        # The siège relays: the reference's pending changes reach it, then the site, and the
        # site's come back to the reference.
        for peer in [p for p in (reference, site, reference) if p != me]:
            reply = self._node.exchange(peer)
            if reply.unreachable:
                return f"{peer} is unreachable: {'; '.join(reply.problems)}"
        return ""

    def _compare(self, ref: _Side, other: _Side, table: str) -> _Diff:
        diff = _Diff()
        total = None
        todo = [_Range(None, None)]
        while todo:
            rng = todo.pop()
            # Cut by the side holding more rows there: its pieces hold at most 1/PARTS of
            # them, so every pass shrinks the larger count and the drill-down ends.
            pairs = self._digest_both(ref, other, table, rng,
                                      other if rng.other_rows > rng.ref_rows else ref)
            if total is None:
                total = sum(mine.rows for mine, _their in pairs)
            low = rng.lo
            for mine, their in pairs:
                sub = _Range(low, mine.hi if mine.HasField("hi") else None, mine.rows,
                             their.rows)
                low = sub.hi
                if mine.digest == their.digest and mine.rows == their.rows:
                    diff.matched += mine.rows
                elif max(mine.rows, their.rows) <= LEAF:
                    diff.leaves.append(sub)
                    _rows_diff(ref, other, table, sub, diff)
                else:
                    todo.append(sub)
            self._say(other.site, table, "comparing", diff.matched + diff.leaf_matched
                      + len(diff.different) + len(diff.missing), total)
        return diff

    def _digest_both(self, ref: _Side, other: _Side, table: str, rng: _Range, cutter: _Side
                     ) -> list[tuple[sync_pb2.RangeDigest, sync_pb2.RangeDigest]]:
        request = _request(table, rng, parts=PARTS)
        request.bounds_only = True
        digest = _digest_request(table, rng, cutter.ranges(request))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="analyse") as pool:
            mine, theirs = pool.map(lambda side: side.ranges(digest), (ref, other))
        return list(zip(mine.ranges, theirs.ranges, strict=True))

    def _recheck(self, ref: _Side, other: _Side, table: str, old: _Diff) -> _Diff:
        diff = _Diff(matched=old.matched, leaves=old.leaves)
        for leaf in old.leaves:
            _rows_diff(ref, other, table, leaf, diff)
        return diff

    def _repair(self, ref: _Side, other: _Side, table: str, diff: _Diff) -> int:
        """The reference's whole rows (read now, by key) written at the other site, each only
        if the row there is still what was compared (a user's newer work is left alone).
        Removals first: a key spelt differently but equal for the engine (a case-insensitive
        collation, trailing spaces) is then written, not deleted after being written."""
        fixes: list[sync_pb2.RowFix] = []
        for image in diff.extra.values():
            fixes.append(sync_pb2.RowFix(key=image.key, remove=True, expect=image.hash))
        seen = {**{k: b"" for k in diff.missing},
                **{k: theirs.hash for k, theirs in diff.theirs.items() if k in diff.different}}
        wanted = [image.key for image in [*diff.missing.values(), *diff.different.values()]]
        for start in range(0, len(wanted), REPAIR_BATCH):
            rows = ref.rows(sync_pb2.RowsRequest(table=table, limit=REPAIR_BATCH,
                                                 keys=wanted[start:start + REPAIR_BATCH]))
            for image in rows.rows:
                fixes.append(sync_pb2.RowFix(key=image.key, columns=image.columns,
                                             expect=seen.get(_key(image.key), b"")))
        written = 0
        for start in range(0, len(fixes), REPAIR_BATCH):
            reply = other.stub.Repair(sync_pb2.RepairRequest(
                table=table, prefer=ref.site, fixes=fixes[start:start + REPAIR_BATCH]),
                timeout=CALL_TIMEOUT)
            written += reply.written
        return written

    # --- plumbing -------------------------------------------------------------------------

    def _open(self, site: str) -> grpc.Channel:
        if site == self._node.cfg.site:
            host, _, port = self._node.service_cfg.listen.rpartition(":")
            address = f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"
        else:
            # Just reached by the sync before (discovery.py); a lazy channel either way.
            address = self._node.address(site) or f"{site}.unreachable.invalid:1"
        return transport.channel(address, self._bundle, site)

    def _say(self, site: str, table: str, state: str, done: int = 0, total: int = 0) -> None:
        self._progress(coordinator_pb2.AnalyseProgress(site=site, table=table, state=state,
                                                       rows_done=done, rows_total=total))


BEHIND = 100_000  # events read behind one held transaction for the keys they touch


def _held_keys(con: Connection, held: coordinator_pb2.HeldReply
               ) -> dict[tuple[str, str], dict[bytes, str]]:
    """Per (holding site, table): the keys the held transactions touch — and the keys of the
    origin's later events that wait behind them there (pending, not differences) — each with
    the transaction named."""
    from ..node.journal import eventlog
    from ..proto import events_pb2
    from .reports import held_events

    out: dict[tuple[str, str], dict[bytes, str]] = {}
    for t in held.held:
        name = f"{held_events(t)}, {t.state} at {t.site} since {t.since}"
        for row in t.rows:
            out.setdefault((t.site, row.table), {})[row.key_data] = name
        if not t.last_seq:
            continue
        for n, body in enumerate(eventlog.read(con, t.origin, t.last_seq, t.incarnation)):
            if n >= BEHIND:
                break
            event = events_pb2.Event.FromString(body)
            out.setdefault((t.site, event.table), {}).setdefault(
                registers.key_data(list(event.key)),
                f"{t.origin}#{event.seq}, waiting at {t.site} behind {name}")
    return out


def _schemas_differ(ref: _Side, other: _Side) -> str:
    """Row hashes cover every column in order: sites on different schemas would differ in
    every row. Compared only on one schema."""
    try:
        mine = ref.stub.Status(sync_pb2.StatusRequest(), timeout=60).schema_fingerprint
        theirs = other.stub.Status(sync_pb2.StatusRequest(), timeout=60).schema_fingerprint
    except grpc.RpcError as exc:
        return f"not compared: {exc.code().name}: {exc.details()}"
    if not fingerprints_comparable(mine, theirs):
        return (f"{other.site}'s schema fingerprint ({theirs}) and {ref.site}'s ({mine}) were "
                "made by different node versions: upgrade the older node and run siege-node "
                "install there first")
    if mine != theirs:
        return (f"{other.site}'s schema ({theirs}) is not {ref.site}'s ({mine}): upgrade the "
                "sites to the same version first (siege-node upgrade)")
    return ""


def _key(k: sync_pb2.Key | None) -> bytes:
    return registers.key_data(list(k.values)) if k is not None else b""


def _request(table: str, rng: _Range, parts: int) -> sync_pb2.RangesRequest:
    request = sync_pb2.RangesRequest(table=table, parts=parts)
    if rng.lo is not None:
        request.lo.CopyFrom(rng.lo)
    if rng.hi is not None:
        request.hi.CopyFrom(rng.hi)
    return request


def _digest_request(table: str, rng: _Range, cut: sync_pb2.RangesReply
                    ) -> sync_pb2.RangesRequest:
    """The same ranges as ``cut`` (the other side's), to digest here."""
    request = sync_pb2.RangesRequest(table=table)
    if rng.lo is not None:
        request.lo.CopyFrom(rng.lo)
    for r in cut.ranges:
        if r.HasField("hi"):
            request.bounds.add().CopyFrom(r.hi)
        else:
            request.open_end = True
    return request


def _rows_diff(ref: _Side, other: _Side, table: str, rng: _Range, diff: _Diff) -> None:
    request = sync_pb2.RowsRequest(table=table, limit=100_000, hashes_only=True)
    if rng.lo is not None:
        request.lo.CopyFrom(rng.lo)
    if rng.hi is not None:
        request.hi.CopyFrom(rng.hi)
    mine = {_key(r.key): r for r in ref.rows(request).rows}
    theirs = {_key(r.key): r for r in other.rows(request).rows}
    for k, row in mine.items():
        if k not in theirs:
            diff.missing[k] = row
        elif theirs[k].hash != row.hash:
            diff.different[k] = row
            diff.theirs[k] = theirs[k]
        else:
            diff.leaf_matched += 1
    for k, row in theirs.items():
        if k not in mine:
            diff.extra[k] = row


def _examples(diff: _Diff, ref: _Side, other: _Side, table: str) -> list[str]:
    """The first differing rows, for the operator; a row that differs names its columns
    that differ, with both values (both sides' rows read again, these only)."""
    from ..node.db import values

    out: list[str] = []
    for kind, found in (("missing", diff.missing), ("extra", diff.extra)):
        for image in list(found.values())[:EXAMPLES]:
            out.append(f"{kind}: key {', '.join(values.describe(v) for v in image.key.values)}")
    shown = list(diff.different.values())[:max(EXAMPLES - len(out), 0)]
    if shown:
        request = sync_pb2.RowsRequest(table=table, keys=[i.key for i in shown])
        try:
            here = {_key(r.key): r for r in ref.rows(request).rows}
            there = {_key(r.key): r for r in other.rows(request).rows}
        except grpc.RpcError:
            here, there = {}, {}
        for image in shown:
            key = ", ".join(values.describe(v) for v in image.key.values)
            columns = _differing(here.get(_key(image.key)), there.get(_key(image.key)),
                                 ref.site, other.site)
            out.append(f"different: key {key}" + (f": {columns}" if columns else ""))
    return out[:EXAMPLES]


def _differing(ref: sync_pb2.RowImage | None, other: sync_pb2.RowImage | None,
               ref_site: str, other_site: str) -> str:
    """``A: 'x' at siege, 'y' at lyon; B: ...`` for the columns whose values differ."""
    from ..node.db import values

    if ref is None or other is None:
        return ""
    theirs = {c.column: c.value for c in other.columns}
    parts = [f"{c.column}: {values.describe(c.value)} at {ref_site}, "
             f"{values.describe(theirs.get(c.column))} at {other_site}"
             for c in ref.columns
             if c.column not in theirs or theirs[c.column] != c.value]
    return "; ".join(parts)
