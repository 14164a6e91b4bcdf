"""The short chaos run (`make chaos-short`; the long one is `make chaos`, tools/chaos/): the
product as shipped — `siege-node run` processes, a siège running its own continuous rounds
and purges, a stand-in, a site behind faulty lines, one dialling in, every database on a
private Firebird server — under every fault kind of tools/chaos/faults.py at least once,
while the shop's application writes at every site; then the oracle (tools/chaos/oracle.py)
reads the sites. Also regression tests for what earlier chaos runs found."""

from __future__ import annotations

import os

import pytest

from tools.chaos import faults
from tools.chaos.__main__ import CHECKS, run
from tools.localmesh import ProcessMesh

SECONDS = float(os.environ.get("SIEGE_CHAOS_SECONDS", "30"))
DDL = ["CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(60))"]


@pytest.mark.long  # minutes a trial today: `make chaos-short` (issue 19: not in make test yet)
def test_short_chaos_run_meets_every_fault_kind_and_loses_nothing():
    half = (len(faults.KINDS) + 1) // 2
    summary = run(2, first_seed=1, seconds=SECONDS,
                  plans=[list(faults.KINDS[:half]), list(faults.KINDS[half:])])
    assert summary["failed_seeds"] == [], summary
    assert {c: summary[c] for c in (*CHECKS, "not_quiet", "capture_failures",
                                    "harness_errors")} == dict.fromkeys(
        (*CHECKS, "not_quiet", "capture_failures", "harness_errors"), 0), summary
    assert sorted(summary["faults_injected"]) == sorted(faults.KINDS), summary
    missed = [k for k in faults.KINDS if not summary["faults_hit"].get(k)]
    assert not missed, f"these faults hit no work in flight, the run proved less: {missed}"
    assert summary["transactions"] > 100, summary


@pytest.fixture
def mesh(tmp_path):
    from tools.fbserver import FirebirdServer

    with FirebirdServer(tmp_path / "fb") as server:
        (tmp_path / "mesh").mkdir()
        built = ProcessMesh(server, tmp_path / "mesh", DDL)
        try:
            yield built
        finally:
            built.close()


def test_nodes_reconnect_after_the_firebird_server_restarts(mesh):
    """Found by the first chaos run: a node's connection died with the server and every
    call failed until the node was restarted."""
    from siege_sync.node.db.database import DatabaseSpec, open_connection, transaction
    from siege_sync.proto import sync_pb2

    mesh.server.restart()  # every open connection dies
    lyon = open_connection(DatabaseSpec(mesh.dsns["lyon"], user="SYSDBA",
                                        password=mesh.server.password))
    with transaction(lyon) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO ITEM (ID, V) VALUES (2001, 'après le redémarrage')")
        cur.close()
    lyon.close()
    ch, stub = mesh.stub("siege")
    with ch:
        reply = stub.Exchange(sync_pb2.ExchangeRequest(peer="lyon"), timeout=60)
    assert not reply.problems and reply.pulled_events == 1, reply


def test_a_node_that_met_the_server_down_works_once_it_is_back_regression(mesh):
    """Found by the first chaos run: a node reopening its lost connection while the server
    was still down kept the dead connection, and every later call failed ('NoneType' object
    has no attribute 'start_transaction') until the node was restarted."""
    import grpc

    from siege_sync.proto import sync_pb2

    mesh.server.stop()
    ch, stub = mesh.stub("lyon")
    with ch:
        try:
            stub.Status(sync_pb2.StatusRequest(), timeout=30)
        except grpc.RpcError:
            pass  # the server is down: a refusal is right
    mesh.server.start()
    ch, stub = mesh.stub("lyon")
    with ch:
        status = stub.Status(sync_pb2.StatusRequest(), timeout=30)
    assert status.site == "lyon"
