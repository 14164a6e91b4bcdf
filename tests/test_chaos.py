"""The short chaos run of `make test` (the long one is `make chaos`): seeded trials of three
`siege-node run` processes with nodes killed (SIGKILL, also mid-round) and restarted, checked
against the trials' own journal of committed changes."""

from __future__ import annotations

import os

from tools.chaos import Mesh, TrialResult, _check, run

TRIALS = int(os.environ.get("SIEGE_CHAOS_TRIALS", "4"))


def test_short_chaos_run_loses_nothing():
    summary = run(TRIALS, first_seed=1, steps=30)
    assert summary["trials"] == TRIALS
    assert (summary["lost"], summary["duplicated"], summary["diverged"]) == (0, 0, 0), summary
    assert summary["kills"] > 0, "the run killed no node: it proved nothing"


def test_the_check_sees_a_lost_and_a_diverged_row(fb_server, tmp_path):
    mesh = Mesh(fb_server, tmp_path)
    try:
        journal = {
            2001: [("lyon", "committed at lyon")],  # no site holds it: lost everywhere
            1: [("siege", "start"), ("nice", "x")],  # nobody holds it either: diverged
        }
        out = TrialResult(seed=0)
        _check(mesh, journal, out)
        assert out.lost == 3 and out.diverged == 1, out
    finally:
        mesh.close()


def test_nodes_reconnect_after_the_firebird_server_restarts(tmp_path):
    """Found by the chaos work: a node's connection died with the server and every call
    failed until the node was restarted."""
    from siege_sync.node.database import DatabaseSpec, open_connection, transaction
    from siege_sync.proto import sync_pb2
    from tools.fbserver import FirebirdServer

    with FirebirdServer(tmp_path / "fb") as server:
        (tmp_path / "mesh").mkdir()
        mesh = Mesh(server, tmp_path / "mesh")
        try:
            server.restart()  # every open connection dies
            lyon = open_connection(DatabaseSpec(_dsn(mesh, "lyon"), user="SYSDBA",
                                                password=server.password))
            with transaction(lyon) as tm:
                cur = tm.cursor()
                cur.execute("INSERT INTO ITEM (ID, V) VALUES (2001, 'after the restart')")
                cur.close()
            lyon.close()
            ch, stub = mesh.stub("siege")
            with ch:
                reply = stub.Exchange(sync_pb2.ExchangeRequest(peer="lyon"), timeout=60)
            assert not reply.problems and reply.pulled_events == 1, reply
        finally:
            mesh.close()


def _dsn(mesh: Mesh, site: str) -> str:
    import tomllib
    from pathlib import Path

    return tomllib.loads(Path(mesh.configs[site]).read_text())["database"]["dsn"]
