"""``siege-ctl test``: the siège checks itself (its certificate, its database) and every site
it coordinates, as the legacy "Test" button did, and says what to do about each problem.

Owns the connection test of one site: reachable and presenting the expected certificate
(days left), node and schema versions equal to the siège's, its database answering, clock
offset and latency (from the four timestamps of a hello); merge policies equal to the siège's
(a site whose ``[policies]`` differ exchanges nothing: named table by table); what its hello
warns of (keys every site hands out alike). Must never change data: a hello only records the
peer's epoch (and whether its policies agree), as any exchange would.
"""

from __future__ import annotations

import time

import grpc

from ..certs import CertError, days_left, days_to_expiry
from ..i18n import _
from ..node.db.schema import fingerprints_comparable
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..node.mesh.exchange import greet, policy_check
from ..proto import coordinator_pb2, sync_pb2, sync_pb2_grpc
from .rounds import DIAL_IN_SILENCE_S

WARN_CERT_DAYS = 30
WARN_CLOCK_US = 60_000_000
TIMEOUT = 10.0


def probe_all(node: Node) -> list[coordinator_pb2.SiteTest]:
    """The node that coordinates first (its own certificate, versions, database), then every
    site it coordinates."""
    return [probe_self(node), *(probe(node, site) for site in sorted(node.service_cfg.peers))]


def probe_self(node: Node) -> coordinator_pb2.SiteTest:
    """This node, judged as the sites are, by itself: its certificate's days, its database
    answering, what it warns of. Its clock is the reference; nothing travels."""
    bundle, _changed = node.watcher.refresh()
    out = coordinator_pb2.SiteTest(site=node.cfg.site, address=node.service_cfg.listen,
                                   address_source="this node", coordinator=True,
                                   identity=bundle.identity.name,
                                   cert_days_left=days_to_expiry(bundle.cert_pem),
                                   versions_match=True)
    _judge_certificate(out)
    started = time.monotonic()
    try:
        node.replica.status()
        out.reachable = out.database_ok = True
    except Exception as exc:  # noqa: BLE001 - said as the test's finding, with what to do
        out.problems.append(_("its database does not answer: {problem}").format(
            problem=" ".join(str(exc).split())))
    out.latency_us = int((time.monotonic() - started) * 1e6)
    out.warnings.extend(node.replica.key_warnings())
    return out


def probe(node: Node, site: str) -> coordinator_pb2.SiteTest:
    announced = node.addresses.announced(site)
    if announced is not None and announced.dials_out_only:
        return _dialling_in(node, site)
    out = coordinator_pb2.SiteTest(site=site)
    reached = node.addresses.reach(site, timeout=TIMEOUT)
    if reached.candidate is None:
        out.problems.append(reached.explain(site) + ": " + _(
            "is its node running, is the address right, is the port open?"))
        return out
    address = out.address = reached.candidate.address
    out.address_source = reached.candidate.source
    bundle, _changed = node.watcher.refresh()
    try:
        ident = transport.peer_identity(address, bundle, site, timeout=TIMEOUT)
    except (OSError, CertError) as exc:
        out.problems.append(_("not reachable at {address} ({problem}): is its node running, "
                              "is the address right, is the port open?").format(
            address=address, problem=exc))
        return out
    out.reachable = True
    out.identity = ident.name
    try:
        out.cert_days_left = days_to_expiry(transport.peer_certificate(address, bundle, site,
                                                                       TIMEOUT))
    except (OSError, CertError):
        out.cert_days_left = 0
    _judge_certificate(out)
    with transport.channel(address, bundle, site) as ch:
        stub = sync_pb2_grpc.SyncNodeStub(ch)
        try:
            greeting = greet(node.replica, stub, TIMEOUT)
            hello = greeting.reply
            out.latency_us = greeting.round_trip_us
            _judge(node, out, hello.node_version, hello.schema_fingerprint,
                   greeting.clock_offset_us)
            refused = policy_check(node.replica, site, hello)
            if refused:
                out.problems.append(refused)
            out.warnings.extend(hello.key_warnings)
            started = time.monotonic()
            status = stub.Status(sync_pb2.StatusRequest(), timeout=TIMEOUT)
            out.database_ok = time.monotonic() - started < TIMEOUT
            out.warnings.extend(status.security_warnings)
        except grpc.RpcError as exc:
            out.problems.append(f"{exc.code().name}: {exc.details()}")
    return out


def _dialling_in(node: Node, site: str) -> coordinator_pb2.SiteTest:
    """A site that cannot be dialled: judged on what its last hello here said."""
    out = coordinator_pb2.SiteTest(site=site, address="-", address_source="dials in")
    greeted = node.addresses.dialled_in(site).greeted
    if greeted is None or time.time() - greeted.at > DIAL_IN_SILENCE_S:
        out.problems.append(_("it cannot be dialled and has not exchanged here within the "
                              "hour: check its node and its line (it dials the siège itself, "
                              "[node] dial_every there)"))
        return out
    out.reachable = out.database_ok = True  # its hello came, read from its database
    out.identity = site  # its certificate said so at that hello
    out.cert_days_left = days_left(greeted.cert_not_after)
    _judge_certificate(out)
    _judge(node, out, greeted.node_version, greeted.schema_fingerprint,
           greeted.clock_offset_us)
    if greeted.refused:  # as the siège's service found at that hello
        out.problems.append(greeted.refused)
    return out


def _judge_certificate(out: coordinator_pb2.SiteTest) -> None:
    if out.cert_days_left < WARN_CERT_DAYS:
        out.problems.append(_("its certificate expires in {days} days: siege-certs renew "
                              "{site}").format(days=out.cert_days_left, site=out.site))


def _judge(node: Node, out: coordinator_pb2.SiteTest, node_version: str,
           schema_fingerprint: str, clock_offset_us: int) -> None:
    """Versions and clock against the siège's, with what to do."""
    mine = node.replica.identity()
    out.node_version = node_version
    out.schema_fingerprint = schema_fingerprint
    out.clock_offset_us = clock_offset_us
    out.versions_match = (node_version == mine.node_version
                          and schema_fingerprint == mine.schema_fingerprint)
    if node_version != mine.node_version:
        out.problems.append(_("node version {version}, the siège runs {siege_version}: "
                              "upgrade it").format(version=node_version,
                                                   siege_version=mine.node_version))
    if not fingerprints_comparable(schema_fingerprint, mine.schema_fingerprint):
        out.problems.append(_("its schema fingerprint and the siège's were made by different "
                              "node versions and are not compared: upgrade the older node, "
                              "then siege-node install there"))
    elif schema_fingerprint != mine.schema_fingerprint:
        out.problems.append(_("its schema differs from the siège's: run its vendor upgrade, "
                              "then siege-node install there"))
    if abs(clock_offset_us) > WARN_CLOCK_US:
        out.problems.append(_("its clock is off by {seconds} s: fix its time (NTP)").format(
            seconds=f"{clock_offset_us / 1e6:+.0f}"))
