"""Every fault kind of the chaos run (issue 19 item 2), struck at the moment the trial
chooses, and whether it really hit work in flight — observed, never assumed.

How each kind is struck and how its hit is seen (``Strike.detail`` says what was seen):

* ``kill_mid_publish`` / ``kill_mid_apply`` / ``kill_mid_purge`` — SIGKILL of a node while its
  own attachment runs a statement of that phase: ``MON$STATEMENTS`` (state 1, running, or
  2, its cursor open between fetches) joined to ``MON$ATTACHMENTS`` whose
  ``MON$REMOTE_PID`` is the node's pid, read as SYSDBA in a loop (a new monitoring snapshot
  each time), the kill sent as soon as one is seen. The phase is told by the statement's
  text (``phase_of``). Not seen within ``WAIT_S``: the node is killed anyway, ``hit``
  False. The node comes back 0.5–4 s later (a background restart).
* ``server_kill`` / ``server_restart`` — the Firebird server SIGKILLed (or stopped and
  started) while a node's statement is active on any site's database or a faulty line
  carried bytes in the last ``IN_FLIGHT_S``; back 0.5–3 s later. Done in the caller's thread:
  the server dies with the thread that started it (tools/fbserver.py, pdeathsig).
* ``line_cut_in`` — every connection on the line *to* nice (the coordinator's rounds) cut
  while it carried bytes in the last ``IN_FLIGHT_S``; ``line_cut_out`` — the same on a line
  a site dials out on (brest's dial-in exchanges, nice's own calls).
* ``black_hole`` — the line to nice, or brest's line to the siège, stalled (both ways, or
  one way: a half-dead line) while it carried bytes, for 62–75 s — longer than gRPC
  keepalive (30 s + 20 s); then resumed. The hit is the bytes in flight when it fell; the
  detail adds, when it ends, what the nodes logged meanwhile.
* ``siege_down`` — the siège's node killed and kept down until the stand-in says in its log
  that it took the role (``takeover_after``), plus a few rounds; then started again and the
  stand-in must say it stands by (background). Hit: the takeover seen in lyon's log.
* ``offline_purges`` — brest (it dials in; the siège counts it by its last hello, so purges
  go on without it) killed until the siège's log shows 3 purges; then back. Hit: at least
  3 purges, some segments purged, while it was down.
* ``clock_jump`` — a site's node clock jumps ±1 h (``ShippedMesh.set_skew``: at runtime if
  the product has the skew file, else a restart with the new skew — said in the detail).
  Hit: an exchange with that site (its hello stamped by the jumped clock) logged a clock
  offset within 60 s of the new difference; whether it published since is in the detail.
* ``join`` — vannes joins (``ShippedMesh.join``) while the application writes; hit: joined
  and application attachments were writing at the siège during the copy (MON$).
* ``resync`` — lyon put back from a copy taken 2–5 s earlier and resynced
  (``ShippedMesh.replace_and_resync``); hit: resynced while the application wrote at the
  other sites (MON$).
* ``disk_full`` — nice's small filesystem filled with a ballast file for 3–8 s, then
  emptied. Hit: a write failed for lack of space (nice's log, the application, or the
  siège's exchange with nice), and after the space returned nice published again. Whether
  the site *said so* (its log in words, ``siege-node status``, ``siege-ctl status``) is in
  the detail: today it does not (see /tmp/patches/B-diskfull.diff).

``strike`` returns once the hit is known (it blocks at most ``WAIT_S`` to find work in
flight, longer for ``siege_down``/``offline_purges``/``join``/``resync``, whose hit is the
procedure itself); the long tail of a fault (a black hole's minute, the siège's return, a
restart) runs in a background thread that ``settle`` ends or waits for.

What it must never do: write application data, judge the data (the oracle does), end a
process the mesh did not start, leave a fault in place after ``settle``.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tools.chaos.mesh import DIAL_IN, JOINER, LINED, SIEGE, STAND_IN, TAKEOVER_AFTER_S, ShippedMesh

KINDS: tuple[str, ...] = (
    "kill_mid_publish", "kill_mid_apply", "kill_mid_purge", "server_kill", "server_restart",
    "line_cut_in", "line_cut_out", "black_hole", "siege_down", "offline_purges",
    "clock_jump", "join", "resync", "disk_full")
LONG_KINDS = ("black_hole",)  # a minute or more of the trial
WAIT_S = 8.0  # how long a strike looks for work in flight before it strikes anyway
PURGE_WAIT_S = 15.0
IN_FLIGHT_S = 0.3  # bytes on a line this recently: an exchange in flight
BLACK_HOLE_S = (62.0, 75.0)
SKEW_STEP_S = 3600.0
CLOCK_SEEN_S = 30.0  # an exchange is logged when it ends: a long one ends late
POLL_S = 0.01
DISK_FULL_S = (0.0, 12.0)  # full until a write fails for lack of space, at most this long
DISK_FULL_AFTER_S = (1.0, 4.0)  # and full this much longer

# The statement's head only: its text is a BLOB (a long apply block would come back as a
# reader to drain), and the head tells the phase.
_ACTIVE = ("SELECT a.MON$REMOTE_PID, "
           "CAST(SUBSTRING(s.MON$SQL_TEXT FROM 1 FOR 200) AS VARCHAR(200) CHARACTER SET UTF8) "
           "FROM MON$STATEMENTS s "
           "JOIN MON$ATTACHMENTS a ON a.MON$ATTACHMENT_ID = s.MON$ATTACHMENT_ID "
           "WHERE s.MON$STATE > 0 AND a.MON$ATTACHMENT_ID <> CURRENT_CONNECTION")
_OFFSET = re.compile(r"exchange with (\w+): .*clock offset ([-+]?\d+(?:\.\d+)?) s")
_PURGED = re.compile(r"purged (\d+) event segments mesh-wide")
_NO_SPACE = ("No space left on device", "disk full", "Disk full")


@dataclass
class Strike:
    kind: str
    hit: bool  # it really hit work in flight (observed)
    detail: str  # what was seen; a background tail may add to it until it ends
    ended: bool = True  # False while its tail runs (settle() ends it)


def phase_of(sql: str) -> str:
    """The node's phase a statement belongs to, from its text: the purge deletes stored
    events and trims every row's registers (node/journal/retention.py: a scan of SYNC$ROWS
    without a condition, an UPDATE of MAX_WALL); the apply runs its blocks in the SYNC$APPLY
    context (node/pipeline/apply.py); the publish reads the capture log, reads and writes
    registers by key and stores events (node/pipeline/publish.py, registers.py)."""
    text = " ".join((sql or "").upper().split())
    if text.startswith(("DELETE FROM SYNC$EVENTS", "UPDATE SYNC$ROWS SET MAX_WALL")) \
            or text == "SELECT TBL_NO, KEY_HASH, REGS, REGS_BLOB FROM SYNC$ROWS":
        return "purge"
    if "SYNC$APPLY" in text:
        return "apply"
    if "SYNC$LOG" in text or "INSERT INTO SYNC$EVENTS" in text or "SYNC$ROWS" in text:
        return "publish"
    return "other"


class Faults:
    def __init__(self, mesh: ShippedMesh, rng: random.Random) -> None:
        self.mesh, self.rng = mesh, rng
        self._tails: list[threading.Thread] = []
        self._ending = threading.Event()  # settle(): tails end their fault now
        self._undo: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # Every strike, in order. A fault with a tail (black hole, the siège's return) adds
        # to its detail until it ends: read them again after settle() for the whole story.
        self.struck: list[Strike] = []

    # --- the trial's calls ---------------------------------------------------------------

    def strike(self, kind: str) -> Strike:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
        strike = getattr(self, f"_{kind}")()
        self.struck.append(strike)
        return strike

    def settle(self) -> None:
        """End every fault still in progress (lines resumed, nodes and server back, ballast
        gone) and wait for the tails."""
        self._ending.set()
        for tail in self._tails:
            tail.join(180)
        with self._lock:
            undo, self._undo = self._undo, []
        for step in undo:
            step()
        self._tails = []
        self._ending.clear()
        if not self.mesh.server.running:
            self.mesh.server.start()

    # --- node kills ----------------------------------------------------------------------

    def _kill_mid_publish(self) -> Strike:
        return self._kill_mid("publish")

    def _kill_mid_apply(self) -> Strike:
        return self._kill_mid("apply")

    def _kill_mid_purge(self) -> Strike:
        return self._kill_mid("purge")

    def _kill_mid(self, phase: str) -> Strike:
        kind = f"kill_mid_{phase}"
        sites = [s for s in self.mesh.sites() if self.mesh.up(s)]
        if not sites:
            return Strike(kind, False, "no node is up")
        self.rng.shuffle(sites)
        wait = WAIT_S
        if phase == "purge":
            # A purge is short and comes once a round: the coordinator's own, then the
            # sites it orders (brest purges when it dials in); watched longer.
            sites = [s for s in (SIEGE, STAND_IN, LINED) if s in sites] or sites
            wait = PURGE_WAIT_S
        seen = self._watch(sites, lambda site, found: phase in found, wait=wait)
        if seen is not None:
            site, sql, pid = seen
            self._kill_node(site, pid)
            detail = f"{site} SIGKILLed during {phase}: {_short(sql)}"
            hit = True
        else:
            site = sites[0]
            self._kill_node(site, self.mesh.pid(site))
            detail = f"no {phase} statement seen in {wait:g} s; {site} SIGKILLed anyway"
            hit = False
        self._later(self.rng.uniform(0.5, 4.0), lambda s=site: self._revive(s))
        return Strike(kind, hit, detail)

    def _kill_node(self, site: str, pid: int | None) -> None:
        if pid is not None and self.mesh.pid(site) == pid:
            self.mesh.kill(site)

    def _revive(self, site: str) -> None:
        """Start ``site``'s node again, as its service manager would: a node whose database
        server is down at that moment exits (siege-node run cannot open it), so it is tried
        again for a while."""
        from tools.chaos.mesh import MeshError

        deadline = time.monotonic() + 60
        while not self.mesh.up(site) and site in self.mesh.sites():
            try:
                self.mesh.start(site)
            except MeshError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    # --- the server ----------------------------------------------------------------------

    def _server_kill(self) -> Strike:
        return self._server_down("server_kill", self.mesh.server.kill)

    def _server_restart(self) -> Strike:
        return self._server_down("server_restart", self.mesh.server.stop)

    def _server_down(self, kind: str, down: Callable[[], None]) -> Strike:
        sites = [s for s in self.mesh.sites() if self.mesh.up(s)]
        self.rng.shuffle(sites)
        seen = self._watch(sites, lambda site, found: found != "other", lines=True)
        down()
        pause = self.rng.uniform(0.5, 3.0)
        time.sleep(pause)
        self.mesh.server.start()  # this thread started it: it must outlive the server
        if seen is None:
            return Strike(kind, False, f"no exchange or publish seen in {WAIT_S:g} s; "
                                       f"the server went down anyway for {pause:.1f} s")
        site, what, _pid = seen
        return Strike(kind, True, f"down for {pause:.1f} s during {site}'s {_short(what)}")

    # --- lines ---------------------------------------------------------------------------

    def _line_cut_in(self) -> Strike:
        return self._cut("line_cut_in", [LINED])

    def _line_cut_out(self) -> Strike:
        return self._cut("line_cut_out", [f"{DIAL_IN}>{SIEGE}", f"{DIAL_IN}>{STAND_IN}",
                                          f"{LINED}>{SIEGE}", f"{LINED}>{STAND_IN}"])

    def _cut(self, kind: str, names: list[str]) -> Strike:
        name = self._busy_line(names)
        line = self.mesh.lines[name or names[0]]
        busy = name is not None and line.carried_within(IN_FLIGHT_S)
        cut = line.cut()
        return Strike(kind, busy and cut > 0,
                      f"line {name or names[0]}: {cut} connections cut"
                      + ("" if busy else f", no bytes on it in the last {IN_FLIGHT_S:g} s"))

    def _busy_line(self, names: list[str]) -> str | None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for name in names:
                line = self.mesh.lines[name]
                if line.carried_within(IN_FLIGHT_S / 3) and line.connections:
                    return name
            time.sleep(POLL_S)
        return None

    def _black_hole(self) -> Strike:
        names = [LINED, f"{DIAL_IN}>{SIEGE}"]
        name = self._busy_line(names) or self.rng.choice(names)
        line = self.mesh.lines[name]
        direction = self.rng.choice((None, None, "up", "down"))
        busy = line.carried_within(IN_FLIGHT_S)
        line.stall(direction)
        seconds = self.rng.uniform(*BLACK_HOLE_S)
        which = {None: "both ways", "up": "towards the callee", "down": "towards the caller"}
        strike = Strike("black_hole", busy,
                        f"line {name} black-holed {which[direction]} for {seconds:.0f} s"
                        + ("" if busy else " (no bytes in flight when it fell)"),
                        ended=False)
        site = LINED if name == LINED else DIAL_IN
        logs = {s: self.mesh.log_size(s) for s in (SIEGE, site)}

        def end() -> None:
            self._ending.wait(seconds)
            line.resume()
            failed = [s for s, off in logs.items()
                      if re.search(r"exchange with \w+ failed|UNAVAILABLE|DEADLINE|keepalive",
                                   self.mesh.log_since(s, off))]
            strike.detail += (f"; resumed, exchanges failed meanwhile at {', '.join(failed)}"
                              if failed else "; resumed, no exchange failure logged")
            strike.ended = True

        self._tail(end)
        self._on_settle(line.resume)
        return strike

    # --- the siège away, a site away -----------------------------------------------------

    def _siege_down(self) -> Strike:
        off = self.mesh.log_size(STAND_IN)
        self.mesh.kill(SIEGE)
        deadline = time.monotonic() + TAKEOVER_AFTER_S + 20
        took = False
        while time.monotonic() < deadline and not took:
            took = "stands in" in self.mesh.log_since(STAND_IN, off)
            time.sleep(0.2)
        strike = Strike("siege_down", took,
                        f"siège killed; {STAND_IN} took the role" if took else
                        f"siège killed; {STAND_IN} did not take the role within "
                        f"{TAKEOVER_AFTER_S + 20:.0f} s", ended=False)

        def back() -> None:
            self._ending.wait(self.rng.uniform(3.0, 8.0))  # a few stand-in rounds
            after = self.mesh.log_size(STAND_IN)
            self._revive(SIEGE)
            limit = time.monotonic() + TAKEOVER_AFTER_S * 3 + 20
            gave = False
            while time.monotonic() < limit and not gave:
                text = self.mesh.log_since(STAND_IN, after)
                gave = "stands by" in text or "stand by" in text
                time.sleep(0.3)
            strike.detail += ("; the siège is back and lyon stood by" if gave else
                              "; the siège is back but lyon never said it stands by")
            strike.ended = True

        self._tail(back)
        return strike

    def _offline_purges(self) -> Strike:
        off = self.mesh.log_size(SIEGE)
        self.mesh.kill(DIAL_IN)
        deadline = time.monotonic() + 30
        purges: list[int] = []
        while time.monotonic() < deadline and len(purges) < 3:
            purges = [int(n) for n in _PURGED.findall(self.mesh.log_since(SIEGE, off))]
            time.sleep(0.3)
        self._later(0.1, lambda: self._revive(DIAL_IN))
        hit = len(purges) >= 3 and sum(purges) > 0
        return Strike("offline_purges", hit,
                      f"{DIAL_IN} offline through {len(purges)} purges "
                      f"({sum(purges)} segments purged)")

    # --- clocks --------------------------------------------------------------------------

    def _clock_jump(self) -> Strike:
        site = self.rng.choice([s for s in self.mesh.sites() if s != JOINER] or [SIEGE])
        now = self.mesh.skew(site)
        step = self.rng.choice((-SKEW_STEP_S, SKEW_STEP_S))
        if abs(now + step) > 2 * SKEW_STEP_S:
            step = -step
        logs = {s: self.mesh.log_size(s) for s in self.mesh.sites()}
        before = self._published(site)
        how = self.mesh.set_skew(site, now + step)
        deadline = time.monotonic() + CLOCK_SEEN_S
        offset_seen, published = None, False
        while time.monotonic() < deadline and not (offset_seen and published):
            offset_seen = offset_seen or self._offset_seen(site, logs)
            after = self._published(site)
            published = before is not None and after is not None and after > before
            time.sleep(0.3)
        how_said = ("while it ran" if how == "runtime" else
                    "by a restart with the new skew (its process, siege-node join or resync, "
                    "reads no skew file: /tmp/patches/B-clockjump.diff)")
        return Strike("clock_jump", offset_seen is not None,
                      f"{site}'s clock {now:+.0f} s -> {now + step:+.0f} s {how_said}; "
                      + (f"an exchange measured {offset_seen}" if offset_seen else
                         "no exchange measured the new offset")
                      + ("" if published else "; it published nothing after the jump"))

    def _offset_seen(self, site: str, logs: dict[str, int]) -> str | None:
        """An exchange logged by any node, with ``site`` at one end, whose measured clock
        offset is within 60 s of the two nodes' skews' difference (when not zero)."""
        for other, off in logs.items():
            for peer, value in _OFFSET.findall(self.mesh.log_since(other, off)):
                if site not in (other, peer) or peer not in self.mesh.sites():
                    continue
                expected = abs(self.mesh.skew(other) - self.mesh.skew(peer))
                if expected > 0 and abs(abs(float(value)) - expected) < 60:
                    return f"{float(value):+.0f} s between {other} and {peer}"
        return None

    def _published(self, site: str) -> int | None:
        try:
            return self.mesh.status(site).published
        except Exception:  # noqa: BLE001 - a node restarting: unknown
            return None

    # --- join and resync -----------------------------------------------------------------

    def _join(self) -> Strike:
        if JOINER in self.mesh.sites():
            return Strike("join", False, f"{JOINER} has joined already")
        before = self._keys_handed_out(SIEGE)
        ok, said = self.mesh.join(JOINER)
        wrote = self._keys_handed_out(SIEGE) - before
        return Strike("join", ok and wrote > 0,
                      (f"{JOINER}: {said}" if ok else f"the join failed: {said}")
                      + f"; the application took {wrote} keys at the siège meanwhile")

    def _resync(self) -> Strike:
        site = STAND_IN
        copy = self.mesh.old_copy(site)
        time.sleep(self.rng.uniform(2.0, 5.0))  # the copy gets old: lyon writes and syncs
        before = self._keys_handed_out(SIEGE)
        ok, said = self.mesh.replace_and_resync(site, copy)
        wrote = self._keys_handed_out(SIEGE) - before
        return Strike("resync", ok and wrote > 0,
                      (f"{site} put back from an old copy: {said}" if ok else
                       f"the resync failed: {said}")
                      + f"; the application took {wrote} keys at the siège meanwhile")

    def _keys_handed_out(self, site: str) -> int:
        """The sum of the application's generators at ``site`` (they advance as it writes:
        work during a procedure is seen so, however short its transactions)."""
        total = 0
        try:
            con = self.mesh.sysdba(site)
        except Exception:  # noqa: BLE001 - server down: nothing known
            return 0
        try:
            with con.transaction_manager() as tm:
                tm.begin()
                cur = tm.cursor()
                for name in self.mesh.generators:
                    cur.execute(f'SELECT GEN_ID("{name}", 0) FROM RDB$DATABASE')
                    total += int(cur.fetchone()[0])
                cur.close()
                tm.commit()
        finally:
            con.close()
        return total

    # --- disk full -----------------------------------------------------------------------

    def _disk_full(self) -> Strike:
        """Full until a write is seen failing for lack of space (at most ``DISK_FULL_S``),
        a little longer, then emptied; then nice must publish again."""
        site = LINED
        logs = {s: self.mesh.log_size(s) for s in self.mesh.sites()}
        server_log = _size(self.mesh.server.log_path)
        filled = self.mesh.disk.fill()
        began = time.monotonic()
        seen: list[str] = []
        while time.monotonic() - began < DISK_FULL_S[1] and not seen:
            time.sleep(0.3)
            seen = [s for s, off in logs.items()
                    if any(w in self.mesh.log_since(s, off) for w in _NO_SPACE)]
            if any(w in _read_from(self.mesh.server.log_path, server_log) for w in _NO_SPACE):
                seen.append("the Firebird server's log")
        time.sleep(self.rng.uniform(*DISK_FULL_AFTER_S))
        held = time.monotonic() - began
        said_node = self.mesh.log_since(site, logs[site])
        status = self._said(lambda: self.mesh.node_cmd(site, "status", timeout=20))
        ctl = self._said(lambda: self.mesh.ctl("status", timeout=20))
        self.mesh.disk.empty()
        words = [where for where, text in (("its log", _clean_log(said_node)),
                                           ("siege-node status", status),
                                           ("siege-ctl status", ctl))
                 if "disk full" in text.lower() or "no space" in text.lower()]
        recovered = self._works_again(site, logs[site])
        return Strike("disk_full", bool(seen),
                      f"{site}'s disk filled ({filled >> 20} MiB of ballast) for {held:.1f} s; "
                      f"a write failed for lack of space in: {', '.join(seen) or 'nothing seen'}"
                      f"; said in words by: {', '.join(words) or 'nothing but tracebacks'}; "
                      f"published again after the space returned: {recovered}")

    @staticmethod
    def _said(run: Callable[[], subprocess.CompletedProcess]) -> str:
        """What a command printed; "" when it did not answer in time (a busy siège)."""
        try:
            return run().stdout
        except subprocess.TimeoutExpired:
            return ""

    def _works_again(self, site: str, offset: int) -> str:
        """Whether ``site`` publishes again (within 20 s): "yes", or "no" and why not."""
        before = self._published(site)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self._published(site)
            if before is not None and now is not None and now > before:
                return "yes"
        lines = [name for name in self.mesh.sites_[site].lines_in
                 if self.mesh.lines[name].stalled]
        return ("no (its line is black-holed: " + ", ".join(lines) + ")" if lines
                else "no within 20 s")

    # --- watching ------------------------------------------------------------------------

    def _watch(self, sites: list[str], wanted: Callable[[str, str], bool],
               lines: bool = False, wait: float = WAIT_S
               ) -> tuple[str, str, int | None] | None:
        """Poll the monitoring tables of ``sites``' databases — one thread and connection
        each, so that a short statement is not missed while another database is read — (and
        the lines) until a node's statement whose phase ``wanted(site, phase)`` accepts is
        seen: its site, phase and SQL, and the node's pid. None after ``wait``."""
        found: list[tuple[str, str, int | None]] = []
        done = threading.Event()
        deadline = time.monotonic() + wait

        def poll(site: str) -> None:
            try:
                con = self.mesh.sysdba(site)
            except Exception:  # noqa: BLE001 - its server is down: nothing to see there
                return
            try:
                while not done.is_set() and time.monotonic() < deadline:
                    pids = self.mesh.pids()
                    with con.transaction_manager() as tm:
                        tm.begin()
                        cur = tm.cursor()
                        cur.execute(_ACTIVE)
                        rows = cur.fetchall()
                        cur.close()
                        tm.commit()
                    for pid, sql in rows:
                        node = pids.get(pid)
                        phase = phase_of(sql or "")
                        if node is not None and wanted(node, phase):
                            found.append((node, f"{phase}: {sql or ''}", pid))
                            done.set()
                            return
                    time.sleep(POLL_S)
            except Exception:  # noqa: BLE001 - a connection lost midway: stop looking there
                return
            finally:
                try:
                    con.close()
                except Exception:  # noqa: BLE001
                    pass

        pollers = [threading.Thread(target=poll, args=(site,), daemon=True) for site in sites]
        for poller in pollers:
            poller.start()
        while not done.is_set() and time.monotonic() < deadline:
            if lines:
                for name, line in self.mesh.lines.items():
                    if line.carried_within(IN_FLIGHT_S / 3):
                        found.append((name.split(">")[0], f"exchange on line {name}", None))
                        done.set()
                        break
            done.wait(POLL_S)
        done.set()
        for poller in pollers:
            poller.join(5)
        return found[0] if found else None

    # --- tails ---------------------------------------------------------------------------

    def _tail(self, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=_logged(work), daemon=True, name="fault-tail")
        thread.start()
        self._tails.append(thread)

    def _later(self, seconds: float, work: Callable[[], None]) -> None:
        def run() -> None:
            self._ending.wait(seconds)
            work()
        self._tail(run)

    def _on_settle(self, step: Callable[[], None]) -> None:
        with self._lock:
            self._undo.append(step)


def _logged(work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - a tail's failure is said, heal() mends
            import sys
            print(f"chaos fault tail failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return run


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _short(sql: str, n: int = 90) -> str:
    return " ".join(sql.split())[:n]


def _clean_log(text: str) -> str:
    """A log without its tracebacks (the words a person reads, not the exception's repr)."""
    return "\n".join(line for line in text.splitlines()
                     if re.match(r"\d{4}-\d\d-\d\d ", line) and "Traceback" not in line)
