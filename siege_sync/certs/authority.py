"""The mesh certificate authority: one CA directory, the only place that signs.

Owns the CA directory (``ca.key`` mode 0600, ``ca.crt``, ``crl.pem``, ``index.json`` which
also names the mesh) and every operation that changes it: create the CA, issue a site or
admin certificate, renew, revoke, regenerate the CRL. Each change holds the directory's lock,
reloads the index, and records a certificate in the index before handing it out — the CA
never signs what it does not record. Keys are EC P-256 (gRPC's TLS refuses Ed25519 leaves).

Must never overwrite an existing CA, issue a second live certificate for one name, let a
private key be readable by group or others, or write a site's key anywhere (that is
``bundle``); it knows nothing about sync.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import files
from .chain import days_left
from .errors import CertError
from .identity import (
    Kind,
    PeerIdentity,
    Role,
    from_certificate,
    pinned_name,
    role_uri,
    roles_for,
    spiffe_id,
    validate_admin_name,
    validate_dns_name,
    validate_ip,
    validate_mesh,
    validate_site_id,
)
from .index import Index, Record, Status, load_index, save_index, serial_hex, short_serial
from .revocation import DEFAULT_CRL_DAYS, Reason, build_crl

DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 365
BACKDATE = timedelta(minutes=5)  # tolerate sites whose clock is a little behind
ORGANIZATION = "siege-sync"


@dataclass(frozen=True)
class CaPaths:
    """Where a CA directory keeps its files."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "ca.key"

    @property
    def cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def index(self) -> Path:
        return self.root / "index.json"


@dataclass(frozen=True)
class Issued:
    """A freshly signed certificate with everything its holder installs."""

    mesh: str
    record: Record
    identity: PeerIdentity
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    crl_pem: bytes


@dataclass(frozen=True)
class Listed:
    """One row of ``siege-certs list``."""

    record: Record
    status: Status
    days_left: int


def _check_extra_names(index: Index, site: str, dns: Sequence[str]) -> None:
    """A site's extra DNS names never name another site, and no other site's names name it:
    a certificate answering to another site's id is an impostor's (issue 20)."""
    for other in index.names():
        if other == site:
            continue
        if other in dns:
            raise CertError(
                f"--dns {other!r} is the id of another site of this mesh: a certificate with "
                "that name could pass for it; give the host name this site is reached by"
            )
        if any(site in r.dns for r in index.for_name(other)):
            raise CertError(
                f"{other!r}'s certificate carries the DNS name {site!r}: a site with that id "
                f"could be mistaken for it; choose another site id, or renew {other!r} "
                "without that name"
            )


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _known(index: Index) -> str:
    names = index.names()
    return ", ".join(names) if names else "none issued yet"


class Authority:
    """An opened CA directory. Build one with ``Authority.create`` or ``Authority.open``."""

    def __init__(self, paths: CaPaths, mesh: str, ca_cert: x509.Certificate) -> None:
        self.paths = paths
        self.mesh = mesh
        self.ca_cert = ca_cert

    # ----- opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, mesh: str, days: int = DEFAULT_CA_DAYS, now: datetime | None = None
    ) -> Authority:
        """Create the mesh CA in ``directory`` (new or empty); refuse to overwrite a CA."""
        validate_mesh(mesh)
        if days < 1:
            raise CertError(f"--days must be at least 1 (got {days})")
        paths = CaPaths(Path(directory))
        if any(p.exists() for p in (paths.key, paths.cert, paths.index)):
            raise CertError(
                f"{paths.root} already holds a CA: refusing to overwrite it "
                "(use another --dir for a new mesh)"
            )
        if paths.root.exists() and not paths.root.is_dir():
            raise CertError(f"{paths.root} is not a directory: choose another --dir")
        if paths.root.is_dir() and any(paths.root.iterdir()):
            raise CertError(f"{paths.root} is not empty: give a new or empty directory to --dir")
        files.make_private_dir(paths.root)
        at = _now(now)
        with files.locked(paths.root):
            key = _new_key()
            files.create_private(paths.key, _key_pem(key))  # O_EXCL: a racing init loses here
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"siege-sync mesh CA {mesh}"),
                ]
            )
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(at - BACKDATE)
                .not_valid_after(at + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(ski, critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                    critical=False,
                )
                .add_extension(
                    x509.SubjectAlternativeName(
                        [x509.UniformResourceIdentifier(f"spiffe://{mesh}")]
                    ),
                    critical=False,
                )
                .sign(key, hashes.SHA256())
            )
            files.write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
            index = Index(mesh=mesh, crl_number=1)
            files.write_atomic(paths.crl, build_crl(cert, key, [], 1, DEFAULT_CRL_DAYS, at))
            save_index(paths.index, index)
        return cls(paths, mesh, cert)

    @classmethod
    def open(cls, directory: Path) -> Authority:
        """Open an existing CA directory, checking the CA key's permissions."""
        paths = CaPaths(Path(directory))
        if not paths.root.is_dir():
            raise CertError(
                f"CA directory {paths.root} does not exist: create the CA with "
                f"siege-certs init --dir {paths.root} --mesh NAME"
            )
        if not paths.cert.exists() and not paths.key.exists():
            raise CertError(
                f"no CA in {paths.root} yet: run siege-certs init --dir {paths.root} --mesh NAME"
            )
        for path in (paths.cert, paths.index, paths.crl):
            if not path.exists():
                raise CertError(f"{path} is missing: restore the CA directory from its backup")
        files.check_private(paths.key)
        index = load_index(paths.index)
        try:
            cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        except ValueError:
            raise CertError(f"{paths.cert} is not a PEM certificate: restore it") from None
        return cls(paths, index.mesh, cert)

    # ----- reading -------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def crl_pem(self) -> bytes:
        return self.paths.crl.read_bytes()

    def index(self) -> Index:
        return load_index(self.paths.index)

    def listing(self, now: datetime | None = None) -> list[Listed]:
        """Every certificate issued, sorted by name, kind, then issue time."""
        at = _now(now)
        records = sorted(
            self.index().records, key=lambda r: (r.name, r.kind.value, r.issued_at, r.serial)
        )
        return [Listed(r, r.status(at), days_left(r.not_after, at)) for r in records]

    # ----- signing -------------------------------------------------------------------------

    def _load_key(self) -> ec.EllipticCurvePrivateKey:
        data = files.read_private(self.paths.key)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise CertError(
                f"{self.paths.key} is encrypted, which siege-certs does not support"
            ) from None
        except ValueError:
            raise CertError(f"{self.paths.key} is not a PEM private key: restore it") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != self.ca_cert.public_key().public_numbers()  # type: ignore[union-attr]
        ):
            raise CertError(f"{self.paths.key} does not match {self.paths.cert}: restore both")
        return key

    def _check_days(self, days: int, at: datetime) -> datetime:
        if days < 1:
            raise CertError(f"--days must be at least 1 (got {days})")
        not_after = at + timedelta(days=days)
        ca_end = self.ca_cert.not_valid_after_utc
        if not_after > ca_end:
            left = days_left(ca_end, at)
            raise CertError(
                f"the CA expires on {ca_end:%Y-%m-%d} ({left} days from now): ask for at most "
                f"--days {left}, or create a new CA"
            )
        return not_after

    def _sign(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        name: str,
        kind: Kind,
        roles: frozenset[Role],
        dns: Sequence[str],
        ips: Sequence[str],
        at: datetime,
        not_after: datetime,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _new_key()
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(spiffe_id(self.mesh, name, kind))
        ]
        sans += [x509.UniformResourceIdentifier(role_uri(r)) for r in sorted(roles)]
        if kind is Kind.SITE:
            sans += [x509.DNSName(d)
                     for d in (pinned_name(name), name, *[d for d in dns if d != name])]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if kind is Kind.SITE:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        ca_ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    def _issue(
        self,
        index: Index,
        name: str,
        kind: Kind,
        roles: frozenset[Role],
        dns: Sequence[str],
        ips: Sequence[str],
        days: int,
        at: datetime,
        renewed_from: int | None = None,
    ) -> tuple[Issued, Index]:
        not_after = self._check_days(days, at)
        ca_key = self._load_key()
        cert, key = self._sign(ca_key, name, kind, roles, dns, ips, at, not_after)
        record = Record(
            serial=cert.serial_number,
            name=name,
            kind=kind,
            roles=roles,
            dns=tuple(dns),
            ips=tuple(ips),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=at,
            renewed_from=renewed_from,
        )
        issued = Issued(
            mesh=self.mesh,
            record=record,
            identity=from_certificate(cert),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.ca_pem,
            crl_pem=self.crl_pem,
        )
        return issued, index.adding(record)

    def _check_new_name(self, index: Index, name: str, kind: Kind, at: datetime) -> None:
        other = index.kind_of(name)
        if other is not None and other is not kind:
            holder = "an admin" if other is Kind.ADMIN else "a site"
            raise CertError(
                f"{name!r} is already the name of {holder}: choose another name for this "
                f"{kind.value}"
            )
        live = index.live(name, at)
        if live is not None:
            raise CertError(
                f"{kind.value} {name!r} already has a valid certificate (serial "
                f"{short_serial(live.serial)}, until {live.not_after:%Y-%m-%d}): use "
                f"siege-certs renew {name} to replace it, or revoke it first"
            )

    def issue_site(
        self,
        site: str,
        relay: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = DEFAULT_LEAF_DAYS,
        now: datetime | None = None,
    ) -> Issued:
        """Sign a site certificate (server and client auth) and record it."""
        validate_site_id(site)
        dns_names = list(dict.fromkeys(validate_dns_name(d) for d in dns))
        ip_texts = list(dict.fromkeys(str(validate_ip(a)) for a in ips))
        at = _now(now)
        with files.locked(self.paths.root):
            index = self.index()
            self._check_new_name(index, site, Kind.SITE, at)
            _check_extra_names(index, site, dns_names)
            issued, index = self._issue(
                index, site, Kind.SITE, roles_for(Kind.SITE, relay), dns_names, ip_texts, days, at
            )
            save_index(self.paths.index, index)
        return issued

    def issue_admin(
        self, name: str, days: int = DEFAULT_LEAF_DAYS, now: datetime | None = None
    ) -> Issued:
        """Sign an admin certificate (client auth only, role admin) and record it."""
        validate_admin_name(name)
        at = _now(now)
        with files.locked(self.paths.root):
            index = self.index()
            self._check_new_name(index, name, Kind.ADMIN, at)
            issued, index = self._issue(
                index, name, Kind.ADMIN, roles_for(Kind.ADMIN), (), (), days, at
            )
            save_index(self.paths.index, index)
        return issued

    def renew(
        self,
        name: str,
        days: int = DEFAULT_LEAF_DAYS,
        revoke_old: bool = True,
        now: datetime | None = None,
    ) -> tuple[Issued, Record]:
        """A fresh key and certificate for the same identity, roles and SANs.

        The previous certificate is revoked (reason: superseded) and the CRL written — a
        renewal after a lost laptop or a departed employee must not leave the old key valid
        for months (issue 20) — or, with ``revoke_old=False``, only marked superseded: it
        keeps working until it expires. Returns the new certificate and the old record.
        """
        at = _now(now)
        with files.locked(self.paths.root):
            index = self.index()
            current = [r for r in index.for_name(name) if r.superseded_by is None]
            if not current:
                raise CertError(f"unknown name {name!r}: known names are {_known(index)}")
            old = current[-1]
            if old.revoked_at is not None:
                command = "issue-admin" if old.kind is Kind.ADMIN else "issue"
                raise CertError(
                    f"the certificate of {name!r} was revoked on {old.revoked_at:%Y-%m-%d}: "
                    f"issue a new one with siege-certs {command} {name}"
                )
            # Names another site could be mistaken by, which older versions let in, go.
            others = set(index.names()) - {name}
            dns = tuple(d for d in old.dns if d not in others)
            issued, index = self._issue(
                index, name, old.kind, old.roles, dns, old.ips, days, at, old.serial
            )
            superseded = replace(old, superseded_by=issued.record.serial)
            if revoke_old:
                superseded = replace(superseded, revoked_at=at, reason=Reason.SUPERSEDED)
            index = index.replacing(superseded)
            if revoke_old:
                index = self._write_crl(index, DEFAULT_CRL_DAYS, at)
                issued = replace(issued, crl_pem=self.crl_pem)
            save_index(self.paths.index, index)
        return issued, superseded

    def _write_crl(self, index: Index, days: int, at: datetime) -> Index:
        number = index.crl_number + 1
        pem = build_crl(self.ca_cert, self._load_key(), index.revoked_entries(), number, days, at)
        files.write_atomic(self.paths.crl, pem)
        return replace(index, crl_number=number)

    def revoke(
        self,
        name_or_serial: str,
        reason: Reason | str = Reason.UNSPECIFIED,
        now: datetime | None = None,
    ) -> list[Record]:
        """Revoke by name (every certificate of it not yet revoked or expired) or by serial.

        Revoking by name includes superseded certificates: they are still accepted by TLS
        until they expire. Returns the records revoked; regenerates the CRL.
        """
        why = Reason(reason)
        at = _now(now)
        with files.locked(self.paths.root):
            index = self.index()
            target = name_or_serial.strip()
            if index.for_name(target):
                chosen = [
                    r
                    for r in index.for_name(target)
                    if r.status(at) in (Status.VALID, Status.SUPERSEDED)
                ]
                if not chosen:
                    raise CertError(
                        f"{target!r} has no certificate left to revoke (all are revoked or "
                        "expired): see siege-certs list"
                    )
            else:
                record = index.match_serial(target)
                if record is None:
                    raise CertError(
                        f"unknown name or serial {target!r}: known names are {_known(index)} "
                        "(serials: see siege-certs list)"
                    )
                if record.revoked_at is not None:
                    raise CertError(
                        f"certificate {serial_hex(record.serial)} of {record.name!r} was already "
                        f"revoked on {record.revoked_at:%Y-%m-%d}"
                    )
                chosen = [record]
            revoked = [replace(r, revoked_at=at, reason=why) for r in chosen]
            index = self._write_crl(index.replacing(*revoked), DEFAULT_CRL_DAYS, at)
            save_index(self.paths.index, index)
        return revoked

    def refresh_crl(self, days: int = DEFAULT_CRL_DAYS, now: datetime | None = None) -> bytes:
        """Re-sign the CRL with a fresh ``next_update`` (and the next number); return it."""
        at = _now(now)
        with files.locked(self.paths.root):
            index = self._write_crl(self.index(), days, at)
            save_index(self.paths.index, index)
        return self.crl_pem
