"""Whose events travel from whom (``node/mesh/origins.py``): a stand-in's transactions that
reached only one site reach the siège through that site when the stand-in is gone (chaos
seed 303), sealed by their origin; a site that does not coordinate still takes others'
events from coordinators only."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from siege_sync.certs import Kind, PeerIdentity, Role
from siege_sync.node.mesh import origins
from siege_sync.proto import events_pb2, sync_pb2
from tests.test_apply import all_events, run_sql
from tests.test_constraints import rows
from tests.test_election import as_stand_in
from tests.test_mesh import hello, ok, stub_as
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, "
       "CLIENT VARCHAR(40) CHARACTER SET WIN1252 COLLATE WIN_PTBR, AMOUNT NUMERIC(15, 2))"]


@pytest.mark.parametrize("how", ["pushed by the site", "pulled by the siège"])
def test_a_stand_ins_sale_that_reached_only_one_shop_reaches_the_siege_through_it(
        tmp_path, how: str) -> None:
    """lyon stands in (relay role); nice pulls lyon's sale from lyon and edits it; lyon's
    database is then gone before the siège had the sale. nice's edit depends on lyon's sale:
    before, nice sent the siège its own events only, so the siège waited for lyon's sale for
    ever and held every later transaction of nice. Now the siège — a coordinator that checks
    seals — takes lyon's sealed transaction from nice."""
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": True, "nice": False}, DDL)
    try:
        as_stand_in(mesh, "lyon", {"interval_minutes": 60})
        run_sql(mesh.cons["lyon"], "INSERT INTO SALE VALUES (1, 'Héloïse Dupré  ', 12.50)")
        ok(mesh.exchange("nice", "lyon"))
        assert rows(mesh.cons["nice"], "SALE") == {1: ("Héloïse Dupré  ", Decimal("12.50"))}
        run_sql(mesh.cons["nice"], "UPDATE SALE SET AMOUNT = 99.90 WHERE ID = 1")
        run_sql(mesh.cons["nice"], "INSERT INTO SALE VALUES (2, 'Zoé', -0.01)")
        mesh.nodes["lyon"].stop(grace=1)  # lyon's database is lost: only nice has its sale

        if how == "pushed by the site":
            ok(mesh.exchange("nice", "siege"))
        else:
            ok(mesh.exchange("siege", "nice"))

        expected = {1: ("Héloïse Dupré  ", Decimal("99.90")), 2: ("Zoé", Decimal("-0.01"))}
        assert rows(mesh.cons["siege"], "SALE") == expected
        assert rows(mesh.cons["nice"], "SALE") == expected
        lyon_events = [b for b in all_events(mesh.cons["siege"])
                       if events_pb2.Event.FromString(b).origin.site == "lyon"]
        assert lyon_events, "the siège holds lyon's transaction, as lyon sealed it"
    finally:
        mesh.close()


def test_a_site_that_does_not_coordinate_takes_others_events_from_coordinators_only(
        tmp_path) -> None:
    """nice holds lyon's events (relayed by the siège); it may not hand them to lyon's
    neighbour vannes, which does not coordinate: refused as before."""
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False, "vannes": False},
                     DDL)
    try:
        run_sql(mesh.cons["lyon"], "INSERT INTO SALE VALUES (1, 'Müller & Söhne', 5.00)")
        ok(mesh.exchange("lyon", "siege"))
        ok(mesh.exchange("nice", "siege"))
        lyon_events = [b for b in all_events(mesh.cons["nice"])
                       if events_pb2.Event.FromString(b).origin.site == "lyon"]
        assert lyon_events
        ch, stub = stub_as(mesh, "nice", "vannes")
        with ch:
            hello(mesh, stub, "nice")
            with pytest.raises(grpc.RpcError) as err:
                stub.Push(iter([sync_pb2.Batch(events=lyon_events)]), timeout=10)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "relay role" in err.value.details()
        assert rows(mesh.cons["vannes"], "SALE") == {}
    finally:
        mesh.close()


def _peer(name: str, relay: bool) -> PeerIdentity:
    return PeerIdentity(mesh="shop", name=name, kind=Kind.SITE,
                        roles=frozenset({Role.RELAY}) if relay else frozenset(), serial=1,
                        not_after=datetime(2030, 1, 1, tzinfo=UTC))


def test_who_takes_and_sends_which_origins() -> None:
    nice, siege = _peer("nice", False), _peer("siege", True)
    # A coordinator that checks seals takes any origin from a site, but its own.
    assert origins.may_take(nice, "lyon", "siege", takes_any=True)
    assert not origins.may_take(nice, "siege", "siege", takes_any=True)
    # Without seals to check, or at a site that does not coordinate: the sender's own only.
    assert not origins.may_take(nice, "lyon", "siege", takes_any=False)
    assert origins.may_take(nice, "nice", "vannes", takes_any=False)
    assert origins.may_take(siege, "lyon", "nice", takes_any=False)
    assert origins.takes_any_origin(relays=True, checks_seals=True)
    assert not origins.takes_any_origin(relays=True, checks_seals=False)
    assert not origins.takes_any_origin(relays=False, checks_seals=True)
    # What a site sends: every origin but the coordinator's own, to a coordinator that
    # takes them; its own only, otherwise (an older coordinator says nothing).
    to_siege = origins.sending("nice", False, siege, peer_takes_any=True)
    assert to_siege.covers("lyon") and to_siege.covers("nice") and not to_siege.covers("siege")
    assert origins.sending("nice", False, siege, peer_takes_any=False) == origins.Sending("nice")
    assert origins.sending("nice", False, nice, peer_takes_any=True) == origins.Sending("nice")
    assert origins.sending("siege", True, nice, peer_takes_any=False) == origins.Sending(None)
