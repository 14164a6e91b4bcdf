"""The calls of ``siege-ctl analyse`` a node serves: range digests, rows, repairs
(``journal/ranges.py``, ``operations/repair.py``).

Owns who may ask them (admin certificates and coordinators: a full read of a table is more
than a plain site may ask), the bounds of one call (a relay's or admin's certificate is
trusted, not unbounded), and that only replicated tables are read. Its database work goes
through the replica's connection, inside its lock (``Replica.database``). Must never write
a row but through an ordered repair.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from firebird.driver import Connection

from ...certs import Kind, PeerIdentity, Role
from ...proto import sync_pb2
from ..db.schema import Table
from ..journal import capture, ranges
from ..operations import repair
from ..pipeline.apply import printable
from .gatekeeper import Gatekeeper
from .replica import Replica

log = logging.getLogger(__name__)


class Analysis:
    """The analyse calls of one node's ``SyncService``."""

    def __init__(self, replica: Replica, gate: Gatekeeper) -> None:
        self._replica = replica
        self._gate = gate
        self._site = replica.site

    def _caller(self, context: grpc.ServicerContext, *kinds: Kind) -> PeerIdentity:
        return self._gate.caller(context, *kinds)

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode,
                why: str) -> NoReturn:
        self._gate.refuse(context, code, why)

    def _analyst(self, context: grpc.ServicerContext, what: str) -> PeerIdentity:
        caller = self._caller(context, Kind.SITE, Kind.ADMIN)
        if caller.kind is Kind.SITE and not caller.has_role(Role.RELAY):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{caller.name} may not {what}: admin or coordinator certificates only")
        return caller

    def _table(self, con: Connection, name: str, context: grpc.ServicerContext) -> Table:
        # Replicated tables only: a table the config excludes is nobody else's business.
        replicated = {n for n, _k in capture.table_registry(con).values()}
        # The node's schema cache (inside database(): the replica's lock is held): analyse
        # asks for every range of every table, and reading one table's description with
        # its constraints costs most of a second with hundreds of tables (issue 18).
        schemas = self._replica.schemas
        schemas.check()
        table = schemas.table(name) if name in replicated else None
        if table is None:
            self._refuse(context, grpc.StatusCode.NOT_FOUND,
                         f"no replicated table {printable(name, 80)!r} at {self._site}")
        return table

    def ranges(self, request: sync_pb2.RangesRequest,
               context: grpc.ServicerContext) -> sync_pb2.RangesReply:
        self._analyst(context, "read range digests")
        if len(request.bounds) > MAX_RANGES:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"at most {MAX_RANGES} ranges per request")
        lo = list(request.lo.values) if request.HasField("lo") else None
        try:
            with self._replica.database() as con:
                table = self._table(con, request.table, context)
                if request.bounds or request.open_end:
                    bounds: list = [list(b.values) for b in request.bounds]
                    if request.open_end:
                        bounds.append(None)
                else:
                    hi = list(request.hi.values) if request.HasField("hi") else None
                    bounds = ranges.split(con, table, lo, hi,
                                          min(request.parts or 1, MAX_RANGES))
                    if request.bounds_only:
                        return _bounds_reply(bounds)
                found = ranges.digests(con, table, lo, bounds)
        except (ranges.RangeError, ValueError) as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, printable(str(exc)))
        reply = sync_pb2.RangesReply()
        for r in found:
            out = reply.ranges.add(rows=r.rows, digest=r.digest)
            if r.hi is not None:
                out.hi.values.extend(r.hi)
        return reply

    def rows(self, request: sync_pb2.RowsRequest,
             context: grpc.ServicerContext) -> sync_pb2.RowsReply:
        self._analyst(context, "read rows for an analysis")
        lo = list(request.lo.values) if request.HasField("lo") else None
        hi = list(request.hi.values) if request.HasField("hi") else None
        try:
            with self._replica.database() as con:
                table = self._table(con, request.table, context)
                if len(request.keys) > 10_000:
                    self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                                 "at most 10,000 keys per request")
                cap = MAX_ROWS_HASHES if request.hashes_only else MAX_ROWS_WHOLE
                found = ranges.rows(con, table, lo, hi, min(request.limit or 1000, cap),
                                    [list(k.values) for k in request.keys])
        except ranges.RangeError as exc:
            self._refuse(context, grpc.StatusCode.OUT_OF_RANGE, printable(str(exc)))
        except ValueError as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, printable(str(exc)))
        reply = sync_pb2.RowsReply()
        for row in found:
            image = reply.rows.add(hash=row.hash)
            image.key.values.extend(row.key)
            if not request.hashes_only:
                for name, value in row.columns.items():
                    image.columns.add(column=name, value=value)
        return reply

    def repair(self, request: sync_pb2.RepairRequest,
               context: grpc.ServicerContext) -> sync_pb2.RepairReply:
        caller = self._analyst(context, "order repairs")
        if len(request.fixes) > MAX_FIXES:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"at most {MAX_FIXES} fixes per request")
        try:
            with self._replica.database() as con:
                table = self._table(con, request.table, context)
                done = repair.repair(con, self._site, table, request.prefer, request.fixes)
        except (repair.RepairError, ValueError) as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         printable(f"nothing repaired: {exc}"))
        log.warning("[%s] analyse repair of %s ordered by %s: %d rows written as %s holds "
                    "them, %d values on record, %d rows changed since compared left alone",
                    self._site, request.table, caller.name, done.written,
                    printable(request.prefer, 80), done.recorded, done.changed)
        return sync_pb2.RepairReply(written=done.written, recorded=done.recorded,
                                    changed=done.changed)


# What one analyse call may ask (a relay's or admin's certificate is trusted, not unbounded).
MAX_RANGES = 4096
MAX_ROWS_HASHES = 100_000
MAX_ROWS_WHOLE = 2_000
MAX_FIXES = 1_000


def _bounds_reply(bounds: list) -> sync_pb2.RangesReply:
    reply = sync_pb2.RangesReply()
    for hi in bounds:
        out = reply.ranges.add()
        if hi is not None:
            out.hi.values.extend(hi)
    return reply
