"""Mutual TLS for the node: server credentials, channels to peers, the peer's certificate.

Owns how a node presents its bundle (written by ``siege-certs issue``) and how it dials a
peer: only the mesh CA is trusted, every channel pins the peer's site id whatever address it
dials (the reserved DNS name ``<site>.site.siege-sync.internal`` only that site's certificate
carries, checked by the TLS handshake of the connection the calls use), messages are
gzip-compressed. The server re-reads the
bundle when its files change, so a renewed certificate or a new revocation list applies
without a restart.

gRPC's Python API cannot check a revocation list inside the handshake nor show a client the
server's certificate: the service checks the caller's serial on every call (``service.py``),
and ``peer_identity`` reads the server's certificate with one plain TLS handshake first — for
its revocation and expiry only; who the server is, the pinned name proves on the very
connection.
Must never accept a plaintext connection.
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...certs import (
    Bundle,
    CertError,
    PeerIdentity,
    from_pem,
    load_bundle,
    pinned_name,
    verify_chain,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
# A server accepts the keepalive pings its clients send (every 30 s, above) also while a
# call carries no data — a join's restore, a resync, a long apply. gRPC's default (one ping
# in 5 minutes) answered the third with GOAWAY "too_many_pings" and cut `siege-ctl resync`
# after about a minute of silence (found by the chaos run, issue 19).
SERVER_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class BundleWatcher:
    """The node's bundle, reloaded when its files change (certificate rotation)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._bundle = load_bundle(directory)
        self._crl_floor = 0
        self._crl_newer: Callable[[int], None] | None = None

    def guard_crl(self, floor: int, newer: Callable[[int], None]) -> None:
        """Revocation lists only go forward: one numbered below ``floor`` (the highest this
        node used, kept by the caller) is refused — copying an older ``crl.pem`` back would
        un-revoke; ``newer(number)`` is told each higher number to keep."""
        number = _crl_number(self._bundle)
        if number < floor:
            raise CertError(
                f"the revocation list in {self._directory} is number {number}, older than "
                f"number {floor} this node already used (an older crl.pem copied back would "
                "un-revoke certificates): install the current one (`siege-certs crl`)")
        self._crl_floor, self._crl_newer = number, newer
        if number > floor:
            newer(number)

    def _files_stamp(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in sorted(self._directory.iterdir()):
            if path.is_file():
                st = path.stat()
                out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def refresh(self) -> tuple[Bundle, bool]:
        """The current bundle, and whether it changed since the last call."""
        with self._lock:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return self._bundle, False
            try:
                bundle = load_bundle(self._directory)
            except CertError:
                return self._bundle, False  # half-written: keep the old one until it loads
            number = _crl_number(bundle)
            if number < self._crl_floor:
                log.error("%s: the revocation list copied in is number %d, older than number "
                          "%d in use: kept the newer one; install the current crl.pem",
                          self._directory, number, self._crl_floor)
                self._stamp = stamp  # (said once per change of the files)
                return self._bundle, False
            if number > self._crl_floor and self._crl_newer is not None:
                self._crl_floor = number
                self._crl_newer(number)
            self._bundle, self._stamp = bundle, stamp
            return bundle, True


def _crl_number(bundle: Bundle) -> int:
    return bundle.revocations.number or 0


def server_credentials(watcher: BundleWatcher) -> grpc.ServerCredentials:
    """Client certificates required and checked against the mesh CA on every handshake;
    the certificate pair and CA re-read when the bundle changes."""

    def config(b: Bundle) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(b.key_pem, b.cert_pem)],
                                                         root_certificates=b.ca_pem)

    served = [watcher.bundle]  # what gRPC presents now (refresh's flag is everyone's)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        bundle, _changed = watcher.refresh()
        if bundle is served[0]:
            return None
        served[0] = bundle
        return config(bundle)

    return grpc.dynamic_ssl_server_credentials(config(watcher.bundle), fetch,
                                               require_client_authentication=True)


def channel(address: str, bundle: Bundle, peer_site: str, paced: bool = False) -> grpc.Channel:
    """``paced``: the caller paces what it reads (a bandwidth cap): keep HTTP/2's receive
    window at its small default, so the sender cannot run megabytes ahead of the pacing."""
    creds = grpc.ssl_channel_credentials(root_certificates=bundle.ca_pem,
                                         private_key=bundle.key_pem,
                                         certificate_chain=bundle.cert_pem)
    extra = [("grpc.http2.bdp_probe", 0)] if paced else []
    return grpc.secure_channel(address, creds, options=[
        *CHANNEL_OPTIONS, *extra, ("grpc.ssl_target_name_override", pinned_name(peer_site))],
        compression=grpc.Compression.Gzip)


def peer_certificate(address: str, bundle: Bundle, peer_site: str,
                     timeout: float = 10.0) -> bytes:
    """The certificate (PEM) the server at ``address`` presents for ``peer_site``, read with
    one plain TLS handshake (our client certificate included, as the server requires)."""
    host, _, port = address.rpartition(":")
    # The mesh CA only: not the system's store (loading it cost ~20 ms per exchange, and a
    # public CA has no say in this mesh). Verifies the chain and the name, as the default.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=bundle.ca_pem.decode())
    with tempfile.TemporaryDirectory() as tmp:  # ssl loads a client pair from files only
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(bundle.cert_pem)
        key.touch(0o600)
        key.write_bytes(bundle.key_pem)
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    ctx.check_hostname = True
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=pinned_name(peer_site)) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise CertError(f"{address} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def peer_identity(address: str, bundle: Bundle, peer_site: str,
                  timeout: float = 10.0) -> PeerIdentity:
    """The identity in the certificate the server at ``address`` presents, checked against
    the mesh CA, the expected site id and our revocation list."""
    pem = peer_certificate(address, bundle, peer_site, timeout)
    verify_chain(pem, bundle.ca_pem)
    ident = from_pem(pem)
    if ident.name != peer_site:
        raise CertError(f"{address} presents the certificate of {ident.name!r}, not "
                        f"{peer_site!r}")
    if bundle.revocations.is_revoked(ident.serial):
        raise CertError(f"{peer_site}'s certificate (serial {ident.serial:x}) is revoked")
    return ident


def health_check(address: str, bundle: Bundle, site: str, timeout: float) -> str | None:
    """None when the node of ``site`` answers the gRPC health check at ``address`` over
    mutual TLS (the channel pins its site id); else what went wrong, in a few words."""
    try:
        with channel(address, bundle, site) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        return ("no answer" if code in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED)
                else f"{code.name}: {exc.details()}")
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return "its node is not serving (stopping?)"
    return None
