"""Real ERP shapes (issue 18, "Tests and benchmark"): three embedded sites hold the same
ERP-shaped schema (``tools/erpschema.py``'s erp-mini: ~50 tables with id triggers on
generators, audit triggers writing history tables, an AFTER INSERT trigger inserting child
rows, foreign-key chains ON DELETE CASCADE / SET NULL / NO ACTION, a foreign key to a UNIQUE
key, one to a table the node leaves out, a ledger with a text key under a case-insensitive
collation that references itself and two-column keys, CHECKs, domains, NUMERIC, DOUBLE,
WIN1252 and UTF8 text under case-insensitive collations, text and binary BLOBs, keyless and
global temporary tables, a key-allocating procedure, an ON CONNECT trigger, rows that predate
install). Each site installs capture with its own generator ranges, runs the application's
own transactions (concurrent edits of shared rows, deletes with cascades), and the sites sync
through the siège:
real nodes over mTLS gRPC on loopback (``MeshRounds``), or the nodes' pipeline called without
the wire (``SiegeRounds``: ``Replica`` publish, batches with their BLOB chunks, apply — it says
why a transaction waits, used by the focused tests below).
Convergence is checked by an independent digest of every replicated application table
(``tools.erpschema.digest``: the tables read with its own SQL, not the node's digest).

Payments (PAID) race other sites' recomputed TOTALs under CHECK (PAID <= TOTAL): merged,
they may break the CHECK and the row falls back to its latest write's whole row (H1's finding
F2, which held both streams, fixed: tests/test_check_whole_row.py).
Known and left out of the random workload, with its reproduction:
* two sites creating rows with engine-equal UNIQUE codes that other rows then reference hold
  both streams ("other rows reference both", H1's finding F4): each site's codes carry its
  own tag.

Seeded (SIEGE_ERP_SEEDS="1,2" to choose; SIEGE_ERP_ROUNDS, SIEGE_ERP_TRANSACTIONS;
SIEGE_ERP_SYNC="mesh,pipeline" for both ways of syncing).
"""

from __future__ import annotations

import os

import pytest

from siege_sync.node.db.database import (
    READ_COMMITTED_RW,
    DatabaseSpec,
    open_connection,
    transaction,
)
from tools import erpschema
from tools.erpschema import MeshRounds, SiegeRounds, Workload, WorkloadStats

SEEDS = [int(s) for s in os.environ.get("SIEGE_ERP_SEEDS", "1").split(",")]
ROUNDS = int(os.environ.get("SIEGE_ERP_ROUNDS", "3"))
TRANSACTIONS = int(os.environ.get("SIEGE_ERP_TRANSACTIONS", "30"))
SYNCS = os.environ.get("SIEGE_ERP_SYNC", "mesh").split(",")
SITES = ("siege", "lyon", "nice")


def conflicts_on_record(con) -> int:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT COUNT(*) FROM SYNC$CONFLICTS")
        (n,) = cur.fetchone()
        cur.close()
    return n


@pytest.fixture
def app_connections():
    """The application's own connections, opened after the schema exists (so its ON CONNECT
    trigger runs for them); closed at the end."""
    opened = []

    def connect(path):
        opened.append(open_connection(DatabaseSpec(str(path))))
        return opened[-1]

    yield connect
    for con in opened:
        if not con.is_closed():
            con.close()


def sites(make_db, tmp_path, erp, connect, names=SITES, sync="pipeline"):
    """The sites' databases, installed as each site's config says (the node's view of the
    schema checked against what the generator made), the application's connections to them,
    and how they sync."""
    cons = {}
    for no, name in enumerate(names):
        report = erpschema.install(make_db(name, ddl=erp.ddl), erp, no)
        cons[name] = connect(tmp_path / f"{name}.fdb")
        refused = erpschema.refusals(report)
        assert set(report.schema.tables) == set(erp.replicated), name
        assert set(refused) == set(erp.keyless) | set(erp.temporary), refused
        for table in erp.keyless:
            assert "no primary key" in refused[table] and "exclude" in refused[table]
        for table in erp.temporary:
            assert "global temporary" in refused[table]
    paths = {n: tmp_path / f"{n}.fdb" for n in names}
    if sync == "mesh":
        return cons, MeshRounds(cons, erp, paths, tmp_path)
    return cons, SiegeRounds(cons, erp, paths)


def work_and_sync(erp, cons, rounds, seed: int) -> WorkloadStats:
    """Rounds of the application's transactions at every site, each followed by syncs
    until quiet: nothing refused, waiting or held, ever."""
    workloads = {s: Workload(erp, s, no, seed) for no, s in enumerate(SITES)}
    stats = WorkloadStats()
    for round_no in range(ROUNDS):
        for site, workload in workloads.items():
            stats.add(workload.run(cons[site], TRANSACTIONS))
        reports = rounds.until_quiet()
        assert not reports[-1].moved, f"round {round_no}: not quiet after {len(reports)} syncs"
        for report in reports:
            assert not report.refused, report.refused
            assert not report.waiting and not report.pending, report.waiting
        assert not rounds.held(), rounds.held()
    return stats


def test_the_generator_is_deterministic_and_makes_every_feature():
    erp = erpschema.build("erp-mini", seed=3)
    assert erpschema.build("erp-mini", seed=3).ddl == erp.ddl
    assert erpschema.build("erp-mini", seed=4).ddl != erp.ddl
    f = erp.features
    assert 40 <= f["tables"] <= 60, f
    for feature in ("keyless", "temporary", "cascade", "set_null", "to_unique_key", "checks",
                    "generators", "procedures", "composite_keys", "text_keys"):
        assert f[feature] > 0, feature
    assert f["foreign_keys"] > f["cascade"] + f["set_null"], "NO ACTION keys too"
    text = "\n".join(erp.ddl)
    for needed in ("ON CONNECT", "AFTER INSERT OR UPDATE OR DELETE", "BEFORE INSERT",
                   "GEN_ID(", "CREATE DOMAIN", "COLLATE WIN_PTBR", "UNICODE_CI_AI",
                   "BLOB SUB_TYPE TEXT", "BLOB SUB_TYPE 0", "NUMERIC(18,4)", "NUMERIC(15,2)",
                   "DOUBLE PRECISION", "REFERENCES VEHICLE (CODE)", "GLOBAL TEMPORARY",
                   "CREATE PROCEDURE NEW_INVOICE_ID"):
        assert needed in text, needed
    big = erpschema.build("erp600")
    assert big.features["tables"] >= 600 and big.features["triggers"] >= 500
    assert big.features["foreign_keys"] >= 400


@pytest.mark.parametrize("sync", SYNCS)
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_three_sites_on_an_erp_schema_converge(make_db, tmp_path, app_connections, seed,
                                               sync):
    erp = erpschema.build("erp-mini", seed=seed)
    cons, rounds = sites(make_db, tmp_path, erp, app_connections, sync=sync)
    try:
        stats = work_and_sync(erp, cons, rounds, seed)
    finally:
        rounds.close()

    # The application's own rules refused some of its transactions (a NO ACTION key, a
    # CHECK); capture never did.
    assert stats.committed > len(SITES) * ROUNDS * TRANSACTIONS // 2, stats
    assert not [e for e in stats.errors if "SYNC$" in e], stats.errors
    digests = {s: erpschema.digest(con, erp, keep=True) for s, con in cons.items()}
    assert erpschema.differences(digests) == []
    assert sum(d.rows for d in digests["siege"].values()) > 300
    # Concurrent edits of shared rows did meet (the merge recorded losers).
    assert conflicts_on_record(cons["siege"]) > 0
    # The audit trigger's history rows carry what the ON CONNECT trigger set for the
    # application's session, at every site (written once, at their origin).
    history = digests["siege"]["DOC_HIST"].content.values()
    assert history and {row[-1] for row in history} == {b"erp 7.2"}


def test_a_vehicle_from_before_install_deleted_with_its_orders_is_gone_everywhere(
        make_db, tmp_path, app_connections):
    """The other site kept the vehicle, the delete 'kept by reference' by its own origin's
    earlier order (H1's finding F1; fails before 0e2dbf4)."""
    erp = erpschema.build("erp-mini")
    cons, rounds = sites(make_db, tmp_path, erp, app_connections, ("siege", "lyon"))
    with transaction(cons["lyon"]) as tm:
        tm.cursor().execute("INSERT INTO SERVICE_ORDER (VEHICLE_CODE, CUSTOMER_ID) "
                            "VALUES ('AB-001-CD', 1)")
    with transaction(cons["lyon"]) as tm:
        cur = tm.cursor()
        cur.execute("DELETE FROM SERVICE_ORDER WHERE VEHICLE_CODE = 'AB-001-CD'")
        cur.execute("DELETE FROM VEHICLE WHERE CODE = 'AB-001-CD'")
        cur.close()
    reports = rounds.until_quiet()
    assert not any(r.refused for r in reports) and not rounds.held()
    digests = {s: erpschema.digest(con, erp, keep=True) for s, con in cons.items()}
    assert erpschema.differences(digests) == []


def test_an_order_for_a_vehicle_from_before_install_deleted_concurrently_keeps_it(
        make_db, tmp_path, app_connections):
    """The site that deleted the vehicle waited for good ('whose insert has not arrived here
    yet') instead of restoring it (H1's finding F3, issue 18 item 3)."""
    erp = erpschema.build("erp-mini")
    cons, rounds = sites(make_db, tmp_path, erp, app_connections, ("siege", "lyon"))
    with transaction(cons["siege"]) as tm:
        tm.cursor().execute("DELETE FROM VEHICLE WHERE CODE = 'AB-002-CD'")
    with transaction(cons["lyon"]) as tm:
        tm.cursor().execute("INSERT INTO SERVICE_ORDER (VEHICLE_CODE, CUSTOMER_ID) "
                            "VALUES ('AB-002-CD', 2)")
    reports = rounds.until_quiet()
    assert not any(r.refused or r.waiting or r.pending for r in reports), reports[-1]
    digests = {s: erpschema.digest(con, erp, keep=True) for s, con in cons.items()}
    assert erpschema.differences(digests) == []
    assert digests["siege"]["VEHICLE"].rows == 4, "the delete lost to the order"
