"""Apply under a shop's mix, and what sync costs on disk (a measurement, not a test).

``.venv/bin/python -m tools.bench_apply [--events 10000] [--storage-rows 100000]``

Part of ``make bench`` (issue 21); the JSON keys:

* ``apply_mixed_events_per_s``, ``apply_mixed_vs_insert``: another site's events applied
  here in a shop's mix — many small source transactions of 3 to 30 events; half the events
  updates of rows both sites hold, a tenth deletes, the rest inserts, a fifth of them with a
  small text BLOB; about one event in twenty of a row this site changed concurrently (a
  conflict the merge settles and records) — against the insert-only rate of the same
  process (``apply_insert_events_per_s``: one source transaction of as many inserted rows).
* ``apply_small_tx_events_per_s``: inserts only, in source transactions of five events
  (what a site catching up on a day of sales meets).
* ``storage_overhead_ratio`` (and ``storage_bytes_synced``, ``storage_bytes_plain``): the
  database file after ``--storage-rows`` inserted rows, each then updated once, published
  and purged as a running node's rounds would (every 10,000 changes; a lone site has
  applied everything it published), ÷ the same database and workload without capture.
  Issue 21 asks for 1,000,000 rows; the default is smaller to keep ``make bench`` near ten
  minutes (``--storage-rows 1000000`` runs it).

Databases are embedded, made as a site makes them (``tests.fbdb.create_db`` outside pytest).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))

from firebird.driver import Connection  # noqa: E402

from siege_sync.node.db.database import transaction  # noqa: E402
from siege_sync.node.db.schema import TableSelection  # noqa: E402
from siege_sync.node.journal import capture, retention  # noqa: E402
from siege_sync.node.journal.eventlog import read  # noqa: E402
from siege_sync.node.pipeline.apply import Applier  # noqa: E402
from siege_sync.node.pipeline.publish import Publisher  # noqa: E402
from tests.fbdb import create_db  # noqa: E402

KEYS = ("apply_mixed_events_per_s", "apply_mixed_vs_insert", "apply_insert_events_per_s",
        "apply_small_tx_events_per_s", "storage_overhead_ratio", "storage_bytes_synced",
        "storage_bytes_plain")

TABLE = ("CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(60) CHARACTER SET "
         "UTF8, PRICE NUMERIC(15,2), QTY INTEGER, RATE DOUBLE PRECISION, DUE DATE, "
         "NOTE BLOB SUB_TYPE TEXT CHARACTER SET UTF8)")
INSERT = "INSERT INTO SALE (ID, NAME, PRICE, QTY, RATE, DUE, NOTE) VALUES (?, ?, ?, ?, ?, ?, ?)"
NOTE = "Livraison à l'entrepôt de Lyon, quai n°3 — réception le matin. " * 3


def _site(path: Path) -> Connection:
    con = create_db(path, ddl=[TABLE])
    capture.install(con, TableSelection(include=("SALE",)))
    return con


def _row(i: int, rng: random.Random, blob: bool) -> tuple:
    return (i, f"Client n°{i} — Société Générale d'Éclairage", Decimal(rng.randrange(10**6)) /
            100, rng.randrange(1000), rng.random() * 1e6, None, NOTE if blob else None)


def _events(con: Connection, site: str) -> list[bytes]:
    Publisher(con, site, max_entries=10**6).publish()
    return list(read(con, site))


def _timed_apply(dst: Connection, bodies: list[bytes]) -> float:
    applier = Applier(dst, "dst")
    t0 = time.perf_counter()
    result = applier.apply(bodies)
    elapsed = time.perf_counter() - t0
    if result.applied_events != len(bodies) or result.refused or result.waiting:
        raise RuntimeError(f"apply did not take every event: {result}")
    return elapsed


def insert_only(tmp: Path, events: int) -> dict[str, float]:
    """One source transaction of ``events`` inserts, and the same in transactions of five."""
    rng = random.Random(1)
    out: dict[str, float] = {}
    for name, per_tx in (("apply_insert_events_per_s", events), ("apply_small_tx_events_per_s",
                                                                5)):
        src, dst = _site(tmp / f"{name}-src.fdb"), _site(tmp / f"{name}-dst.fdb")
        for start in range(0, events, per_tx):
            with transaction(src) as tm:
                cur = tm.cursor()
                cur.executemany(INSERT, [_row(i, rng, False)
                                         for i in range(start, min(events, start + per_tx))])
                cur.close()
        out[name] = round(events / _timed_apply(dst, _events(src, "src")))
        src.close()
        dst.close()
    return out


def mixed(tmp: Path, events: int) -> float:
    """Events per second of the shop's mix (see the module docstring)."""
    rng = random.Random(2)
    src, dst = _site(tmp / "mixed-src.fdb"), _site(tmp / "mixed-dst.fdb")
    base = max(1000, events // 2)
    with transaction(src) as tm:
        cur = tm.cursor()
        cur.executemany(INSERT, [_row(i, rng, i % 5 == 0) for i in range(base)])
        cur.close()
    _timed_apply(dst, _events(src, "src"))  # both sites hold the rows
    alive = list(range(base))
    # This site's concurrent changes: a row in twenty of those the mix touches.
    touched = rng.sample(alive, min(len(alive), events // 20))
    with transaction(dst) as tm:
        cur = tm.cursor()
        cur.executemany("UPDATE SALE SET QTY = QTY + 1, NAME = ? WHERE ID = ?",
                        [(f"modifié à Lyon {i}", i) for i in touched])
        cur.close()
    Publisher(dst, "dst").publish()
    hot = list(touched)
    next_id, made = base, 0
    while made < events:
        size = min(rng.randint(3, 30), events - made)
        with transaction(src) as tm:
            cur = tm.cursor()
            for _ in range(size):
                roll = rng.random()
                if roll < 0.5 and alive:
                    i = hot.pop() if hot and rng.random() < 0.1 else rng.choice(alive)
                    cur.execute("UPDATE SALE SET PRICE = ?, QTY = ? WHERE ID = ?",
                                (Decimal(rng.randrange(10**6)) / 100, rng.randrange(1000), i))
                elif roll < 0.6 and len(alive) > 1:
                    i = alive.pop(rng.randrange(len(alive)))
                    cur.execute("DELETE FROM SALE WHERE ID = ?", (i,))
                else:
                    cur.execute(INSERT, _row(next_id, rng, rng.random() < 0.2))
                    alive.append(next_id)
                    next_id += 1
            cur.close()
        made += size
    before = set(read(src, "src"))
    bodies = [b for b in _events(src, "src") if b not in before]
    elapsed = _timed_apply(dst, bodies)
    src.close()
    dst.close()
    return len(bodies) / elapsed


def storage(tmp: Path, rows: int) -> dict[str, float]:
    """File sizes after the same inserts and updates with sync (published, purged) and
    without capture."""
    sizes = {}
    for synced in (True, False):
        path = tmp / f"storage-{synced}.fdb"
        con = _site(path) if synced else create_db(path, ddl=[TABLE])
        rng = random.Random(3)
        chunk = 10_000
        for sql in (INSERT, "UPDATE SALE SET PRICE = ?, QTY = ? WHERE ID = ?"):
            for start in range(0, rows, chunk):
                block = range(start, min(rows, start + chunk))
                with transaction(con) as tm:
                    cur = tm.cursor()
                    if sql == INSERT:
                        cur.executemany(sql, [_row(i, rng, False) for i in block])
                    else:
                        cur.executemany(sql, [(Decimal(i) / 100, i % 7, i) for i in block])
                    cur.close()
                if synced:  # a node's round: publish, then purge what every site has
                    Publisher(con, "site", max_entries=chunk * 2).publish()
                    retention.purge(con, {("site", 1): int(capture.get_state(con, "seq"))})
        con.close()
        sizes[synced] = path.stat().st_size
    return {"storage_overhead_ratio": round(sizes[True] / sizes[False], 2),
            "storage_bytes_synced": sizes[True], "storage_bytes_plain": sizes[False]}


def run(events: int = 10_000, storage_rows: int = 100_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = insert_only(Path(tmp), events)
        rate = mixed(Path(tmp), events)
        out["apply_mixed_events_per_s"] = round(rate)
        out["apply_mixed_vs_insert"] = round(rate / out["apply_insert_events_per_s"], 3)
        out.update(storage(Path(tmp), storage_rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--storage-rows", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.storage_rows), sort_keys=True))


if __name__ == "__main__":
    main()
