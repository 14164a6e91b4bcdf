"""A site's (or admin's) bundle: the directory it installs as is.

Owns the bundle layout — ``site.crt`` (``admin.crt``), ``site.key`` (``admin.key``, mode
0600), ``ca.crt``, ``crl.pem`` and ``bundle.toml`` describing them — writing it from a freshly
issued certificate, and loading it back for a node with every check a node needs before it
serves: all files present, the key private to its owner and matching the certificate, the
certificate signed by the bundle's CA, the CRL signed by that CA and not revoking it.

Must never sign, write outside the bundle directory, or widen a key file's permissions.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import files
from .authority import Issued
from .chain import days_left, verify_certificate
from .errors import CertError
from .identity import Kind, PeerIdentity, from_certificate, load_certificate, pinned_name
from .index import serial_hex
from .revocation import RevocationList, parse_crl

MANIFEST = "bundle.toml"
CA_FILE = "ca.crt"
CRL_FILE = "crl.pem"
FORMAT = 1


def cert_file(kind: Kind | str) -> str:
    return f"{Kind(kind).value}.crt"


def key_file(kind: Kind | str) -> str:
    return f"{Kind(kind).value}.key"


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle: bytes ready for ``grpc.ssl_*_credentials``."""

    directory: Path
    identity: PeerIdentity
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    crl_pem: bytes
    revocations: RevocationList

    def days_to_expiry(self, now: datetime | None = None) -> int:
        return days_left(self.identity.not_after, now)


def default_dir(ca_dir: Path, name: str) -> Path:
    """Where ``siege-certs issue`` writes a bundle without ``--out``."""
    return Path(ca_dir) / "bundles" / name


def _manifest(issued: Issued) -> str:
    ident = issued.identity

    def q(value: str) -> str:  # a JSON string is a valid TOML basic string
        return json.dumps(value)

    roles = ", ".join(q(r.value) for r in sorted(ident.roles))
    return (
        f"# siege-sync {ident.kind.value} bundle: install this directory as is; "
        f"{key_file(ident.kind)} is secret.\n"
        f"format = {FORMAT}\n"
        f"mesh = {q(ident.mesh)}\n"
        f"name = {q(ident.name)}\n"
        f"kind = {q(ident.kind.value)}\n"
        f"roles = [{roles}]\n"
        f"spiffe_id = {q(ident.spiffe_id)}\n"
        f"serial = {q(serial_hex(ident.serial))}\n"
        f"not_after = {ident.not_after.isoformat().replace('+00:00', 'Z')}\n"
        f"cert = {q(cert_file(ident.kind))}\n"
        f"key = {q(key_file(ident.kind))}\n"
        f"ca = {q(CA_FILE)}\n"
        f"crl = {q(CRL_FILE)}\n"
    )


def _read_manifest(directory: Path) -> dict[str, object] | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CertError(f"{path} is not valid TOML ({exc}): copy the bundle again") from None


def check_destination(directory: Path, mesh: str, name: str) -> None:
    """Refuse to write a bundle over a file or over another identity's bundle."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CertError(f"{directory} exists and is not a directory: choose another --out")
    manifest = _read_manifest(directory) if directory.is_dir() else None
    if manifest is not None and (manifest.get("mesh"), manifest.get("name")) != (mesh, name):
        raise CertError(
            f"{directory} holds the bundle of {manifest.get('name')!r} (mesh "
            f"{manifest.get('mesh')!r}): choose another --out"
        )


def write_bundle(directory: Path, issued: Issued) -> Path:
    """Write (or replace, for the same identity) the bundle of ``issued`` in ``directory``."""
    directory = Path(directory)
    ident = issued.identity
    check_destination(directory, ident.mesh, ident.name)
    files.make_private_dir(directory)
    files.write_private(directory / key_file(ident.kind), issued.key_pem)
    files.write_atomic(directory / cert_file(ident.kind), issued.cert_pem)
    files.write_atomic(directory / CA_FILE, issued.ca_pem)
    files.write_atomic(directory / CRL_FILE, issued.crl_pem)
    files.write_atomic(directory / MANIFEST, _manifest(issued).encode("utf-8"))
    return directory


def _file_name(manifest: dict[str, object], key: str, default: str, directory: Path) -> str:
    value = manifest.get(key, default)
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise CertError(f"{directory / MANIFEST}: {key} must be a file name in the bundle")
    return value


def load_bundle(directory: Path) -> Bundle:
    """Load and check a bundle directory; ``CertError`` says what is wrong and what to do."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CertError(f"bundle directory {directory} does not exist")
    manifest = _read_manifest(directory) or {}
    kind_text = manifest.get("kind")
    if kind_text in {k.value for k in Kind}:
        kind = Kind(str(kind_text))
    else:
        admin_only = (directory / "admin.crt").exists() and not (directory / "site.crt").exists()
        kind = Kind.ADMIN if admin_only else Kind.SITE
    names = {
        "cert": _file_name(manifest, "cert", cert_file(kind), directory),
        "key": _file_name(manifest, "key", key_file(kind), directory),
        "ca": _file_name(manifest, "ca", CA_FILE, directory),
        "crl": _file_name(manifest, "crl", CRL_FILE, directory),
    }
    missing = [n for n in names.values() if not (directory / n).is_file()]
    if missing:
        raise CertError(
            f"bundle {directory} is incomplete, missing {', '.join(missing)}: copy the whole "
            "directory written by siege-certs issue"
        )
    key_path = directory / names["key"]
    key_pem = files.read_private(key_path)
    cert_pem = (directory / names["cert"]).read_bytes()
    ca_pem = (directory / names["ca"]).read_bytes()
    crl_pem = (directory / names["crl"]).read_bytes()
    cert = load_certificate(cert_pem, f"file {directory / names['cert']}")
    ca = load_certificate(ca_pem, f"file {directory / names['ca']}")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertError(f"{key_path} is not an unencrypted PEM private key") from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertError(
            f"{key_path} does not belong to {directory / names['cert']} (a bundle being "
            "replaced, or files from two bundles): install one complete bundle"
        )
    verify_certificate(cert, ca, check_time=False)
    identity = from_certificate(cert)
    if manifest and (manifest.get("mesh"), manifest.get("name")) != (identity.mesh, identity.name):
        raise CertError(
            f"{directory / MANIFEST} describes {manifest.get('name')!r} but the certificate is "
            f"{identity.spiffe_id!r}: install one complete bundle"
        )
    if identity.kind is Kind.SITE and pinned_name(identity.name) not in [
            d.lower() for d in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]:
        raise CertError(
            f"the certificate in {directory} ({identity.name}) lacks the name "
            f"{pinned_name(identity.name)} that peers check a site's identity by (it was "
            f"issued by an older siege-certs): run `siege-certs renew {identity.name}` and "
            "install the new bundle"
        )
    revocations = parse_crl(crl_pem, ca_pem)
    if revocations.is_revoked(identity.serial):
        raise CertError(
            f"the certificate in {directory} ({identity.name}, serial "
            f"{serial_hex(identity.serial)}) is revoked: ask the mesh admin for a new bundle"
        )
    return Bundle(
        directory=directory,
        identity=identity,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_pem,
        crl_pem=crl_pem,
        revocations=revocations,
    )
