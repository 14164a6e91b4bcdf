"""The mesh's certificate revocation list (an X.509 CRL signed by the CA).

Owns building a CRL from the revoked entries the CA's index records (``build_crl``: numbered,
dated, with a ``next_update`` after which a site should fetch a newer one) and reading one
back (``parse_crl``, ``is_revoked``), verifying its signature when the CA is given.

Must never decide what is revoked (the index in ``authority`` does), read or write files, or
keep a private key beyond the call that signs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import CertError
from .identity import load_certificate

DEFAULT_CRL_DAYS = 30
# A list past its next update is said at once; this long after, nodes refuse sites' calls
# (a revocation made since may not have reached them).
STALE_GRACE = timedelta(days=14)


class Reason(StrEnum):
    """Why a certificate was revoked (the CLI's ``--reason``)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key-compromise"
    CA_COMPROMISE = "ca-compromise"
    AFFILIATION_CHANGED = "affiliation-changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation-of-operation"

    @property
    def flag(self) -> x509.ReasonFlags:
        return {
            Reason.UNSPECIFIED: x509.ReasonFlags.unspecified,
            Reason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
            Reason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
            Reason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
            Reason.SUPERSEDED: x509.ReasonFlags.superseded,
            Reason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
        }[self]


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate, as the CRL lists it."""

    serial: int
    revoked_at: datetime
    reason: Reason = Reason.UNSPECIFIED


@dataclass(frozen=True)
class RevocationList:
    """A parsed CRL: parse it once, then ask ``is_revoked`` on every handshake."""

    number: int | None
    last_update: datetime
    next_update: datetime | None
    serials: frozenset[int]

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def is_stale(self, now: datetime | None = None) -> bool:
        """True once ``next_update`` has passed: fetch a newer CRL (``siege-certs crl``)."""
        at = now if now is not None else datetime.now(UTC)
        return self.next_update is not None and at > self.next_update

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once ``STALE_GRACE`` past ``next_update``: too old to be trusted."""
        at = now if now is not None else datetime.now(UTC)
        return self.next_update is not None and at > self.next_update + STALE_GRACE

    def staleness(self, now: datetime | None = None) -> str | None:
        """What an operator must read when the list is past its next update, else None."""
        if not self.is_stale(now) or self.next_update is None:
            return None
        refused = self.next_update + STALE_GRACE
        when = ("since " if self.is_expired(now) else "from ") + f"{refused:%Y-%m-%d}"
        return (f"the revocation list (number {self.number}) was due for renewal on "
                f"{self.next_update:%Y-%m-%d}: sites' calls are refused {when}; write a "
                "current one with `siege-certs crl --dir CA_DIR` and copy it into every "
                "site's bundle as crl.pem")


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    entries: Iterable[RevokedEntry],
    number: int,
    days: int = DEFAULT_CRL_DAYS,
    now: datetime | None = None,
) -> bytes:
    """A PEM CRL listing ``entries``, signed by the CA, valid ``days`` from ``now``."""
    if days < 1:
        raise CertError(f"a CRL must be valid at least 1 day (got {days})")
    at = now if now is not None else datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(at)
        .next_update(at + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in sorted(entries, key=lambda e: e.serial):
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not Reason.UNSPECIFIED:  # RFC 5280: omit the reason when unspecified
            revoked = revoked.add_extension(x509.CRLReason(entry.reason.flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def load_crl(crl_pem: bytes) -> x509.CertificateRevocationList:
    """Parse a PEM CRL, or raise ``CertError``."""
    try:
        return x509.load_pem_x509_crl(crl_pem)
    except (ValueError, TypeError):
        raise CertError("the CRL is not a PEM X.509 CRL: give the mesh's crl.pem") from None


def parse_crl(crl_pem: bytes, ca_pem: bytes | None = None) -> RevocationList:
    """Read a CRL; with ``ca_pem``, refuse it unless that CA signed it."""
    crl = load_crl(crl_pem)
    if ca_pem is not None:
        ca = load_certificate(ca_pem, "CA certificate")
        if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            raise CertError(
                "the CRL was not signed by this mesh's CA: get the current one with "
                "siege-certs crl"
            )
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return RevocationList(
        number=number,
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        serials=frozenset(r.serial_number for r in crl),
    )


def is_revoked(crl_pem: bytes, serial: int, ca_pem: bytes | None = None) -> bool:
    """True if ``serial`` is on the CRL (signature checked against ``ca_pem`` when given)."""
    return parse_crl(crl_pem, ca_pem).is_revoked(serial)
