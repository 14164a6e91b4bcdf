"""``python -m tools.chaos [--trials N] [--seed S] [--seconds T] [--faults F] [--keep]`` (``make
chaos``): trials one after another on one private Firebird server; a line per trial (its seed
replays its plan), a table per fault kind and per check, and last a line of JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.chaos.trial import TrialResult, trial  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402

CHECKS = ("lost", "duplicated", "diverged", "unrecorded", "wrong_winner")


def run(trials: int, first_seed: int = 1, seconds: float = 20.0, faults_per_trial: int = 3,
        kinds: list[str] | None = None, plans: list[list[str]] | None = None,
        verbose: bool = False, keep: bool = False) -> dict:
    """``trials`` trials from seed ``first_seed``; each strikes ``kinds`` (all the same), or
    the kinds ``plans`` gives it (one list per trial), or ``faults_per_trial`` kinds taken in
    turn (``trial.plan``). ``keep``: the folder (databases, nodes' logs) stays, and is
    printed, when a trial fails."""
    if plans is not None:
        trials = len(plans)
    results: list[TrialResult] = []
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="siege-chaos-")
    try:
        with FirebirdServer(Path(tmp) / "fb") as server:
            _trials(trials, first_seed, seconds, faults_per_trial, kinds, plans, verbose,
                    server, Path(tmp), results)
            if keep and any(r.failed for r in results):  # (the server's folder goes with it)
                shutil.copytree(server.data_dir, Path(tmp) / "databases")
    finally:
        if keep and any(r.failed for r in results):
            print(f"kept for inspection: {tmp} (the trials' databases are in databases/: "
                  "open them embedded)", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(results, time.monotonic() - started)
    print(table(summary), flush=True)
    return summary


def _trials(trials: int, first_seed: int, seconds: float, faults_per_trial: int,
            kinds: list[str] | None, plans: list[list[str]] | None, verbose: bool,
            server: FirebirdServer, tmp: Path, results: list[TrialResult]) -> None:
    for n in range(trials):
        seed = first_seed + n
        folder = tmp / f"trial{seed}"
        folder.mkdir()
        result = trial(seed, server, folder, seconds, faults_per_trial,
                       plans[n] if plans is not None else kinds)
        results.append(result)
        print(line(result), flush=True)
        if result.failed or verbose:
            for problem in result.problems[:12] + result.struck:
                print("   " + problem.rstrip().replace("\n", "\n   "), flush=True)


def line(r: TrialResult) -> str:
    f = r.findings
    checks = ", ".join(f"{c} {getattr(f, c)}" for c in CHECKS) if f else "not checked"
    hits = sum(r.hit.values())
    return (f"trial seed={r.seed}: {'FAILED' if r.failed else 'ok'} — faults "
            f"{', '.join(r.kinds)} ({hits} of {sum(r.injected.values())} hit work in flight); "
            f"{r.transactions} transactions committed, {r.rolled_back} rolled back; {checks}"
            f"{'; NOT QUIET' if r.not_quiet else ''}"
            f"{'; capture failures ' + str(r.capture_failures) if r.capture_failures else ''}"
            f"{'; harness: ' + r.harness_error if r.harness_error else ''}; quiet in "
            f"{r.converge_s:.0f} s, trial {r.seconds:.0f} s")


def summarize(results: list[TrialResult], seconds: float) -> dict:
    injected: Counter = Counter()
    hit: Counter = Counter()
    errors: Counter = Counter()
    for r in results:
        injected.update(r.injected)
        hit.update(r.hit)
        errors.update(r.app_errors)
    total = {c: sum(getattr(r.findings, c) for r in results if r.findings) for c in CHECKS}
    return {"trials": len(results), **total,
            "not_quiet": sum(r.not_quiet for r in results),
            "capture_failures": sum(r.capture_failures for r in results),
            "harness_errors": sum(bool(r.harness_error) for r in results),
            "faults_injected": dict(sorted(injected.items())),
            "faults_hit": {k: hit.get(k, 0) for k in sorted(injected)},
            "transactions": sum(r.transactions for r in results),
            "rolled_back": sum(r.rolled_back for r in results),
            "expected_app_errors": dict(sorted(errors.items())),
            "converge_s_max": round(max((r.converge_s for r in results), default=0.0), 1),
            "minutes": round(seconds / 60, 1),
            "failed_seeds": [r.seed for r in results if r.failed]}


def table(s: dict) -> str:
    rows: list[tuple[str, str]] = [("fault kind", "injected / hit work in flight")]
    rows += [(f"  {k}", f"{n} / {s['faults_hit'][k]}") for k, n in s["faults_injected"].items()]
    rows += [("check", "trials × findings")]
    rows += [(f"  {c}", str(s[c])) for c in (*CHECKS, "not_quiet", "capture_failures",
                                              "harness_errors")]
    rows += [("trials", str(s["trials"])),
             ("application transactions committed / rolled back",
              f"{s['transactions']} / {s['rolled_back']}"),
             ("expected application errors", ", ".join(
                 f"{k} {n}" for k, n in s["expected_app_errors"].items()) or "none"),
             ("slowest quiet after healing (s)", str(s["converge_s_max"])),
             ("minutes", str(s["minutes"])),
             ("failed seeds", " ".join(map(str, s["failed_seeds"])) or "none")]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="the first trial's seed")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of application work a trial, faults included")
    parser.add_argument("--faults", type=int, default=3, help="faults a trial")
    parser.add_argument("--kinds", help="comma-separated fault kinds (all trials)")
    parser.add_argument("--verbose", action="store_true",
                        help="what each fault hit and how the mesh went quiet, every trial")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and logs when a trial fails (printed)")
    args = parser.parse_args()
    kinds = args.kinds.split(",") if args.kinds else None
    summary = run(args.trials, args.seed, args.seconds, args.faults, kinds,
                  verbose=args.verbose, keep=args.keep)
    print(json.dumps(summary))
    return 0 if not summary["failed_seeds"] else 1


if __name__ == "__main__":
    sys.exit(main())
