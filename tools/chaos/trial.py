"""One chaos trial, and a run of many: the shop's application writes at every site while
faults strike at seeded moments; then everything heals, the mesh must go quiet, and the
oracle reads the sites.

Owns the trial's timeline (which faults, when, seeded), the application's threads, and the
results (a table per fault kind and per check, a JSON line). Must never judge the data itself
(that is ``oracle``), start or kill a node (``mesh``), or inject a fault (``faults``).
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tools.chaos import faults as fault_kinds
from tools.chaos import oracle, shop
from tools.chaos.mesh import STAND_IN, ShippedMesh

APP_USER = "SIEGE_APP"
QUIET_LIMIT_S = 240.0  # after healing: a trial still moving then is a FAILED trial
WORK_PAUSE_S = (0.02, 0.25)  # between two application transactions at a site
TAIL_PAUSE_S = (1.0, 3.0)  # the same while faults run out past the planned work
HOLD_CHANCE = 0.02  # per transaction: begin one left open across rounds instead
RELEASE_AFTER_S = (2.0, 12.0)  # how long a held transaction stays open
FAULT_TAIL_LIMIT_S = 150.0  # the longest a fault may run past the planned work


@dataclass
class TrialResult:
    seed: int
    kinds: list[str] = field(default_factory=list)  # the faults planned, in order
    injected: Counter = field(default_factory=Counter)
    hit: Counter = field(default_factory=Counter)
    transactions: int = 0  # committed by the application, every site
    rolled_back: int = 0
    app_errors: Counter = field(default_factory=Counter)  # expected ones, by kind
    capture_failures: int = 0
    findings: oracle.Findings | None = None
    not_quiet: bool = False
    harness_error: str = ""
    seconds: float = 0.0
    converge_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    struck: list[str] = field(default_factory=list)  # each fault: what it hit, as seen

    @property
    def failed(self) -> bool:
        f = self.findings
        return bool(self.not_quiet or self.harness_error or self.capture_failures
                    or f is None or f.lost or f.duplicated or f.diverged or f.unrecorded
                    or f.wrong_winner)


def plan(seed: int, faults_per_trial: int) -> list[str]:
    """The fault kinds of trial ``seed``: the kinds taken in turn across trials (so that any
    ``len(KINDS) / faults_per_trial`` consecutive trials meet every kind), shuffled by the
    seed within the trial."""
    kinds = fault_kinds.KINDS
    start = ((seed - 1) * faults_per_trial) % len(kinds)
    chosen = [kinds[(start + i) % len(kinds)] for i in range(faults_per_trial)]
    random.Random(seed).shuffle(chosen)
    return chosen


class _Site(threading.Thread):
    """A site's application: transactions one after another, some held open."""

    def __init__(self, site: str, app: shop.Shop, rng: random.Random, stop: threading.Event,
                 out: TrialResult, lock: threading.Lock) -> None:
        super().__init__(name=f"app-{site}", daemon=True)
        self.site, self.app, self.rng, self.stop, self.out, self.lock = \
            site, app, rng, stop, out, lock
        self.error: BaseException | None = None
        self.slow = threading.Event()  # set: the planned work is done, faults run out

    def run(self) -> None:
        held_until = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if held_until and now > held_until:
                    self._count(self.app.release(commit=self.rng.random() < 0.8))
                    held_until = 0.0
                if not held_until and self.rng.random() < HOLD_CHANCE:
                    self.app.hold()
                    held_until = now + self.rng.uniform(*RELEASE_AFTER_S)
                self._count(self.app.transaction())
                self.stop.wait(self.rng.uniform(*(TAIL_PAUSE_S if self.slow.is_set()
                                                  else WORK_PAUSE_S)))
            if held_until:
                self._count(self.app.release(commit=True))
        except BaseException as exc:  # noqa: BLE001 - reaches the trial (join)
            self.error = exc

    def _count(self, outcome: shop.Outcome) -> None:
        with self.lock:
            _count(self.out, outcome)


def _count(out: TrialResult, outcome: shop.Outcome) -> None:
    out.transactions += int(outcome.committed)
    out.rolled_back += int(outcome.rolled_back)
    for kind, n in outcome.expected_errors.items():
        out.app_errors[kind] += n
    out.capture_failures += len(outcome.failures)
    out.problems.extend(outcome.failures)


def trial(seed: int, server, folder: Path, seconds: float, faults_per_trial: int,
          kinds: list[str] | None = None) -> TrialResult:
    """Run trial ``seed``: ``seconds`` of application work with the faults of ``plan`` (or
    ``kinds``) at seeded moments, then heal, go quiet, check."""
    out = TrialResult(seed, kinds or plan(seed, faults_per_trial))
    rng = random.Random(seed)
    started = time.monotonic()
    journal = shop.Journal()
    lock = threading.Lock()
    stop = threading.Event()
    mesh: ShippedMesh | None = None
    workers: dict[str, _Site] = {}
    try:
        mesh = ShippedMesh(server, folder, shop.SCHEMA, shop.GENERATORS,
                           lambda con, site: shop.before_install(
                               con, site, random.Random(f"{seed}-{site}"), journal),
                           APP_USER, seed)
        strikes = fault_kinds.Faults(mesh, random.Random(f"{seed}-faults"))

        def work_everywhere() -> None:  # a site that joined gets its application too
            for site in mesh.sites():
                if site not in workers:
                    app = shop.Shop(site, lambda s=site: mesh.app_connect(s),
                                    random.Random(f"{seed}-{site}-app"), journal,
                                    lambda s=site: mesh.skew(s))
                    workers[site] = _Site(site, app, random.Random(f"{seed}-{site}-w"),
                                          stop, out, lock)
                    workers[site].start()

        work_everywhere()
        moments = sorted(rng.uniform(0.1, 0.8) * seconds for _ in out.kinds)
        began = time.monotonic()
        struck: list[fault_kinds.Strike] = []
        resync_struck: float | None = None
        for kind, at in zip(out.kinds, moments, strict=True):
            time.sleep(max(0.0, began + at - time.monotonic()))
            struck_at = time.time()
            struck.append(strikes.strike(kind))
            if kind == "resync":  # what lyon committed after its old copy may be gone
                resync_struck = struck_at
                journal.doubt(STAND_IN, struck_at, time.time(),
                              "put back from an older copy, then resynced")
            for site in mesh.sites():  # a clock jump is in the journal at once
                journal.note_skew(site, mesh.skew(site))
            work_everywhere()
        # The application works on while a fault with a tail (a black hole of a minute, the
        # siège away past takeover_after) runs its course.
        deadline = began + seconds + FAULT_TAIL_LIMIT_S
        while time.monotonic() < deadline and (
                time.monotonic() < began + seconds or not all(s.ended for s in struck)):
            time.sleep(0.2)
            work_everywhere()
            if time.monotonic() >= began + seconds:
                for worker in workers.values():
                    worker.slow.set()
        stop.set()
        for strike in struck:
            out.injected[strike.kind] += 1
            out.hit[strike.kind] += int(strike.hit)
            out.struck.append(f"{strike.kind}: {'hit' if strike.hit else 'missed'} work in "
                              f"flight — {strike.detail}")
        for worker in workers.values():
            worker.join(120)
            if worker.error is not None:
                raise worker.error
        strikes.settle()
        mesh.heal()
        if resync_struck is not None:  # a resync another fault broke is finished by heal()
            journal.doubt(STAND_IN, resync_struck, time.time(),
                          "put back from an older copy, resynced when the mesh healed")
        healed = time.monotonic()
        quiet, why = mesh.quiet(QUIET_LIMIT_S)
        out.converge_s = time.monotonic() - healed
        out.struck.append("quiet: " + "; ".join(
            f"{at} s {why}" for at, why in getattr(mesh, "quiet_trace", [])))
        if not quiet:
            out.not_quiet = True
            out.problems.append(f"not quiet {QUIET_LIMIT_S:.0f} s after healing: {why}")
            for site in mesh.sites():  # what an operator would look at first
                held = mesh.node_cmd(site, "held")
                if "nothing" not in held.stdout.lower():
                    out.problems.append(f"siege-node held at {site}: "
                                        f"{(held.stdout + held.stderr).strip()[:3000]}")
        out.findings = oracle.check(journal, mesh.sysdba, mesh.sites(), mesh.losers)
        out.problems.extend(out.findings.problems)
    except Exception as exc:  # noqa: BLE001 - a harness failure fails the trial, with its seed
        out.harness_error = f"{type(exc).__name__}: {exc}"
        out.problems.append(traceback.format_exc())
    finally:
        stop.set()
        for worker in workers.values():
            worker.join(30)
            worker.app.close()
        if mesh is not None:
            mesh.close()
        out.seconds = time.monotonic() - started
    return out
