"""Capture-side benchmark (``make bench``). Prints ratios against baselines run in the same
process, because these machines are noisy; the last line is one JSON object.

* ``capture_overhead_driver``: fractional slowdown of an application's driver inserts
  (``executemany``, one transaction) into a 10-column table when capture is on, against the
  same inserts into an identical table without capture.
* ``capture_overhead_engine``: the same for a PSQL loop inside the engine (the engine's own
  insert rate is the baseline).
* ``read_events_per_s_server``: captured changes of a BLOB-free table turned into published
  events per second — read, encoded, stamped, chained, stored, consumed — through a real
  Firebird server on loopback. ``read_only_events_per_s_server`` is the read + encode part.
* ``publish_events_per_s_embedded``: the whole publish step, embedded.
* ``apply_events_per_s``, ``apply_vs_executemany``, ``apply_vs_engine``: another site's
  insert events applied here (merge, registers, rows, relay log, vector), against a naive
  driver ``executemany`` of the same rows and the engine's own PSQL insert rate.
* ``seal_us_per_tx``, ``verify_us_per_tx``, ``signature_share``: signing one transaction at
  its origin, checking its seal at a receiver, and the share of apply time that check takes
  when every transaction is one event (the worst case; issue 20 aims below 0.05).
* ``e2e_events_per_s``, ``wire_bytes_per_event``, ``slow_link_efficiency`` (and a few more
  ``e2e_*`` / ``slow_link_*``): the mesh, site to site over mTLS with apply, on loopback and
  through a 2 Mbit/s link between network namespaces (``tools/bench_mesh.py`` says how). If
  that part fails, its keys are null and ``errors`` says why; the rest is still printed.
* ``apply_mixed_vs_insert``, ``apply_small_tx_events_per_s``, ``storage_overhead_ratio`` (and
  a few more ``apply_*`` / ``storage_*``): apply under a shop's mix of small transactions,
  updates, deletes, conflicts and BLOBs against insert-only, and the database's size with
  sync against without (``tools/bench_apply.py`` says how). Reported like the mesh part when
  it fails.
* ``analyse_bytes_ratio``, ``analyse_time_vs_scan`` (and ``analyse_seconds``,
  ``analyse_found``): ``siege-ctl analyse`` on a ``--analyse-rows`` table (1,000,000) with 10
  scattered differences: bytes moved ÷ the table's bytes, time ÷ one local full-table SELECT
  (``tools/bench_analyse.py``). Reported like the mesh part when it fails.
* ``join_vs_gbak``, ``join_bytes_per_row`` (and ``join_seconds``, ``gbak_seconds``):
  ``siege-ctl join`` of a new site from a siège of ``--join-rows`` rows (1,000,000): its time
  ÷ a local backup and restore of the same database, and the bytes on the line per row
  (``tools/bench_join.py``). Reported like the mesh part when it fails.

* ``install_seconds_600_tables``, ``publish_ms_one_change_600_tables`` (and
  ``publish_ms_one_change_2_tables``, ``publish_ms_600_vs_2_tables``,
  ``publish_ms_first_600_tables``): ``capture.install`` of an ERP-shaped 600-table database
  and the publish of one captured change among those tables by a running node's publisher,
  through a private Firebird server, against the same publish on a two-table database
  (``tools/bench_tables.py``; aim: under 50 ms). Reported like the mesh part when it fails.

Each figure is the median of ``--repeat`` runs (the mesh figures: one run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))

from firebird.driver import Connection  # noqa: E402

from siege_sync.node.db import values  # noqa: E402
from siege_sync.node.db.database import SNAPSHOT_RW, transaction  # noqa: E402
from siege_sync.node.db.schema import TableSelection  # noqa: E402
from siege_sync.node.journal import capture, reader  # noqa: E402
from siege_sync.node.pipeline.publish import Publisher  # noqa: E402
from tests.fbdb import create_db  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402

COLUMNS = ("ID INTEGER NOT NULL PRIMARY KEY, CODE VARCHAR(20), NAME VARCHAR(60), "
           "CITY VARCHAR(40), QTY INTEGER, PRICE NUMERIC(15,2), RATE DOUBLE PRECISION, "
           "DUE_DAY DATE, STAMPED TIMESTAMP, FLAG BOOLEAN")
DDL = [f"CREATE TABLE PLAIN ({COLUMNS})", f"CREATE TABLE CAPTURED ({COLUMNS})"]
INSERT = ("INSERT INTO {t} (ID, CODE, NAME, CITY, QTY, PRICE, RATE, DUE_DAY, STAMPED, FLAG) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
PSQL_LOOP = """EXECUTE BLOCK AS DECLARE I INTEGER = {start}; BEGIN
  WHILE (I < {end}) DO BEGIN
    INSERT INTO {t} (ID, CODE, NAME, CITY, QTY, PRICE, RATE, DUE_DAY, STAMPED, FLAG) VALUES
      (:I, 'C' || :I, 'name of ' || :I, 'Lyon', :I, :I / 100.0, :I * 1.5, CURRENT_DATE,
       CURRENT_TIMESTAMP, TRUE);
    I = I + 1;
  END
END"""


def rows(start: int, n: int) -> list[tuple]:
    now = datetime(2026, 11, 30, 12, 0, 0)
    return [(i, f"C{i}", f"name of {i}", "Lyon", i, Decimal(i) / 100, i * 1.5, now.date(), now,
             True) for i in range(start, start + n)]


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def driver_inserts(con: Connection, table: str, data: list[tuple]) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.executemany(INSERT.format(t=table), data)
        cur.close()


def psql_inserts(con: Connection, table: str, start: int, n: int) -> None:
    with transaction(con) as tm:
        tm.execute_immediate(PSQL_LOOP.format(t=table, start=start, end=start + n))


def clear_log(con: Connection) -> None:
    """Drop captured entries between runs so every run starts from the same state."""
    with transaction(con) as tm:
        # The application tables first: deleting captured rows logs deletes, dropped next.
        for table in ("PLAIN", "CAPTURED", "SYNC$I1", "SYNC$EVENTS"):
            tm.execute_immediate(f"DELETE FROM {table}")


def overheads(con: Connection, n_driver: int, n_engine: int, repeat: int) -> dict[str, float]:
    drv, eng = [], []
    clear_log(con)
    driver_inserts(con, "PLAIN", rows(0, n_driver))  # warm-up: caches, page allocation
    driver_inserts(con, "CAPTURED", rows(0, n_driver))
    for r in range(repeat):
        # Alternate which table goes first so neither always pays for the other's garbage.
        order = ("PLAIN", "CAPTURED") if r % 2 else ("CAPTURED", "PLAIN")
        clear_log(con)
        data = rows(r * n_driver, n_driver)
        t = {table: timed(lambda table=table, data=data: driver_inserts(con, table, data))
             for table in order}
        drv.append((t["PLAIN"], t["CAPTURED"]))
        clear_log(con)
        t = {table: timed(lambda table=table: psql_inserts(con, table, 0, n_engine))
             for table in order}
        eng.append((t["PLAIN"], t["CAPTURED"]))
    d_plain = statistics.median(p for p, _ in drv)
    d_capt = statistics.median(c for _, c in drv)
    e_plain = statistics.median(p for p, _ in eng)
    e_capt = statistics.median(c for _, c in eng)
    return {
        "capture_overhead_driver": round(d_capt / d_plain - 1, 3),
        "capture_overhead_engine": round(e_capt / e_plain - 1, 3),
        "driver_rows_per_s_plain": round(n_driver / d_plain),
        "driver_rows_per_s_captured": round(n_driver / d_capt),
        "engine_rows_per_s_plain": round(n_engine / e_plain),
        "engine_rows_per_s_captured": round(n_engine / e_capt),
    }


def read_only(con: Connection) -> int:
    """Plan + read + encode everything pending, without publishing (rolled back)."""
    count = 0
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        batch = reader.plan(cur, 10**9, None, capture.image_tables(con))
        columns = capture.image_columns(con, 1)
        select_list = ", ".join(values.select_expr(c, con.sql_dialect, "I.") for c in columns)
        types = [c.type for c in columns]
        for _group, _entry, _mask, raw in reader.image_rows(cur, batch, 1, select_list):
            [values.encode(t, v) for t, v in zip(types, raw, strict=True)]
            count += 1
        cur.close()
        tm.rollback()
    assert count == sum(tx.count for tx in batch.transactions)
    return count


def publish_rate(con: Connection, n: int, repeat: int) -> tuple[float, float]:
    pub_rates, read_rates = [], []
    for r in range(repeat):
        clear_log(con)
        psql_inserts(con, "CAPTURED", r * n, n)
        t_read = timed(lambda: read_only(con))
        result = None

        def run() -> None:
            nonlocal result
            result = Publisher(con, "bench", max_entries=20_000).publish()

        t_pub = timed(run)
        assert result is not None and result.events == n, result
        pub_rates.append(n / t_pub)
        read_rates.append(n / t_read)
    return statistics.median(pub_rates), statistics.median(read_rates)


def apply_rates(tmp: Path, n: int) -> dict[str, float]:
    """Events of ``n`` inserted rows applied at a second site, against a naive executemany
    copy of the same rows and the engine's own PSQL insert rate, in the same run."""
    from siege_sync.node.journal.eventlog import read
    from siege_sync.node.pipeline.apply import Applier

    src = create_db(tmp / "apply_src.fdb", ddl=DDL)
    dst = create_db(tmp / "apply_dst.fdb", ddl=DDL)
    setup(src)
    setup(dst)
    psql_inserts(src, "CAPTURED", 0, n)
    Publisher(src, "src", max_entries=n).publish()
    bodies = list(read(src, "src"))
    t_apply = timed(lambda: Applier(dst, "dst").apply(bodies))
    t_naive = timed(lambda: driver_inserts(dst, "PLAIN", rows(0, n)))
    with transaction(dst) as tm:
        tm.execute_immediate("DELETE FROM PLAIN")
    t_engine = timed(lambda: psql_inserts(dst, "PLAIN", 0, n))
    src.close()
    dst.close()
    return {
        "apply_events_per_s": round(n / t_apply),
        "apply_vs_executemany": round(t_naive / t_apply, 3),
        "apply_vs_engine": round(t_engine / t_apply, 4),
    }


def signature_costs(tmp: Path, apply_events_per_s: float, n: int = 2000) -> dict[str, float]:
    """What signing costs (issue 20): sealing and checking one transaction's seal, over
    real events of the apply benchmark, and the share of apply time the check takes when
    every transaction is one event (the worst case: one seal per event)."""
    from siege_sync.certs import load_bundle
    from siege_sync.node.journal.eventlog import read
    from siege_sync.node.journal.seal import Sealer, Verifier
    from siege_sync.proto import events_pb2
    from tools.localmesh import Pki

    pki = Pki(tmp / "sig-pki")
    src_bundle, dst_bundle = load_bundle(pki.site("src")), load_bundle(pki.site("dst"))
    con = create_db(tmp / "sig.fdb", ddl=DDL)
    setup(con)
    psql_inserts(con, "CAPTURED", 0, 1)
    Publisher(con, "src").publish()
    event = events_pb2.Event.FromString(next(iter(read(con, "src"))))
    event.ClearField("seal")
    unsigned = event.SerializeToString(deterministic=True)
    sealer = Sealer(lambda: src_bundle)
    bodies: list[bytes] = []
    t_seal = timed(lambda: bodies.extend(sealer.seal(unsigned) for _ in range(n)))
    verifier = Verifier(lambda: dst_bundle)
    verifier.learn(con, [src_bundle.cert_pem])
    parsed = [events_pb2.Event.FromString(b) for b in bodies]
    t_check = timed(lambda: [verifier.check(con, "src", [e], [b])
                             for e, b in zip(parsed, bodies, strict=True)])
    con.close()
    verify_s = t_check / n
    return {
        "seal_us_per_tx": round(t_seal / n * 1e6, 1),
        "verify_us_per_tx": round(verify_s * 1e6, 1),
        "signature_share": round(verify_s / (verify_s + 1 / apply_events_per_s), 3),
    }


def setup(con: Connection) -> None:
    capture.install(con, TableSelection(include=("CAPTURED",)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-driver", type=int, default=20_000)
    parser.add_argument("--rows-engine", type=int, default=100_000)
    parser.add_argument("--rows-publish", type=int, default=100_000)
    parser.add_argument("--rows-apply", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mesh-events", type=int, default=20_000,
                        help="events of the loopback end-to-end exchange")
    parser.add_argument("--mesh-slow-events", default="auto",
                        help="events over the 2 Mbit/s link (auto: 100000 or 30000)")
    parser.add_argument("--skip-slow-link", action="store_true")
    parser.add_argument("--apply-mix-events", type=int, default=10_000,
                        help="events of the shop's mix applied (tools/bench_apply.py)")
    parser.add_argument("--storage-rows", type=int, default=100_000,
                        help="rows inserted then updated for storage_overhead_ratio")
    parser.add_argument("--analyse-rows", type=int, default=1_000_000,
                        help="rows of the analyse benchmark's table (tools/bench_analyse.py)")
    parser.add_argument("--join-rows", type=int, default=1_000_000,
                        help="rows of the join benchmark's siège (tools/bench_join.py)")
    parser.add_argument("--tables", type=int, default=600,
                        help="tables of the table-count benchmark (tools/bench_tables.py)")
    args = parser.parse_args()
    mesh_preload()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        con = create_db(Path(tmp) / "bench.fdb", ddl=DDL)
        setup(con)
        out.update(overheads(con, args.rows_driver, args.rows_engine, args.repeat))
        print(f"embedded overheads: {out}", flush=True)
        rate, read_rate = publish_rate(con, args.rows_publish, args.repeat)
        out["publish_events_per_s_embedded"] = round(rate)
        out["read_only_events_per_s_embedded"] = round(read_rate)
        con.close()
        print(f"embedded publish: {rate:.0f} events/s (read+encode {read_rate:.0f}/s)",
              flush=True)
        out.update(apply_rates(Path(tmp), args.rows_apply))
        out.update(signature_costs(Path(tmp), out["apply_events_per_s"]))
        print(f"apply: {out['apply_events_per_s']} events/s", flush=True)
        with FirebirdServer(Path(tmp) / "server") as server:
            scon = server.create_database("bench", ddl=DDL)
            setup(scon)
            rate, read_rate = publish_rate(scon, args.rows_publish, args.repeat)
            out["read_events_per_s_server"] = round(rate)
            out["read_only_events_per_s_server"] = round(read_rate)
            scon.close()
        print(f"server publish: {rate:.0f} events/s (read+encode {read_rate:.0f}/s)",
              flush=True)
    out.update(mesh_figures(args))
    for part in (apply_mix_figures(args.apply_mix_events, args.storage_rows),
                 analyse_figures(args.analyse_rows), join_figures(args.join_rows),
                 tables_figures(args.tables)):
        if "errors" in part and "errors" in out:
            part["errors"] = [*out["errors"], *part["errors"]]
        out.update(part)
    print(json.dumps(out, sort_keys=True))


def apply_mix_figures(events: int, storage_rows: int) -> dict:
    """The shop's mix and the storage part (tools/bench_apply.py)."""
    from tools import bench_apply

    return _part("apply-mix", lambda n: bench_apply.run(n, storage_rows), bench_apply.KEYS,
                 events)


def analyse_figures(rows: int) -> dict:
    """The analyse part (tools/bench_analyse.py)."""
    from tools import bench_analyse

    return _part("analyse", bench_analyse.run, bench_analyse.KEYS, rows)


def join_figures(rows: int) -> dict:
    """The join part (tools/bench_join.py)."""
    from tools import bench_join

    return _part("join", bench_join.run, bench_join.KEYS, rows)


def tables_figures(tables: int) -> dict:
    """The table-count part (tools/bench_tables.py)."""
    from tools import bench_tables

    return _part("tables", bench_tables.run, bench_tables.KEYS, tables)


def _part(name: str, run: Callable[[int], dict], keys: tuple[str, ...], rows: int) -> dict:
    """A part run on its own table, reported like the mesh part: its keys null and
    ``errors`` saying why when it fails."""
    try:
        figures = run(rows)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        message = f"{name}: {type(exc).__name__}: {exc}"
        print(f"{name} benchmark FAILED: {message}", flush=True)
        return {**dict.fromkeys(keys), "errors": [message]}
    print(f"{name}: {figures}", flush=True)
    return figures


MESH_KEYS = ("e2e_events_per_s", "wire_bytes_per_event", "slow_link_efficiency")


def mesh_preload() -> None:
    """Import the mesh part's modules now, with the rest (failures surface in mesh_figures)."""
    try:
        from tools import bench_mesh

        bench_mesh.preload()
    except Exception:  # noqa: BLE001, S110 - mesh_figures reports it
        pass


def mesh_figures(args: argparse.Namespace) -> dict:
    """The mesh part (tools/bench_mesh.py): its keys, null where it failed, and ``errors``
    when something did — never an exception, so the figures above are not lost."""
    try:
        from tools import bench_mesh

        slow = None if args.mesh_slow_events == "auto" else int(args.mesh_slow_events)
        return bench_mesh.run(args.mesh_events, slow, skip_slow=args.skip_slow_link)
    except BaseException as exc:  # noqa: BLE001 - reported in the JSON
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = f"mesh: {type(exc).__name__}: {exc}"
        print(f"mesh benchmark FAILED: {message}", flush=True)
        keys = getattr(sys.modules.get("tools.bench_mesh"), "KEYS", MESH_KEYS)
        return {**dict.fromkeys(keys), "errors": [message]}


if __name__ == "__main__":
    main()
