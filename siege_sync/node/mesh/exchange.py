"""One anti-entropy exchange with a peer: hello, pull what we lack, push what it lacks.

Owns the client side of a sync between two nodes. The peer's identity is its certificate
(read and checked before anything is sent); events it sends of origin X are applied only if
it is X or its certificate carries the relay role, or if we coordinate and check seals (then
any X but us); we push others' events only if ours does, or to a coordinator that takes them
(``origins.py``).
Batches are applied as they arrive: a cut connection loses at most the batch in flight, and
the next exchange starts again from the vectors, with nothing applied twice. A peer whose
merge policies differ from ours (``[policies]``, compared at every hello both ways) is
refused before anything crosses: the two would settle the same conflicts differently.
What it counts (``pulled_events``, ``pushed_events``, per table) are the shops' changes:
heartbeats cross but are not counted. ``progress`` hears how far it is after each batch
(``Moving``: of about how many), so a long exchange never goes quiet.

Must never retry forever nor hide a failure: the outcome names what went wrong.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from ...certs import Bundle, CertError, PeerIdentity, Role
from ...proto import events_pb2, sync_pb2, sync_pb2_grpc
from ..db.schema import fingerprints_comparable
from ..journal import capture, guardwatch
from ..model.config import PolicyTable, policy_refusal
from ..model.merge import Policy
from ..model.vector import Vector
from ..pipeline.apply import ApplyError, printable
from . import origins, transport
from .admission import relaying_only_if_coordinator
from .blobs import BlobError
from .outbox import PurgedHere
from .pacing import Pacer
from .replica import PeerRefused, Replica

log = logging.getLogger(__name__)

CALL_TIMEOUT = 60.0  # a hello: seconds
STREAM_TIMEOUT = 24 * 3600.0  # a pull or a push: bounded by keepalive, not by size


class ExchangeError(Exception):
    """The exchange could not be done; the message says why and what to do. ``outcome``:
    what it did before failing (events applied each way stay applied); ``unreachable``: the
    peer could not be reached at all."""

    def __init__(self, message: str, outcome: ExchangeOutcome | None = None,
                 unreachable: bool = False) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.unreachable = unreachable


@dataclass
class Moving:
    """How far an exchange is, told to ``progress`` after each batch: the changes applied
    here so far of about ``expected_in`` (what the peer's vector holds beyond ours), and
    those sent of about ``expected_out``. Heartbeats are counted in the expectations only
    (one per origin and round at most): they are estimates, for an ETA."""

    progress: Progress | None
    pulled: int = 0
    expected_in: int = 0
    sent: int = 0
    expected_out: int = 0

    def tell(self) -> None:
        if self.progress is not None:
            self.progress(self)


Progress = Callable[[Moving], None]


@dataclass
class ExchangeOutcome:
    peer: str
    pulled_events: int = 0
    pushed_events: int = 0
    clock_offset_us: int = 0
    round_trip_us: int = 0
    problems: list[str] = field(default_factory=list)
    stopped: bool = False  # ended early on request
    lost_guards: list[str] = field(default_factory=list)  # the peer's, as its hello said
    pulled_tables: Counter[str] = field(default_factory=Counter)  # pulled_events per table
    pushed_tables: Counter[str] = field(default_factory=Counter)

    def to_proto(self) -> sync_pb2.ExchangeReply:
        return sync_pb2.ExchangeReply(peer=self.peer, pulled_events=self.pulled_events,
                                      pushed_events=self.pushed_events,
                                      clock_offset_us=self.clock_offset_us,
                                      problems=self.problems, stopped=self.stopped,
                                      lost_guards=self.lost_guards,
                                      pulled_tables=dict(self.pulled_tables),
                                      pushed_tables=dict(self.pushed_tables))


def exchange(replica: Replica, bundle: Bundle, peer: str, address: str,
             timeout: float = CALL_TIMEOUT, batch_events: int = 500,
             stop: threading.Event | None = None, round_no: int = 0,
             cap_bits_per_s: float | None = None,
             progress: Progress | None = None) -> ExchangeOutcome:
    """``stop``: when set, the exchange ends at the next batch boundary (every batch is
    applied whole or not at all). ``round_no``: a coordinator's round, for which the peer
    writes its heartbeat. ``cap_bits_per_s``: a bandwidth cap for the whole exchange.
    ``progress``: told after each batch how far it is (``Moving``)."""
    pacer = Pacer(cap_bits_per_s, stop=stop) if cap_bits_per_s else None
    try:
        ident = relaying_only_if_coordinator(
            transport.peer_identity(address, bundle, peer, timeout=min(timeout, 10.0)),
            replica.coordinators())
    except (OSError, CertError) as exc:
        raise ExchangeError(f"{peer} at {address}: {_why(exc)}",
                            unreachable=isinstance(exc, OSError)) from exc
    out = ExchangeOutcome(peer)
    with transport.channel(address, bundle, peer, paced=pacer is not None) as channel:
        stub = sync_pb2_grpc.SyncNodeStub(channel)
        try:
            peer_vector, peer_holds, takes_any = _hello(replica, stub, peer, out, timeout,
                                                        round_no)
            # Streams carry as much as there is: no deadline on the whole stream (keepalive
            # pings notice a dead line), only on each call that is not a stream.
            moving = Moving(progress)
            relays = bundle.identity.has_role(Role.RELAY)
            _pull(replica, stub, ident, out, STREAM_TIMEOUT, batch_events, stop, pacer,
                  peer_vector, moving,
                  origins.takes_any_origin(relays, replica.verifier is not None))
            _push(replica, stub, bundle, peer_vector, out, STREAM_TIMEOUT, batch_events, stop,
                  pacer, peer_holds, moving,
                  origins.sending(replica.site, relays, ident, takes_any))
        except grpc.RpcError as exc:
            raise ExchangeError(f"{peer} at {address}: {exc.code().name}: {exc.details()}"
                                + _hint(exc), out) from exc
        except ExchangeError as exc:
            exc.outcome = out
            raise
    log.info("[%s] exchange with %s: %d in, %d out, clock offset %.3f s", replica.site, peer,
             out.pulled_events, out.pushed_events, out.clock_offset_us / 1e6)
    return out


@dataclass(frozen=True)
class Greeting:
    """A hello's answer and what its four timestamps say (NTP-style: immune to a slow,
    loaded line)."""

    reply: sync_pb2.HelloReply
    clock_offset_us: int  # the peer's clock minus ours
    round_trip_us: int  # the network's share of the call


def greet(replica: Replica, stub: sync_pb2_grpc.SyncNodeStub, timeout: float,
          round_no: int = 0) -> Greeting:
    """Send this node's hello (identity, versions, epoch, vector) and time it."""
    mine = replica.identity()
    reply = stub.Hello(sync_pb2.HelloRequest(
        incarnation=mine.incarnation, node_version=mine.node_version,
        schema_fingerprint=mine.schema_fingerprint, epoch=mine.epoch,
        applied=replica.vector(publish=False).to_proto(), t1_us=replica.clock.utc_now_us(),
        round=round_no, epochs=replica.epochs() if replica.siege == replica.site else {},
        policies=policies_to_proto(local_policies(replica))),
        timeout=timeout)
    t4 = replica.clock.utc_now_us()
    return Greeting(reply, ((reply.t2_us - reply.t1_us) + (reply.t3_us - t4)) // 2,
                    max((t4 - reply.t1_us) - (reply.t3_us - reply.t2_us), 0))


def _hello(replica: Replica, stub: sync_pb2_grpc.SyncNodeStub, peer: str,
           out: ExchangeOutcome, timeout: float, round_no: int = 0
           ) -> tuple[Vector, list[str], bool]:
    """The peer's vector, the certificates it keeps, whether it takes any origin's events
    (``origins.py``)."""
    mine = replica.identity()
    # Our own guards, before the pull publishes what the last applies wrote (guardwatch.py
    # counts those side effects); a lost one is logged there and shown by `status`.
    with replica.database() as con:
        guardwatch.check(con)
    greeting = greet(replica, stub, timeout, round_no)
    reply = greeting.reply
    if reply.site != peer:
        raise ExchangeError(f"dialled {peer} but it says it is {reply.site!r}")
    out.clock_offset_us = greeting.clock_offset_us
    out.round_trip_us = greeting.round_trip_us
    if reply.schema_changes:
        out.problems.append(
            f"{peer}'s schema changed since capture was installed there: "
            f"{'; '.join(reply.schema_changes)}. Those changes do not travel until "
            f"`siege-node upgrade` (or `siege-node install`, if the change is made) runs there")
    out.problems += [f"{peer}: {line}" for line in reply.kept_values]
    out.lost_guards = list(reply.lost_guards)
    for line in reply.lost_guards:
        log.warning("[%s] %s: %s", replica.site, peer, line)
    if not fingerprints_comparable(reply.schema_fingerprint, mine.schema_fingerprint):
        # Recorded by node versions that hash different things: not a schema difference.
        out.problems.append(f"{peer}'s schema fingerprint ({reply.schema_fingerprint or 'none'}) "
                            f"and this site's ({mine.schema_fingerprint or 'none'}) were made by "
                            "different node versions and are not compared: upgrade the older "
                            "node and run siege-node install there")
    elif reply.schema_fingerprint != mine.schema_fingerprint:
        out.problems.append(f"{peer}'s schema differs (fingerprint {reply.schema_fingerprint} "
                            f"here {mine.schema_fingerprint}): only what both share applies")
    try:
        peer_vector = Vector.from_proto(reply.applied)
        replica.meet(peer, reply.epoch, peer_vector, proof=list(reply.yours),
                     purged=reply.yours_purged)
        if reply.epochs and peer == replica.siege:  # once its own database is accepted
            replica.learn_epochs(reply.epochs, peer)
    except (PeerRefused, ValueError) as exc:
        raise ExchangeError(str(exc)) from exc
    refused = policy_check(replica, peer, reply)
    if refused:
        log.error("[%s] %s", replica.site, refused)
        raise ExchangeError(refused)
    return peer_vector, list(reply.certificates_held), reply.takes_any_origin


# --- merge policies: the same at both ends of an exchange, or nothing crosses -------------

def configured_policies(replica: Replica) -> Mapping[str, Policy]:
    """This node's ``[policies]``, as its applier merges with them."""
    return replica.policies


def local_policies(replica: Replica) -> PolicyTable:
    """This node's policy table: its [policies] over the tables it replicates (every table
    ever captured here: the applier merges events of each of them)."""
    return PolicyTable.of(configured_policies(replica), replica.replicated_tables())


def policies_to_proto(table: PolicyTable) -> sync_pb2.Policies:
    return sync_pb2.Policies(replicated=dict(table.replicated), elsewhere=dict(table.elsewhere))


def policies_from_proto(message: sync_pb2.Policies) -> PolicyTable:
    """A peer's table; its words end up in logs and reports, so unprintable characters are
    escaped (a real table name or policy has none)."""
    return PolicyTable({printable(t, 80): printable(p, 80) for t, p in message.replicated.items()},
                       {printable(t, 80): printable(p, 80) for t, p in message.elsewhere.items()})


def policy_check(replica: Replica, peer: str, reply: sync_pb2.HelloReply | sync_pb2.StatusReply
                 ) -> str:
    """Why no events may cross between this node and ``peer``, given what its hello (or
    status) said ("" when they agree, or when the peer is older than the check). A refusal
    the peer itself said stands even if this side sees no difference."""
    own = ""
    if reply.HasField("policies"):
        differences = local_policies(replica).differences(policies_from_proto(reply.policies))
        if differences:
            own = policy_refusal(replica.site, peer, differences, replica.siege)
    said = getattr(reply, "refused", "")
    return own or (f"{peer} refuses this node's events: {printable(said)}" if said else "")


def _pull(replica: Replica, stub: sync_pb2_grpc.SyncNodeStub, ident: PeerIdentity,
          out: ExchangeOutcome, timeout: float, batch_events: int,
          stop: threading.Event | None, pacer: Pacer | None = None,
          peer_vector: Vector | None = None, moving: Moving | None = None,
          takes_any: bool = False) -> None:
    """``takes_any``: this node takes any origin's events but its own from any site
    (``origins.py``), and asks for them."""
    have = replica.vector()
    moving = moving or Moving(None)
    if peer_vector is not None:
        moving.expected_in = sum(max(peer_vector.seq(o) - have.seq(o), 0) for o in peer_vector)
        moving.tell()
    receiver = replica.receiver(ident.name)
    request = sync_pb2.PullRequest(have=have.to_proto(), max_events_per_batch=batch_events,
                                   certificates_held=replica.certificates_held(),
                                   any_origin=takes_any)
    stream = stub.Pull(request, timeout=timeout)
    try:
        for batch in stream:
            if stop is not None and stop.is_set():
                stream.cancel()
                out.stopped = True
                break
            if not ident.has_role(Role.RELAY):
                for body in batch.events:
                    try:
                        origin = events_pb2.Event.FromString(body).origin.site
                    except Exception as exc:  # protobuf's DecodeError
                        raise ExchangeError(f"{ident.name} sent a malformed event ({exc}); "
                                            "nothing more is taken from it") from exc
                    if not origins.may_take(ident, origin, replica.site, takes_any):
                        raise ExchangeError(f"{ident.name} sent events of {origin!r} without "
                                            "the relay role; nothing more is taken from it")
            try:
                receiver.take(batch)
                if pacer is not None:
                    pacer.after(batch.SerializeToString())
                if batch.expected:
                    moving.expected_in = batch.expected
                if batch.events:
                    moving.pulled = receiver.changes
                    moving.tell()
            except (ApplyError, BlobError) as exc:
                raise ExchangeError(f"from {ident.name}: {exc}") from exc
        else:
            receiver.finish()
    finally:
        out.pulled_events += receiver.changes  # (heartbeats are not changes: not counted)
        out.pulled_tables.update(receiver.tables)
        out.problems.extend(m for m in [*receiver.refused, *receiver.busy.values()]
                            if m not in out.problems)
        receiver.close()
    if receiver.waiting:
        why = "; ".join(receiver.waiting_for) or "events of other sites"
        out.problems.append(f"{receiver.waiting} events from {ident.name} wait: {why} (they "
                            "come again next time)")


def _push(replica: Replica, stub: sync_pb2_grpc.SyncNodeStub, bundle: Bundle,
          peer_vector: Vector, out: ExchangeOutcome, timeout: float,
          batch_events: int, stop: threading.Event | None, pacer: Pacer | None = None,
          peer_holds: Sequence[str] = (), moving: Moving | None = None,
          send: origins.Sending | None = None) -> None:
    """``peer_holds``: the certificates the peer keeps (its hello), not sent again;
    ``send``: whose events (``origins.sending``; by default this node's own, or every
    origin's if it coordinates)."""
    relays = bundle.identity.has_role(Role.RELAY)
    send = send or origins.Sending(None if relays else replica.site)
    moving = moving or Moving(None)
    mine = replica.vector(publish=False)
    moving.expected_out = sum(max(mine.seq(o) - peer_vector.seq(o), 0) for o in mine
                              if send.covers(o[0]))

    def batches() -> Iterator[sync_pb2.Batch]:
        try:
            if relays and replica.proof_for(out.peer, peer_vector)[1]:
                # (its own events we held and purged: what proves it was rewound, replica.py)
                yield sync_pb2.Batch(purged_yours=True)
            for batch in replica.outgoing(peer_vector, batch_events, only_origin=send.only,
                                          peer_holds=peer_holds, skip_origin=send.skip):
                if stop is not None and stop.is_set():
                    out.stopped = True
                    return
                if pacer is not None:
                    pacer.after(batch.SerializeToString())
                yield batch
                if batch.events:
                    moving.sent += sum(1 for b in batch.events if not capture.is_heartbeat(b))
                    moving.tell()
        except PurgedHere as exc:  # (raised here, in gRPC's thread: ends the stream cleanly)
            out.problems.append(f"{out.peer}: {exc}")

    if stop is not None and stop.is_set():
        out.stopped = True
        return
    reply = stub.Push(batches(), timeout=timeout)
    out.pushed_events += reply.applied_events - reply.applied_heartbeats
    out.pushed_tables.update(dict(reply.applied_tables))
    out.problems.extend(f"at {out.peer}: {m}" for m in [*reply.refused, *reply.held])


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `siege-node run` started there, on that port?)"
    if isinstance(exc, TimeoutError | OSError) and not isinstance(exc, CertError):
        return f"unreachable ({exc}); check the address and the line"
    return str(exc)


def _hint(exc: grpc.RpcError) -> str:
    if exc.code() is grpc.StatusCode.UNAVAILABLE:
        return (" (TLS refused or the node is down: check that both certificates come from "
                "the same mesh CA and are not revoked or expired; the peer's log says which)")
    return ""
