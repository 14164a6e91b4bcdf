"""``make chaos``: seeded fault-injection trials of a real mesh; does it lose anything?

Each trial: three ``siege-node run`` processes (the siège relays) whose databases live on a
private Firebird server; the siège reaches the two sites through faulty lines
(``tools/faultline.py``). The application at every site connects as an ordinary user
(``SIEGE_APP``, not SYSDBA) and runs multi-row transactions: its own items with order lines
(a foreign key), deletes of items with their lines, edits of items every site edits; some are
rolled back, some held open across several steps (rounds included) before they end. A seeded
sequence of steps mixes that work with the faults:

* rounds started at the siège, some broken: a line cut, or stalled (a black hole) then resumed
  or cut, in the middle of the round;
* a node killed with SIGKILL (the siège's or a site's, often mid-round), restarted later; a
  site kept offline for many steps;
* the Firebird server restarted under everything (every connection dies);
* one site's clock skewed by an hour, forwards or back, for the whole trial.

Then every held transaction ends, every node and line comes back, and rounds run until nothing
moves. The check is made against the application's own journal of what it committed, never
against the code under test:

* **lost**: a row written by one site only whose last committed value (or absence) is not
  what a site holds;
* **diverged**: a row on which the sites disagree, whose value nobody wrote, or table digests
  that differ;
* **unrecorded**: a value written to a row several sites edit that lost without being on
  record as a conflict loser at every site. A value is known to have lost knowingly — not a
  conflict — when some committed write read it as the value it replaced (``RETURNING OLD``);
* **duplicated**: an origin applied further than it published somewhere;
* **capture failures**: an application transaction that failed for any reason but a lock
  conflict (capture must never make the application's work fail).

Prints one line per trial (its seed reproduces it), a summary table, and, last, one line of
JSON with ``trials``, ``lost``, ``duplicated``, ``diverged`` (and the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from firebird.driver import TPB, DatabaseError, Isolation  # noqa: E402

from siege_sync.node import conflicts  # noqa: E402
from siege_sync.node.cli import CLOCK_SKEW_ENV  # noqa: E402
from siege_sync.node.database import (  # noqa: E402
    READ_COMMITTED_RW,
    connection_lost,
    transaction,
)
from siege_sync.proto import sync_pb2  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402
from tools.localmesh import ProcessMesh  # noqa: E402

SITES = ("siege", "lyon", "nice")
DDL = ["CREATE TABLE ITEM (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(60))",
       "CREATE TABLE LINE (ID INTEGER NOT NULL PRIMARY KEY, "
       "ITEM_ID INTEGER NOT NULL REFERENCES ITEM (ID), V VARCHAR(60))"]
APP_USER = "SIEGE_APP"
SHARED = range(1, 6)  # items every site edits (never deleted)
OWN_BASE = {"siege": 1000, "lyon": 2000, "nice": 3000}
OWN_ITEMS = range(0, 10)  # + OWN_BASE: a site's own items
HELD_ITEMS = range(50, 55)  # + OWN_BASE: only held transactions write these
OWN_LINES = range(100, 130)  # + OWN_BASE: a site's own order lines
SKEW_S = 3600
QUIET_DEADLINE_S = 120.0  # rounds at the end until one moves nothing, failing none
# The application: read committed, and a lock conflict fails at once (it retries later).
APP_TPB = TPB(isolation=Isolation.READ_COMMITTED_RECORD_VERSION, lock_timeout=0).get_buffer()

Key = tuple[str, int]  # (table, id)


@dataclass(frozen=True)
class Write:
    site: str
    old: str | None  # the value the write replaced where it ran (None: absent, or unknown)
    new: str | None  # None: deleted


@dataclass
class TrialResult:
    seed: int
    committed: int = 0  # rows written by committed application transactions
    conflicts: int = 0  # loser records at the siège
    lost: int = 0
    duplicated: int = 0
    diverged: int = 0
    unrecorded: int = 0
    capture_failures: int = 0
    converge_s: float = 0.0
    rounds: int = 0
    faults: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.diverged or self.unrecorded
                    or self.capture_failures)


class Mesh(ProcessMesh):
    def __init__(self, server: FirebirdServer, folder: Path,
                 skew: dict[str, float] | None = None) -> None:
        env = {site: {CLOCK_SKEW_ENV: str(s)} for site, s in (skew or {}).items()}
        super().__init__(server, folder, DDL, app_user=APP_USER, faulty_lines=True, env=env)


class Application:
    """The application at the three sites, and its journal of every committed write."""

    def __init__(self, mesh: Mesh, rng: random.Random, out: TrialResult) -> None:
        self.mesh, self.rng, self.out = mesh, rng, out
        self.journal: dict[Key, list[Write]] = {}
        self.held: dict[str, tuple[object, object, list[tuple[Key, Write]]]] = {}
        self._n = 0

    def seed_rows(self) -> None:
        self._run("siege", lambda cur, done: [
            self._upsert_item(cur, done, "siege", k, "start") for k in SHARED])

    def transaction(self, site: str) -> None:
        """One multi-row transaction at ``site``; committed, or rolled back 1 time in 10."""
        ops = [self.rng.choice((self._shared_edit, self._own_item, self._order))
               for _ in range(self.rng.randint(1, 3))]
        self._run(site, lambda cur, done: [op(site, cur, done) for op in ops],
                  rollback=self.rng.random() < 0.1)

    def hold(self, site: str) -> None:
        """Begin a transaction at ``site`` and leave it open (``release`` ends it)."""
        if site in self.held:
            return
        con = self.mesh._open(site)
        tm = con.transaction_manager(default_tpb=APP_TPB)
        tm.begin()
        cur = tm.cursor()
        done: list[tuple[Key, Write]] = []
        try:
            k = OWN_BASE[site] + self.rng.choice(HELD_ITEMS)
            self._upsert_item(cur, done, site, k, self._value(site))
            if self.rng.random() < 0.3:  # the row lock also stands in the nodes' way
                self._update_shared(cur, done, site, self.rng.choice(SHARED))
            cur.close()
        except DatabaseError as exc:
            self._failed(site, exc)
            _end(tm, con, commit=False)
            return
        self.held[site] = (con, tm, done)
        self.out.faults["held transactions"] += 1

    def release(self, site: str, commit: bool) -> None:
        if site not in self.held:
            return
        con, tm, done = self.held.pop(site)
        try:
            _end(tm, con, commit)
        except DatabaseError as exc:  # its connection died with a server restart
            if not connection_lost(exc):
                self._failed(site, exc)
            return
        if commit:
            self._journal(done)

    # --- the operations (each appends what it wrote to ``done``) -------------------------

    def _shared_edit(self, site: str, cur, done: list) -> None:
        self._update_shared(cur, done, site, self.rng.choice(SHARED))

    def _own_item(self, site: str, cur, done: list) -> None:
        k = OWN_BASE[site] + self.rng.choice(OWN_ITEMS)
        if self.rng.random() < 0.3:
            cur.execute("SELECT ID FROM LINE WHERE ITEM_ID = ?", (k,))
            for (line,) in cur.fetchall():  # Firebird 3 returns from one-row DML only
                cur.execute("DELETE FROM LINE WHERE ID = ?", (line,))
                done.append((("LINE", line), Write(site, None, None)))
            cur.execute("DELETE FROM ITEM WHERE ID = ?", (k,))
            if cur.affected_rows:
                done.append((("ITEM", k), Write(site, None, None)))
        else:
            self._upsert_item(cur, done, site, k, self._value(site))

    def _order(self, site: str, cur, done: list) -> None:
        """An item and its lines; a line may point to an item every site edits."""
        k = OWN_BASE[site] + self.rng.choice(OWN_ITEMS)
        self._upsert_item(cur, done, site, k, self._value(site))
        for _ in range(self.rng.randint(1, 3)):
            line = OWN_BASE[site] + self.rng.choice(OWN_LINES)
            parent = k
            if self.rng.random() < 0.3:  # an item every site edits, if it arrived here
                cur.execute("SELECT ID FROM ITEM WHERE ID = ?", (self.rng.choice(SHARED),))
                parent = next(iter(cur.fetchone() or ()), k)
            value = self._value(site)
            cur.execute("UPDATE OR INSERT INTO LINE (ID, ITEM_ID, V) VALUES (?, ?, ?)",
                        (line, parent, value))
            done.append((("LINE", line), Write(site, None, f"{parent}:{value}")))

    def _update_shared(self, cur, done: list, site: str, k: int) -> None:
        value = self._value(site)
        cur.execute("UPDATE ITEM SET V = ? WHERE ID = ? RETURNING OLD.ID, OLD.V", (value, k))
        matched, old = cur.fetchone()  # NULLs when nothing matched (the row has not arrived)
        if matched is not None:
            done.append((("ITEM", k), Write(site, old, value)))

    def _upsert_item(self, cur, done: list, site: str, k: int, value: str) -> None:
        cur.execute("UPDATE OR INSERT INTO ITEM (ID, V) VALUES (?, ?)", (k, value))
        done.append((("ITEM", k), Write(site, None, value)))

    def _value(self, site: str) -> str:
        self._n += 1
        return f"{site}-{self.out.seed}-{self._n}"

    # --- running and journaling ----------------------------------------------------------

    def _run(self, site: str, body: Callable, rollback: bool = False) -> None:
        con = self.mesh.connection(site)
        tm = con.transaction_manager(default_tpb=APP_TPB)
        tm.begin()
        done: list[tuple[Key, Write]] = []
        try:
            cur = tm.cursor()
            body(cur, done)
            cur.close()
            if rollback:
                tm.rollback()
                self.out.faults["rolled back"] += 1
                return
            tm.commit()
        except DatabaseError as exc:
            if tm.is_active():
                tm.rollback()
            self._failed(site, exc)
            return
        finally:
            tm.close()
        self._journal(done)

    def _journal(self, done: list[tuple[Key, Write]]) -> None:
        for key, write in done:
            self.journal.setdefault(key, []).append(write)
        self.out.committed += len(done)

    def _failed(self, site: str, exc: DatabaseError) -> None:
        text = str(exc).lower()
        if "lock conflict" in text or "deadlock" in text or "update conflicts" in text:
            self.out.faults["lock conflicts (retried by the application)"] += 1
        else:
            self.out.capture_failures += 1
            self.out.problems.append(f"an application transaction at {site} failed: {exc}")


def _end(tm, con, commit: bool) -> None:
    try:
        if tm.is_active():
            tm.commit() if commit else tm.rollback()
    finally:
        try:
            tm.close()
            con.close()
        except DatabaseError:
            pass


def trial(seed: int, server: FirebirdServer, folder: Path, steps: int) -> TrialResult:
    rng = random.Random(seed)
    out = TrialResult(seed)
    skew: dict[str, float] = {}
    if rng.random() < 0.5:
        skew[rng.choice(SITES)] = rng.choice((-SKEW_S, SKEW_S))
        out.faults["clocks skewed"] += 1
    mesh = Mesh(server, folder, skew)
    app = Application(mesh, rng, out)
    offline_until: dict[str, int] = {}
    try:
        app.seed_rows()
        for step in range(steps):
            action = rng.choices(
                ["work", "round", "kill", "offline", "revive", "fbrestart", "cut", "stall",
                 "hold", "release"],
                [10, 3, 1, 0.3, 1.2, 0.4, 0.8, 0.5, 0.7, 0.7])[0]
            if action == "work":
                app.transaction(rng.choice(SITES))
            elif action == "round":
                _round(mesh, rng, out)
            elif action in ("kill", "offline"):
                site = rng.choice(SITES if action == "kill" else SITES[1:])
                if mesh.up(site):
                    if action == "offline":
                        offline_until[site] = step + rng.randint(8, 20)
                        out.faults["sites offline for many steps"] += 1
                    if action == "kill" and (site == "siege" or rng.random() < 0.5):
                        _during_round(mesh, rng, out, lambda s=site: mesh.kill(s))
                        out.faults["nodes killed mid-round"] += 1
                    else:
                        mesh.kill(site)
                        out.faults["nodes killed between rounds"] += 1
            elif action == "revive":
                for site in SITES:
                    if not mesh.up(site) and offline_until.get(site, -1) <= step:
                        mesh.start(site)
                        break
            elif action == "fbrestart":
                server.restart()  # every connection dies: the nodes', the application's
                out.faults["Firebird server restarts"] += 1
            elif action == "cut":
                line = mesh.lines[rng.choice(SITES[1:])]
                _during_round(mesh, rng, out, line.cut)
                out.faults["lines cut mid-round"] += 1
            elif action == "stall":
                line = mesh.lines[rng.choice(SITES[1:])]
                cut = rng.random() < 0.3
                _during_round(mesh, rng, out, line.stall,
                              lambda ln=line, c=cut: (ln.cut() if c else None, ln.resume()))
                out.faults["lines stalled mid-round, then cut" if cut
                           else "lines stalled mid-round, then resumed"] += 1
            elif action == "hold":
                app.hold(rng.choice(SITES))
            elif action == "release" and app.held:
                app.release(rng.choice(sorted(app.held)), commit=rng.random() < 0.8)
        for site in sorted(app.held):
            app.release(site, commit=True)
        started = time.monotonic()
        for site in SITES:
            if not mesh.up(site):
                mesh.start(site)
        # Rounds until quiet: one whose exchanges all succeed without a problem and move
        # nothing (a failed one proves nothing — a node may still be starting).
        deadline = time.monotonic() + QUIET_DEADLINE_S
        while True:
            moved = [mesh.exchange_checked(s) for _pass in range(2) for s in SITES[1:]]
            out.rounds += 1
            if all(m == 0 for m in moved):
                break
            if time.monotonic() > deadline:
                out.problems.append(f"not quiet after {QUIET_DEADLINE_S:.0f} s of rounds "
                                    f"(events moved, -1 failed: {moved})")
                break
            if -1 in moved:
                time.sleep(0.5)
        out.converge_s = time.monotonic() - started
        _check(mesh, app.journal, out)
    finally:
        for site in sorted(app.held):
            app.release(site, commit=False)
        mesh.close()
    return out


def _round(mesh: Mesh, rng: random.Random, out: TrialResult) -> None:
    if not mesh.up("siege"):
        return
    for _pass in range(2):  # gather, then redistribute
        for site in rng.sample(SITES[1:], 2):
            if mesh.up(site) and mesh.up("siege"):
                mesh.exchange(site)
    out.rounds += 1


def _during_round(mesh: Mesh, rng: random.Random, out: TrialResult,
                  fault: Callable[[], object], after: Callable[[], object] | None = None
                  ) -> None:
    """Start a round, strike ``fault`` at a random moment of it, ``after`` a while later."""
    runner = threading.Thread(target=_round, args=(mesh, rng, out))
    runner.start()
    time.sleep(rng.uniform(0.0, 0.4))
    fault()
    if after is not None:
        time.sleep(rng.uniform(0.5, 3.0))
        after()
    runner.join(300)


def _rows(con, table: str) -> dict[int, str]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        if table == "LINE":
            cur.execute("SELECT ID, ITEM_ID || ':' || V FROM LINE")
        else:
            cur.execute(f"SELECT ID, V FROM {table}")
        found = {int(k): v for k, v in cur.fetchall()}
        cur.close()
    return found


def _check(mesh: Mesh, journal: dict[Key, list[Write]], out: TrialResult) -> None:
    held = {(site, table): _rows(mesh.connection(site), table)
            for site in SITES for table in ("ITEM", "LINE")}
    for (table, key), writes in journal.items():
        values = {site: held[site, table].get(key) for site in SITES}
        writers = {w.site for w in writes}
        if len(writers) == 1 and not (table == "ITEM" and key in SHARED):
            expected = writes[-1].new
            for site, got in values.items():
                if got != expected:
                    out.lost += 1
                    out.problems.append(f"{table} {key} at {site}: {got!r}, last committed "
                                        f"{expected!r}")
            continue
        if len(set(values.values())) != 1:
            out.diverged += 1
            out.problems.append(f"{table} {key} differs: {values}")
            continue
        final = next(iter(values.values()))
        if final not in {w.new for w in writes}:
            out.diverged += 1
            out.problems.append(f"{table} {key} holds a value nobody wrote: {final!r}")
            continue
        _check_losers(mesh, table, key, writes, final, out)
    for site in SITES:
        for table in ("ITEM", "LINE"):
            for key in set(held[site, table]) - {k for t, k in journal if t == table}:
                out.diverged += 1
                out.problems.append(f"{table} {key} exists at {site} but was never committed")
    _check_vectors_and_digests(mesh, out)
    out.conflicts = len(_conflicts(mesh, "siege", "ITEM"))


def _conflicts(mesh: Mesh, site: str, table: str) -> list[conflicts.Conflict]:
    con = mesh.open_as_sysdba(site)  # the sync's tables are not the application's to read
    try:
        return conflicts.listing(con, table)
    finally:
        con.close()


def _check_losers(mesh: Mesh, table: str, key: int, writes: list[Write], final: str | None,
                  out: TrialResult) -> None:
    """Every value that neither stands nor was knowingly replaced is a loser on record."""
    seen = {w.old for w in writes}
    if final in seen - {None}:
        # A value a later committed write read and replaced can never win again.
        out.diverged += 1
        out.problems.append(f"{table} {key}: {final!r} stands, but a later write replaced it")
    silent = {w.new for w in writes} - seen - {final, None}
    if not silent:
        return
    for site in SITES:
        recorded = {c.value.text for c in _conflicts(mesh, site, table)
                    if c.value is not None and c.value.HasField("text")}
        for value in sorted(silent - recorded):
            out.unrecorded += 1
            out.problems.append(f"{table} {key}: {value!r} lost without a record at {site}")


def _check_vectors_and_digests(mesh: Mesh, out: TrialResult) -> None:
    published, applied, digests = {}, {}, {}
    for site in SITES:
        ch, stub = mesh.stub(site)
        with ch:
            status = stub.Status(sync_pb2.StatusRequest(digests=True), timeout=60)
        published[site] = status.published
        applied[site] = {(o.site, o.incarnation): o.seq for o in status.applied.origins}
        digests[site] = {d.table: d.digest for d in status.digests}
    for site in SITES:
        for (origin, _inc), seq in applied[site].items():
            if origin in published and origin != site and seq > published[origin]:
                out.duplicated += 1
                out.problems.append(f"{site} applied {origin} up to #{seq}, it published "
                                    f"{published[origin]}")
    if len({json.dumps(d, sort_keys=True) for d in digests.values()}) != 1:
        out.diverged += 1
        out.problems.append(f"table digests differ: {digests}")


def run(trials: int, first_seed: int, steps: int) -> dict:
    results: list[TrialResult] = []
    with tempfile.TemporaryDirectory(prefix="siege-chaos-") as tmp, \
            FirebirdServer(Path(tmp) / "fb") as server:
        for n in range(trials):
            seed = first_seed + n
            folder = Path(tmp) / f"trial{seed}"
            folder.mkdir()
            started = time.monotonic()
            result = trial(seed, server, folder, steps)
            results.append(result)
            faults = sum(v for k, v in result.faults.items() if "conflicts" not in k
                         and k != "rolled back")
            print(f"trial seed={seed}: {'FAILED' if result.failed else 'ok'} — "
                  f"{result.committed} rows committed, {faults} faults, "
                  f"{result.conflicts} conflicts, lost {result.lost}, duplicated "
                  f"{result.duplicated}, diverged {result.diverged}, unrecorded "
                  f"{result.unrecorded}, capture failures {result.capture_failures}, "
                  f"converged in {result.converge_s:.1f} s "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
            for problem in result.problems[:10]:
                print(f"  {problem}", flush=True)
    summary = summarize(results)
    print(table(summary), flush=True)
    return summary


def summarize(results: list[TrialResult]) -> dict:
    faults: Counter = Counter()
    for r in results:
        faults.update(r.faults)
    converge = [r.converge_s for r in results] or [0.0]
    return {"trials": len(results),
            "committed": sum(r.committed for r in results),
            "conflicts": sum(r.conflicts for r in results),
            "lost": sum(r.lost for r in results),
            "duplicated": sum(r.duplicated for r in results),
            "diverged": sum(r.diverged for r in results),
            "unrecorded": sum(r.unrecorded for r in results),
            "capture_failures": sum(r.capture_failures for r in results),
            "converge_s_mean": round(sum(converge) / len(converge), 2),
            "converge_s_max": round(max(converge), 2),
            "faults": dict(sorted(faults.items())),
            "failed_seeds": [r.seed for r in results if r.failed]}


def table(summary: dict) -> str:
    rows = [("trials", summary["trials"])]
    rows += [(f"  {kind}", n) for kind, n in summary["faults"].items()]
    rows += [("rows committed by the application", summary["committed"]),
             ("conflicts on record (siège)", summary["conflicts"]),
             ("lost", summary["lost"]), ("duplicated", summary["duplicated"]),
             ("sites diverged", summary["diverged"]),
             ("losers not on record", summary["unrecorded"]),
             ("application transactions failed by capture", summary["capture_failures"]),
             ("time to converge, mean / max (s)",
              f"{summary['converge_s_mean']} / {summary['converge_s_max']}"),
             ("failed seeds", " ".join(map(str, summary["failed_seeds"])) or "none")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="the first trial's seed")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    summary = run(args.trials, args.seed, args.steps)
    print(json.dumps(summary))
    return 0 if not summary["failed_seeds"] else 1


if __name__ == "__main__":
    sys.exit(main())
