"""The mesh PKI and ``siege-certs``. Knows nothing about sync.

One module per concept:

* ``errors``     — ``CertError``, the one exception (its message says what to do);
* ``files``      — private files (0600 from creation), atomic replacement, locking;
* ``identity``   — what a certificate says: mesh, name, kind, roles (``PeerIdentity``);
* ``chain``      — whether a certificate was issued by the mesh CA and is in its validity;
* ``revocation`` — the CRL: build, parse, ``is_revoked``;
* ``index``      — the CA's ledger of issued certificates and their status;
* ``authority``  — the CA directory: init, issue, renew, revoke, CRL;
* ``bundle``     — what a site installs, written and loaded with every check;
* ``cli``        — the ``siege-certs`` command.

A node needs only: ``load_bundle``, ``from_auth_context`` (who is calling), ``pinned_name``
(the name a client pins a server's site id by), ``parse_crl`` / ``is_revoked``,
``verify_chain``, ``days_to_expiry`` and ``days_left``.
"""

from .authority import Authority, Issued
from .bundle import Bundle, load_bundle, write_bundle
from .chain import days_left, days_to_expiry, verify_chain
from .errors import CertError
from .identity import (
    Kind,
    PeerIdentity,
    Role,
    from_auth_context,
    from_pem,
    pinned_name,
    validate_site_id,
)
from .revocation import Reason, RevocationList, is_revoked, parse_crl

__all__ = [
    "Authority",
    "Bundle",
    "CertError",
    "Issued",
    "Kind",
    "PeerIdentity",
    "Reason",
    "RevocationList",
    "Role",
    "days_left",
    "days_to_expiry",
    "from_auth_context",
    "from_pem",
    "is_revoked",
    "load_bundle",
    "parse_crl",
    "pinned_name",
    "validate_site_id",
    "verify_chain",
    "write_bundle",
]
