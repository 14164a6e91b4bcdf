"""The mesh PKI (``siege_sync.certs``) and ``siege-certs``: real files, real TLS, no mocks."""

# ruff: noqa: E402  (GRPC_VERBOSITY must be set before grpc is imported)

from __future__ import annotations

import os

os.environ["GRPC_VERBOSITY"] = "ERROR"

import shutil
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from siege_sync.certs import (
    Authority,
    Bundle,
    CertError,
    Kind,
    PeerIdentity,
    Reason,
    Role,
    days_to_expiry,
    from_auth_context,
    from_pem,
    is_revoked,
    load_bundle,
    parse_crl,
    validate_site_id,
    verify_chain,
    write_bundle,
)
from siege_sync.certs import cli as certs_cli
from siege_sync.certs.identity import validate_ip
from siege_sync.certs.index import Status

MESH = "acme"
PROJECT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path / "ca", MESH)


def issue_bundle(ca: Authority, site: str, tmp_path: Path, relay: bool = False) -> Bundle:
    out = write_bundle(tmp_path / "bundles" / site, ca.issue_site(site, relay=relay))
    return load_bundle(out)


# ----- the CA ----------------------------------------------------------------------------------


def test_init_creates_a_p256_ca_with_private_key_and_empty_crl(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even with a permissive umask the key is never group/world readable
    try:
        ca = Authority.create(tmp_path / "ca", MESH, days=100)
    finally:
        os.umask(old_umask)
    root = tmp_path / "ca"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "ca.crt", "ca.key", "crl.pem", "index.json"
    ]
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    assert mode(root / "ca.key") == 0o600
    assert mode(root) == 0o700
    cert = cert_of(root / "ca.crt")
    key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://acme"]
    assert 99 <= (cert.not_valid_after_utc - datetime.now(UTC)).days <= 100
    crl = parse_crl((root / "crl.pem").read_bytes(), ca.ca_pem)
    assert crl.serials == frozenset() and crl.number == 1
    assert crl.next_update is not None and crl.next_update > datetime.now(UTC) + timedelta(days=20)
    assert Authority.open(root).mesh == MESH


def test_init_refuses_to_overwrite_a_ca(ca: Authority) -> None:
    before = ca.paths.key.read_bytes()
    with pytest.raises(CertError, match="already holds a CA"):
        Authority.create(ca.paths.root, MESH)
    assert ca.paths.key.read_bytes() == before


def test_init_refuses_a_non_empty_directory_and_a_bad_mesh(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CertError, match="not empty"):
        Authority.create(tmp_path, MESH)
    with pytest.raises(CertError, match="bad mesh name"):
        Authority.create(tmp_path / "ca", "Acme Shops")


def test_open_refuses_a_ca_key_readable_by_others(ca: Authority) -> None:
    ca.paths.key.chmod(0o640)
    with pytest.raises(CertError, match=f"chmod 600 {ca.paths.key}"):
        Authority.open(ca.paths.root)


# ----- site and admin certificates -------------------------------------------------------------


def test_issue_site_writes_a_bundle_with_identity_roles_and_sans(
    ca: Authority, tmp_path: Path
) -> None:
    issued = ca.issue_site(
        "lyon", relay=True, dns=["Lyon.Example.NET"], ips=["192.0.2.10", "2001:db8::1"], days=90
    )
    out = write_bundle(tmp_path / "lyon-bundle", issued)
    assert sorted(p.name for p in out.iterdir()) == [
        "bundle.toml", "ca.crt", "crl.pem", "site.crt", "site.key"
    ]
    assert mode(out / "site.key") == 0o600
    assert mode(out) == 0o700
    cert = cert_of(out / "site.crt")
    key = serialization.load_pem_private_key((out / "site.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lyon"
    san = sans(cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://acme/lyon", "urn:siege-sync:role:relay", "urn:siege-sync:role:site"
    ]
    assert san.get_values_for_type(x509.DNSName) == [
        "lyon.site.siege-sync.internal", "lyon", "lyon.example.net"
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ip_address("192.0.2.10"), ip_address("2001:db8::1")
    ]
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 89 <= (cert.not_valid_after_utc - datetime.now(UTC)).days <= 90
    ident = from_pem((out / "site.crt").read_bytes())
    assert ident == PeerIdentity(
        mesh=MESH, name="lyon", kind=Kind.SITE, roles=frozenset({Role.SITE, Role.RELAY}),
        serial=cert.serial_number, not_after=cert.not_valid_after_utc,
    )
    assert ident.has_role("relay") and "relay" in ident.roles
    assert ident.spiffe_id == "spiffe://acme/lyon"
    manifest = tomllib.loads((out / "bundle.toml").read_text())
    assert manifest["name"] == "lyon" and manifest["mesh"] == MESH
    assert manifest["roles"] == ["relay", "site"]
    assert manifest["serial"] == f"{cert.serial_number:x}"
    verify_chain((out / "site.crt").read_bytes(), (out / "ca.crt").read_bytes())
    assert 88 <= days_to_expiry((out / "site.crt").read_bytes()) <= 90
    # RFC 5280 / web PKI profile as cryptography's verifier understands it, both directions.
    policy = PolicyBuilder().store(Store([ca.ca_cert]))
    policy.build_server_verifier(x509.DNSName("lyon")).verify(cert, [])
    policy.build_client_verifier().verify(cert, [])
    bundle = load_bundle(out)
    assert bundle.identity == ident and bundle.key_pem == issued.key_pem


def test_plain_site_has_only_the_site_role(ca: Authority) -> None:
    ident = from_pem(ca.issue_site("paris").cert_pem)
    assert ident.roles == frozenset({Role.SITE}) and not ident.has_role(Role.RELAY)


def test_issue_admin_is_client_only_with_the_admin_role(ca: Authority, tmp_path: Path) -> None:
    out = write_bundle(tmp_path / "alice", ca.issue_admin("alice", days=30))
    assert sorted(p.name for p in out.iterdir()) == [
        "admin.crt", "admin.key", "bundle.toml", "ca.crt", "crl.pem"
    ]
    assert mode(out / "admin.key") == 0o600
    cert = cert_of(out / "admin.crt")
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://acme/admin/alice", "urn:siege-sync:role:admin"
    ]
    assert sans(cert).get_values_for_type(x509.DNSName) == []
    ident = load_bundle(out).identity
    assert (ident.kind, ident.name, ident.roles) == (Kind.ADMIN, "alice", frozenset({Role.ADMIN}))
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(Store([ca.ca_cert])).build_server_verifier(
            x509.DNSName("alice")
        ).verify(cert, [])


def test_second_live_certificate_and_name_clashes_are_refused(ca: Authority) -> None:
    ca.issue_site("lyon")
    with pytest.raises(CertError, match="already has a valid certificate.*siege-certs renew lyon"):
        ca.issue_site("lyon", relay=True)
    with pytest.raises(CertError, match="already the name of a site"):
        ca.issue_admin("lyon")
    ca.issue_admin("alice")
    with pytest.raises(CertError, match="already the name of an admin"):
        ca.issue_site("alice")
    assert len(ca.index().records) == 2


@pytest.mark.parametrize("site", ["a", "lyon-2", "0", "x" * 63])
def test_valid_site_ids(site: str) -> None:
    assert validate_site_id(site) == site


@pytest.mark.parametrize("site", ["", "Lyon", "lyon_2", "-lyon", "lyon-", "x" * 64, "é", "a.b"])
def test_bad_site_ids_are_refused_with_the_rule(ca: Authority, site: str) -> None:
    with pytest.raises(CertError, match="bad site id.*lowercase letters, digits and '-'"):
        ca.issue_site(site)


def test_bad_ip_and_dns_are_refused(ca: Authority) -> None:
    with pytest.raises(CertError, match="bad IP address '10.0.0.300'"):
        ca.issue_site("lyon", ips=["10.0.0.300"])
    with pytest.raises(CertError, match="bad DNS name"):
        ca.issue_site("lyon", dns=["*.example.net"])
    assert str(validate_ip(" ::1 ")) == "::1"
    assert ca.index().records == ()


def test_validity_cannot_outlast_the_ca(tmp_path: Path) -> None:
    ca = Authority.create(tmp_path / "ca", MESH, days=10)
    with pytest.raises(CertError, match="CA expires on .*at most --days"):
        ca.issue_site("lyon", days=11)
    assert ca.issue_site("lyon", days=9).record.kind is Kind.SITE


def test_concurrent_issues_are_all_recorded(ca: Authority) -> None:
    errors: list[BaseException] = []

    def issue(n: int) -> None:
        try:
            Authority.open(ca.paths.root).issue_site(f"site-{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=issue, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ca.index().names() == [f"site-{n}" for n in range(8)]


# ----- revocation, renewal, listing ------------------------------------------------------------


def test_revoke_by_name_regenerates_a_signed_crl(ca: Authority) -> None:
    lyon = ca.issue_site("lyon")
    paris = ca.issue_site("paris")
    revoked = ca.revoke("lyon", Reason.KEY_COMPROMISE)
    assert [r.serial for r in revoked] == [lyon.record.serial]
    crl_pem = ca.paths.crl.read_bytes()
    assert is_revoked(crl_pem, lyon.record.serial, ca.ca_pem)
    assert not is_revoked(crl_pem, paris.record.serial, ca.ca_pem)
    crl = x509.load_pem_x509_crl(crl_pem)
    assert crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(lyon.record.serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert parse_crl(crl_pem).number == 2
    record = ca.index().get(lyon.record.serial)
    assert record.status(datetime.now(UTC)) is Status.REVOKED
    assert record.reason is Reason.KEY_COMPROMISE
    with pytest.raises(CertError, match="no certificate left to revoke"):
        ca.revoke("lyon")
    # after a compromise the site may be issued a fresh certificate
    assert ca.issue_site("lyon").record.serial != lyon.record.serial


def test_revoke_by_serial_prefix_and_unknown_names(ca: Authority) -> None:
    lyon = ca.issue_site("lyon")
    ca.issue_admin("alice")
    serial = f"{lyon.record.serial:x}"
    assert [r.serial for r in ca.revoke(serial[:10])] == [lyon.record.serial]
    with pytest.raises(CertError, match="already revoked"):
        ca.revoke(serial)
    with pytest.raises(CertError, match="unknown name or serial 'nantes'.*alice, lyon"):
        ca.revoke("nantes")


def test_renew_supersedes_then_revoke_by_name_covers_the_superseded(
    ca: Authority, tmp_path: Path
) -> None:
    first = ca.issue_site("lyon", relay=True, dns=["lyon.example.net"], ips=["192.0.2.10"])
    out = write_bundle(tmp_path / "lyon", first)
    renewed, old = ca.renew("lyon", days=30, revoke_old=False)
    write_bundle(out, renewed)  # rotated in place: the site re-reads it
    bundle = load_bundle(out)
    assert bundle.identity.serial == renewed.record.serial != first.record.serial
    assert bundle.identity.roles == frozenset({Role.SITE, Role.RELAY})
    assert renewed.key_pem != first.key_pem
    new_cert = x509.load_pem_x509_certificate(renewed.cert_pem)
    assert sans(new_cert) == sans(x509.load_pem_x509_certificate(first.cert_pem))
    assert old.superseded_by == renewed.record.serial and old.revoked_at is None
    now = datetime.now(UTC)
    statuses = {item.record.serial: item.status for item in ca.listing(now)}
    assert statuses == {first.record.serial: Status.SUPERSEDED, renewed.record.serial: Status.VALID}
    assert not is_revoked(ca.crl_pem, first.record.serial)  # superseded still works until expiry
    revoked = ca.revoke("lyon")
    assert {r.serial for r in revoked} == {first.record.serial, renewed.record.serial}
    with pytest.raises(CertError, match="revoked.*siege-certs issue lyon"):
        ca.renew("lyon")


def test_renew_with_revoke_old_and_unknown_name(ca: Authority, tmp_path: Path) -> None:
    first = ca.issue_admin("alice")
    renewed, old = ca.renew("alice")  # the previous one is revoked (issue 20)
    assert old.reason is Reason.SUPERSEDED
    assert is_revoked(renewed.crl_pem, first.record.serial, ca.ca_pem)
    assert renewed.identity.kind is Kind.ADMIN
    with pytest.raises(CertError, match="unknown name 'bob'.*alice"):
        ca.renew("bob")


def test_listing_statuses_over_time(ca: Authority) -> None:
    ca.issue_site("paris", days=10)
    ca.issue_site("lyon", days=100)
    later = datetime.now(UTC) + timedelta(days=50)
    rows = [(i.record.name, i.status, i.days_left) for i in ca.listing(later)]
    assert [r[:2] for r in rows] == [("lyon", Status.VALID), ("paris", Status.EXPIRED)]
    assert rows[0][2] in (49, 50) and rows[1][2] in (-41, -40)
    # an expired certificate is no longer live: issuing again is allowed
    assert ca.issue_site("paris", now=later).record.name == "paris"


# ----- chain, CRL and bundle checks ------------------------------------------------------------


def test_verify_chain_refuses_another_ca_and_expiry(ca: Authority, tmp_path: Path) -> None:
    other = Authority.create(tmp_path / "other", "other")
    cert = ca.issue_site("lyon", days=5).cert_pem
    verify_chain(cert, ca.ca_pem)
    with pytest.raises(CertError, match="not issued by the CA"):
        verify_chain(cert, other.ca_pem)
    later = datetime.now(UTC) + timedelta(days=6)
    with pytest.raises(CertError, match="expired on .*renew"):
        verify_chain(cert, ca.ca_pem, now=later)
    assert days_to_expiry(cert, now=later) == -2
    with pytest.raises(CertError, match="not a CA certificate"):
        verify_chain(cert, cert)


def test_a_crl_from_another_ca_is_refused(ca: Authority, tmp_path: Path) -> None:
    other = Authority.create(tmp_path / "other", "other")
    with pytest.raises(CertError, match="not signed by this mesh's CA"):
        is_revoked(other.crl_pem, 1, ca.ca_pem)
    with pytest.raises(CertError, match="not a PEM X.509 CRL"):
        parse_crl(b"garbage")
    assert not parse_crl(ca.refresh_crl(days=1)).is_stale()
    assert parse_crl(ca.crl_pem).is_stale(datetime.now(UTC) + timedelta(days=2))


def test_load_bundle_says_what_is_wrong(ca: Authority, tmp_path: Path) -> None:
    lyon = issue_bundle(ca, "lyon", tmp_path).directory
    paris = issue_bundle(ca, "paris", tmp_path).directory
    with pytest.raises(CertError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")

    (lyon / "site.key").chmod(0o644)
    with pytest.raises(CertError, match=f"chmod 600 {lyon / 'site.key'}"):
        load_bundle(lyon)
    (lyon / "site.key").chmod(0o600)

    shutil.copy2(paris / "site.key", lyon / "site.key")
    with pytest.raises(CertError, match="does not belong to"):
        load_bundle(lyon)
    (lyon / "site.key").unlink()
    (lyon / "crl.pem").unlink()
    with pytest.raises(CertError, match="incomplete, missing site.key, crl.pem"):
        load_bundle(lyon)

    other = Authority.create(tmp_path / "other", "other")
    shutil.copy2(other.paths.cert, paris / "ca.crt")
    with pytest.raises(CertError, match="not issued by the CA"):
        load_bundle(paris)


def test_load_bundle_refuses_a_certificate_revoked_by_its_crl(
    ca: Authority, tmp_path: Path
) -> None:
    bundle = issue_bundle(ca, "lyon", tmp_path)
    ca.revoke("lyon")
    (bundle.directory / "crl.pem").write_bytes(ca.crl_pem)
    with pytest.raises(CertError, match="is revoked: ask the mesh admin"):
        load_bundle(bundle.directory)


def test_write_bundle_refuses_another_identitys_directory(ca: Authority, tmp_path: Path) -> None:
    out = write_bundle(tmp_path / "b", ca.issue_site("lyon"))
    with pytest.raises(CertError, match="holds the bundle of 'lyon'"):
        write_bundle(out, ca.issue_site("paris"))


def _forge(ca: Authority, uris: list[str], cn: str) -> bytes:
    key = serialization.load_pem_private_key(ca.paths.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    leaf = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.ca_cert.subject)
        .public_key(leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("uris", "cn", "message"),
    [
        (["spiffe://acme/lyon", "urn:siege-sync:role:site", "urn:siege-sync:role:admin"], "lyon",
         "do not fit a site"),
        (["spiffe://acme/admin/bob", "urn:siege-sync:role:site"], "bob", "do not fit an? admin"),
        (["spiffe://acme/lyon", "spiffe://acme/paris", "urn:siege-sync:role:site"], "lyon",
         "2 SPIFFE ids"),
        (["spiffe://acme/lyon", "urn:siege-sync:role:site"], "paris", "common name"),
        (["spiffe://acme/a/b/c", "urn:siege-sync:role:site"], "c", "not a siege-sync identity"),
    ],
)
def test_from_pem_refuses_malformed_identities(
    ca: Authority, uris: list[str], cn: str, message: str
) -> None:
    with pytest.raises(CertError, match=message):
        from_pem(_forge(ca, uris, cn))


def test_from_auth_context_as_a_dict(ca: Authority) -> None:
    pem = ca.issue_site("lyon", relay=True).cert_pem
    ctx = {
        "x509_pem_cert": [pem],
        "peer_uri": [b"spiffe://acme/lyon", b"urn:siege-sync:role:relay"],
        "transport_security_type": [b"ssl"],
    }
    ident = from_auth_context(ctx, mesh=MESH)
    assert (ident.name, ident.roles) == ("lyon", frozenset({Role.SITE, Role.RELAY}))
    with pytest.raises(CertError, match="no client certificate"):
        from_auth_context({"transport_security_type": [b"ssl"]})
    with pytest.raises(CertError, match="not 'other'"):
        from_auth_context(ctx, mesh="other")
    with pytest.raises(CertError, match="do not include"):
        from_auth_context({**ctx, "peer_uri": [b"spiffe://acme/paris"]})
    with pytest.raises(CertError, match="gRPC reports SPIFFE id"):
        from_auth_context({"x509_pem_cert": [pem], "peer_spiffe_id": [b"spiffe://acme/paris"]})


# ----- the command line ------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = certs_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_flow_init_issue_list_revoke_crl_renew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "ca")
    assert cli(capsys, "init", "--dir", d, "--mesh", MESH, "--days", "400")[0] == 0
    code, out, _ = cli(capsys, "issue", "paris", "--dir", d, "--relay",
                       "--dns", "paris.example.net", "--ip", "192.0.2.7", "--days", "20")
    assert code == 0 and "spiffe://acme/paris" in out
    bundle = load_bundle(tmp_path / "ca" / "bundles" / "paris")
    assert bundle.identity.roles == frozenset({Role.SITE, Role.RELAY})
    assert mode(bundle.directory / "site.key") == 0o600
    assert cli(capsys, "issue", "lyon", "--dir", d, "--out", str(tmp_path / "lyon"))[0] == 0
    assert load_bundle(tmp_path / "lyon").identity.name == "lyon"
    assert cli(capsys, "issue-admin", "alice", "--dir", d)[0] == 0
    assert load_bundle(tmp_path / "ca" / "bundles" / "alice").identity.kind is Kind.ADMIN

    code, out, _ = cli(capsys, "list", "--dir", d)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("mesh acme")
    assert lines[1].split() == ["NAME", "KIND", "ROLES", "SERIAL", "NOT-AFTER", "DAYS-LEFT",
                                "STATUS"]
    table = [line.split() for line in lines[2:5]]
    assert [(r[0], r[1], r[2], r[6]) for r in table] == [
        ("alice", "admin", "admin", "valid"),
        ("lyon", "site", "site", "valid"),
        ("paris", "site", "relay,site", "valid"),
    ]
    assert table[2][3] == f"{bundle.identity.serial:x}"[:12] and table[2][5] in ("19", "20")
    assert "warning: site paris expires in" in out and "renew paris" in out

    code, out, _ = cli(capsys, "revoke", "lyon", "--dir", d, "--reason", "cessation-of-operation")
    assert code == 0 and "revoked site lyon" in out
    crl_file = tmp_path / "latest.crl"
    assert cli(capsys, "crl", "--dir", d, "--out", str(crl_file))[0] == 0
    lyon_serial = load_bundle(tmp_path / "lyon").identity.serial
    assert is_revoked(crl_file.read_bytes(), lyon_serial, bundle.ca_pem)
    code, out, _ = cli(capsys, "crl", "--dir", d)
    assert code == 0 and out.startswith("-----BEGIN X509 CRL-----")

    code, out, _ = cli(capsys, "renew", "paris", "--dir", d)
    assert code == 0 and "revoked" in out and "crl.pem" in out
    renewed = load_bundle(tmp_path / "ca" / "bundles" / "paris")
    assert renewed.identity.serial != bundle.identity.serial
    assert renewed.identity.roles == bundle.identity.roles
    code, out, _ = cli(capsys, "list", "--dir", d)
    statuses = [(line.split()[0], line.split()[-1]) for line in out.splitlines()[2:6]]
    assert statuses == [("alice", "valid"), ("lyon", "revoked"), ("paris", "revoked"),
                        ("paris", "valid")]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siege_sync.certs.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


@dataclass
class CliCase:
    args: list[str]
    message: str
    setup: list[list[str]] = field(default_factory=list)
    key_mode: int | None = None


CLI_ERRORS = {
    "missing CA dir": CliCase(["list", "--dir", "{tmp}/nowhere"], "does not exist: create the CA"),
    "no CA yet": CliCase(["issue", "lyon", "--dir", "{tmp}/empty"], "run siege-certs init"),
    "init twice": CliCase(["init", "--dir", "{ca}", "--mesh", MESH], "already holds a CA"),
    "key perms": CliCase(["list", "--dir", "{ca}"], "chmod 600 {ca}/ca.key", key_mode=0o644),
    "unknown site": CliCase(["revoke", "nantes", "--dir", "{ca}"],
                            "unknown name or serial 'nantes': known names are lyon"),
    "unknown renew": CliCase(["renew", "nantes", "--dir", "{ca}"], "unknown name 'nantes'"),
    "duplicate": CliCase(["issue", "lyon", "--dir", "{ca}"], "already has a valid certificate"),
    "bad site id": CliCase(["issue", "Lyon_2", "--dir", "{ca}"], "bad site id 'Lyon_2'"),
    "bad ip": CliCase(["issue", "nice", "--ip", "192.0.2.300", "--dir", "{ca}"],
                      "bad IP address '192.0.2.300'"),
}


@pytest.fixture(scope="module")
def cli_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    ca = Authority.create(base / "ca", MESH)
    write_bundle(base / "lyon", ca.issue_site("lyon"))
    (base / "empty").mkdir()
    return base


@pytest.mark.parametrize("case", CLI_ERRORS.values(), ids=list(CLI_ERRORS))
def test_cli_errors_exit_2_with_a_message_and_no_traceback(cli_ca: Path, case: CliCase) -> None:
    def fill(text: str) -> str:
        return text.format(tmp=cli_ca, ca=cli_ca / "ca")

    key = cli_ca / "ca" / "ca.key"
    if case.key_mode is not None:
        key.chmod(case.key_mode)
    try:
        result = run_cli(*[fill(a) for a in case.args], cwd=cli_ca)
    finally:
        key.chmod(0o600)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("siege-certs: error: ")
    assert fill(case.message) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "siege-certs"
    assert script.exists(), "run .venv/bin/pip install -e '.[test]'"
    result = subprocess.run([str(script), "init", "--dir", str(tmp_path / "ca"), "--mesh", "m"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "created the CA of mesh m" in result.stdout


# ----- a real mTLS handshake -------------------------------------------------------------------

METHOD = "/siege.test.Echo/Call"


@contextmanager
def mtls_server(bundle: Bundle) -> Iterator[tuple[int, list[PeerIdentity]]]:
    """A loopback gRPC server requiring a client certificate from the bundle's CA."""
    seen: list[PeerIdentity] = []

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            seen.append(from_auth_context(context.auth_context(), mesh=MESH))
        except CertError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return request

    handler = grpc.method_handlers_generic_handler(
        "siege.test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(bundle.key_pem, bundle.cert_pem)], root_certificates=bundle.ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield port, seen
    finally:
        server.stop(None)


def call(port: int, client: Bundle, server_name: str, ca_pem: bytes | None = None) -> bytes:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem or client.ca_pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        result: bytes = channel.unary_unary(METHOD)(b"ping", timeout=5)
        return result


def test_mtls_handshake_carries_the_callers_identity_and_roles(
    ca: Authority, tmp_path: Path
) -> None:
    paris = issue_bundle(ca, "paris", tmp_path)
    lyon = issue_bundle(ca, "lyon", tmp_path, relay=True)
    nice = issue_bundle(ca, "nice", tmp_path)
    alice = load_bundle(write_bundle(tmp_path / "alice", ca.issue_admin("alice")))
    with mtls_server(paris) as (port, seen):
        assert call(port, lyon, "paris") == b"ping"
        assert call(port, nice, "paris") == b"ping"
        assert call(port, alice, "paris") == b"ping"
    assert [(p.name, p.kind, p.roles) for p in seen] == [
        ("lyon", Kind.SITE, frozenset({Role.SITE, Role.RELAY})),
        ("nice", Kind.SITE, frozenset({Role.SITE})),
        ("alice", Kind.ADMIN, frozenset({Role.ADMIN})),
    ]
    assert seen[0].serial == lyon.identity.serial
    # the server side can check revocation on the identity it read from the handshake
    ca.revoke("nice")
    assert parse_crl(ca.crl_pem, ca.ca_pem).is_revoked(seen[1].serial)


def test_mtls_refuses_another_mesh_and_a_wrong_server_name(ca: Authority, tmp_path: Path) -> None:
    paris = issue_bundle(ca, "paris", tmp_path)
    lyon = issue_bundle(ca, "lyon", tmp_path)
    other = Authority.create(tmp_path / "other", MESH)  # same mesh name, different CA key
    intruder = load_bundle(write_bundle(tmp_path / "intruder", other.issue_site("lyon")))
    with mtls_server(paris) as (port, seen):
        with pytest.raises(grpc.RpcError) as refused:
            call(port, intruder, "paris", ca_pem=paris.ca_pem)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as pinned:
            call(port, lyon, "nice")  # the server is not the site the client meant
        assert pinned.value.code() is grpc.StatusCode.UNAVAILABLE
        assert call(port, lyon, "paris") == b"ping"
    assert [p.name for p in seen] == ["lyon"]
