"""Attacks on a closed mesh, made against real ``siege-node run`` processes (issue 20).

Three sites on a real Firebird server, each a ``siege-node run`` process serving gRPC over
mutual TLS on loopback. The certificates of the attacks are forged here with the
``cryptography`` package and the mesh CA's own key (what an operator's careless command or a
stolen CA directory gives an attacker) or issued by ``siege-certs`` and then revoked. What
this file proves:

* **Impostors by name.** A certificate carrying another site's id as an extra DNS name no
  longer passes for that site (clients pin the reserved name
  ``<site>.site.siege-sync.internal``, on the very connection they call over); one carrying
  another site's reserved name is refused by every node it calls and by the node it would
  run; ``siege-certs`` refuses to issue either.
* **Authorization before work.** A revoked certificate gets no health check, no health
  watch, no reflection, and its bytes are not parsed (garbage is refused as
  UNAUTHENTICATED, not INVALID_ARGUMENT); a site certificate gets no reflection; a site no
  node lists in its [peers] gets nothing (a closed mesh).
* **Floods.** Idle Push streams from several site certificates at once do not keep the
  siège, an operator or the node's own health check from being answered; the surplus is
  refused (RESOURCE_EXHAUSTED) and silent streams are closed. BLOB chunks no event refers
  to are not kept.
* **Chains.** A certificate under an intermediate CA the mesh CA signed is refused.
* **Revocation that holds.** An older revocation list copied back does not un-revoke
  (running or restarted); a stale one is said, then enforced; renewing revokes the old
  certificate; a password in a config others may read is refused.
* **Safety net after a restore.** (tests/test_apply.py) An empty vector does not confirm
  a site's chain.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from siege_sync.certs import (
    CertError,
    from_pem,
    load_bundle,
    pinned_name,
    verify_chain,
    write_bundle,
)
from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal.seal import Sealer
from siege_sync.node.mesh import transport
from siege_sync.node.mesh.admission import Admission, Limits
from siege_sync.node.mesh.transport import BundleWatcher, channel
from siege_sync.node.model.vector import Vector
from siege_sync.proto import events_pb2, sync_pb2, sync_pb2_grpc
from tests.test_apply import all_events
from tools.localmesh import MESH, Pki, ProcessMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20))"]
MEMBERS = ("rogue", "flood-a", "flood-b", "flood-c", "gone", "relay-x")


@pytest.fixture(scope="module")
def mesh(fb_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessMesh]:
    built = ProcessMesh(fb_server, tmp_path_factory.mktemp("mesh"), DDL)
    try:
        # Sites of the mesh the attacks below issue certificates for: nice serves them
        # (listed in its [peers], no address: they would announce themselves).
        config = Path(built.configs["nice"])
        config.write_text(config.read_text() + "".join(
            f"[peers.{name}]\n" for name in MEMBERS))
        built.kill("nice")
        built.start("nice")
        yield built
    finally:
        built.close()


def address(mesh: ProcessMesh, site: str) -> str:
    return f"127.0.0.1:{mesh.ports[site]}"


def bundle_dir(mesh: ProcessMesh, name: str) -> Path:
    return mesh.pki.folder / "bundles" / name


def forge(mesh: ProcessMesh, site: str, extra_dns: list[str], out: Path) -> Path:
    """A bundle for ``site`` whose certificate the mesh CA's key signs directly (no
    siege-certs check), carrying ``extra_dns`` besides the site's own names."""
    ca_dir = mesh.pki.folder / "ca"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"spiffe://{MESH}/{site}"),
        x509.UniformResourceIdentifier("urn:siege-sync:role:site"),
        *[x509.DNSName(d) for d in (pinned_name(site), site, *extra_dns)]]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    shutil.copytree(bundle_dir(mesh, site), out)
    (out / "site.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "site.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return out


def run_with_bundle(mesh: ProcessMesh, site: str, bundle: Path) -> None:
    """Restart ``site``'s node with another bundle (its config rewritten)."""
    config = Path(mesh.configs[site])
    text = config.read_text()
    start = text.index('bundle = "') + len('bundle = "')
    config.write_text(text[:start] + str(bundle) + text[text.index('"', start):])
    if mesh.up(site):
        mesh.kill(site)
    mesh.start(site)


def status(addr: str, bundle: Path, site: str) -> grpc.StatusCode:
    with channel(addr, load_bundle(bundle), site) as ch:
        try:
            sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


# --- 1. impostors by name --------------------------------------------------------------------


def test_a_certificate_naming_another_site_cannot_pass_for_it(mesh, tmp_path: Path) -> None:
    ops = bundle_dir(mesh, "ops")
    assert status(address(mesh, "siege"), ops, "siege") is grpc.StatusCode.OK
    # siege-certs refuses to issue it, and names why.
    done = subprocess.run([sys.executable, "-m", "siege_sync.certs.cli", "issue", "shop",
                           "--dns", "siege", "--dir", str(mesh.pki.folder / "ca"),
                           "--out", str(tmp_path / "shop")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "another site" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # Forged anyway (the CA's key, no siege-certs): nice's node now presents a certificate
    # that also says "siege" (an address of the siège taken over, a DNS answer forged).
    forged = forge(mesh, "nice", ["siege"], tmp_path / "nice-forged")
    try:
        run_with_bundle(mesh, "nice", forged)
        nice = address(mesh, "nice")
        assert status(nice, ops, "nice") is grpc.StatusCode.OK  # it serves as nice
        # Dialled as the siège — what siege-ctl, health checks, the election and join do —
        # the connection is refused: its certificate does not carry the siège's name.
        assert status(nice, ops, "siege") is grpc.StatusCode.UNAVAILABLE
        assert transport.health_check(nice, load_bundle(ops), "siege", 5) is not None
        with pytest.raises((CertError, OSError)):
            transport.peer_identity(nice, load_bundle(ops), "siege", timeout=5)
        done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--address",
                               nice, "--siege", "siege", "--bundle", str(ops), "--timeout",
                               "10", "test"], capture_output=True, text=True, timeout=180,
                              cwd=tmp_path)
        assert done.returncode != 0, done.stdout
        assert "Traceback" not in done.stderr, done.stderr
    finally:
        run_with_bundle(mesh, "nice", bundle_dir(mesh, "nice"))


def test_a_certificate_claiming_another_sites_reserved_name_is_refused(
        mesh, tmp_path: Path) -> None:
    forged = forge(mesh, "nice", [pinned_name("siege")], tmp_path / "nice-claims-siege")
    with pytest.raises(CertError, match="reserved for other sites"):
        from_pem((forged / "site.crt").read_bytes())
    # As a client, every node refuses it before anything else.
    creds = grpc.ssl_channel_credentials(
        root_certificates=(forged / "ca.crt").read_bytes(),
        private_key=(forged / "site.key").read_bytes(),
        certificate_chain=(forged / "site.crt").read_bytes())
    with grpc.secure_channel(address(mesh, "lyon"), creds, options=[
            ("grpc.ssl_target_name_override", pinned_name("lyon"))]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Its own node will not run with it: one paragraph, exit 2.
    config = Path(mesh.configs["nice"]).with_name("nice-forged.toml")  # (beside db.pw)
    text = Path(mesh.configs["nice"]).read_text()
    start = text.index('bundle = "') + len('bundle = "')
    config.write_text(text[:start] + str(forged) + text[text.index('"', start):])
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", "run", "--config",
                           str(config)], capture_output=True, text=True, timeout=60,
                          cwd=Path(mesh.configs["nice"]).parent)
    assert done.returncode == 2 and "reserved for other sites" in done.stderr, done.stderr
    # And siege-certs refuses the reserved namespace as an extra name.
    done = subprocess.run([sys.executable, "-m", "siege_sync.certs.cli", "issue", "shop",
                           "--dns", pinned_name("siege"), "--dir",
                           str(mesh.pki.folder / "ca"), "--out", str(tmp_path / "shop")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "reserved" in done.stderr, done.stderr


# --- 2. authorization before work ------------------------------------------------------------


def test_a_revoked_certificate_gets_nothing_and_its_bytes_are_not_read(
        mesh, tmp_path: Path) -> None:
    rogue = write_bundle(tmp_path / "rogue", mesh.pki.ca.issue_site("rogue"))
    nice = address(mesh, "nice")
    assert transport.health_check(nice, load_bundle(rogue), "nice", 5) is None  # before
    mesh.pki.ca.revoke("rogue")
    for site in ProcessMesh.SITES:  # the operator installs the new list at every site
        (bundle_dir(mesh, site) / "crl.pem").write_bytes(mesh.pki.ca.crl_pem)
    with channel(nice, load_bundle(rogue), "nice") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            next(iter(health.Watch(health_pb2.HealthCheckRequest(), timeout=10)))
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(ch).get_services()
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # Bytes that are no HelloRequest: refused for who sends them, before being read
        # (a caller the node would serve gets INVALID_ARGUMENT for the same bytes).
        garbage = ch.unary_unary("/siege.v1.SyncNode/Hello")
        with pytest.raises(grpc.RpcError) as err:
            garbage(b"\xff\xff\xff not a message", timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with channel(nice, load_bundle(bundle_dir(mesh, "lyon")), "nice") as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/siege.v1.SyncNode/Hello")(b"\xff\xff\xff not a message",
                                                       timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_site_nobody_configured_gets_nothing(mesh, tmp_path: Path) -> None:
    """A certificate the CA issued to a site no node lists in its [peers]: refused by
    every node, health checks included; the operator's admin certificate still gets in."""
    stranger = write_bundle(tmp_path / "stranger", mesh.pki.ca.issue_site("stranger"))
    for site in ProcessMesh.SITES:
        assert status(address(mesh, site), stranger, site) is \
            grpc.StatusCode.PERMISSION_DENIED
        assert transport.health_check(address(mesh, site), load_bundle(stranger), site, 5) \
            is not None
        assert status(address(mesh, site), bundle_dir(mesh, "ops"), site) is \
            grpc.StatusCode.OK


def test_a_relay_certificate_of_a_site_that_may_not_coordinate_relays_nothing(
        mesh, tmp_path: Path) -> None:
    """relay-x holds a certificate with the relay role, but no config lets it coordinate:
    it may not order a purge (nor relay, repair or tell epochs) — the siège may."""
    relay = write_bundle(tmp_path / "relay-x", mesh.pki.ca.issue_site("relay-x", relay=True))
    nice = address(mesh, "nice")
    with channel(nice, load_bundle(relay), "nice") as ch:
        with pytest.raises(grpc.RpcError) as err:
            sync_pb2_grpc.SyncNodeStub(ch).Purge(sync_pb2.PurgeRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "may not order a purge" in err.value.details()
    with channel(nice, load_bundle(bundle_dir(mesh, "siege")), "nice") as ch:
        try:
            sync_pb2_grpc.SyncNodeStub(ch).Purge(sync_pb2.PurgeRequest(), timeout=10)
        except grpc.RpcError as exc:  # (an empty order is refused for what it says)
            assert exc.code() is not grpc.StatusCode.PERMISSION_DENIED, exc


# --- 3. floods ---------------------------------------------------------------------------------


def test_idle_push_streams_from_sites_do_not_stall_the_node(mesh, tmp_path: Path) -> None:
    """Four site certificates open six silent Push streams each against nice (24; the node
    has 16 threads): each site gets at most 4, sites together at most 10, and the siège,
    an operator and the health check are answered at once."""
    floods = [bundle_dir(mesh, "lyon")] + [
        write_bundle(tmp_path / name, mesh.pki.ca.issue_site(name))
        for name in ("flood-a", "flood-b", "flood-c")]
    nice = address(mesh, "nice")
    release = threading.Event()
    outcomes: list[grpc.StatusCode] = []
    errors: list[BaseException] = []

    def silent() -> Iterator[sync_pb2.Batch]:
        release.wait(60)
        return
        yield

    def hold(bundle: Path) -> None:
        try:
            with channel(nice, load_bundle(bundle), "nice") as ch:
                try:
                    sync_pb2_grpc.SyncNodeStub(ch).Push(silent(), timeout=90)
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    outcomes.append(exc.code())
        except BaseException as exc:  # reaches the test below
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(b,), daemon=True)
               for b in floods for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10  # every stream opened, refused or held
        while time.monotonic() < deadline and outcomes.count(
                grpc.StatusCode.RESOURCE_EXHAUSTED) < 14:
            time.sleep(0.2)
        started = time.monotonic()
        assert transport.health_check(nice, load_bundle(bundle_dir(mesh, "siege")), "nice",
                                      5) is None, "the siège's health check is answered"
        assert status(nice, bundle_dir(mesh, "ops"), "nice") is grpc.StatusCode.OK
        assert mesh.exchange_checked("nice") >= 0, "the siège's exchange is answered"
        assert time.monotonic() - started < 20
        # 4 held per site (16 would be asked for), 10 for the sites together: 14 refused.
        assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 14, outcomes
    finally:
        release.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors


def test_a_silent_push_stream_is_closed(tmp_path: Path) -> None:
    """A stream whose caller sends nothing is closed after ``idle_s`` (here 1 s; a node
    waits 120 s), freeing its thread: the admission of a real server on mutual TLS."""
    pki = Pki(tmp_path)
    watcher = BundleWatcher(pki.site("nice"))
    gate = Admission(watcher, "nice", Limits(workers=4, reserve=1, per_peer=2, idle_s=1.0),
                     set)
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[gate])
    received: list[int] = []

    def push(requests: Iterator[sync_pb2.Batch], context: grpc.ServicerContext
             ) -> sync_pb2.PushReply:
        received.append(sum(1 for _ in requests))
        return sync_pb2.PushReply()

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "siege.v1.SyncNode", {"Push": grpc.stream_unary_rpc_method_handler(
            push, request_deserializer=sync_pb2.Batch.FromString,
            response_serializer=sync_pb2.PushReply.SerializeToString)}),))
    port = server.add_secure_port("127.0.0.1:0", transport.server_credentials(watcher))
    server.start()
    release = threading.Event()

    def one_then_silent() -> Iterator[sync_pb2.Batch]:
        yield sync_pb2.Batch()
        release.wait(30)

    try:
        with channel(f"127.0.0.1:{port}", load_bundle(pki.site("lyon")), "nice") as ch:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                sync_pb2_grpc.SyncNodeStub(ch).Push(one_then_silent(), timeout=30)
            assert err.value.code() is grpc.StatusCode.CANCELLED
            assert 1.0 <= time.monotonic() - started < 10
    finally:
        release.set()
        server.stop(0).wait()
        gate.close()


def test_calls_that_wait_for_news_are_one_per_site_and_never_take_working_threads(
        tmp_path: Path) -> None:
    """``Listen`` calls (tidings.py) wait for a long time: each site keeps one (a second one
    ends the first, as after a dead line), a bounded number in all, and while one is open
    the same site's other calls are admitted as if it were not (per_peer 1 here)."""
    from siege_sync.node.mesh.tidings import Bulletin

    pki = Pki(tmp_path)
    watcher = BundleWatcher(pki.site("nice"))
    listen = "/siege.v1.SyncNode/Listen"
    gate = Admission(watcher, "nice", Limits(workers=2, reserve=1, per_peer=1, listeners=2),
                     set, waiting=frozenset({listen}))
    server = grpc.server(ThreadPoolExecutor(max_workers=gate.limits.threads),
                         interceptors=[gate])
    bulletin = Bulletin()

    def listening(request: sync_pb2.ListenRequest, context: grpc.ServicerContext
                  ) -> Iterator[sync_pb2.Tidings]:
        yield sync_pb2.Tidings(bulletin=bulletin.id)
        since = 0
        while context.is_active() and not bulletin.closed:
            since, sites = bulletin.wait("", since, 0.2)
            if sites:
                yield sync_pb2.Tidings(from_sites=sites, mark=since)

    def status_(request: sync_pb2.StatusRequest, context: grpc.ServicerContext
                ) -> sync_pb2.StatusReply:
        return sync_pb2.StatusReply(site="nice")

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "siege.v1.SyncNode", {
            "Listen": grpc.unary_stream_rpc_method_handler(
                listening, request_deserializer=sync_pb2.ListenRequest.FromString,
                response_serializer=sync_pb2.Tidings.SerializeToString),
            "Status": grpc.unary_unary_rpc_method_handler(
                status_, request_deserializer=sync_pb2.StatusRequest.FromString,
                response_serializer=sync_pb2.StatusReply.SerializeToString)}),))
    port = server.add_secure_port("127.0.0.1:0", transport.server_credentials(watcher))
    server.start()
    address = f"127.0.0.1:{port}"
    bundles = {s: load_bundle(pki.site(s)) for s in ("lyon", "brest", "vannes")}
    channels = [channel(address, bundles[s], "nice") for s in ("lyon", "lyon", "brest", "vannes")]
    try:
        stubs = [sync_pb2_grpc.SyncNodeStub(ch) for ch in channels]
        first = stubs[0].Listen(sync_pb2.ListenRequest(), timeout=30)
        assert next(first).bulletin == bulletin.id
        # lyon listens, yet its one working call is admitted.
        assert stubs[0].Status(sync_pb2.StatusRequest(), timeout=5).site == "nice"
        second = stubs[1].Listen(sync_pb2.ListenRequest(), timeout=30)
        assert next(second).bulletin == bulletin.id
        with pytest.raises(grpc.RpcError) as ended:
            next(first)
        assert ended.value.code() is grpc.StatusCode.CANCELLED, "lyon's older call ended"
        brest = stubs[2].Listen(sync_pb2.ListenRequest(), timeout=30)
        next(brest)
        vannes = stubs[3].Listen(sync_pb2.ListenRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            next(vannes)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "waiting for news" in refused.value.details()
        bulletin.post(["lyon"])
        assert list(next(second).from_sites) == ["lyon"]
        assert list(next(brest).from_sites) == ["lyon"]
    finally:
        bulletin.close()
        for ch in channels:
            ch.close()
        server.stop(0).wait()
        gate.close()


def test_a_password_written_in_a_config_others_may_read_is_refused(tmp_path: Path) -> None:
    from siege_sync.node.model import config

    (tmp_path / "bundle").mkdir()
    path = tmp_path / "nice.toml"
    path.write_text('site = "nice"\n[database]\ndsn = "/srv/shop.fdb"\nuser = "SYSDBA"\n'
                    'password = "masterkey"\n[node]\nlisten = "127.0.0.1:1"\n'
                    'bundle = "bundle"\n')
    path.chmod(0o644)
    with pytest.raises(config.ConfigError, match="others may read: chmod 600 nice.toml"):
        config.load(path)
    path.chmod(0o600)
    assert config.load(path).database.password == "masterkey"


# --- 7. revocation that holds -------------------------------------------------------------------


def install_crl(mesh: ProcessMesh, site: str, pem: bytes) -> None:
    (bundle_dir(mesh, site) / "crl.pem").write_bytes(pem)


def test_an_older_revocation_list_copied_back_does_not_unrevoke(mesh, tmp_path: Path) -> None:
    nice = address(mesh, "nice")
    gone = write_bundle(tmp_path / "gone", mesh.pki.ca.issue_site("gone"))
    before = mesh.pki.ca.crl_pem  # does not name "gone"
    install_crl(mesh, "nice", before)
    assert status(nice, gone, "nice") is grpc.StatusCode.OK
    mesh.pki.ca.revoke("gone")
    install_crl(mesh, "nice", mesh.pki.ca.crl_pem)
    assert status(nice, gone, "nice") is grpc.StatusCode.UNAUTHENTICATED
    install_crl(mesh, "nice", before)  # copied back while the node runs: kept the newer one
    assert status(nice, gone, "nice") is grpc.StatusCode.UNAUTHENTICATED
    mesh.kill("nice")  # ... and while it is stopped: it will not start with it
    with pytest.raises(RuntimeError, match="older than number"):
        mesh.start("nice")
    install_crl(mesh, "nice", mesh.pki.ca.crl_pem)
    mesh.start("nice")
    assert status(nice, gone, "nice") is grpc.StatusCode.UNAUTHENTICATED


def test_a_stale_revocation_list_is_said_then_sites_are_refused(mesh, tmp_path: Path) -> None:
    nice = address(mesh, "nice")
    ops = bundle_dir(mesh, "ops")
    lyon = bundle_dir(mesh, "lyon")
    try:
        # Due 10 days ago: said (siege-ctl test, Status), calls still served.
        install_crl(mesh, "nice", mesh.pki.ca.refresh_crl(
            days=30, now=datetime.now(UTC) - timedelta(days=40)))
        assert status(nice, lyon, "nice") is grpc.StatusCode.OK
        done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--address",
                               address(mesh, "siege"), "--siege", "siege", "--bundle",
                               str(ops), "test"], capture_output=True, text=True, timeout=180,
                              cwd=tmp_path)
        assert "nice: WARNING: the revocation list" in done.stdout, done.stdout + done.stderr
        # Due 20 days ago, past the 14 days of grace: sites are refused, operators get in.
        install_crl(mesh, "nice", mesh.pki.ca.refresh_crl(
            days=30, now=datetime.now(UTC) - timedelta(days=50)))
        with channel(nice, load_bundle(lyon), "nice") as ch:
            with pytest.raises(grpc.RpcError) as err:
                sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "siege-certs crl" in err.value.details()
        with channel(nice, load_bundle(ops), "nice") as ch:
            reply = sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
        assert any("revocation list" in w for w in reply.security_warnings)
    finally:
        install_crl(mesh, "nice", mesh.pki.ca.refresh_crl())
    assert status(nice, lyon, "nice") is grpc.StatusCode.OK


# --- 4. BLOB chunks nobody refers to ----------------------------------------------------------


def blob_rows(mesh: ProcessMesh, site: str) -> tuple[int, int]:
    con = mesh.open_as_sysdba(site)
    try:
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute("SELECT COUNT(*), COALESCE(SUM(LEN), 0) FROM SYNC$BLOBS")
            count, size = cur.fetchone()
            cur.close()
    finally:
        con.close()
    return count, size


def test_blob_chunks_no_event_refers_to_are_not_kept(mesh) -> None:
    """16 complete 1 MiB BLOBs and no event, pushed by a site: the call may succeed, the
    database keeps none of them (it used to keep 16 MiB per call, for ever)."""
    before = blob_rows(mesh, "nice")
    batch = sync_pb2.Batch()
    for _ in range(16):
        data = os.urandom(1024 * 1024)
        batch.blobs.add(sha256=hashlib.sha256(data).digest(), offset=0, total=len(data),
                        data=data)
    with channel(address(mesh, "nice"), load_bundle(bundle_dir(mesh, "lyon")), "nice") as ch:
        try:
            sync_pb2_grpc.SyncNodeStub(ch).Push(iter([batch]), timeout=60)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION), exc
    assert blob_rows(mesh, "nice") == before


def test_a_certificate_under_an_intermediate_ca_is_refused(mesh, tmp_path: Path) -> None:
    """The mesh CA says pathlen:0: a certificate issued by a CA it signed (its key misused
    once) is refused. gRPC's handshake lets that chain pass (measured with grpcio 1.85):
    the node's admission checks that the mesh CA signed the caller's certificate itself."""
    ca_dir = mesh.pki.folder / "ca"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    now = datetime.now(UTC)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sub-ca")]))
           .issuer_name(ca_cert.subject).public_key(sub_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=9))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                        False), critical=True)
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(sub_key.public_key()),
                          critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
               ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
           .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lyon")]))
            .issuer_name(sub.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=9))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(f"spiffe://{MESH}/lyon"),
                x509.UniformResourceIdentifier("urn:siege-sync:role:site"),
                x509.DNSName(pinned_name("lyon"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                sub_key.public_key()), critical=False)
            .sign(sub_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + sub.public_bytes(pem)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_cert.public_bytes(pem),
        private_key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
        certificate_chain=chain)
    with grpc.secure_channel(address(mesh, "nice"), creds, options=[
            ("grpc.ssl_target_name_override", pinned_name("nice"))]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.UNAUTHENTICATED), err.value
    with pytest.raises(CertError):
        verify_chain(chain, ca_cert.public_bytes(pem))


# --- 6. signed origins ------------------------------------------------------------------------


def events_at_siege(mesh: ProcessMesh, origin: str = "lyon") -> list[bytes]:
    con = mesh.open_as_sysdba("siege")
    try:
        return [b for b in all_events(con)
                if events_pb2.Event.FromString(b).origin.site == origin]
    finally:
        con.close()


def push_as(mesh: ProcessMesh, who: str, to: str, *batches: sync_pb2.Batch
            ) -> sync_pb2.PushReply:
    with channel(address(mesh, to), load_bundle(bundle_dir(mesh, who)), to) as ch:
        return sync_pb2_grpc.SyncNodeStub(ch).Push(iter(batches), timeout=60)


def test_a_relay_can_neither_forge_nor_alter_another_sites_transaction(mesh) -> None:
    """The siège relays (its certificate has the relay role, nice's config lets it
    coordinate), yet: lyon's next transaction made up by it — unsigned, or signed with its
    own key — and lyon's real transaction altered on the way are refused at nice, blamed on
    the sender; lyon is not held up there: its genuine transaction applies next."""
    app = mesh.connection("lyon")
    with transaction(app, READ_COMMITTED_RW) as tm:
        tm.cursor().execute("INSERT INTO T (ID, A) VALUES (901, 'genuine')")
    assert mesh.exchange("lyon") > 0 and mesh.exchange("nice") >= 0
    real = events_at_siege(mesh)[-1]
    made_up = events_pb2.Event.FromString(real)
    made_up.ClearField("seal")
    made_up.seq = made_up.tx.first_seq = made_up.seq + 1
    made_up.tx.count = 1
    made_up.prev_hash = hashlib.sha256(real).digest()
    made_up.key[0].integer = 902
    for c in made_up.columns:
        if c.column == "ID":
            c.value.integer = 902
    unsigned = made_up.SerializeToString(deterministic=True)
    siege_key = load_bundle(bundle_dir(mesh, "siege"))
    signed_by_siege = Sealer(lambda: siege_key).seal(unsigned)
    for forged, says in ((unsigned, "carries no signature of lyon"),
                         (signed_by_siege, "signed with siege's certificate, not lyon's")):
        reply = push_as(mesh, "siege", "nice", sync_pb2.Batch(events=[forged]))
        assert reply.applied_events == 0 and any(says in r for r in reply.refused), reply
    # lyon's next real transaction, altered by the relay on its way to nice.
    with transaction(app, READ_COMMITTED_RW) as tm:
        tm.cursor().execute("INSERT INTO T (ID, A) VALUES (903, 'genuine too')")
    assert mesh.exchange("lyon") > 0
    genuine = events_at_siege(mesh)[-1]
    assert genuine.count(b"genuine too") == 1
    altered = genuine.replace(b"genuine too", b"altered too")
    reply = push_as(mesh, "siege", "nice", sync_pb2.Batch(events=[altered]))
    assert reply.applied_events == 0
    assert any("signature does not match its bytes" in r for r in reply.refused), reply
    con = mesh.open_as_sysdba("nice")
    try:
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute("SELECT ID, A FROM T WHERE ID >= 901 ORDER BY ID")
            assert cur.fetchall() == [(901, "genuine")]
            cur.execute("SELECT COUNT(*) FROM SYNC$PARKED WHERE ORIGIN = 'lyon'")
            assert cur.fetchone()[0] == 0, "lyon is not held up at nice"
            cur.close()
    finally:
        con.close()
    assert push_as(mesh, "siege", "nice", sync_pb2.Batch(events=[genuine])).applied_events == 1


# --- 5. a new incarnation only on proof ------------------------------------------------------


def sysdba_query(mesh: ProcessMesh, site: str, sql: str) -> list[tuple]:
    con = mesh.open_as_sysdba(site)
    try:
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute(sql)
            return cur.fetchall()
    finally:
        con.close()


def chain_of(mesh: ProcessMesh, site: str) -> dict[str, str]:
    return dict(sysdba_query(mesh, site, "SELECT NAME, VAL FROM SYNC$STATE WHERE NAME IN "
                                         "('incarnation', 'seq', 'epoch')"))


def test_a_peers_word_alone_does_not_rewind_a_site(mesh) -> None:
    """A peer says in its hello that it holds nice's events far beyond what nice published
    (nice would be an older copy of its database): lyon (a plain site) is not acted on; the
    siège (a coordinator) must show one such transaction signed by nice, and the one it
    makes up, signed with its own key, is refused. nice keeps its incarnation and its next
    change still reaches the siège. (Before: a new incarnation at either hello.)"""
    app = mesh.connection("nice")
    with transaction(app, READ_COMMITTED_RW) as tm:
        tm.cursor().execute("INSERT INTO T (ID, A) VALUES (911, 'before the claims')")
    assert mesh.exchange("nice") > 0
    before = chain_of(mesh, "nice")
    inc, seq = int(before["incarnation"]), int(before["seq"])
    last = events_at_siege(mesh, "nice")[-1]
    claim = Vector({("nice", inc): seq + 50}, {("nice", inc): b"\x07" * 32})
    for who in ("lyon", "siege"):
        with channel(address(mesh, "nice"), load_bundle(bundle_dir(mesh, who)), "nice") as ch:
            sync_pb2_grpc.SyncNodeStub(ch).Hello(sync_pb2.HelloRequest(
                epoch=chain_of(mesh, who)["epoch"], applied=claim.to_proto()), timeout=60)
        assert chain_of(mesh, "nice")["incarnation"] == str(inc), f"{who}'s word alone"
    # The siège's "proof": nice's next transaction, made up, signed with the siège's key.
    made_up = events_pb2.Event.FromString(last)
    made_up.ClearField("seal")
    made_up.seq = made_up.tx.first_seq = seq + 1
    made_up.tx.count = 1
    made_up.prev_hash = hashlib.sha256(last).digest()
    siege_key = load_bundle(bundle_dir(mesh, "siege"))
    forged = Sealer(lambda: siege_key).seal(made_up.SerializeToString(deterministic=True))
    reply = push_as(mesh, "siege", "nice", sync_pb2.Batch(events=[forged]))
    assert reply.applied_events == 0, reply
    assert chain_of(mesh, "nice")["incarnation"] == str(inc), "a proof signed by the siège"
    with transaction(app, READ_COMMITTED_RW) as tm:
        tm.cursor().execute("INSERT INTO T (ID, A) VALUES (912, 'after the claims')")
    assert mesh.exchange("nice") > 0
    assert sysdba_query(mesh, "siege", "SELECT A FROM T WHERE ID = 912") == \
        [("after the claims",)]
    assert chain_of(mesh, "nice")["incarnation"] == str(inc)


# --- bounded: events of tables this site lacks -------------------------------------------------


def test_events_of_a_table_this_site_lacks_are_kept_within_a_bound(
        make_db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site may write a table another site has not installed yet: its events are kept
    aside (DESIGN §3.8) — up to a bound per origin (here 3; a node keeps 200,000), beyond
    which that origin's next such transaction holds, saying what to do. Before, a site could
    fill the receiver's disk with events of a table nobody else has."""
    from siege_sync.node.journal import capture, catchup, parking
    from siege_sync.node.pipeline.apply import Applier
    from tests.test_apply import run_sql

    monkeypatch.setattr(catchup, "MAX_DEFERRED_PER_ORIGIN", 3)
    base = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20))"]
    lyon = make_db("lyon", ddl=[*base, "CREATE TABLE EXTRA (ID INTEGER NOT NULL PRIMARY KEY)"])
    nice = make_db("nice", ddl=base)
    for con in (lyon, nice):
        capture.install(con)
    for i in range(5):
        run_sql(lyon, "INSERT INTO EXTRA (ID) VALUES (?)", (i,))
    run_sql(lyon, "INSERT INTO T (ID, A) VALUES (1, 'after')")
    Applier(lyon, "lyon").apply([])
    bodies = [b for b in all_events(lyon) if events_pb2.Event.FromString(b).origin.site == "lyon"]
    result = Applier(nice, "nice").apply(bodies)
    assert result.applied_events == 3, result
    assert catchup.waiting(nice) == {"EXTRA": 3}
    assert any("the most kept aside per site" in r for r in result.refused), result.refused
    assert [p.origin for p in parking.listing(nice)] == ["lyon"]
