"""Whether a certificate was issued by the mesh CA and is within its validity period.

Owns ``verify_chain`` (issuer name, CA constraints, signature, validity period of both the
certificate and the CA) and ``days_to_expiry``. The mesh is one level deep: a CA signs
leaves directly; there are no intermediates.

Must never read files, nor say anything about who the holder is (that is ``identity``) or
whether it was revoked (that is ``revocation``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .errors import CertError
from .identity import load_certificate


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def check_validity(cert: x509.Certificate, now: datetime | None = None, what: str = "") -> None:
    """Raise ``CertError`` if ``cert`` is not yet valid or has expired at ``now``."""
    at = _now(now)
    label = what or f"certificate {_subject(cert)}"
    if at < cert.not_valid_before_utc:
        raise CertError(
            f"{label} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
            "check this machine's clock"
        )
    if at > cert.not_valid_after_utc:
        raise CertError(
            f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it "
            "(siege-certs renew)"
        )


def verify_certificate(
    cert: x509.Certificate,
    ca: x509.Certificate,
    now: datetime | None = None,
    check_time: bool = True,
) -> None:
    """``verify_chain`` on parsed certificates."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertError(f"{_subject(ca)} is not a CA certificate: give the mesh's ca.crt")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertError(
            f"certificate {_subject(cert)} was not issued by the CA {_subject(ca)}: "
            "it belongs to another mesh or was altered"
        ) from None
    if check_time:
        check_validity(ca, now, f"the CA {_subject(ca)}")
        check_validity(cert, now)


def verify_chain(
    cert_pem: bytes,
    ca_pem: bytes,
    now: datetime | None = None,
    check_time: bool = True,
) -> None:
    """Raise ``CertError`` unless ``cert_pem`` was signed by ``ca_pem`` and both are valid now.

    ``check_time=False`` checks the signature only (to load a bundle that expired, and say so
    elsewhere).
    """
    verify_certificate(
        load_certificate(cert_pem), load_certificate(ca_pem, "CA certificate"), now, check_time
    )


def days_to_expiry(cert_pem: bytes, now: datetime | None = None) -> int:
    """Whole days until ``cert_pem`` expires (0 on its last day, negative once expired)."""
    return days_left(load_certificate(cert_pem).not_valid_after_utc, now)


def days_left(not_after: datetime, now: datetime | None = None) -> int:
    """Whole days from ``now`` to ``not_after`` (floor: 0 on the last day, -1 the day after)."""
    return math.floor((not_after - _now(now)).total_seconds() / 86400)
