"""Who may start a call on this node, and how many at once: checked before any work.

Owns the one server interceptor every service of a node goes through — the sync service,
the coordinator's, health checks and reflection alike. Before a request is parsed (the
handlers receive bytes and decode them only after admission), it:

* reads the caller's identity from its TLS certificate and refuses a certificate of another
  mesh, a malformed one, one the mesh CA did not sign itself (the handshake lets a chain
  through an intermediate CA pass) or one the node's revocation list names
  (UNAUTHENTICATED);
* serves only the sites of its ``[peers]`` and its siège (a closed mesh: a certificate the
  CA issued to a site nobody configured gets nothing), and admin certificates;
* keeps reflection, which describes every call this node serves, to admin certificates
  (PERMISSION_DENIED);
* says when the node's revocation list is past its next update, and once it is
  ``STALE_GRACE`` past, refuses sites' calls (FAILED_PRECONDITION; operators still get in);
* bounds the calls in progress: at most ``per_peer`` per plain site (one that does not
  coordinate), and plain sites together leave ``reserve`` worker threads free, so a flood
  of streams from one or several sites never keeps the siège, a stand-in, an operator or
  the node itself from being answered (RESOURCE_EXHAUSTED, retried by the caller's next
  round);
* closes a call streaming requests (Push) whose caller sends nothing for ``idle_s`` seconds;
* keeps apart the calls that only wait (``waiting`` methods: ``Listen``, tidings.py): at most
  one per caller — a new one ends the one before (a listener calls again after a dead line)
  — and ``listeners`` in all, on threads of their own, never counted with the others.

Which call a caller's kind may make (a site may not start an exchange...) stays with each
service (``gatekeeper.Gatekeeper``): this module decides only whether to start the work — and
says whose relay role counts here (``relaying_only_if_coordinator``).
Must never read or write the database, and never keep a refused call's bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from ...certs import CertError, Kind, PeerIdentity, Role, from_auth_context, verify_chain
from .transport import BundleWatcher

log = logging.getLogger(__name__)

REFLECTION_PREFIX = "/grpc.reflection."
STALE_LOG_S = 3600.0  # a revocation list past its next update is logged this often


@dataclass(frozen=True)
class Limits:
    """``workers``: the server's threads (each call in progress holds one); ``reserve``:
    how many of them only the privileged may take; ``per_peer``: calls in progress per
    plain site; ``idle_s``: the longest silence of a caller streaming requests;
    ``listeners``: waiting calls at once, on threads added to ``workers``."""

    workers: int = 16
    reserve: int = 6
    per_peer: int = 4
    idle_s: float = 120.0
    listeners: int = 0

    @property
    def threads(self) -> int:
        """The server's thread pool."""
        return self.workers + self.listeners


@dataclass
class _Call:
    who: str
    privileged: bool
    context: grpc.ServicerContext
    streaming: bool
    waiting: bool = False
    last: float = field(default_factory=time.monotonic)


class Admission(grpc.ServerInterceptor):
    """The interceptor (``interceptors=[Admission(...)]`` when the server is built).

    ``privileged()``: the sites whose calls may use the reserve — the configured siège and
    the stand-ins; admin certificates and the node's own certificate always may."""

    def __init__(self, watcher: BundleWatcher, site: str, limits: Limits,
                 privileged: Callable[[], set[str]],
                 members: Callable[[], set[str]] | None = None,
                 waiting: frozenset[str] = frozenset()) -> None:
        """``members()``: the sites this node serves (its ``[peers]``, the siège); None:
        every site of the mesh (a node waiting for its copy serves the siège's).
        ``waiting``: the full names of the methods whose calls only wait
        (``/siege.v1.SyncNode/Listen``)."""
        self._waiting = waiting
        self._watcher = watcher
        self._site = site
        self._limits = limits
        self._privileged = privileged
        self._members = members
        self._lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._ids = iter(range(1, 2**63))
        self._identities: dict[bytes, PeerIdentity] = {}  # parsed certificates, by PEM
        self._stale_said = float("-inf")
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._close_idle, name="idle-streams",
                                          daemon=True)
        self._watchdog.start()

    @property
    def limits(self) -> Limits:
        return self._limits

    def close(self) -> None:
        self._stopping.set()
        self._watchdog.join(timeout=5)

    # --- the interceptor --------------------------------------------------------------

    def intercept_service(self, continuation: Callable[[Any], Any],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        return _admitted(handler, self, details.method)

    def admit(self, context: grpc.ServicerContext, method: str, streaming: bool) -> int:
        """Check the caller and take a slot; the slot's id (``release`` it), or abort.
        ``streaming``: the caller streams requests (the idle watchdog looks after it)."""
        ident = self._identity(context)
        if ident.kind is Kind.SITE and ident.name != self._site and \
                self._members is not None and ident.name not in self._members():
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{ident.name} is not a site this node serves: add [peers.{ident.name}] "
                         f"to {self._site}'s config and restart its node, if it belongs to "
                         "the mesh")
        if method.startswith(REFLECTION_PREFIX) and ident.kind is not Kind.ADMIN:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{ident.name} ({ident.kind}) may not use reflection; it needs an "
                         "admin certificate")
        privileged = (ident.kind is Kind.ADMIN or ident.name == self._site
                      or ident.name in self._privileged())
        if method in self._waiting:
            return self._admit_waiting(context, method, ident.name)
        limits = self._limits
        with self._lock:
            working = [c for c in self._calls.values() if not c.waiting]
            mine = sum(1 for c in working if c.who == ident.name)
            plain = sum(1 for c in working if not c.privileged)
            total = len(working)
            why = None
            if not privileged and mine >= limits.per_peer:
                why = f"{mine} calls of {ident.name} are in progress (at most {limits.per_peer})"
            elif total >= limits.workers:
                why = f"{total} calls are in progress (at most {limits.workers})"
            elif not privileged and plain >= limits.workers - limits.reserve:
                why = (f"{plain} calls of sites are in progress; the last {limits.reserve} "
                       "threads are kept for the siège, its stand-ins and operators")
            else:
                slot = next(self._ids)
                self._calls[slot] = _Call(ident.name, privileged, context, streaming)
        if why is not None:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{method} from {ident.name} refused: {why}; try again later")
        return slot

    def _admit_waiting(self, context: grpc.ServicerContext, method: str, who: str) -> int:
        with self._lock:
            before = [s for s, c in self._calls.items() if c.waiting and c.who == who]
            listening = sum(1 for c in self._calls.values() if c.waiting)
            if not before and listening >= self._limits.listeners:
                why = f"{listening} calls waiting for news are open (at most " \
                      f"{self._limits.listeners})"
            else:
                why = None
                for old in before:  # its line died, or it called again: the new one counts
                    self._calls.pop(old).context.cancel()
                slot = next(self._ids)
                self._calls[slot] = _Call(who, False, context, False, waiting=True)
        if why is not None:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{method} from {who} refused: {why}; try again later")
        return slot

    def heard(self, slot: int) -> None:
        """The caller of a streaming call sent a message."""
        call = self._calls.get(slot)
        if call is not None:
            call.last = time.monotonic()

    def release(self, slot: int) -> None:
        with self._lock:
            self._calls.pop(slot, None)

    # --- the parts --------------------------------------------------------------------

    def _identity(self, context: grpc.ServicerContext) -> PeerIdentity:
        bundle, changed = self._watcher.refresh()
        auth = context.auth_context()
        pem = next(iter(auth.get("x509_pem_cert", ()) or ()), b"")
        if changed:
            self._identities.clear()  # a new CA or revocation list: judge them again
        ident = self._identities.get(pem)
        if ident is None:
            try:
                ident = from_auth_context(auth, mesh=bundle.identity.mesh)
                # Issued by the mesh CA itself: the handshake accepts a chain through a CA
                # the mesh CA signed, whatever its pathlen:0 says (measured, grpcio 1.85).
                verify_chain(bytes(pem), bundle.ca_pem)
            except CertError as exc:
                self._refuse(context, grpc.StatusCode.UNAUTHENTICATED,
                             f"{context.peer()}: {exc}")
            if len(self._identities) > 256:
                self._identities.clear()
            self._identities[pem] = ident
        if bundle.revocations.is_revoked(ident.serial):
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED,
                         f"{ident.name}'s certificate (serial {ident.serial:x}) is revoked")
        stale = bundle.revocations.staleness()
        if stale is not None:
            if time.monotonic() - self._stale_said > STALE_LOG_S:
                self._stale_said = time.monotonic()
                log.warning("[%s] %s", self._site, stale)
            if bundle.revocations.is_expired() and ident.kind is not Kind.ADMIN and \
                    ident.name != self._site:
                self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                             f"at {self._site}: {stale}")
        return ident

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, why: str):
        log.warning("[%s] refused: %s", self._site, why)
        context.abort(code, why)
        raise AssertionError("abort raises")

    def _close_idle(self) -> None:
        while not self._stopping.wait(min(5.0, self._limits.idle_s / 4)):
            now = time.monotonic()
            with self._lock:
                idle = [c for c in self._calls.values()
                        if c.streaming and now - c.last > self._limits.idle_s]
            for call in idle:
                log.warning("[%s] closed a stream of %s silent for %.0f s", self._site,
                            call.who, now - call.last)
                call.context.cancel()


def _admitted(handler: grpc.RpcMethodHandler, gate: Admission,
              method: str) -> grpc.RpcMethodHandler:
    """``handler``, receiving bytes and decoding them only once ``gate`` admitted the call."""
    decode = handler.request_deserializer or (lambda raw: raw)
    encode = handler.response_serializer
    streaming = handler.request_streaming  # (what the idle watchdog looks at)

    def requests(slot: int, raw: Iterator[bytes]) -> Iterator[Any]:
        for message in raw:
            gate.heard(slot)
            yield decode(message)

    if handler.request_streaming and handler.response_streaming:
        def stream_stream(raw: Iterator[bytes], context: grpc.ServicerContext) -> Iterator:
            slot = gate.admit(context, method, streaming)
            try:
                yield from handler.stream_stream(requests(slot, raw), context)
            finally:
                gate.release(slot)
        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=encode)
    if handler.request_streaming:
        def stream_unary(raw: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            slot = gate.admit(context, method, streaming)
            try:
                return handler.stream_unary(requests(slot, raw), context)
            finally:
                gate.release(slot)
        return grpc.stream_unary_rpc_method_handler(stream_unary, response_serializer=encode)
    if handler.response_streaming:
        def unary_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator:
            slot = gate.admit(context, method, streaming)
            try:
                yield from handler.unary_stream(decode(raw), context)
            finally:
                gate.release(slot)
        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=encode)

    def unary_unary(raw: bytes, context: grpc.ServicerContext) -> Any:
        slot = gate.admit(context, method, streaming)
        try:
            return handler.unary_unary(decode(raw), context)
        finally:
            gate.release(slot)
    return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=encode)


def relaying_only_if_coordinator(ident: PeerIdentity, coordinators: set[str]) -> PeerIdentity:
    """``ident`` without its relay role unless it is one of ``coordinators`` (the siège and
    stand-ins of this node's config): a relay certificate gives its powers — other sites'
    events, purge orders, repairs, epochs — only where the config lets that site coordinate
    (issue 20). Used by the service for callers and by exchanges for the peer called."""
    if ident.has_role(Role.RELAY) and ident.name not in coordinators:
        return replace(ident, roles=ident.roles - {Role.RELAY})
    return ident
