"""The node's gRPC service (``siege.v1.SyncNode``): who may call what, and answering.

Owns authorization per call. The caller's identity comes from its TLS certificate only
(never a request field); ``admission.py`` already refused unknown, revoked and unconfigured
callers before any byte was read, and this module checks again what each call needs. Sites
may hello, pull, push, announce where they listen, ask for status and the last purge order,
say they have news and listen for others' (a push that brings a site's changes is news too:
a coordinator passes them on at once); events of origin X are accepted from X itself, from a
caller whose certificate carries the *relay* role and whom this node's config lets
coordinate, or — at a coordinator that checks seals, for any X but itself — from any site
(``origins.py``); and only as X signed them (``seal.py``, in the applier). Coordinators may
also order purges and ask for digests; admin and coordinator certificates may read range
digests and rows and order repairs (``siege-ctl analyse``: ``analysis.py``); admin
certificates (``siege-ctl``) may also hello, ask for status and start an exchange, as may
the node itself. Every refusal is logged here with its real reason — the caller often sees
only a bare status code. A site whose hello carries merge policies that differ from this
node's (``[policies]``) is told so in the reply, and its Pull and Push are refused until a
hello whose policies agree: the two would settle the same conflicts differently.

Must never apply or send events the replica has not decided; its database work goes through
the replica's connection (``database()``), an ordered repair (``repair.py``) included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

import grpc
from firebird.driver import DatabaseError
from google.protobuf.message import DecodeError, Message

from ...certs import Kind, PeerIdentity, Role
from ...proto import events_pb2, sync_pb2, sync_pb2_grpc
from ..db.database import DatabaseUnavailable, cannot_write
from ..journal import capture, guardwatch
from ..model import keysources
from ..model.config import PolicyTable, policy_refusal
from ..model.vector import Vector
from ..operations.join import JoinError, Restorer
from ..pipeline.apply import ApplyError, printable
from . import origins, tidings
from .analysis import Analysis
from .blobs import BlobError
from .discovery import Greeted
from .exchange import local_policies, policies_from_proto, policies_to_proto
from .gatekeeper import Gatekeeper
from .outbox import PurgedHere
from .replica import NotReady, PeerRefused, PurgeRefused, Replica
from .transport import BundleWatcher

log = logging.getLogger(__name__)

Exchanger = Callable[[str], sync_pb2.ExchangeReply]
Announced = Callable[[str, str, bool], None]  # site, host:port, dials out only
Traffic = Callable[[str, int, int], None]  # site, events it pushed here, events it pulled
Hellos = Callable[[str, Greeted], None]  # site, what its hello said
News = Callable[[str], bool]  # site with news -> whether a round with it follows now


class SyncService(sync_pb2_grpc.SyncNodeServicer):
    def __init__(self, replica: Replica, watcher: BundleWatcher,
                 exchanger: Exchanger | None = None,
                 announced: Announced | None = None,
                 traffic: Traffic | None = None, hellos: Hellos | None = None,
                 news: News | None = None) -> None:
        """``announced``: where a site's announcement goes; ``traffic``: what a site moved
        in exchanges it started, ``hellos``: what its hellos said (a site that dials in;
        discovery.AddressBook); ``news``: a site's word that it committed changes (the
        daemon hands it to the coordinator role, if any)."""
        self._replica = replica
        self._watcher = watcher
        self._exchanger = exchanger
        self._announced = announced
        self._traffic = traffic
        self._hellos = hellos
        self._news = news
        self._site = replica.site
        self._gate = Gatekeeper(watcher, replica.site, replica.coordinators)
        self._analysis = Analysis(replica, self._gate)
        self._key_warnings = keysources.Periodic(self._replica.key_warnings)
        # Sites whose last hello carried policies that differ from ours: why (Pull, Push).
        self._refused: dict[str, str] = {}
        self._refused_lock = threading.Lock()

    def _lost_guards(self) -> list[str]:
        """Checked at every hello and status (guardwatch.py): lost guards double effects."""
        with self._replica.database() as con:
            return guardwatch.check(con).lines()

    # --- who is calling --------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext, *kinds: Kind) -> PeerIdentity:
        return self._gate.caller(context, *kinds)

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode,
                why: str) -> NoReturn:
        self._gate.refuse(context, code, why)

    def _database_cannot_write(self, context: grpc.ServicerContext,
                               exc: DatabaseError) -> None:
        """A database that cannot be written (a full disk) is said in words, here and to
        the caller (RESOURCE_EXHAUSTED), instead of a traceback; other errors go on."""
        why = cannot_write(exc)
        if why is None:
            return
        log.error("[%s] %s", self._site, why)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"at {self._site}: {why}")

    def _relays(self) -> bool:
        return self._watcher.bundle.identity.has_role(Role.RELAY)

    def _takes_any_origin(self) -> bool:
        return origins.takes_any_origin(self._relays(), self._replica.verifier is not None)

    def _check_origins(self, context: grpc.ServicerContext, caller: PeerIdentity,
                       bodies: Iterable[bytes]) -> None:
        if caller.has_role(Role.RELAY):
            return
        takes_any = self._takes_any_origin()
        for body in bodies:
            try:
                origin = events_pb2.Event.FromString(body).origin.site
            except Exception:  # DecodeError: the applier names it properly
                continue
            if not origins.may_take(caller, origin, self._site, takes_any):
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                             f"{caller.name} sent events of {origin!r}; only a site whose "
                             "certificate carries the relay role may relay others' events"
                             + ("" if origin != self._site else " to their origin"))

    def _compare_policies(self, caller: str, request: sync_pb2.HelloRequest,
                          mine: PolicyTable) -> str:
        """Why ``caller``'s events must not be taken nor ours sent to it ("" if its
        policies agree, or its node is older than the check); remembered for its Pull and
        Push until its next hello."""
        why = ""
        if request.HasField("policies"):
            differences = mine.differences(policies_from_proto(request.policies))
            if differences:
                why = policy_refusal(self._site, caller, differences, self._replica.siege)
        with self._refused_lock:
            before = self._refused.pop(caller, "")
            if why:
                self._refused[caller] = why
        if why and why != before:
            log.warning("[%s] refused: %s", self._site, why)
        elif before and not why:
            log.info("[%s] %s's merge policies agree with ours now: exchanges resume",
                     self._site, caller)
        return why

    def _refused_policies(self, context: grpc.ServicerContext, caller: PeerIdentity) -> None:
        with self._refused_lock:
            why = self._refused.get(caller.name)
        if why:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, why)

    # --- the calls ---------------------------------------------------------------------

    def Hello(self, request: sync_pb2.HelloRequest,
              context: grpc.ServicerContext) -> sync_pb2.HelloReply:
        t2 = self._replica.clock.utc_now_us()
        caller = self._caller(context, Kind.SITE, Kind.ADMIN)
        refused = ""
        policies = local_policies(self._replica)
        held: Vector | None = None
        if caller.kind is Kind.SITE:
            try:
                held = Vector.from_proto(request.applied)
                self._replica.meet(caller.name, request.epoch, held)
                # Only once the siège's own database is the one this node knows: a siège
                # restored from an old copy is refused above, and its word with it.
                if request.epochs and caller.name == self._replica.siege \
                        and caller.has_role(Role.RELAY):
                    self._replica.learn_epochs(request.epochs, caller.name)
                refused = self._compare_policies(caller.name, request, policies)
                if self._hellos is not None:
                    self._hellos(caller.name, Greeted(
                        held, request.epoch, printable(request.node_version, 40),
                        printable(request.schema_fingerprint, 80), caller.not_after,
                        request.t1_us - t2, time.time(), refused=refused))
                if request.round and caller.has_role(Role.RELAY):  # a coordinator's round
                    self._replica.beat(request.round)
            except PeerRefused as exc:
                self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except ValueError as exc:
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"{caller.name}: malformed hello ({exc})")
        ident = self._replica.identity()
        # Not published first: a long backlog must not hold the hello up (a pull publishes).
        vector = self._replica.vector(publish=False)
        yours, purged = self._replica.proof_for(caller.name, held) \
            if caller.kind is Kind.SITE and held is not None else ([], False)
        return sync_pb2.HelloReply(yours=yours, yours_purged=purged,
            site=self._site, incarnation=ident.incarnation, node_version=ident.node_version,
            schema_fingerprint=ident.schema_fingerprint, epoch=ident.epoch,
            applied=vector.to_proto(), t1_us=request.t1_us, t2_us=t2,
            t3_us=self._replica.clock.utc_now_us(), lost_guards=self._lost_guards(),
            schema_changes=self._replica.schema_drift(),
            kept_values=self._replica.kept_values(), key_warnings=self._key_warnings(),
            epochs=self._replica.epochs() if self._replica.siege == self._site else {},
            policies=policies_to_proto(policies), refused=refused,
            certificates_held=self._replica.certificates_held(),
            takes_any_origin=self._takes_any_origin())

    def Pull(self, request: sync_pb2.PullRequest,
             context: grpc.ServicerContext) -> Iterator[sync_pb2.Batch]:
        caller = self._caller(context, Kind.SITE)
        self._refused_policies(context, caller)
        try:
            have = Vector.from_proto(request.have)
        except ValueError as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed vector: {exc}")
        send = origins.sending(self._site, self._relays(), caller, request.any_origin)
        limit = min(max(request.max_events_per_batch or 500, 1), 5000)
        sent, told = 0, False
        try:
            for batch in self._replica.outgoing(have, limit, only_origin=send.only,
                                                peer_holds=request.certificates_held,
                                                skip_origin=send.skip):
                if not told and batch.events:  # (published by now: the stream's size)
                    told = True
                    mine = self._replica.vector(publish=False)
                    batch.expected = sum(max(mine.seq(o) - have.seq(o), 0) for o in mine
                                         if send.covers(o[0]))
                sent += sum(1 for body in batch.events if not capture.is_heartbeat(body))
                yield batch
            if self._traffic is not None:
                self._traffic(caller.name, 0, sent)
        except PurgedHere as exc:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except DatabaseError as exc:
            self._database_cannot_write(context, exc)
            raise

    def Push(self, request_iterator: Iterator[sync_pb2.Batch],
             context: grpc.ServicerContext) -> sync_pb2.PushReply:
        caller = self._caller(context, Kind.SITE)
        self._refused_policies(context, caller)
        receiver = self._replica.receiver(caller.name)
        # The caller's own certificate checks the seals of its own transactions (seal.py),
        # whatever its first batch carries.
        receiver.refused.extend(self._replica.learn_certificates(
            list(context.auth_context().get("x509_pem_cert", ()))[:1]))
        try:
            for batch in request_iterator:
                self._check_origins(context, caller, batch.events)
                try:
                    receiver.take(batch)
                except (ApplyError, BlobError) as exc:
                    self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                                 f"from {caller.name}: {exc}")
                except NotReady as exc:
                    self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                                 f"from {caller.name}: {exc}")
        except DatabaseError as exc:
            self._database_cannot_write(context, exc)
            raise
        else:
            receiver.finish()
        finally:
            receiver.close()
        reply = sync_pb2.PushReply(applied_events=receiver.applied_events,
                                   applied_heartbeats=receiver.heartbeats,
                                   applied_tables=dict(receiver.tables),
                                   already_applied=receiver.already_applied,
                                   waiting=receiver.waiting, refused=receiver.refused,
                                   waiting_for=receiver.waiting_for,
                                   held=list(receiver.busy.values()))
        reply.applied.CopyFrom(self._replica.vector(publish=False).to_proto())
        if reply.applied_events:
            log.info("[%s] applied %d events pushed by %s", self._site, reply.applied_events,
                     caller.name)
        if self._traffic is not None:
            self._traffic(caller.name, receiver.changes, 0)
        if receiver.news_from and self._news is not None:
            # A site that dials in brought changes: a coordinator in continuous mode passes
            # them on now (a round gathering from it), not after its pause.
            self._news(caller.name)
        return reply

    def Announce(self, request: sync_pb2.AnnounceRequest,
                 context: grpc.ServicerContext) -> sync_pb2.AnnounceReply:
        caller = self._caller(context, Kind.SITE)
        if not 0 < request.port < 65536:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"{caller.name} announced port {request.port}: not a port")
        host = peer_host(context.peer())
        if host is None:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"{caller.name} called from {context.peer()!r}, not an IP address")
        seen = f"{host}:{request.port}"
        if self._announced is not None:
            try:
                self._announced(caller.name, seen, request.dials_out_only)
            except (DatabaseError, DatabaseUnavailable) as exc:
                self._refuse(context, grpc.StatusCode.UNAVAILABLE,
                             f"{self._site} cannot record it now: its database is "
                             f"unavailable ({' '.join(str(exc).split())})")
        return sync_pb2.AnnounceReply(seen=seen)

    def News(self, request: sync_pb2.NewsRequest,
             context: grpc.ServicerContext) -> sync_pb2.NewsReply:
        caller = self._caller(context, Kind.SITE)
        return sync_pb2.NewsReply(taken=self._news is not None and self._news(caller.name))

    def Listen(self, request: sync_pb2.ListenRequest,
               context: grpc.ServicerContext) -> Iterator[sync_pb2.Tidings]:
        caller = self._caller(context, Kind.SITE)
        bulletin = self._replica.bulletin
        ends = time.monotonic() + min(request.seconds or tidings.CALL_S, tidings.CALL_S)
        mark = bulletin.mark()
        since = request.after if request.bulletin == bulletin.id and request.after <= mark \
            else mark
        yield sync_pb2.Tidings(bulletin=bulletin.id, mark=since)  # (the call is open)
        while context.is_active() and not bulletin.closed:
            left = ends - time.monotonic()
            if left <= 0:
                return
            since, sites = bulletin.wait(caller.name, since, min(left, tidings.CHECK_S))
            if sites:
                yield sync_pb2.Tidings(from_sites=sites, bulletin=bulletin.id, mark=since)

    def RestoreStatus(self, request: sync_pb2.RestoreStatusRequest,
                      context: grpc.ServicerContext) -> sync_pb2.RestoreStatusReply:
        self._caller(context, Kind.SITE)
        return sync_pb2.RestoreStatusReply(joined=True,
                                           epoch=self._replica.identity().epoch)

    def Restore(self, request_iterator: Iterator[sync_pb2.SnapshotChunk],
                context: grpc.ServicerContext) -> sync_pb2.RestoreReply:
        self._caller(context, Kind.SITE)
        self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                     f"{self._site} serves its own database already: a snapshot never "
                     "overwrites one")

    def Status(self, request: sync_pb2.StatusRequest,
               context: grpc.ServicerContext) -> sync_pb2.StatusReply:
        caller = self._caller(context, Kind.SITE, Kind.ADMIN)
        if request.digests and caller.kind is Kind.SITE and not caller.has_role(Role.RELAY):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{caller.name} may not ask for digests (a full read of every table): "
                         "admin or coordinator certificates only")
        ident = self._replica.identity()
        st, digests = self._replica.status(digests=request.digests)
        reply = sync_pb2.StatusReply(
            site=self._site, incarnation=ident.incarnation, epoch=ident.epoch,
            schema_fingerprint=ident.schema_fingerprint, node_version=ident.node_version,
            applied=self._replica.vector(publish=False).to_proto(),
            published=st.published_seq, backlog=st.pending_entries, conflicts=st.conflicts,
            schema_changes=self._replica.schema_drift(), lost_guards=self._lost_guards(),
            kept_values=self._replica.kept_values(), key_warnings=self._key_warnings(),
            policies=policies_to_proto(local_policies(self._replica)))
        stale = self._watcher.refresh()[0].revocations.staleness()
        if stale is not None:
            reply.security_warnings.append(stale)
        for d in digests:
            reply.digests.add(table=d.table, digest=d.digest, rows=d.rows)
        for p in st.parked:
            reply.parked.add(origin=p.origin, incarnation=p.incarnation, seq=p.seq,
                             reason=p.reason, since=p.first_seen.isoformat(timespec="seconds"),
                             attempts=p.attempts, past_limit=p.past_limit())
        return reply

    def Purge(self, request: sync_pb2.PurgeRequest,
              context: grpc.ServicerContext) -> sync_pb2.PurgeReply:
        caller = self._caller(context, Kind.SITE)
        if not caller.has_role(Role.RELAY):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{caller.name} may not order a purge: only a coordinator (a "
                         "certificate with the relay role, of a site this node's config "
                         "lets coordinate) may")
        try:
            done = self._replica.obey_purge(request, caller.name)
        except PurgeRefused as exc:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("[%s] purge ordered by %s: %d segments, %d ended lives", self._site,
                 caller.name, done.segments, done.lives)
        return sync_pb2.PurgeReply(segments=done.segments, lives=done.lives)

    def PurgeOrder(self, request: sync_pb2.PurgeOrderRequest,
                   context: grpc.ServicerContext) -> sync_pb2.PurgeRequest:
        self._caller(context, Kind.SITE)
        return self._replica.last_purge_order()

    # --- analyse: range digests, rows, repairs (analysis.py) ------------------------------

    def Ranges(self, request: sync_pb2.RangesRequest,
               context: grpc.ServicerContext) -> sync_pb2.RangesReply:
        return self._analysis.ranges(request, context)

    def Rows(self, request: sync_pb2.RowsRequest,
             context: grpc.ServicerContext) -> sync_pb2.RowsReply:
        return self._analysis.rows(request, context)

    def Repair(self, request: sync_pb2.RepairRequest,
               context: grpc.ServicerContext) -> sync_pb2.RepairReply:
        return self._analysis.repair(request, context)


    def Exchange(self, request: sync_pb2.ExchangeRequest,
                 context: grpc.ServicerContext) -> sync_pb2.ExchangeReply:
        caller = self._caller(context, Kind.SITE, Kind.ADMIN)
        if caller.kind is Kind.SITE and caller.name != self._site:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{caller.name} may not start exchanges here (admin or this node only)")
        if self._exchanger is None:
            self._refuse(context, grpc.StatusCode.UNIMPLEMENTED, "no peers configured")
        return self._exchanger(request.peer)


class JoinService:
    """The SyncNode service of a site that has no database yet (join.py): the snapshot
    calls, from a coordinator only; every other call is refused saying why."""

    def __init__(self, restorer: Restorer, watcher: BundleWatcher, site: str,
                 siege: str | None) -> None:
        """``siege``: the only site that may send the copy (``[node] siege``)."""
        self._restorer = restorer
        self._site = site
        self._siege = siege
        self._gate = Gatekeeper(watcher, site)
        for method in sync_pb2.DESCRIPTOR.services_by_name["SyncNode"].methods:
            if not hasattr(self, method.name):
                setattr(self, method.name, self._not_joined)

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode,
                why: str) -> NoReturn:
        self._gate.refuse(context, code, why)

    def _coordinator(self, context: grpc.ServicerContext) -> PeerIdentity:
        caller = self._gate.caller(context, Kind.SITE)
        # A copy carries the whole database, its triggers included: more than relaying
        # events gives. Only the configured siège, with the relay role.
        if not caller.has_role(Role.RELAY) or caller.name != self._siege:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{caller.name} may not send this site a copy of a database: only "
                         f"the configured siège ({self._siege}) may")
        return caller

    def _not_joined(self, request: object, context: grpc.ServicerContext) -> NoReturn:
        what = "resync" if self._restorer.resync else "join"
        self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                     f"{self._site} waits for the siège's copy of the database: run "
                     f"`siege-ctl {what} {self._site}` at the siège")

    def RestoreStatus(self, request: sync_pb2.RestoreStatusRequest,  # noqa: N802 (gRPC)
                      context: grpc.ServicerContext) -> sync_pb2.RestoreStatusReply:
        self._coordinator(context)
        return sync_pb2.RestoreStatusReply(received=self._restorer.status(request.join_id),
                                           joined=self._restorer.joined.is_set())

    def Restore(self, request_iterator: Iterator[sync_pb2.SnapshotChunk],  # noqa: N802
                context: grpc.ServicerContext) -> sync_pb2.RestoreReply:
        caller = self._coordinator(context)
        try:
            return self._restorer.receive(request_iterator)
        except JoinError as exc:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except grpc.RpcError:
            raise  # the stream was cut: the siège resumes
        except Exception as exc:  # noqa: BLE001 - said to the siège, not retried blindly
            log.exception("[%s] restoring %s's copy failed", self._site, caller.name)
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"restoring {caller.name}'s copy failed at {self._site}: "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())}. The database "
                         "there is as it was; see that node's log")


def peer_host(peer: str) -> str | None:
    """The host of a gRPC peer string ("ipv4:10.0.0.5:51234", "ipv6:[fe80::1]:51234")."""
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0]
    if kind == "ipv4" and host:
        return host
    if kind == "ipv6" and host.startswith("[") and host.endswith("]"):
        return host
    return None


def add_to_server(service: SyncService | JoinService, server: grpc.Server) -> None:
    """Serve ``service`` on ``server``, decoding the requests here rather than in gRPC.

    Why not the generated ``add_SyncNodeServicer_to_server``: with it, gRPC decodes each
    request itself and answers bytes that are not the expected message with INTERNAL
    ("Exception deserializing request!") plus a traceback in this node's log — a peer's
    garbage would look like this node's bug. Decoded here, it is refused as the caller's
    mistake: INVALID_ARGUMENT naming the message, one log line (found by tests/test_hostile.py).
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    descriptor = sync_pb2.DESCRIPTOR.services_by_name["SyncNode"]
    for method in descriptor.methods:
        request: type[Message] = getattr(sync_pb2, method.input_type.name)
        reply: type[Message] = getattr(sync_pb2, method.output_type.name)
        behaviour = getattr(service, method.name)
        if method.client_streaming and method.server_streaming:
            raise NotImplementedError(f"{method.name}: no bidirectional call is served")
        if method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _stream_decoding(service, behaviour, request),
                response_serializer=reply.SerializeToString)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _decoding(service, behaviour, request),
                response_serializer=reply.SerializeToString)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _decoding(service, behaviour, request),
                response_serializer=reply.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def _decode(service: SyncService | JoinService, kind: type[Message], raw: bytes,
            context: grpc.ServicerContext) -> Message:
    try:
        return kind.FromString(raw)
    except DecodeError as exc:
        service._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"{context.peer()} sent bytes that are not a "
                        f"{kind.DESCRIPTOR.full_name} message ({exc})")


def _decoding(service: SyncService | JoinService, behaviour: Callable[..., object],
              kind: type[Message]) -> Callable[[bytes, grpc.ServicerContext], object]:
    def handle(raw: bytes, context: grpc.ServicerContext) -> object:
        return behaviour(_decode(service, kind, raw, context), context)

    return handle


def _stream_decoding(service: SyncService | JoinService, behaviour: Callable[..., object],
                     kind: type[Message]
                     ) -> Callable[[Iterator[bytes], grpc.ServicerContext], object]:
    def handle(raws: Iterator[bytes], context: grpc.ServicerContext) -> object:
        return behaviour((_decode(service, kind, raw, context) for raw in raws), context)

    return handle
