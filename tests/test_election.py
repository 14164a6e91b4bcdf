"""The election on loopback (the multi-host version is tests/test_discovery.py): a stand-in
takes the role when the siège stops answering and gives it back, each change emailed through
a real SMTP server and stored as a report; the ranking every site computes from its config;
the config's and the Announce call's refusals."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from siege_sync.node.mesh.daemon import Node, NodeError
from siege_sync.node.model.config import ConfigError, parse
from siege_sync.proto import sync_pb2
from siege_sync.siege import reports
from tests.test_alerts import smtp  # noqa: F401 (the fixture)
from tests.test_mesh import stub_as
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"]


def as_stand_in(mesh: LocalMesh, site: str, role_settings: dict) -> Node:
    """Restart ``site``'s node as a stand-in (coordinator, priority 1, takeover in 1 s)."""
    old = mesh.nodes[site]
    old.stop(grace=1)
    service = dataclasses.replace(old.cfg.service, coordinator=True, priority=1,
                                  takeover_after=1.0)
    cfg = dataclasses.replace(old.cfg, service=service, role_settings=role_settings)
    node = mesh.nodes[site] = Node(cfg)
    node.start()
    return node


def ctl_config(mesh: LocalMesh) -> Path:
    """A siege-ctl.toml naming the siège and lyon as its stand-in, with an admin bundle."""
    mesh.pki.admin("ops")
    path = mesh.folder / "siege-ctl.toml"
    path.write_text(f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
                    f'bundle = "bundles/ops"\n[stand_ins]\n'
                    f'lyon = "127.0.0.1:{mesh.ports["lyon"]}"\n')
    return path


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120)


def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_stand_in_takes_the_role_and_gives_it_back_emailed_and_reported(
        tmp_path, smtp):  # noqa: F811 (the fixture)
    inbox, alerts = smtp
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": True, "nice": False}, DDL)
    try:
        lyon = as_stand_in(mesh, "lyon", {"interval_minutes": 60,
                                          "alerts": {**alerts, "every_minutes": 0}})
        election = lyon.roles[0].election
        assert election.above == ["siege"] and not election.active
        siege_cfg = mesh.nodes["siege"].cfg
        mesh.nodes["siege"].stop(grace=1)
        until(lambda: election.active)
        until(lambda: len(inbox.messages) == 1)
        assert "lyon now coordinates" in inbox.messages[0]["Subject"]
        assert "siege unreachable" in inbox.messages[0].get_payload()
        # The operator's siege-ctl lists the stand-in: it talks to lyon while the siège is
        # gone, and says so.
        config = ctl_config(mesh)
        status = ctl(config, "status")
        assert "talking to the stand-in lyon" in status.stderr, status.stderr
        assert "siège role: lyon, stand-in since" in status.stdout, status.stdout
        mesh.nodes["siege"] = Node(siege_cfg)
        mesh.nodes["siege"].start()
        until(lambda: not election.active)
        status = ctl(config, "status")
        assert "stand-in" not in status.stderr and "siège role: siege" in status.stdout, \
            status.stdout + status.stderr
        until(lambda: len(inbox.messages) == 2)
        assert "lyon stands by" in inbox.messages[1]["Subject"]

        def stored_elections() -> list:
            with lyon.replica.database() as con:
                return [r for r in reports.listing(con) if r.trigger == "election"]

        # The email goes first, the report is stored after it.
        until(lambda: len(stored_elections()) == 2)
        stored = stored_elections()
        assert [r.outcome for r in stored] == ["stood by", "took the role"], stored
        assert "siege answers again" in stored[0].note
        assert "lyon stands in" in reports.render_text(stored[1])
    finally:
        mesh.close()


def test_every_site_ranks_the_candidates_alike() -> None:
    def cfg(site: str, node: dict, peers: dict) -> object:
        return parse({"site": site, "database": {"dsn": "/x.fdb"},
                      "node": {"listen": "0.0.0.0:7443", "bundle": "/", "siege": "siege",
                               **node}, "peers": peers}).service

    at_nice = cfg("nice", {}, {"siege": {}, "lyon": {"coordinator": True, "priority": 5},
                               "nantes": {"coordinator": True, "priority": 1},
                               "brest": {"coordinator": True, "priority": 5}})
    at_lyon = cfg("lyon", {"coordinator": True, "priority": 5},
                  {"siege": {}, "nantes": {"coordinator": True, "priority": 1},
                   "brest": {"coordinator": True, "priority": 5}, "nice": {}})
    assert at_nice.coordinators("nice") == ["siege", "nantes", "brest", "lyon"]
    assert at_lyon.coordinators("lyon") == at_nice.coordinators("nice")


@pytest.mark.parametrize("node, peers, says", [
    ({"lan": ["0.0.0.0"]}, {}, "never 0.0.0.0"),
    ({"takeover_after": 0}, {}, "takeover_after must be a number of seconds > 0"),
    ({"outbound_only": "yes"}, {}, "outbound_only must be true or false"),
    ({}, {"lyon": {"adress": "x:1"}}, "unknown keys ['adress']"),
    ({}, {"lyon": {"coordinator": 1}}, "coordinator must be true or false"),
])
def test_discovery_settings_mistakes_name_the_key(tmp_path, node, peers, says) -> None:
    with pytest.raises(ConfigError) as err:
        parse({"site": "nice", "database": {"dsn": "/x.fdb"},
               "node": {"listen": "0.0.0.0:7443", "bundle": str(tmp_path), **node},
               "peers": peers})
    assert says in str(err.value)


def test_a_stand_in_needs_the_relay_role_and_a_schedule(tmp_path) -> None:
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": True}, DDL)
    try:
        with pytest.raises(NodeError, match="lacks the relay role"):
            as_stand_in(mesh, "lyon", {"interval_minutes": 60})
        with pytest.raises(NodeError, match="run no round"):
            as_stand_in(mesh, "nice", {})
    finally:
        mesh.close()


def test_an_announcement_records_where_the_call_came_from(tmp_path) -> None:
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False}, DDL)
    try:
        mesh.nodes["lyon"].stop(grace=1)  # its own announcements would race with ours
        ch, stub = stub_as(mesh, "lyon", "siege")
        with ch:
            reply = stub.Announce(sync_pb2.AnnounceRequest(port=9999, dials_out_only=True),
                                  timeout=10)
            assert reply.seen == "127.0.0.1:9999"
            with pytest.raises(grpc.RpcError) as err:
                stub.Announce(sync_pb2.AnnounceRequest(port=0), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        seen = mesh.nodes["siege"].addresses.announced("lyon")
        assert seen is not None and seen.address == "127.0.0.1:9999" and seen.dials_out_only
        # The configured address answers first; the announced one is the next candidate.
        assert [c.source for c in mesh.nodes["siege"].addresses.candidates("lyon")] == \
            ["configured", "announced"]
    finally:
        mesh.close()
