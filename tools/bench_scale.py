"""Scale benchmark (issue 22): how a round, and the siège's memory, grow with the number of
sites and with a backlog.

``.venv/bin/python tools/bench_scale.py [--sites 5,20,50] [--backlog 100000]`` (``make
bench-scale``; root: it starts a private Firebird server). Measures, asserts nothing.

For each N: N ``siege-node run`` processes on loopback (``tools.localmesh.ProcessMesh``), each
with its own database on one private Firebird server, the siège without a schedule (rounds
only when asked, by the admin's ``Round`` call, as ``siege-ctl manual``). Then:

* ``round_seconds_N``: one small change committed at every site (one sale: INTEGER key,
  WIN1252 text, NUMERIC), then one round — every site's change at every other site;
* ``quiet_round_seconds_N``: the round after it, with nothing to move;
* ``siege_rss_mb_N``: the siège's resident memory after those rounds (``/proc``);
* ``converged_N``: every site holds every sale (read directly from their tables).

Then, with the smallest N: ``backlog_round_seconds`` — ``--backlog`` sales committed at one
site (in transactions of 1,000) before a round that brings them to every other site — and
``backlog_events_per_s`` (events × receiving sites ÷ the round's time). The last line is one
JSON object; ``growth_quiet_50_vs_5`` (and the like) divide the largest N's quiet round by the
smallest's: the curve's slope, against a baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before site-packages: another `tests` package may be there
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction  # noqa: E402
from siege_sync.proto import coordinator_pb2, coordinator_pb2_grpc  # noqa: E402
from tools.bench_latency import DDL  # noqa: E402 - the same shop's sales
from tools.fbserver import FirebirdServer  # noqa: E402
from tools.localmesh import ProcessMesh  # noqa: E402

BACKLOG_TX = 1000


def _mesh_of(n: int) -> type[ProcessMesh]:
    names = ("siege", *(f"shop{i:02d}" for i in range(1, n)))
    return type(f"Mesh{n}", (ProcessMesh,), {"SITES": names})


def _round(mesh: ProcessMesh) -> tuple[float, coordinator_pb2.RoundReport]:
    ch, _ = mesh.stub("siege")
    with ch:
        stub = coordinator_pb2_grpc.CoordinatorStub(ch)
        started = time.perf_counter()
        report = None
        for event in stub.Round(coordinator_pb2.RoundRequest(trigger="manual"),
                                timeout=7200):
            if event.HasField("done"):
                report = event.done
        seconds = time.perf_counter() - started
    assert report is not None, "the round ended without its report"
    return seconds, report


def _count(mesh: ProcessMesh, site: str) -> int:
    with transaction(mesh.connection(site), READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT COUNT(*) FROM SALE")
        (count,) = cur.fetchone()
        cur.close()
    return int(count)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _sell(mesh: ProcessMesh, site: str, keys: range) -> None:
    with transaction(mesh.connection(site), READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.executemany("INSERT INTO SALE (ID, LABEL, AMOUNT) VALUES (?, ?, ?)",
                        [(k, "Caf\u00e9 cr\u00e8me", 2.5) for k in keys])
        cur.close()


def run(sizes: list[int], backlog: int) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="siege-scale-") as tmp, \
            FirebirdServer(Path(tmp) / "server") as server:
        for n in sizes:
            started = time.perf_counter()
            mesh = _mesh_of(n)(server, Path(tmp) / f"mesh{n}", DDL)
            try:
                print(f"{n} sites up in {time.perf_counter() - started:.0f} s", flush=True)
                _round(mesh)  # the first: hellos, certificates, epochs
                for i, site in enumerate(mesh.SITES):
                    _sell(mesh, site, range(i + 1, i + 2))
                seconds, report = _round(mesh)
                out[f"round_seconds_{n}"] = round(seconds, 2)
                quiet, _ = _round(mesh)
                out[f"quiet_round_seconds_{n}"] = round(quiet, 2)
                out[f"siege_rss_mb_{n}"] = _rss_mb(mesh.procs["siege"].pid)
                out[f"converged_{n}"] = all(_count(mesh, s) == n for s in mesh.SITES)
                out[f"round_outcome_{n}"] = report.outcome
                print(f"{n} sites: round {seconds:.1f} s, quiet {quiet:.1f} s, siège "
                      f"{out[f'siege_rss_mb_{n}']} MB", flush=True)
                if n == min(sizes) and backlog:
                    origin = mesh.SITES[1]
                    base = 1_000_000
                    for start in range(0, backlog, BACKLOG_TX):
                        _sell(mesh, origin, range(base + start,
                                                  base + min(start + BACKLOG_TX, backlog)))
                    seconds, report = _round(mesh)
                    receivers = n - 1
                    out["backlog_round_seconds"] = round(seconds, 1)
                    out["backlog_events_per_s"] = round(backlog * receivers / seconds)
                    out["backlog_converged"] = all(_count(mesh, s) == n + backlog
                                                   for s in mesh.SITES)
                    print(f"backlog of {backlog} at {origin}: {seconds:.0f} s", flush=True)
            finally:
                mesh.close()
    small, large = min(sizes), max(sizes)
    if small != large:
        for key in ("round_seconds", "quiet_round_seconds", "siege_rss_mb"):
            a, b = out.get(f"{key}_{small}"), out.get(f"{key}_{large}")
            if a and b:
                out[f"growth_{key}_{large}_vs_{small}"] = round(b / a, 2)
    out["sites"] = sizes
    out["backlog"] = backlog
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="5,20,50", help="comma-separated site counts")
    parser.add_argument("--backlog", type=int, default=100_000,
                        help="events committed at one site before a round (smallest N; 0: "
                             "none)")
    args = parser.parse_args()
    sizes = sorted(int(x) for x in args.sites.split(","))
    print(json.dumps(run(sizes, args.backlog), sort_keys=True))


if __name__ == "__main__":
    main()
