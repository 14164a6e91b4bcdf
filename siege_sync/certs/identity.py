"""What a mesh certificate says about its holder: mesh, name, kind, roles.

Owns the naming rules (site ids, admin names, mesh names, extra DNS names and IP addresses)
and the layout of a certificate's subject alternative names:

* ``spiffe://<mesh>/<site>`` (a site) or ``spiffe://<mesh>/admin/<name>`` (an admin): exactly
  one SPIFFE URI;
* one ``urn:siege-sync:role:<role>`` URI per role (``site``, ``relay``, ``admin``). Measured
  with grpcio 1.85: gRPC sets ``peer_spiffe_id`` only for a certificate with exactly one URI
  SAN, so for these certificates it is absent; all URIs are in ``peer_uri`` and
  ``x509_subject_alternative_name``, and ``from_auth_context`` reads the PEM
  (``x509_pem_cert``) anyway;
* for a site, the DNS name ``<site>.site.siege-sync.internal`` (``pinned_name``): a client
  dialling any address pins the server with ``grpc.ssl_target_name_override`` set to it, so
  the TLS handshake of the very connection it uses proves the server is that site (Python's
  gRPC shows a client no server certificate to read a SPIFFE id from). No other certificate
  may carry that name: the namespace is reserved (``validate_dns_name`` refuses it as an
  extra name and ``from_certificate`` refuses a certificate naming another site in it).
  Also the bare site id (what certificates before issue 20 were pinned by; no client pins it
  any more), plus any extra DNS names / IPs.

Reads that identity back from a certificate (``from_pem``) or from a gRPC server's
``context.auth_context()`` (``from_auth_context``).

Must never decide whether a certificate is trusted: the TLS handshake (or
``chain.verify_chain``) does that first; this module only reads what a trusted certificate
says, and refuses one that is malformed or contradicts itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import CertError

ROLE_URN_PREFIX = "urn:siege-sync:role:"
ADMIN_PATH = "admin"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"^{_LABEL}$")
_MESH_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$")
_DNS_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# Reserved for the names clients pin (".internal": a top-level name for private use, never
# delegated in public DNS).
PINNED_SUFFIX = ".site.siege-sync.internal"
RESERVED_SUFFIX = ".siege-sync.internal"


class Kind(StrEnum):
    """Who holds a certificate: a site (a node) or an admin (``siege-ctl``)."""

    SITE = "site"
    ADMIN = "admin"


class Role(StrEnum):
    """What a certificate's holder may do; compares equal to its string (``"relay"``)."""

    SITE = "site"
    RELAY = "relay"
    ADMIN = "admin"


@dataclass(frozen=True)
class PeerIdentity:
    """The identity a mesh certificate carries."""

    mesh: str
    name: str
    kind: Kind
    roles: frozenset[Role]
    serial: int
    not_after: datetime

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.mesh, self.name, self.kind)

    def has_role(self, role: Role | str) -> bool:
        return Role(role) in self.roles


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise CertError(
            f"bad {what} {value!r}: use 1 to 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'lyon-2')"
        )
    return value


def validate_site_id(site: str) -> str:
    """Return ``site`` if it is a valid site id, else raise ``CertError`` saying why."""
    return _check_name(site, "site id")


def validate_admin_name(name: str) -> str:
    """Return ``name`` if it is a valid admin name (same rule as a site id)."""
    return _check_name(name, "admin name")


def validate_mesh(mesh: str) -> str:
    """Return ``mesh`` if it is a valid mesh name (a SPIFFE trust domain)."""
    if not isinstance(mesh, str) or not _MESH_RE.match(mesh):
        raise CertError(
            f"bad mesh name {mesh!r}: use 1 to 63 lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (e.g. 'acme-shops')"
        )
    return mesh


def validate_dns_name(name: str) -> str:
    """Return ``name`` lowercased if it is a valid host name for an extra DNS SAN (never one
    of the reserved names clients pin a site by)."""
    lowered = name.strip().lower().rstrip(".")
    if not lowered.isascii():
        raise CertError(f"bad DNS name {name!r}: give its ASCII (punycode, 'xn--...') form")
    if len(lowered) > 253 or not _DNS_RE.match(lowered):
        raise CertError(
            f"bad DNS name {name!r}: use labels of letters, digits and '-' separated by dots "
            "(e.g. 'lyon.example.net'), no wildcard"
        )
    if lowered.endswith(RESERVED_SUFFIX) or lowered == RESERVED_SUFFIX[1:]:
        raise CertError(
            f"bad DNS name {name!r}: names ending in {RESERVED_SUFFIX} are reserved for the "
            "identity siege-certs gives every site; give the host name the site is reached by"
        )
    return lowered


def pinned_name(site: str) -> str:
    """The DNS name a client pins the server of ``site`` by (``lyon.site.siege-sync.internal``);
    only the certificate of ``site`` carries it."""
    return f"{site}{PINNED_SUFFIX}"


def validate_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP address for an IP SAN, or raise ``CertError`` saying what is expected."""
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        raise CertError(
            f"bad IP address {address!r}: give one IPv4 or IPv6 address such as 192.0.2.10 "
            "or 2001:db8::10 (no port, no mask)"
        ) from None


def spiffe_id(mesh: str, name: str, kind: Kind | str) -> str:
    """The SPIFFE id of a site (``spiffe://mesh/site``) or admin (``spiffe://mesh/admin/x``)."""
    if Kind(kind) is Kind.ADMIN:
        return f"spiffe://{mesh}/{ADMIN_PATH}/{name}"
    return f"spiffe://{mesh}/{name}"


def role_uri(role: Role | str) -> str:
    """The URI SAN that grants ``role``: ``urn:siege-sync:role:<role>``."""
    return f"{ROLE_URN_PREFIX}{Role(role).value}"


def roles_for(kind: Kind | str, relay: bool = False) -> frozenset[Role]:
    """The roles a certificate of ``kind`` carries."""
    if Kind(kind) is Kind.ADMIN:
        return frozenset({Role.ADMIN})
    return frozenset({Role.SITE, Role.RELAY}) if relay else frozenset({Role.SITE})


def parse_spiffe_id(uri: str) -> tuple[str, str, Kind]:
    """``spiffe://mesh/site`` or ``spiffe://mesh/admin/name`` -> (mesh, name, kind)."""
    if not uri.startswith("spiffe://"):
        raise CertError(f"{uri!r} is not a SPIFFE id")
    rest = uri[len("spiffe://"):]
    parts = rest.split("/")
    if len(parts) == 2 and parts[1]:
        mesh, name, kind = parts[0], parts[1], Kind.SITE
    elif len(parts) == 3 and parts[1] == ADMIN_PATH and parts[2]:
        mesh, name, kind = parts[0], parts[2], Kind.ADMIN
    else:
        raise CertError(
            f"{uri!r} is not a siege-sync identity (expected spiffe://<mesh>/<site> or "
            "spiffe://<mesh>/admin/<name>)"
        )
    try:
        validate_mesh(mesh)
        _check_name(name, "name")
    except CertError as exc:
        raise CertError(f"{uri!r} is not a siege-sync identity: {exc}") from None
    return mesh, name, kind


def _roles_from_uris(uris: Iterable[str]) -> frozenset[Role]:
    roles: set[Role] = set()
    known = {r.value for r in Role}
    for uri in uris:
        if uri.startswith(ROLE_URN_PREFIX):
            value = uri[len(ROLE_URN_PREFIX):]
            if value in known:  # a role this version does not know grants nothing
                roles.add(Role(value))
    return frozenset(roles)


def from_certificate(cert: x509.Certificate) -> PeerIdentity:
    """Read the identity a (trusted) mesh certificate carries."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertError(
            "the certificate has no subject alternative names: it was not issued by siege-certs"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise CertError(
            f"the certificate carries {len(spiffe)} SPIFFE ids instead of one: "
            "it was not issued by siege-certs"
        )
    mesh, name, kind = parse_spiffe_id(spiffe[0])
    roles = _roles_from_uris(uris)
    allowed = {Role.ADMIN} if kind is Kind.ADMIN else {Role.SITE, Role.RELAY}
    required = Role.ADMIN if kind is Kind.ADMIN else Role.SITE
    if required not in roles or not roles <= allowed:
        raise CertError(
            f"the certificate of {kind.value} {name!r} carries roles "
            f"{sorted(r.value for r in roles)} that do not fit a {kind.value}: refusing it"
        )
    own = pinned_name(name) if kind is Kind.SITE else None
    foreign = sorted(d for d in san.get_values_for_type(x509.DNSName)
                     if d.lower().endswith(RESERVED_SUFFIX) and d.lower() != own)
    if foreign:
        raise CertError(
            f"the certificate of {kind.value} {name!r} also claims {', '.join(foreign)}, "
            "names reserved for other sites' identities: refusing it (an impostor's "
            "certificate)"
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != name:
        raise CertError(
            f"the certificate's common name does not match its SPIFFE id {spiffe[0]!r}: "
            "refusing it"
        )
    return PeerIdentity(
        mesh=mesh,
        name=name,
        kind=kind,
        roles=roles,
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )


def load_certificate(pem: bytes, what: str = "certificate") -> x509.Certificate:
    """Parse one PEM certificate, or raise ``CertError`` naming ``what``."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError):
        raise CertError(f"the {what} is not a PEM X.509 certificate") from None


def from_pem(pem: bytes) -> PeerIdentity:
    """Read the identity of a PEM mesh certificate (``site.crt``, ``x509_pem_cert``...)."""
    return from_certificate(load_certificate(pem))


def _first(ctx: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    values = list(ctx.get(key, ()) or ())
    if not values:
        return None
    value = values[0]
    return value.encode() if isinstance(value, str) else bytes(value)


def from_auth_context(
    auth_context: Mapping[str, Iterable[bytes]], mesh: str | None = None
) -> PeerIdentity:
    """The caller's identity from a gRPC server's ``context.auth_context()``.

    Reads the peer certificate (``x509_pem_cert``) that the mTLS handshake already verified
    against the mesh CA, checks it agrees with ``peer_uri`` / ``peer_spiffe_id`` when gRPC
    sets them, and, if ``mesh`` is given, that the caller belongs to that mesh. Revocation is
    not checked here: ask ``revocation.RevocationList.is_revoked(identity.serial)``.
    """
    pem = _first(auth_context, "x509_pem_cert")
    if pem is None:
        raise CertError(
            "the peer presented no client certificate (is the server using mTLS with "
            "require_client_auth=True?)"
        )
    identity = from_pem(pem)
    uris = {bytes(u).decode(errors="replace") for u in auth_context.get("peer_uri", ()) or ()}
    if uris and identity.spiffe_id not in uris:
        raise CertError(
            f"gRPC's peer URIs {sorted(uris)} do not include the certificate's "
            f"{identity.spiffe_id!r}: refusing the peer"
        )
    spiffe = _first(auth_context, "peer_spiffe_id")
    if spiffe is not None and spiffe.decode(errors="replace") != identity.spiffe_id:
        raise CertError(
            f"gRPC reports SPIFFE id {spiffe.decode(errors='replace')!r} but the certificate "
            f"says {identity.spiffe_id!r}: refusing the peer"
        )
    if mesh is not None and identity.mesh != mesh:
        raise CertError(
            f"peer {identity.name!r} belongs to mesh {identity.mesh!r}, not {mesh!r}"
        )
    return identity
