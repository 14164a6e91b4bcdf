"""Issue 17 item 4: ``[policies]`` that differ between sites are refused, never merged
silently. Two sites whose per-table merge policies differ would settle the same conflicting
pair differently and diverge for good, so every hello compares them: the exchange is refused
both ways (the siège dialling a site, and a site that can only dial in), the refusal names
each table and both sides' policies, ``siege-ctl manual``/``test``/``status`` show it — and
once the configs agree (however they are spelled) the sites converge.

Real nodes on real mTLS (``LocalMesh``), real embedded Firebird, ``siege-ctl`` as a process.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from siege_sync.certs import load_bundle
from siege_sync.node.mesh import transport
from siege_sync.node.mesh.daemon import Node
from siege_sync.node.model import config
from siege_sync.proto import sync_pb2, sync_pb2_grpc
from tests.test_alerts import smtp  # noqa: F401 (the fixture: a real SMTP server)
from tests.test_apply import run_sql
from tests.test_capture_random import snapshot
from tests.test_election import until
from tests.test_siege import ctl, dialling_in
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE PRICES (ID INTEGER NOT NULL PRIMARY KEY, PRICE INTEGER)",
       "CREATE TABLE STOCK (ID INTEGER NOT NULL PRIMARY KEY, QTY INTEGER)"]
SITES = {"siege": True, "lyon": False, "nice": False}


@pytest.fixture
def mesh(tmp_path, smtp):  # noqa: F811 (the fixture)
    _inbox, alerts = smtp
    m = LocalMesh(tmp_path, SITES, DDL,  # no disk alert on a CI machine's small disk
                  siege_settings={"alerts": {**alerts, "every_minutes": 0, "disk_free_mb": 0}})
    m.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{m.ports["siege"]}"\nsiege = "siege"\nbundle = "bundles/ops"\n')
    yield m
    m.close()


def restart(mesh: LocalMesh, site: str, policies: dict[str, str], **node: object) -> Node:
    """``site``'s node started again with ``policies`` as its ``[policies]`` section (parsed
    as a config file's would be) and ``node`` changed in its ``[node]`` section."""
    old = mesh.nodes[site]
    old.stop(grace=1)
    parsed = config.parse({"site": site, "database": {"dsn": "-"},
                           "policies": policies}).policies
    cfg = dataclasses.replace(old.cfg, policies=parsed,
                              service=dataclasses.replace(old.service_cfg, **node))
    mesh.nodes[site] = Node(cfg)
    mesh.nodes[site].start()
    return mesh.nodes[site]


def others_applied(node: Node) -> dict[str, int]:
    """Events of other origins this node holds, per origin (its SYNC$VECTOR)."""
    out: dict[str, int] = {}
    for (origin, _inc), seq in node.replica.vector(publish=False).seqs.items():
        if origin != node.cfg.site:
            out[origin] = out.get(origin, 0) + seq
    return {o: n for o, n in out.items() if n}


def test_sites_whose_policies_differ_exchange_nothing_until_they_agree(mesh, smtp):  # noqa: F811
    inbox, _alerts = smtp
    restart(mesh, "siege", {"PRICES": "prefer-site siege"})
    restart(mesh, "lyon", {"PRICES": "manual"})
    nice = dialling_in(mesh, "nice")  # its config has no [policies]: lww everywhere
    run_sql(mesh.cons["siege"], "INSERT INTO PRICES (ID, PRICE) VALUES (1, 100)")
    run_sql(mesh.cons["lyon"], "INSERT INTO PRICES (ID, PRICE) VALUES (2, 200)")
    run_sql(mesh.cons["nice"], "INSERT INTO PRICES (ID, PRICE) VALUES (3, 300)")

    # A site that dials in: refused by its own node (the siège's hello reply names the
    # difference) and by the siège's service.
    reply = nice.dial_out()
    assert reply is not None and reply.pulled_events == reply.pushed_events == 0
    said = " ".join(reply.problems)
    assert 'PRICES: "lww" at nice, "prefer-site siege" at siege' in said, said

    # The siège dialling a site: the round fails for both, saying why (the round's report is
    # also the body of its alert email).
    done = ctl(mesh, "manual")
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'PRICES: "prefer-site siege" at siege, "manual" at lyon' in done.stdout, done.stdout
    assert 'PRICES: "prefer-site siege" at siege, "lww" at nice' in done.stdout, done.stdout
    assert "make lyon's [policies] match the siège's" in done.stdout
    failed = [m for m in inbox.messages if "FAILED" in m["Subject"]]
    assert failed, [m["Subject"] for m in inbox.messages]
    body = failed[-1].get_payload(decode=True).decode()
    assert '"manual" at lyon' in " ".join(body.split()), body

    # Nothing crossed, either way, for either site (not even a heartbeat).
    assert others_applied(mesh.nodes["siege"]) == {}
    assert others_applied(mesh.nodes["lyon"]) == {}
    assert others_applied(nice) == {}
    for site in SITES:  # each holds the one row it wrote
        assert len(snapshot(mesh.cons[site])) == 1, site

    # A client that pulls anyway after its refused hello gets nothing either.
    bundle = load_bundle(mesh.pki.folder / "bundles" / "siege")
    with transport.channel(f"127.0.0.1:{mesh.ports['lyon']}", bundle, "lyon") as ch:
        stub = sync_pb2_grpc.SyncNodeStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Pull(sync_pb2.PullRequest(), timeout=30))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert '"manual" at lyon' in refused.value.details()

    # The connection test and the status show it, naming the table and both policies.
    test = ctl(mesh, "test")
    assert test.returncode == 1, test.stdout
    assert 'lyon: merge policies differ between siege and lyon (PRICES: "prefer-site siege" ' \
           'at siege, "manual" at lyon)' in test.stdout, test.stdout
    assert 'nice: merge policies differ between siege and nice (PRICES: "prefer-site siege" ' \
           'at siege, "lww" at nice)' in test.stdout, test.stdout
    status = ctl(mesh, "status")
    assert 'lyon: merge policies differ between siege and lyon (PRICES: "prefer-site siege" ' \
           'at siege, "manual" at lyon)' in status.stdout, status.stdout
    assert 'nice: merge policies differ' in status.stdout and '"lww" at nice' in status.stdout

    # Fixed, spelt differently: an unquoted name, other spacing and case, lww written out, a
    # table nobody replicates. They mean the same: the sites converge.
    restart(mesh, "lyon", {"prices": "prefer-site   siege", "STOCK": "LWW",
                           "NOT_REPLICATED": "manual"})
    nice = restart(mesh, "nice", {"Prices": " Prefer-Site siege "}, outbound_only=True,
                   dial_every=3600.0)
    until(lambda: mesh.nodes["siege"].addresses.announced("nice").dials_out_only)
    reply = nice.dial_out()
    assert reply is not None and not reply.problems, reply
    done = ctl(mesh, "manual")
    assert done.returncode == 0, done.stdout
    assert "merge policies differ" not in done.stdout
    nice.dial_out()
    states = [snapshot(con) for con in mesh.cons.values()]
    assert states[0] == states[1] == states[2] and len(states[0]) == 3
    test = ctl(mesh, "test")
    assert test.returncode == 0 and "merge policies" not in test.stdout, test.stdout


def test_policy_tables_compare_what_they_mean_not_how_they_are_written():
    def table(policies: dict[str, str], replicated: list[str]) -> config.PolicyTable:
        parsed = config.parse({"site": "a", "database": {"dsn": "-"},
                               "policies": policies}).policies
        return config.PolicyTable.of(parsed, replicated)

    siege = table({"PRICES": "prefer-site siege", "STOCK": "manual"}, ["PRICES", "STOCK"])
    same = table({"prices": " Prefer-Site   siege", "Stock": "MANUAL", "T": "lww",
                  "GONE": "manual"}, ["PRICES", "STOCK", "T"])
    assert siege.differences(same) == [] and same.differences(siege) == []
    # A table the other side does not replicate yet is merged there, once installed, by
    # the policy its config names: that counts; its config naming none means lww.
    newer = table({"PRICES": "prefer-site siege", "STOCK": "manual", "NEW": "manual"},
                  ["PRICES", "STOCK", "NEW"])
    assert [(d.table, d.mine, d.theirs) for d in newer.differences(siege)] == [
        ("NEW", "manual", "lww")]
    ready = table({"PRICES": "prefer-site siege", "STOCK": "manual", "NEW": "manual"},
                  ["PRICES", "STOCK"])
    assert newer.differences(ready) == []
    other = table({"PRICES": "prefer-site lyon"}, ["PRICES", "STOCK"])
    assert [(d.table, d.mine, d.theirs) for d in siege.differences(other)] == [
        ("PRICES", "prefer-site siege", "prefer-site lyon"), ("STOCK", "manual", "lww")]
    with pytest.raises(config.ConfigError, match="prefer-site SITE"):
        table({"PRICES": "prefer-site"}, [])
