"""Every source transaction signed by its origin: sealed when published, checked on receipt.

The last event of each source transaction carries a ``Seal`` (events.proto): the serial of
its origin's certificate and an ECDSA P-256 signature, made with that certificate's key, over
the event's bytes without the seal. The seal is encoded last, so those bytes are the event's
bytes up to the seal's encoding: nothing is ever re-serialized. Through ``prev_hash`` a sealed
event vouches for its origin's whole chain up to it; the applier checks the links
(``apply._check_chain``), this module the seals. A relay passes events on byte for byte: it
can neither forge another site's transaction nor alter one (issue 20).

Certificates travel in the first batch of every stream (``Batch.certificates``): the sender's
own and every one it keeps, except those the receiver says it holds (``certificates_held``).
Each is checked against the mesh CA (signed by it, a site's) and kept in ``SYNC$STATE``
(``cert:<serial>``), so that this node can check seals and pass the certificate on.

A transaction whose seal is missing or does not verify, or whose chain breaks inside a sealed
transaction, is refused as forged (``Forged``) — the fault of whoever sent it, never parking
its origin: the genuine copy may come by another path. A seal naming a certificate not known
here yet waits (``Unknown``) like an event whose parent has not arrived.

Must never alter an event's bytes, nor keep a certificate the mesh CA did not sign.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from firebird.driver import Connection

from ...certs import Bundle, CertError, Kind, from_pem, load_bundle, verify_chain
from ...proto import events_pb2
from . import capture

_CONTEXT = b"siege-sync seal v1\x00"  # what is signed starts with it: no other use of the key
_TAG = b"\xa2\x06"  # field 100 (Event.seal), length-delimited
_STATE = "cert:"  # + serial in hex: a certificate kept (PEM)
_ALGORITHM = ec.ECDSA(hashes.SHA256())


class Forged(Exception):
    """A transaction its origin did not sign as it is (the sender is at fault)."""


class Unknown(Exception):
    """A seal names a certificate this node has not received yet."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _serial_bytes(serial: int) -> bytes:
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


def _suffix(seal: events_pb2.Seal) -> bytes:
    data = seal.SerializeToString(deterministic=True)
    return _TAG + _varint(len(data)) + data


class _Recent:
    """``bundle()`` asked at most once a second: the daemon's re-reads the bundle's files
    (about 40 µs), which on every transaction cost more than half of signing it."""

    def __init__(self, bundle: Callable[[], Bundle], every_s: float = 1.0) -> None:
        self._bundle = bundle
        self._every_s = every_s
        self._value: Bundle | None = None
        self._at = 0.0

    def __call__(self) -> Bundle:
        now = time.monotonic()
        if self._value is None or now - self._at >= self._every_s:
            self._value, self._at = self._bundle(), now
        return self._value


class Sealer:
    """Signs with the node's current certificate key (``bundle()``: a renewed bundle signs
    within a second of being installed)."""

    def __init__(self, bundle: Callable[[], Bundle]) -> None:
        self._bundle = _Recent(bundle)
        self._keys: dict[bytes, ec.EllipticCurvePrivateKey] = {}

    def seal(self, unsigned: bytes) -> bytes:
        """The event's bytes with its seal: ``unsigned`` (serialized without one) + seal."""
        bundle = self._bundle()
        key = self._keys.get(bundle.key_pem)
        if key is None:
            loaded = serialization.load_pem_private_key(bundle.key_pem, password=None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self._keys = {bundle.key_pem: loaded}
            key = loaded
        signature = key.sign(_CONTEXT + unsigned, _ALGORITHM)
        return unsigned + _suffix(events_pb2.Seal(serial=_serial_bytes(bundle.identity.serial),
                                                  signature=signature))


def sealer_for(bundle_dir: Path | None) -> Sealer | None:
    """The sealer of a command that publishes outside ``run`` (``publish``, ``upgrade``, a
    resync's last publish): the bundle of the node's config; None without one."""
    if bundle_dir is None:
        return None
    bundle = load_bundle(bundle_dir)
    return Sealer(lambda: bundle)


class Verifier:
    """Checks seals against the certificates this node keeps; learns new ones."""

    def __init__(self, bundle: Callable[[], Bundle]) -> None:
        """``bundle()``: the node's bundle (mesh CA, revocation list, its own certificate).
        The methods read and keep certificates through the caller's connection."""
        self._bundle = _Recent(bundle)
        self._lock = threading.Lock()
        self._keys: dict[int, tuple[str, ec.EllipticCurvePublicKey]] = {}

    def learn(self, con: Connection, pems: Iterable[bytes]) -> list[str]:
        """Check and keep certificates a stream brought; what was refused, in words."""
        bundle = self._bundle()
        problems = []
        for pem in pems:
            try:
                ident = from_pem(pem)
                if ident.kind is not Kind.SITE or ident.serial in self._keys:
                    continue  # (known: checked when it was kept; every push brings one)
                verify_chain(pem, bundle.ca_pem, check_time=False)
            except CertError as exc:
                problems.append(f"a certificate sent with the events was refused: {exc}")
                continue
            name = f"{_STATE}{ident.serial:x}"
            if capture.get_state(con, name) is None:
                capture.set_state(con, name, pem.decode("ascii"))
            self._remember(ident.serial, pem)
        return problems

    def held(self, con: Connection) -> list[str]:
        """The serials (hex) of the certificates kept here: a peer need not send them."""
        return [name[len(_STATE):] for name in capture.states_starting(con, _STATE)]

    def certificates(self, con: Connection) -> list[bytes]:
        """Every certificate kept here, and this node's own: what a stream sends first."""
        kept = list(capture.states_starting(con, _STATE).values())
        own = self._bundle().cert_pem
        return [own, *(p.encode("ascii") for p in kept if p and p.encode("ascii") != own)]

    def check(self, con: Connection, site: str, events: list[events_pb2.Event],
              bodies: list[bytes]) -> None:
        """The transaction ``events`` (whole, in order) of ``site``: raise ``Forged`` unless
        its last event is sealed by a certificate of ``site`` and its events chain to it,
        ``Unknown`` when that certificate has not reached this node yet."""
        last, body = events[-1], bodies[-1]
        first = events[0].seq
        what = f"{site}'s transaction #{first}-{last.seq}"
        if not last.HasField("seal"):
            raise Forged(f"{what} carries no signature of {site}")
        suffix = _suffix(last.seal)
        if not body.endswith(suffix):
            raise Forged(f"{what}: its signature is not where {site} puts it")
        serial = int.from_bytes(last.seal.serial, "big")
        known = self._key(con, serial)
        if known is None:
            raise Unknown(f"{what} is signed with certificate {serial:x}, not "
                          "received here yet (it comes with the next stream)")
        for i in range(1, len(events)):
            if events[i].prev_hash != hashlib.sha256(bodies[i - 1]).digest():
                raise Forged(f"{what}: its event #{events[i].seq} does not follow #"
                             f"{events[i - 1].seq} as {site} chained them (altered on the way)")
        holder, key = known
        if holder != site:
            raise Forged(f"{what} is signed with {holder}'s certificate, not {site}'s")
        if self._bundle().revocations.is_revoked(serial):
            raise Forged(f"{what} is signed with a revoked certificate of {site}")
        try:
            key.verify(last.seal.signature, _CONTEXT + body[:-len(suffix)], _ALGORITHM)
        except InvalidSignature:
            raise Forged(f"{what}: {site}'s signature does not match its bytes (altered on "
                         "the way)") from None

    def _key(self, con: Connection, serial: int) -> tuple[str, ec.EllipticCurvePublicKey] | None:
        found = self._keys.get(serial)
        if found is not None:
            return found
        pem = capture.get_state(con, f"{_STATE}{serial:x}")
        if pem is None:
            own = self._bundle()
            if own.identity.serial != serial:
                return None
            pem = own.cert_pem.decode("ascii")
        return self._remember(serial, pem.encode("ascii"))

    def _remember(self, serial: int, pem: bytes) -> tuple[str, ec.EllipticCurvePublicKey]:
        cert = x509.load_pem_x509_certificate(pem)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        with self._lock:
            self._keys[serial] = (from_pem(pem).name, key)
            return self._keys[serial]
