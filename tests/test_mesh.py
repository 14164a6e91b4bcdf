"""Nodes exchanging over real gRPC with real mutual TLS on loopback: convergence, who may
say what, hostile input, rewinds and changed epochs."""

from __future__ import annotations

import os
import random

import grpc
import pytest

from siege_sync.certs import load_bundle, pinned_name
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.mesh.transport import channel
from siege_sync.proto import events_pb2, sync_pb2, sync_pb2_grpc
from tests.test_apply import all_events, run_sql
from tests.test_capture_random import snapshot
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(20), B INTEGER)"]
SITES = {"siege": True, "lyon": False, "nice": False}


@pytest.fixture
def mesh(tmp_path):
    m = LocalMesh(tmp_path, SITES, DDL)
    yield m
    m.close()


def ok(reply) -> sync_pb2.ExchangeReply:
    assert not reply.problems, reply.problems
    return reply


def digests(mesh) -> set:
    return {table_digest(con, introspect(con).tables["T"]) for con in mesh.cons.values()}


def stub_as(mesh, who: str, target: str) -> tuple[grpc.Channel, sync_pb2_grpc.SyncNodeStub]:
    ch = channel(f"127.0.0.1:{mesh.ports[target]}",
                 load_bundle(mesh.pki.folder / "bundles" / who), target)
    return ch, sync_pb2_grpc.SyncNodeStub(ch)


def hello(mesh, stub, site: str) -> None:
    from siege_sync.node.journal import capture

    stub.Hello(sync_pb2.HelloRequest(epoch=capture.get_state(mesh.cons[site], "epoch")),
               timeout=10)


def test_two_sites_sync_both_ways_over_mtls(mesh):
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (1, 'from lyon', 1)")
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A, B) VALUES (2, 'from siege', 2)")
    reply = ok(mesh.exchange("siege", "lyon"))
    assert (reply.pulled_events, reply.pushed_events) == (1, 1)
    assert abs(reply.clock_offset_us) < 1_000_000
    assert snapshot(mesh.cons["lyon"]) == snapshot(mesh.cons["siege"])
    again = ok(mesh.exchange("lyon", "siege"))
    assert (again.pulled_events, again.pushed_events) == (0, 0), "nothing applied twice"


SEEDS = [int(s) for s in os.environ.get("SIEGE_MESH_SEEDS", "1,2,3").split(",")]


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_random_workloads_and_exchanges_converge(mesh, seed):
    rng = random.Random(seed)
    sites = list(SITES)
    for _ in range(30):
        site = rng.choice(sites)
        if rng.random() < 0.6:
            k = rng.randint(1, 8)
            sql, params = rng.choice([
                ("UPDATE OR INSERT INTO T (ID, A, B) VALUES (?, ?, ?)",
                 (k, f"{site}-{rng.randint(0, 99)}", rng.randint(0, 9))),
                ("UPDATE T SET B = ? WHERE ID = ?", (rng.randint(0, 9), k)),
                ("DELETE FROM T WHERE ID = ?", (k,)),
            ])
            run_sql(mesh.cons[site], sql, params)
        else:
            # Non-relay sites talk to the siège; the siège relays.
            peer = "siege" if site != "siege" else rng.choice(sites[1:])
            ok(mesh.exchange(site, peer))
    for _ in range(2):
        for site in sites[1:]:
            ok(mesh.exchange("siege", site))
    assert len(digests(mesh)) == 1, f"seed {seed}: digests differ"
    states = [snapshot(con) for con in mesh.cons.values()]
    assert states[0] == states[1] == states[2]


def test_a_site_without_relay_role_cannot_push_another_sites_events(mesh):
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (1, 'nice')")
    ok(mesh.exchange("nice", "siege"))
    ok(mesh.exchange("lyon", "siege"))  # lyon now holds nice's event, relayed by the siège
    nice_events = [b for b in all_events(mesh.cons["lyon"])
                   if events_pb2.Event.FromString(b).origin.site == "nice"]
    assert nice_events
    run_sql(mesh.cons["siege"], "DELETE FROM T")  # (the siège forgets nothing: new event)
    ch, stub = stub_as(mesh, "lyon", "nice")
    with ch:
        hello(mesh, stub, "lyon")
        with pytest.raises(grpc.RpcError) as err:
            stub.Push(iter([sync_pb2.Batch(events=nice_events)]), timeout=10)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "relay role" in err.value.details()


def test_a_site_certificate_cannot_start_exchanges_at_another_node(mesh):
    ch, stub = stub_as(mesh, "lyon", "siege")
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Exchange(sync_pb2.ExchangeRequest(peer="nice"), timeout=10)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_an_admin_certificate_may_ask_status_and_start_an_exchange(mesh):
    mesh.pki.admin("alice")
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (5, 'x')")
    ch, stub = stub_as(mesh, "alice", "siege")
    with ch:
        reply = stub.Exchange(sync_pb2.ExchangeRequest(peer="nice"), timeout=30)
        assert not reply.problems and reply.pulled_events == 1
        status = stub.Status(sync_pb2.StatusRequest(digests=True), timeout=10)
    assert status.site == "siege" and status.digests[0].rows == 1
    assert {(o.site, o.seq) for o in status.applied.origins} >= {("nice", 1)}


def test_certificates_of_another_ca_expired_or_revoked_are_refused(mesh, tmp_path):
    from datetime import UTC, datetime, timedelta

    from tools.localmesh import Pki

    other = Pki(tmp_path / "other")
    other.site("lyon")
    ch = channel(f"127.0.0.1:{mesh.ports['siege']}", load_bundle(other.folder / "bundles" /
                                                                  "lyon"), "siege")
    with ch, pytest.raises(grpc.RpcError) as err:
        sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    old = mesh.pki.site("oldsite", now=datetime.now(UTC) - timedelta(days=30), days=2)
    ch = channel(f"127.0.0.1:{mesh.ports['siege']}", load_bundle(old), "siege")
    with ch, pytest.raises(grpc.RpcError) as err:
        sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    # Revoked: the siège gets the new revocation list in its bundle (no restart).
    mesh.pki.ca.revoke("nice")
    siege_bundle = mesh.pki.folder / "bundles" / "siege"
    (siege_bundle / "crl.pem").write_bytes(mesh.pki.ca.crl_pem)
    ch, stub = stub_as(mesh, "nice", "siege")
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Status(sync_pb2.StatusRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in err.value.details()


def test_only_the_configured_siege_tells_a_site_another_sites_new_epoch(mesh):
    """After a resync the siège holds the site's new epoch and its hellos carry it, so a
    node that met the old database (a stand-in) takes the new one. Only the configured
    siège's word counts; never for the node's own epoch, nor for a site it never met."""
    from siege_sync.node.journal import capture

    ok(mesh.exchange("siege", "nice"))
    ok(mesh.exchange("lyon", "nice"))
    nice = mesh.cons["nice"]
    siege_epoch = capture.get_state(nice, "epoch:siege")
    own = capture.get_state(nice, "epoch")
    assert siege_epoch and capture.get_state(nice, "epoch:lyon")
    ch, stub = stub_as(mesh, "lyon", "nice")
    with ch:
        stub.Hello(sync_pb2.HelloRequest(epoch=capture.get_state(mesh.cons["lyon"], "epoch"),
                                         epochs={"siege": "forged by lyon"}), timeout=10)
    assert capture.get_state(nice, "epoch:siege") == siege_epoch
    ch, stub = stub_as(mesh, "siege", "nice")
    with ch:
        stub.Hello(sync_pb2.HelloRequest(epoch=capture.get_state(mesh.cons["siege"], "epoch"),
                                         epochs={"lyon": "resynced", "nice": "not yours",
                                                 "paris": "never met"}), timeout=10)
    assert capture.get_state(nice, "epoch:lyon") == "resynced"
    assert capture.get_state(nice, "epoch") == own
    assert capture.get_state(nice, "epoch:paris") is None
    # lyon's old database is now refused there, as at the siège after a resync.
    assert any("siege-ctl resync lyon" in p for p in mesh.exchange("lyon", "nice").problems)


def test_malformed_pushes_are_refused_and_the_node_stays_up(mesh):
    ch, stub = stub_as(mesh, "lyon", "siege")
    with ch:
        hello(mesh, stub, "lyon")
        with pytest.raises(grpc.RpcError) as err:
            stub.Push(iter([sync_pb2.Batch(events=[b"\xff\x00garbage"])]), timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        bad = events_pb2.Event(origin=events_pb2.Origin(site="lyon", incarnation=1), seq=1,
                               table="NO_SUCH_TABLE", op=events_pb2.OP_INSERT)
        bad.tx.first_seq, bad.tx.count = 1, 1
        reply = stub.Push(iter([sync_pb2.Batch(events=[sealed(mesh, "lyon", bad)])]),
                          timeout=10)
        assert reply.applied_events == 1 and not reply.refused
        # A table this site does not have: kept aside until it has it (a site upgraded
        # first, DESIGN §3.8), never written anywhere.
        from siege_sync.node.journal import catchup

        assert catchup.waiting(mesh.cons["siege"]) == {"NO_SUCH_TABLE": 1}
        assert stub.Status(sync_pb2.StatusRequest(), timeout=10).site == "siege"
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (1, 'still works')")
    assert ok(mesh.exchange("siege", "nice")).pulled_events == 1


@pytest.mark.parametrize("direction", ["down", "up"], ids=["cut-mid-pull", "cut-mid-push"])
def test_a_connection_cut_mid_stream_loses_nothing_and_applies_nothing_twice(mesh, direction):
    from tests.proxy import CuttingProxy

    with transaction_of(mesh.cons["siege"] if direction == "down" else mesh.cons["lyon"]) as cur:
        for i in range(3000):
            cur.execute("INSERT INTO T (ID, A, B) VALUES (?, ?, ?)", (i, f"row {i}" * 2, i))
    # Budgets that cut after the hello, inside the stream of batches.
    proxy = CuttingProxy(mesh.ports["siege"], cut_after=60_000, direction=direction)
    try:
        mesh.set_peer("lyon", "siege", proxy.port)
        reply = mesh.exchange("lyon", "siege")
        assert reply.problems and proxy.cuts >= 1, "the line was cut"
    finally:
        proxy.close()
    mesh.set_peer("lyon", "siege", mesh.ports["siege"])
    ok(mesh.exchange("lyon", "siege"))
    assert ok(mesh.exchange("lyon", "siege")).pulled_events == 0
    assert len({snapshot(mesh.cons[s]).__len__() for s in ("siege", "lyon")}) == 1
    assert snapshot(mesh.cons["siege"]) == snapshot(mesh.cons["lyon"])
    assert len(snapshot(mesh.cons["lyon"])) == 3000


def transaction_of(con):
    from contextlib import contextmanager

    from siege_sync.node.db.database import transaction

    @contextmanager
    def cm():
        with transaction(con) as tm:
            cur = tm.cursor()
            try:
                yield cur
            finally:
                cur.close()

    return cm()


def test_a_changed_epoch_is_refused_until_resync(mesh):
    from siege_sync.node.journal import capture

    ok(mesh.exchange("lyon", "siege"))
    capture.set_state(mesh.cons["lyon"], "epoch", "f" * 32)  # as a restored database would
    reply = mesh.exchange("lyon", "siege")
    assert reply.problems and "resync lyon" in reply.problems[0]


def test_a_site_restored_from_an_old_copy_takes_a_new_incarnation_and_gets_its_events_back(
        mesh, tmp_path):
    import shutil

    from siege_sync.node.mesh.daemon import Node

    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'before the copy')")
    ok(mesh.exchange("lyon", "siege"))
    node = mesh.nodes["lyon"]
    node.stop(grace=1)
    mesh.cons["lyon"].close()
    shutil.copy(tmp_path / "lyon.fdb", tmp_path / "lyon-old.fdb")
    mesh.nodes["lyon"] = Node(node.cfg)
    mesh.nodes["lyon"].start()
    from siege_sync.node.db.database import DatabaseSpec, open_connection

    mesh.cons["lyon"] = open_connection(DatabaseSpec(str(tmp_path / "lyon.fdb")))
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (2, 'lost with the disk')")
    ok(mesh.exchange("lyon", "siege"))
    # The disk dies; last night's copy comes back.
    mesh.nodes["lyon"].stop(grace=1)
    mesh.cons["lyon"].close()
    shutil.copy(tmp_path / "lyon-old.fdb", tmp_path / "lyon.fdb")
    mesh.nodes["lyon"] = Node(node.cfg)
    mesh.nodes["lyon"].start()
    mesh.cons["lyon"] = open_connection(DatabaseSpec(str(tmp_path / "lyon.fdb")))
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (3, 'after the restore')")
    ok(mesh.exchange("lyon", "siege"))
    ok(mesh.exchange("lyon", "siege"))
    from siege_sync.node.journal import capture

    assert capture.get_state(mesh.cons["lyon"], "incarnation") == "2"
    assert snapshot(mesh.cons["lyon"]) == snapshot(mesh.cons["siege"])
    assert len(snapshot(mesh.cons["siege"])) == 3, "row 2 came back, row 3 went out"


def test_health_and_reflection_are_served_over_mtls_only(mesh):
    import socket

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    ch, _stub = stub_as(mesh, "lyon", "siege")
    with ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = health.Check(health_pb2.HealthCheckRequest(service="siege.v1.SyncNode"),
                             timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Reflection describes every call served: an operator's tool (issue 20).
        with pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(ch).get_services()
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    if not (mesh.pki.folder / "bundles" / "ops").exists():
        mesh.pki.admin("ops")
    ch, _stub = stub_as(mesh, "ops", "siege")
    with ch:
        services = ProtoReflectionDescriptorDatabase(ch).get_services()
        assert "siege.v1.SyncNode" in services and "grpc.health.v1.Health" in services
    # No plaintext: a plain HTTP/2 client gets no gRPC answer.
    plain = grpc.insecure_channel(f"127.0.0.1:{mesh.ports['siege']}")
    with plain, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    with socket.create_connection(("127.0.0.1", mesh.ports["siege"]), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"HTTP" not in sock.recv(100)


def test_large_blobs_travel_in_chunks_and_are_relayed(tmp_path):
    ddl = ["CREATE TABLE DOCS (ID INTEGER NOT NULL PRIMARY KEY, PDF BLOB SUB_TYPE BINARY, "
           "BODY BLOB SUB_TYPE TEXT)"]
    m = LocalMesh(tmp_path, SITES, ddl)
    try:
        rng = random.Random(5)
        pdf = bytes(rng.getrandbits(8) for _ in range(3 * 1024 * 1024 + 17))
        text = "Facture n° 42 — " * 20_000  # ~340 KB of UTF-8
        run_sql(m.cons["lyon"], "INSERT INTO DOCS (ID, PDF, BODY) VALUES (1, ?, ?)",
                (pdf, text))
        run_sql(m.cons["lyon"], "INSERT INTO DOCS (ID, PDF) VALUES (2, ?)", (pdf,))  # again
        ok(m.exchange("siege", "lyon"))
        ok(m.exchange("siege", "nice"))  # relayed by the siège: it must hold the bytes
        with transaction_of(m.cons["nice"]) as cur:
            cur.execute("SELECT ID, PDF, BODY FROM DOCS ORDER BY ID")
            got = []
            for row in cur.fetchall():
                got.append([v.read() if hasattr(v, "read") else v for v in row])
        assert got[0][1] == pdf and got[0][2] == text and got[1][1] == pdf
        assert len({table_digest(con, introspect(con).tables["DOCS"])
                    for con in m.cons.values()}) == 1
    finally:
        m.close()


def test_a_client_without_certificate_is_refused(mesh):
    ca = (mesh.pki.folder / "bundles" / "lyon" / "ca.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    ch = grpc.secure_channel(f"127.0.0.1:{mesh.ports['siege']}", creds,
                             options=[("grpc.ssl_target_name_override", pinned_name("siege"))])
    with ch, pytest.raises(grpc.RpcError) as err:
        sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def publish(mesh, site: str) -> None:
    """What ``site``'s node publishes, signed with its key as the node does."""
    from siege_sync.node.journal.seal import sealer_for
    from siege_sync.node.pipeline.publish import Publisher

    Publisher(mesh.cons[site], site,
              sealer=sealer_for(mesh.pki.folder / "bundles" / site)).publish()


def sealed(mesh, site: str, event: events_pb2.Event) -> bytes:
    """``event`` as ``site``'s node would send it: signed with its key (node/journal/seal.py) — what
    a compromised or buggy node of that site can do."""
    from siege_sync.node.journal.seal import Sealer

    bundle = load_bundle(mesh.pki.folder / "bundles" / site)
    event.ClearField("seal")
    return Sealer(lambda: bundle).seal(event.SerializeToString(deterministic=True))


def lyon_event(mesh, **fields) -> bytes:
    """lyon's next event as its node would publish it, with ``fields`` forced."""
    from siege_sync.node.journal import capture

    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (77, 'x', 1)")
    publish(mesh, "lyon")
    body = [b for b in all_events(mesh.cons["lyon"])
            if events_pb2.Event.FromString(b).origin.site == "lyon"][-1]
    event = events_pb2.Event.FromString(body)
    for name, value in fields.items():
        if name == "B":
            for col in event.columns:
                if col.column == "B":
                    col.value.CopyFrom(value)
    assert capture.get_state(mesh.cons["lyon"], "seq") == str(event.seq)
    return sealed(mesh, "lyon", event)


def test_wrong_value_types_huge_values_and_replays_are_refused_or_ignored(mesh):
    from siege_sync.proto import values_pb2

    ch, stub = stub_as(mesh, "lyon", "siege")
    with ch:
        hello(mesh, stub, "lyon")
        wrong = lyon_event(mesh, B=values_pb2.Value(text="not a number"))
        reply = stub.Push(iter([sync_pb2.Batch(events=[wrong])]), timeout=10)
        assert reply.applied_events == 0 and reply.refused and "lyon#1" in reply.refused[0]
    # The siège stopped taking lyon's events (nothing wrongly applied); its own go on.
    assert snapshot(mesh.cons["siege"]) == {}
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (1, 'nice')")
    assert ok(mesh.exchange("siege", "nice")).pulled_events == 1

    # A replayed batch (the same events twice) is applied once.
    run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A) VALUES (2, 'again')")
    publish(mesh, "nice")
    bodies = [b for b in all_events(mesh.cons["nice"])
              if events_pb2.Event.FromString(b).origin.site == "nice"]
    ch, stub = stub_as(mesh, "nice", "siege")
    with ch:
        hello(mesh, stub, "nice")
        first = stub.Push(iter([sync_pb2.Batch(events=bodies)]), timeout=10)
        second = stub.Push(iter([sync_pb2.Batch(events=bodies)] * 2), timeout=10)
    assert (first.applied_events, second.applied_events) == (1, 0)
    assert second.already_applied == 2 * len(bodies)


def test_a_huge_value_is_refused_cleanly(mesh):
    from siege_sync.proto import values_pb2

    ch, stub = stub_as(mesh, "lyon", "siege")
    with ch:
        hello(mesh, stub, "lyon")
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (5, 'short')")
        publish(mesh, "lyon")
        body = [b for b in all_events(mesh.cons["lyon"])][-1]
        event = events_pb2.Event.FromString(body)
        for col in event.columns:
            if col.column == "A":
                col.value.CopyFrom(values_pb2.Value(text="x" * 20_000_000))
        reply = stub.Push(iter([sync_pb2.Batch(events=[event.SerializeToString()])]),
                          timeout=30)
        assert reply.applied_events == 0 and reply.refused
        assert stub.Status(sync_pb2.StatusRequest(), timeout=10).site == "siege"


def test_a_renewed_certificate_is_served_without_a_restart(mesh):
    from siege_sync.certs import write_bundle
    from siege_sync.node.mesh.transport import peer_identity

    lyon = load_bundle(mesh.pki.folder / "bundles" / "lyon")
    address = f"127.0.0.1:{mesh.ports['siege']}"
    before = peer_identity(address, lyon, "siege").serial
    renewed, _old = mesh.pki.ca.renew("siege")
    write_bundle(mesh.pki.folder / "bundles" / "siege", renewed)
    mesh.nodes["siege"].watcher.refresh()  # someone else notices the change first
    after = peer_identity(address, lyon, "siege").serial
    assert before != after == renewed.identity.serial
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'after renewal')")
    assert ok(mesh.exchange("lyon", "siege")).pushed_events == 1


def test_a_transaction_larger_than_several_batches_arrives_whole(mesh):
    with transaction_of(mesh.cons["lyon"]) as cur:
        for i in range(2600):  # more than 4 batches of 500: it travels in pieces
            cur.execute("INSERT INTO T (ID, A, B) VALUES (?, 'bulk', ?)", (i, i))
    reply = ok(mesh.exchange("siege", "lyon"))
    assert reply.pulled_events == 2600
    assert len(snapshot(mesh.cons["siege"])) == 2600


def test_a_second_node_on_the_same_port_is_refused_clearly(mesh):
    from siege_sync.node.mesh.daemon import Node, NodeError

    # The same config: its database is refused first (occupant.py), then its port.
    with pytest.raises(NodeError, match="another node already serves"):
        Node(mesh.nodes["siege"].cfg).start()
    other = mesh.nodes["siege"].cfg
    copy = mesh.folder / "siege-copy.fdb"
    import shutil

    shutil.copy(other.database.dsn, copy)
    import dataclasses

    from siege_sync.node.db.database import DatabaseSpec

    with pytest.raises(NodeError, match="port is in use"):
        Node(dataclasses.replace(other, database=DatabaseSpec(str(copy)))).start()
    assert ok(mesh.exchange("lyon", "siege")) is not None  # the first one still serves


def test_a_site_behind_a_purge_is_told_it_needs_a_resync(mesh):
    from siege_sync.node.model.vector import Vector

    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'a')")
    ok(mesh.exchange("siege", "lyon"))
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (2, 'b')")
    ok(mesh.exchange("siege", "lyon"))
    # As if every site held lyon's first event: the siège forgets it (nice never had it).
    mesh.nodes["siege"].replica.purge(Vector({("lyon", 1): 1}), None, None)
    reply = mesh.exchange("nice", "siege")
    assert any("needs a resync" in p for p in reply.problems), reply.problems
    assert "T" not in {k[0] for k in snapshot(mesh.cons["nice"])}, "nothing half applied"


def test_digests_are_for_admins_and_coordinators_only(mesh):
    ch, stub = stub_as(mesh, "lyon", "nice")
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Status(sync_pb2.StatusRequest(digests=True), timeout=10)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_row_held_by_an_open_local_transaction_delays_only_what_needs_it(mesh, tmp_path):
    """Found by the chaos work: a user's transaction left open on a row made every exchange
    with that site wait a minute (lock waits retried six times), then fail as a whole with
    "local writers kept changing the same rows" — other sites' changes stayed out too."""
    from siege_sync.node.db.database import DatabaseSpec, open_connection

    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A, B) VALUES (1, 'first', 0)")
    ok(mesh.exchange("siege", "lyon"))
    app = open_connection(DatabaseSpec(str(tmp_path / "lyon.fdb")))
    tm = app.transaction_manager()
    tm.begin()
    tm.cursor().execute("UPDATE T SET B = 5 WHERE ID = 1")  # held: the user is still typing
    try:
        run_sql(mesh.cons["siege"], "UPDATE T SET A = 'edited at the siege' WHERE ID = 1")
        run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A, B) VALUES (3, 'from nice', 0)")
        ok(mesh.exchange("siege", "nice"))
        reply = mesh.exchange("siege", "lyon")
        assert len(reply.problems) == 1, reply.problems
        assert "open transaction" in reply.problems[0] and "T" in reply.problems[0]
        lyon = snapshot(mesh.cons["lyon"])
        assert len(lyon) == 2, "nice's row went through; the held row waits"
        tm.commit()
    finally:
        if tm.is_active():
            tm.rollback()
        tm.close()
        app.close()
    ok(mesh.exchange("siege", "lyon"))
    ok(mesh.exchange("siege", "lyon"))
    assert snapshot(mesh.cons["lyon"]) == snapshot(mesh.cons["siege"])
    merged = [row for row in snapshot(mesh.cons["lyon"]).values() if row["ID"] == b"\x10\x02"]
    assert merged and merged[0]["B"] == b"\x10\x0a" and b"edited at the siege" in merged[0]["A"]


def test_a_node_accepts_the_keepalive_pings_of_a_call_that_carries_no_data():
    """A client pings every keepalive_time while a call is silent (a join's restore, a
    resync); the server must allow it, or gRPC answers with GOAWAY "too_many_pings" and the
    call dies (siege-ctl resync was cut so in the chaos run, issue 19). The real run takes
    minutes of silence: `make chaos-short` meets it; here the settings that decide it."""
    from siege_sync.node.mesh.transport import CHANNEL_OPTIONS, SERVER_OPTIONS

    client, server = dict(CHANNEL_OPTIONS), dict(SERVER_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] < \
        client["grpc.keepalive_time_ms"]
    assert server["grpc.keepalive_permit_without_calls"] == 1
