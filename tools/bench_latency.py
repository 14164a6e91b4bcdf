"""Latency benchmark (issue 22): seconds from a commit at one shop until every other shop
holds it, in continuous mode with wake on commit.

``.venv/bin/python tools/bench_latency.py [--commits 60] [--rate 1.0] [--pause 30]`` (``make
bench-latency``; root: it starts a private Firebird server). Measures, asserts nothing.

Five ``siege-node run`` processes on loopback (``tools.localmesh.ProcessMesh``), each
database on one private Firebird server; the siège in continuous mode with a ``--pause``
between its scheduled rounds. A writer commits small transactions (one sale: an INTEGER key,
WIN1252 text, NUMERIC) at random sites, ``--rate`` a second; an independent reader polls every
site's table directly (its own SYSDBA connections, every 20 ms) and notes when each sale first
shows there. Per commit: the time until the last of the four other sites holds it.

Keys (the last line is one JSON object): ``commit_to_visible_p50_s``, ``_p95_s``, ``_max_s``
(aim: p50 < 1 s, p95 < 3 s), ``commits``, ``not_visible`` (sales some site lacked at the end),
``news_rounds`` and ``scheduled_rounds`` (from the siège's reports), and as the baseline of the
same run ``scheduled_round_s`` (the median duration of its scheduled rounds: what a commit
would wait on top of up to a pause without wake on commit) and ``p50_vs_round`` (p50 ÷ that).
What continuous mode costs: ``idle_cpu_siege`` / ``idle_cpu_site`` (share of one core a node
process used over ``--idle`` seconds before the commits; a site's is the mean of the four) and
``busy_cpu_siege`` / ``busy_cpu_site`` (the same while the commits ran), and
``idle_line_bytes_per_s_site`` / ``busy_line_bytes_per_s_site``: the bytes a site's line to the
siège carries a second, both ways, with ``--line`` (the siège dials each site through a
counting proxy, ``tools.faultline``, which adds latency; a site's own ``News`` call goes
around it: a few hundred bytes each); null without it.

One of the five, ``vannes``, cannot be dialled (``outbound_only``, ``dial_every`` 600 s:
its dials never come within the run): what it commits goes out through the exchange its
commit starts, and what the others commit reaches it through its ``Listen`` call to the
siège (node/mesh/tidings.py). ``commit_to_outbound_p50_s`` / ``_p95_s``: the time until vannes
holds a sale committed elsewhere; ``commit_from_outbound_p50_s``: until the four others hold
one committed at vannes. Its line is not counted by ``--line`` (it dials the siège itself).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before site-packages: another `tests` package may be there
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction  # noqa: E402
from siege_sync.siege import reports  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402
from tools.localmesh import ProcessMesh  # noqa: E402

DDL = ["CREATE TABLE SALE (ID INTEGER NOT NULL PRIMARY KEY, LABEL VARCHAR(40) CHARACTER "
       "SET WIN1252, AMOUNT NUMERIC(15, 2))"]
LABELS = ["Caf\u00e9 cr\u00e8me", "Cr\u00eape sucr\u00e9e", "Th\u00e9 \u00e0 la menthe",
          "Br\u00fbl\u00e9e"]
POLL_S = 0.02


class FiveSites(ProcessMesh):
    SITES = ("siege", "lyon", "nice", "brest", "vannes")


OUTBOUND = "vannes"
DIAL_EVERY_S = 600.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(commits: int, rate: float, pause: float, idle: float, line: bool = False) -> dict:
    seen: dict[str, dict[int, float]] = {s: {} for s in FiveSites.SITES}
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="siege-latency-") as tmp, \
            FirebirdServer(Path(tmp) / "server") as server:
        mesh = FiveSites(server, Path(tmp) / "mesh", DDL, faulty_lines=line,
                         outbound={OUTBOUND}, dial_every=DIAL_EVERY_S,
                         siege_toml=f"[siege]\ncontinuous = true\npause_seconds = {pause}\n")
        readers = {s: mesh.open_as_sysdba(s) for s in FiveSites.SITES}
        lines = max(len(mesh.lines), 1)  # the dialled sites' (vannes dials the siège itself)

        def poll() -> None:
            while not stop.is_set():
                for site, con in readers.items():
                    with transaction(con, READ_COMMITTED_RW) as tm:
                        cur = tm.cursor()
                        cur.execute("SELECT ID FROM SALE")
                        now = time.monotonic()
                        for (key,) in cur.fetchall():
                            seen[site].setdefault(key, now)
                        cur.close()
                stop.wait(POLL_S)

        reader = threading.Thread(target=poll, name="reader", daemon=True)
        try:
            reader.start()
            rng = random.Random(22)
            committed: dict[int, tuple[str, float]] = {}
            time.sleep(3)  # the nodes' first scheduled round, and their watches, settle
            pids = {s: mesh.procs[s].pid for s in FiveSites.SITES}
            idle_from = _cpu(pids), time.monotonic()
            idle_bytes = _carried(mesh)
            time.sleep(idle)
            idle_share = _shares(idle_from, _cpu(pids))
            idle_line = (_carried(mesh) - idle_bytes) / (time.monotonic() - idle_from[1])
            busy_from = _cpu(pids), time.monotonic()
            busy_bytes = _carried(mesh)
            for key in range(1, commits + 1):
                site = rng.choice(FiveSites.SITES)
                with transaction(mesh.connection(site), READ_COMMITTED_RW) as tm:
                    cur = tm.cursor()
                    cur.execute("INSERT INTO SALE (ID, LABEL, AMOUNT) VALUES (?, ?, ?)",
                                (key, rng.choice(LABELS), round(rng.uniform(1, 99), 2)))
                    cur.close()
                committed[key] = (site, time.monotonic())
                time.sleep(rng.expovariate(rate))
            busy_share = _shares(busy_from, _cpu(pids))
            busy_line = (_carried(mesh) - busy_bytes) / (time.monotonic() - busy_from[1])
            deadline = time.monotonic() + max(pause, 30) + 30
            while time.monotonic() < deadline and not all(
                    key in seen[s] for key in committed for s in FiveSites.SITES):
                time.sleep(0.2)
        finally:
            stop.set()
            reader.join(timeout=10)
            for con in readers.values():
                con.close()
            siege = mesh.open_as_sysdba("siege")
            try:
                done = reports.listing(siege, limit=0)
            finally:
                siege.close()
            mesh.close()
    latencies, missing, to_outbound, from_outbound = [], 0, [], []
    for key, (site, at) in committed.items():
        others = [seen[s].get(key) for s in FiveSites.SITES if s != site]
        if any(t is None for t in others):
            missing += 1
            continue
        latencies.append(max(others) - at)  # type: ignore[type-var]
        if site == OUTBOUND:
            from_outbound.append(latencies[-1])
        else:
            to_outbound.append(seen[OUTBOUND][key] - at)
    scheduled = [_seconds(r) for r in done if r.trigger == "schedule" and r.ended]
    round_s = statistics.median(scheduled) if scheduled else None
    p50 = _percentile(latencies, 0.5) if latencies else None
    return {
        "commit_to_visible_p50_s": None if p50 is None else round(p50, 3),
        "commit_to_visible_p95_s": round(_percentile(latencies, 0.95), 3) if latencies
        else None,
        "commit_to_visible_max_s": round(max(latencies), 3) if latencies else None,
        "commits": len(committed), "not_visible": missing,
        "commit_to_outbound_p50_s": _rounded(to_outbound, 0.5),
        "commit_to_outbound_p95_s": _rounded(to_outbound, 0.95),
        "commit_from_outbound_p50_s": _rounded(from_outbound, 0.5),
        "news_rounds": sum(1 for r in done if r.trigger == "news"),
        "scheduled_rounds": len(scheduled),
        "scheduled_round_s": None if round_s is None else round(round_s, 3),
        "p50_vs_round": None if p50 is None or not round_s else round(p50 / round_s, 3),
        "pause_seconds": pause, "sites": len(FiveSites.SITES),
        "idle_cpu_siege": idle_share["siege"],
        "idle_cpu_site": round(statistics.mean(v for k, v in idle_share.items()
                                               if k != "siege"), 4),
        "busy_cpu_siege": busy_share["siege"],
        "busy_cpu_site": round(statistics.mean(v for k, v in busy_share.items()
                                               if k != "siege"), 4),
        "idle_line_bytes_per_s_site": round(idle_line / lines)
        if line else None,
        "busy_line_bytes_per_s_site": round(busy_line / lines)
        if line else None,
    }


def _rounded(values: list[float], q: float) -> float | None:
    return round(_percentile(values, q), 3) if values else None


def _carried(mesh: ProcessMesh) -> int:
    """Bytes the siège's lines to the sites carried so far, both ways (TLS included)."""
    return sum(line.forwarded for line in mesh.lines.values())


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each node process used so far (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for site, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        out[site] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _shares(since: tuple[dict[str, float], float], now: dict[str, float]) -> dict[str, float]:
    """Each node's share of one core between ``since`` and now."""
    before, at = since
    wall = time.monotonic() - at
    return {site: round((now[site] - before[site]) / wall, 4) for site in now}


def _seconds(report) -> float:
    return (datetime.fromisoformat(report.ended)
            - datetime.fromisoformat(report.started)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=60)
    parser.add_argument("--rate", type=float, default=1.0, help="commits a second")
    parser.add_argument("--pause", type=float, default=30.0,
                        help="the siège's pause between scheduled rounds (s)")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds of nothing committed, before the commits (CPU measured)")
    parser.add_argument("--line", action="store_true",
                        help="count the bytes on the siège's lines (through proxies in this "
                             "process, which add latency: measure latency without it)")
    args = parser.parse_args()
    print(json.dumps(run(args.commits, args.rate, args.pause, args.idle, args.line),
                     sort_keys=True))


if __name__ == "__main__":
    main()
