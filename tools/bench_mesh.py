"""Mesh benchmark: events from one site to another over mutual TLS, apply included.

``.venv/bin/python tools/bench_mesh.py [--e2e-events 20000] [--slow-events auto]`` (as root
for the slow link; ``tools/bench.py`` runs it and merges its keys). Measures, asserts nothing.

Workload (both parts): an embedded Firebird 3 database with ``INVOICE`` (INTEGER key, VARCHARs,
TIMESTAMP, NUMERIC(15,2), a small text BLOB) and ``INVOICE_LINE`` (foreign key to INVOICE,
SMALLINT, VARCHAR, NUMERICs). One source transaction = 5 invoices, each inserted with 4 lines
and then updated with its total: 30 events per transaction. The workload runs and is
*published* at site A before the nodes start (publish time is printed, not part of the
exchange time), so the timed exchange is: hello, pull (read at A, gzip, mTLS, TCP), apply at B.

* ``e2e_events_per_s``: two ``Node``s in this process (like ``tools.localmesh.LocalMesh``), on
  loopback; B pulls from A (``Node.exchange``) until B's applied seq of A equals A's own seq;
  events ÷ wall time of those exchanges. ``e2e_apply_share``: the part of that time spent in
  B's ``Replica.apply`` (timed by wrapping the instance's method; nothing in the node changes).
* ``wire_bytes_per_event``: B dials A through a counting TCP proxy; every byte carried (both
  directions, TLS handshakes included; gzip is on, as the channels have it) ÷ events.
* ``slow_link_efficiency``: two ``siege-node run`` processes, each inside its own network
  namespace with its own embedded database, joined by a veth pair with
  ``tbf rate 2mbit burst 32kbit latency 400ms`` on both ends. An admin client inside B's
  namespace asks B (``Exchange`` RPC) to exchange with A until B holds all of A's events.
  Efficiency = (bytes A→B counted by tc × 8 / 2e6) ÷ wall time of those exchanges.
  ``slow_link_only_efficiency``: the same for a bare ``Pull`` of the same events from A,
  discarded on arrival (no apply): what the link carries when nothing waits for apply.
  ``slow_link_busy_fraction``: the part of the exchange during which the link ran at ≥ 80 %
  of its rate (tc counters sampled every 0.1 s).

On any failure the keys of the failed part are null and ``errors`` says why.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before site-packages: another `tests` package may be there
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

KEYS = ("e2e_events_per_s", "e2e_events", "e2e_apply_share", "wire_bytes_per_event",
        "slow_link_efficiency", "slow_link_events", "slow_link_seconds",
        "slow_link_only_efficiency", "slow_link_busy_fraction")

LINK_BITS_PER_S = 2_000_000
TBF = ["tbf", "rate", "2mbit", "burst", "32kbit", "latency", "400ms"]
SITE_A, SITE_B = "lyon", "nice"
EVENTS_PER_INVOICE = 6  # insert, 4 lines, update of the total
INVOICES_PER_TX = 5

DDL = [
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, NUMBER VARCHAR(20) NOT NULL, "
    "CUSTOMER VARCHAR(60), ISSUED TIMESTAMP, TOTAL NUMERIC(15,2), STATUS VARCHAR(10), "
    "NOTE BLOB SUB_TYPE TEXT)",
    "CREATE TABLE INVOICE_LINE (ID INTEGER NOT NULL PRIMARY KEY, INVOICE_ID INTEGER NOT NULL "
    "REFERENCES INVOICE (ID), LINE_NO SMALLINT, ITEM VARCHAR(40), QTY NUMERIC(12,3), "
    "PRICE NUMERIC(15,2))",
]
TX_BLOCK = """EXECUTE BLOCK AS DECLARE I INTEGER = {start}; DECLARE J INTEGER; BEGIN
WHILE (I < {end}) DO BEGIN
  INSERT INTO INVOICE (ID, NUMBER, CUSTOMER, ISSUED, TOTAL, STATUS, NOTE) VALUES (:I,
    'INV-' || LPAD(:I, 8, '0'), 'Customer ' || MOD(:I * 7919, 5000) || ' SARL',
    DATEADD(MOD(:I * 37, 86400) SECOND TO TIMESTAMP '2026-01-05 08:00:00'), 0, 'draft',
    'Deliver to dock ' || MOD(:I, 17) || ', call before noon. Order ' || (:I * 3 + 1000));
  J = 1;
  WHILE (J <= 4) DO BEGIN
    INSERT INTO INVOICE_LINE (ID, INVOICE_ID, LINE_NO, ITEM, QTY, PRICE) VALUES (:I * 10 + :J,
      :I, :J, 'ITEM-' || MOD(:I * 31 + :J * 7, 997), (MOD(:I + :J, 12) + 1) / 4.0,
      MOD(:I * 13 + :J * 7, 10000) / 100.0);
    J = J + 1;
  END
  UPDATE INVOICE SET TOTAL = (SELECT SUM(QTY * PRICE) FROM INVOICE_LINE WHERE INVOICE_ID = :I),
    STATUS = 'issued' WHERE ID = :I;
  I = I + 1;
END END"""

Log = Callable[[str], None]


def _localmesh():
    """The mesh helpers (``Pki``, ``node_config``, ``free_port``): ``tools/localmesh.py``."""
    from tools import localmesh

    return localmesh


def preload() -> None:
    """Import now what the parts import later (a caller running other benchmarks first
    measures one version of the code)."""
    import siege_sync.node.mesh.daemon  # noqa: F401
    import siege_sync.node.pipeline.publish  # noqa: F401
    import tests.fbdb  # noqa: F401

    _localmesh()


def _print(line: str) -> None:
    print(line, flush=True)


# --- the workload -----------------------------------------------------------------------

@dataclass
class Site:
    events: int
    transactions: int
    workload_s: float
    publish_s: float


def build_site(path: Path, site: str, n_events: int, bundle: Path) -> Site:
    """A new embedded database with capture installed, ``n_events`` (rounded up to whole
    invoices) captured and published as ``site`` (signed with ``bundle``'s key, as its node
    does); closed again."""
    from siege_sync.node.db.database import transaction
    from siege_sync.node.journal import capture
    from siege_sync.node.journal.seal import sealer_for
    from siege_sync.node.pipeline.publish import Publisher
    from tests.fbdb import create_db

    con = create_db(path, ddl=DDL)
    try:
        capture.install(con)
        invoices = math.ceil(n_events / EVENTS_PER_INVOICE)
        t0 = time.perf_counter()
        for start in range(1, invoices + 1, INVOICES_PER_TX):
            with transaction(con) as tm:
                tm.execute_immediate(TX_BLOCK.format(
                    start=start, end=min(start + INVOICES_PER_TX, invoices + 1)))
        t1 = time.perf_counter()
        result = Publisher(con, site, sealer=sealer_for(bundle)).publish() if invoices \
            else None
        t2 = time.perf_counter()
    finally:
        con.close()
    if result is not None and result.capture_errors:
        raise RuntimeError(f"capture errors while publishing at {site}: "
                           f"{result.capture_errors[:3]}")
    return Site(result.events if result else 0, result.transactions if result else 0,
                t1 - t0, t2 - t1)


# --- a counting TCP proxy ----------------------------------------------------------------

class CountingProxy:
    """Forwards 127.0.0.1:port to a target; counts the bytes carried in each direction
    (``up``: client → target, ``down``: target → client) and when the last one passed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = 0
        self.down = 0
        self.connections = 0
        self.last_byte = 0.0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, "up"),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
                    self.last_byte = time.perf_counter()
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def total(self) -> int:
        with self._lock:
            return self.up + self.down

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass


# --- e2e on loopback, in this process ----------------------------------------------------

class _Timer:
    """Wraps a bound method of one object (an instance attribute shadows the class's):
    total seconds spent inside, number of calls."""

    def __init__(self, obj: object, name: str) -> None:
        self.seconds = 0.0
        self.calls = 0
        inner = getattr(obj, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(obj, name, wrapper)


def _seq(vector: object, site: str) -> int:
    return max((s for (o, _inc), s in vector.seqs.items() if o == site), default=0)


def e2e(tmp: Path, n_events: int, log: Log = _print) -> dict[str, float | int | None]:
    from siege_sync.node.mesh.daemon import Node

    lm = _localmesh()
    Pki, free_port, node_config = lm.Pki, lm.free_port, lm.node_config

    pki = Pki(tmp / "pki")
    bundles = {s: pki.site(s) for s in (SITE_A, SITE_B)}
    a = build_site(tmp / f"{SITE_A}.fdb", SITE_A, n_events, bundles[SITE_A])
    build_site(tmp / f"{SITE_B}.fdb", SITE_B, 0, bundles[SITE_B])
    log(f"e2e: {a.events} events in {a.transactions} transactions captured at {SITE_A} in "
        f"{a.workload_s:.1f} s, published in {a.publish_s:.1f} s "
        f"({a.events / a.publish_s:.0f} events/s, not part of the exchange time)")
    ports = {SITE_A: free_port(), SITE_B: free_port()}
    proxy = CountingProxy(("127.0.0.1", ports[SITE_A]))
    nodes: dict[str, Node] = {}
    try:
        for site, peer, peer_port in ((SITE_A, SITE_B, ports[SITE_B]),
                                      (SITE_B, SITE_A, proxy.port)):
            cfg = node_config(tmp, site, str(tmp / f"{site}.fdb"), bundles[site], ports[site],
                              {peer: peer_port})
            nodes[site] = Node(cfg)
            nodes[site].start()
        apply_t = _Timer(nodes[SITE_B].replica, "apply")
        read_t = _Timer(nodes[SITE_A].replica.outbox, "read_batch")
        target = _seq(nodes[SITE_A].replica.vector(publish=False), SITE_A)
        exchanges, problems = 0, []
        t0 = time.perf_counter()
        while exchanges < 6:
            reply = nodes[SITE_B].exchange(SITE_A)
            exchanges += 1
            problems += list(reply.problems)
            if _seq(nodes[SITE_B].replica.vector(publish=False), SITE_A) >= target:
                break
        elapsed = time.perf_counter() - t0
        held = _seq(nodes[SITE_B].replica.vector(publish=False), SITE_A)
    finally:
        for node in nodes.values():
            node.stop(grace=1)
        proxy.close()
    if held < target:
        raise RuntimeError(f"{SITE_B} holds {held} of {target} events of {SITE_A} after "
                           f"{exchanges} exchanges: {problems[:3]}")
    rest = elapsed - apply_t.seconds - read_t.seconds
    log(f"e2e: {held} events {SITE_A} -> {SITE_B} over loopback mTLS (one process) in "
        f"{elapsed:.2f} s = {held / elapsed:.0f} events/s, {exchanges} exchange(s)"
        + (f"; problems: {problems}" if problems else ""))
    log(f"e2e: where the time goes: apply at {SITE_B} {apply_t.seconds:.2f} s "
        f"({apply_t.calls} calls, {held / max(apply_t.seconds, 1e-9):.0f} events/s), "
        f"reading batches at {SITE_A} {read_t.seconds:.2f} s ({read_t.calls} batches), "
        f"the rest (hello, gRPC, gzip, TLS, waiting) {rest:.2f} s")
    log(f"e2e: wire {proxy.total()} bytes ({proxy.down} {SITE_A}->{SITE_B}, {proxy.up} back, "
        f"{proxy.connections} TCP connections) = {proxy.total() / held:.1f} bytes/event")
    return {"e2e_events_per_s": round(held / elapsed), "e2e_events": held,
            "e2e_apply_share": round(apply_t.seconds / elapsed, 3),
            "wire_bytes_per_event": round(proxy.total() / held, 1)}


# --- the slow link: two node processes in network namespaces -----------------------------

def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done


class TcSampler:
    """Samples the tbf counters of both ends of the link every ``period`` seconds."""

    def __init__(self, ends: list[tuple[str, str]], period: float = 0.1) -> None:
        self.ends = ends  # (namespace, device): [A's end (A→B), B's end (B→A)]
        self.period = period
        self.samples: list[tuple[float, list[int], list[int]]] = []  # t, bytes, backlog
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> tuple[list[int], list[int]]:
        out_bytes, backlog = [], []
        for ns, dev in self.ends:
            done = _sh("tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev)
            q = next(q for q in json.loads(done.stdout) if q.get("kind") == "tbf")
            out_bytes.append(int(q["bytes"]))
            backlog.append(int(q.get("backlog", 0)))
        return out_bytes, backlog

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            try:
                b, q = self.read()
            except Exception:  # a namespace going away at the end
                break
            self.samples.append((t, b, q))
            self._stop.wait(self.period)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, t0: float, t1: float, end: int = 0) -> dict[str, float]:
        """Bytes through one end between t0 and t1, and how the link was used meanwhile."""
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not before or not after:
            raise RuntimeError("tc samples do not cover the measured window")
        first, last = before[-1], after[0]
        total = last[1][end] - first[1][end]
        series = [first, *inside, last]
        busy = 0.0
        done99 = None
        capacity = LINK_BITS_PER_S / 8
        for prev, cur in zip(series, series[1:], strict=False):
            dt = cur[0] - prev[0]
            moved = cur[1][end] - prev[1][end]
            if dt > 0 and moved / dt >= 0.8 * capacity:
                busy += dt
            if done99 is None and cur[1][end] - first[1][end] >= 0.99 * total:
                done99 = cur[0]
        return {"bytes": total, "busy_s": busy, "done99_s": (done99 or t1) - t0,
                "backlog_samples": sum(1 for s in inside if s[2][end] > 0),
                "samples": len(inside)}


def _write_config(folder: Path, site: str, bundle: Path, listen: str,
                  peers: dict[str, str]) -> Path:
    path = folder / f"{site}.toml"
    lines = [f'site = "{site}"', "", "[database]", f'dsn = "{folder / (site + ".fdb")}"',
             'user = "SYSDBA"', "", "[node]", f'listen = "{listen}"', f'bundle = "{bundle}"']
    for peer, address in peers.items():
        lines += ["", f"[peers.{peer}]", f'address = "{address}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def choose_slow_events(e2e_rate: float | None) -> tuple[int, str]:
    """100k events when the measured end-to-end rate lets them cross in about a minute,
    otherwise 30k (the run would take minutes and go past the node's 60 s exchange
    deadline)."""
    if e2e_rate is not None and e2e_rate >= 2000:
        return 100_000, f"e2e ran at {e2e_rate:.0f} events/s"
    why = (f"e2e ran at only {e2e_rate:.0f} events/s" if e2e_rate is not None
           else "e2e rate unknown")
    return 30_000, f"{why}: 100k would take {100_000 / max(e2e_rate or 600, 1):.0f} s"


def slow_link(tmp: Path, n_events: int, log: Log = _print) -> dict[str, float | int | None]:
    Pki = _localmesh().Pki
    if os.geteuid() != 0:
        raise RuntimeError("the slow link needs root (network namespaces, tc); run "
                           "`make bench` as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is not installed (iproute2)")
    tag = f"{os.getpid() % 100000}"
    ns = {SITE_A: f"sbm{tag}a", SITE_B: f"sbm{tag}b"}
    dev = {SITE_A: f"vsbm{tag}a", SITE_B: f"vsbm{tag}b"}
    ip = {SITE_A: "10.199.77.1", SITE_B: "10.199.77.2"}
    port = 7443
    pki = Pki(tmp / "pki")
    bundles = {s: pki.site(s) for s in (SITE_A, SITE_B)}
    admin = pki.admin("ops")
    a = build_site(tmp / f"{SITE_A}.fdb", SITE_A, n_events, bundles[SITE_A])
    build_site(tmp / f"{SITE_B}.fdb", SITE_B, 0, bundles[SITE_B])
    log(f"slow link: {a.events} events captured at {SITE_A} in {a.workload_s:.1f} s, "
        f"published in {a.publish_s:.1f} s (before the nodes start)")
    configs = {
        SITE_A: _write_config(tmp, SITE_A, bundles[SITE_A], f"{ip[SITE_A]}:{port}",
                              {SITE_B: f"{ip[SITE_B]}:{port}"}),
        SITE_B: _write_config(tmp, SITE_B, bundles[SITE_B], f"{ip[SITE_B]}:{port}",
                              {SITE_A: f"{ip[SITE_A]}:{port}"}),
    }
    procs: dict[str, subprocess.Popen] = {}
    logs = {s: tmp / f"{s}.log" for s in (SITE_A, SITE_B)}
    created: list[str] = []
    sampler: TcSampler | None = None
    try:
        for site in (SITE_A, SITE_B):
            _sh("ip", "netns", "add", ns[site])
            created.append(ns[site])
        _sh("ip", "link", "add", dev[SITE_A], "netns", ns[SITE_A], "type", "veth", "peer",
            "name", dev[SITE_B], "netns", ns[SITE_B])
        for site in (SITE_A, SITE_B):
            _sh("ip", "-n", ns[site], "addr", "add", f"{ip[site]}/24", "dev", dev[site])
            _sh("ip", "-n", ns[site], "link", "set", dev[site], "up")
            _sh("ip", "-n", ns[site], "link", "set", "lo", "up")
            _sh("tc", "-n", ns[site], "qdisc", "add", "dev", dev[site], "root", *TBF)
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
        for site in (SITE_A, SITE_B):
            with open(logs[site], "wb") as err:
                procs[site] = subprocess.Popen(
                    ["ip", "netns", "exec", ns[site], sys.executable, "-m",
                     "siege_sync.node.cli", "run", "--config", str(configs[site])],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        sampler = TcSampler([(ns[SITE_A], dev[SITE_A]), (ns[SITE_B], dev[SITE_B])])
        sampler.start()
        probe_args = {"admin": str(admin), "bundle_b": str(bundles[SITE_B]),
                      "a": f"{ip[SITE_A]}:{port}", "b": f"{ip[SITE_B]}:{port}",
                      "site_a": SITE_A, "site_b": SITE_B, "deadline_s": 240}
        probe_out, probe_err = tmp / "probe.out", tmp / "probe.err"
        with open(probe_out, "wb") as out, open(probe_err, "wb") as err:
            procs["probe"] = subprocess.Popen(
                ["ip", "netns", "exec", ns[SITE_B], sys.executable,
                 str(Path(__file__).resolve()), "_probe", json.dumps(probe_args)],
                cwd=ROOT, env=env, stdout=out, stderr=err)
        started = time.monotonic()
        while procs["probe"].poll() is None:
            for site in (SITE_A, SITE_B):
                if procs[site].poll() is not None:
                    raise RuntimeError(f"{site}'s node exited (code {procs[site].returncode}): "
                                       f"{_tail(logs[site], 600).strip()}")
            if time.monotonic() - started > 420:
                raise RuntimeError("the probe did not finish within 420 s")
            time.sleep(0.2)
        sampler.stop()
        phases = {}
        for line in probe_out.read_text().splitlines():
            if line.startswith("PHASE "):
                item = json.loads(line[6:])
                phases[item["phase"]] = item
        if procs["probe"].returncode != 0 or "exchange" not in phases:
            last = (_tail(probe_err, 4000).strip().splitlines() or ["(no output)"])[-1]
            tails = {s: _tail(logs[s], 600).strip() for s in (SITE_A, SITE_B)}
            raise RuntimeError(f"the probe in {ns[SITE_B]} failed (exit "
                               f"{procs['probe'].returncode}): {last}; node logs: {tails}")
    finally:
        if sampler is not None:
            sampler.stop()
        for proc in procs.values():
            _stop(proc)
        for name in created:
            _sh("ip", "netns", "del", name, check=False)
    raw, ex = phases["rawpull"], phases["exchange"]
    raw_w = sampler.window(raw["t0"], raw["t1"])
    ex_w = sampler.window(ex["t0"], ex["t1"])
    ex_back = sampler.window(ex["t0"], ex["t1"], end=1)
    raw_s, ex_s = raw["t1"] - raw["t0"], ex["t1"] - ex["t0"]
    link_s = LINK_BITS_PER_S / 8

    def eff(nbytes: float, seconds: float) -> float:
        return nbytes * 8 / LINK_BITS_PER_S / seconds

    log(f"slow link (2 Mbit/s tbf, two `siege-node run` processes in namespaces): bare Pull "
        f"of {raw['events']} events without apply: {raw_w['bytes']} bytes across in "
        f"{raw_s:.1f} s, efficiency {eff(raw_w['bytes'], raw_s):.2f} "
        f"({raw_w['bytes'] / max(raw['events'], 1):.1f} bytes/event on the link, "
        f"{raw['payload_bytes'] / max(raw['events'], 1):.0f} bytes/event before gzip)")
    held, target = ex["held"], ex["target"]  # B started empty: it holds what crossed
    log(f"slow link: {SITE_B} got {held} of {target} events with apply in {ex_s:.1f} s "
        f"({held / ex_s:.0f} events/s) in {ex['exchanges']} exchange(s) (their replies say "
        f"{ex['pulled']} applied)" + (f"; problems: {ex['problems']}" if ex["problems"] else ""))
    log(f"slow link: {ex_w['bytes']} bytes {SITE_A}->{SITE_B} (+{ex_back['bytes']} back): "
        f"efficiency {eff(ex_w['bytes'], ex_s):.2f}; the link ran at >=80% of its rate "
        f"{ex_w['busy_s']:.1f} s of {ex_s:.1f} s; 99% of the bytes had crossed after "
        f"{ex_w['done99_s']:.1f} s; the link alone would need {ex_w['bytes'] / link_s:.1f} s")
    if ex_w["bytes"] > 1.1 * raw_w["bytes"]:
        log(f"slow link: {ex_w['bytes'] - raw_w['bytes']} bytes were sent again (a cut "
            f"exchange re-pulls what it had received but not applied); counting each event's "
            f"bytes once the efficiency is {eff(raw_w['bytes'], ex_s):.2f}")
    if held < target:
        raise RuntimeError(f"over the slow link {SITE_B} got {held} of {target} events in "
                           f"{ex['exchanges']} exchanges: {ex['problems'][:3]}")
    return {"slow_link_efficiency": round(eff(ex_w["bytes"], ex_s), 3),
            "slow_link_events": held, "slow_link_seconds": round(ex_s, 2),
            "slow_link_only_efficiency": round(eff(raw_w["bytes"], raw_s), 3),
            "slow_link_busy_fraction": round(ex_w["busy_s"] / ex_s, 3)}


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --- the probe: runs inside B's namespace ------------------------------------------------

def probe(args: dict) -> int:
    """Wait for both nodes, pull A's events barely (discarded), then ask B to exchange with
    A until B holds them all. Prints one ``PHASE {json}`` line per phase (wall clock)."""
    import grpc

    from siege_sync.certs import load_bundle
    from siege_sync.node.mesh.transport import channel
    from siege_sync.proto import sync_pb2, sync_pb2_grpc

    admin = load_bundle(Path(args["admin"]))
    site_a, site_b = args["site_a"], args["site_b"]

    def status(address: str, site: str) -> sync_pb2.StatusReply:
        with channel(address, admin, site) as ch:
            return sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(), timeout=30)

    def seq(reply: sync_pb2.StatusReply, origin: str) -> int:
        return max((o.seq for o in reply.applied.origins if o.site == origin), default=0)

    deadline = time.monotonic() + 60
    for address, site in ((args["b"], site_b), (args["a"], site_a)):
        while True:
            try:
                status(address, site)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    target = seq(status(args["a"], site_a), site_a)
    time.sleep(1.0)

    # A bare pull, as site B, of everything A holds: what the link does without apply.
    with channel(args["a"], load_bundle(Path(args["bundle_b"])), site_a) as ch:
        stub = sync_pb2_grpc.SyncNodeStub(ch)
        t0 = time.time()
        events = payload = 0
        for batch in stub.Pull(sync_pb2.PullRequest(have=sync_pb2.Vector(),
                                                    max_events_per_batch=500), timeout=300):
            events += len(batch.events)
            payload += batch.ByteSize()
        t1 = time.time()
    print("PHASE " + json.dumps({"phase": "rawpull", "t0": t0, "t1": t1, "events": events,
                                 "payload_bytes": payload}), flush=True)
    time.sleep(1.0)

    # The real thing: B pulls from A and applies, as many exchanges as it takes.
    problems: list[str] = []
    pulled = exchanges = 0
    held = 0
    t0 = time.time()
    with channel(args["b"], admin, site_b) as ch:
        stub = sync_pb2_grpc.SyncNodeStub(ch)
        while time.time() - t0 < args["deadline_s"]:
            reply = stub.Exchange(sync_pb2.ExchangeRequest(peer=site_a), timeout=600)
            exchanges += 1
            pulled += reply.pulled_events
            problems += list(reply.problems)
            held = seq(stub.Status(sync_pb2.StatusRequest(), timeout=30), site_a)
            if held >= target:
                break
    t1 = time.time()
    print("PHASE " + json.dumps({"phase": "exchange", "t0": t0, "t1": t1, "pulled": pulled,
                                 "exchanges": exchanges, "problems": problems, "held": held,
                                 "target": target}), flush=True)
    time.sleep(1.0)
    return 0


# --- entry points ------------------------------------------------------------------------

def run(e2e_events: int = 20_000, slow_events: int | None = None, skip_slow: bool = False,
        log: Log = _print) -> dict:
    """Both parts; returns the keys (null where a part failed) and ``errors`` if any."""
    out: dict = dict.fromkeys(KEYS)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        try:
            (Path(tmp) / "e2e").mkdir()
            out.update(e2e(Path(tmp) / "e2e", e2e_events, log))
        except Exception as exc:  # noqa: BLE001 - reported, the rest of the bench goes on
            errors.append(f"mesh e2e: {type(exc).__name__}: {exc}")
            log(f"mesh e2e FAILED: {errors[-1]}")
        if skip_slow:
            log("slow link: skipped")
        else:
            n = slow_events
            if n is None:
                n, why = choose_slow_events(out["e2e_events_per_s"])
                log(f"slow link: {n} events ({why})")
            try:
                (Path(tmp) / "slow").mkdir()
                out.update(slow_link(Path(tmp) / "slow", n, log))
            except Exception as exc:  # noqa: BLE001
                errors.append(f"mesh slow link: {type(exc).__name__}: {exc}")
                log(f"mesh slow link FAILED: {errors[-1]}")
    if errors:
        out["errors"] = errors
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_probe":
        sys.exit(probe(json.loads(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e-events", type=int, default=20_000)
    parser.add_argument("--slow-events", default="auto",
                        help="events over the 2 Mbit/s link (default: 100000 if the e2e rate "
                             "allows it in about a minute, else 30000)")
    parser.add_argument("--skip-slow", action="store_true")
    args = parser.parse_args()
    slow = None if args.slow_events == "auto" else int(args.slow_events)
    print(json.dumps(run(args.e2e_events, slow, args.skip_slow), sort_keys=True))


if __name__ == "__main__":
    main()
