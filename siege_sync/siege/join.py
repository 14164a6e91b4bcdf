"""``siege-ctl join SITE``: the siège sends a copy of its database to a new site (DESIGN §5).

Owns the coordinator's side of a join. The new site's node waits with no database
(``siege-node join``, node/operations/join.py); the siège:

1. publishes what it has captured, then takes a snapshot of its database through the
   services API of the server that serves it, whatever the DSN's form (node/db/dbserver.py; the
   embedded engine for a plain path): a gbak backup, consistent — one snapshot transaction —
   while the application, the node and the other sites keep working; the server streams it
   into a spool file here, hashed (sha256) as it arrives — the database file is never opened
   directly (a Firebird Super server holding it would refuse);
2. streams it to the new site in 1 MiB chunks (gzip on the wire) *while the server still
   writes it* — its size and sha256 go with the last chunk (with the first too, when it is
   whole by then; a node of an earlier version that wants them first gets the whole file
   after the backup) —, resuming from the bytes the site holds after a cut — within this
   call (a few retries), or by running ``join`` again while the spooled snapshot is recent;
3. once the site has restored it and taken its own identity, exchanges with it: it takes
   part in the rounds from then on. The join is stored as a report and emailed.

Changes made anywhere during the copy are not lost: the copy carries the siège's version
vector, so the next exchanges bring everything after it. Must never send a snapshot to a site
that serves a database already (the site refuses too).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc

from ..i18n import _, speaking
from ..node.db import dbserver
from ..node.mesh import transport
from ..node.mesh.daemon import Node
from ..proto import coordinator_pb2, sync_pb2, sync_pb2_grpc
from . import reports
from .alerts import Alerter
from .purge import JOINING
from .rounds import NEEDS_RESYNC

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRIES = 5
RETRY_PAUSE_S = 2.0
REUSE_SNAPSHOT_S = 3600.0  # a spooled snapshot older than this is taken again
JOIN = "join"  # the report's trigger

Progress = Callable[[coordinator_pb2.JoinProgress], None]


class JoinRefused(Exception):
    """The join cannot start (nothing was sent); the message says what to do."""


@dataclass(frozen=True)
class Snapshot:
    join_id: str
    path: Path
    size: int
    sha256: bytes
    made: float  # time.time()

    def meta(self) -> str:
        return f"{self.join_id}\n{self.size}\n{self.sha256.hex()}\n{self.made}\n"


class Joiner:
    def __init__(self, node: Node, alerter: Alerter | None = None,
                 spool: Path | None = None) -> None:
        self._node = node
        self._alerter = alerter
        base = spool or (node.cfg.path.parent if node.cfg.path else
                         Path(tempfile.gettempdir()))
        self._spool = base / f"siege-joins-{node.cfg.site}"
        self._busy = threading.Lock()

    def run(self, site: str, progress: Progress,
            resync: bool = False) -> coordinator_pb2.RoundReport:
        """``resync``: the site has a database the mesh no longer takes (its node waits,
        ``siege-node resync``); the siège forgets the epoch it knew for it."""
        if not self._busy.acquire(blocking=False):
            raise JoinRefused("a join is already running at this siège; wait for it")
        try:
            return self._run(site, progress, resync)
        finally:
            self._busy.release()

    def _run(self, site: str, progress: Progress,
             resync: bool) -> coordinator_pb2.RoundReport:
        what = "resync" if resync else JOIN
        node = self._node
        started = datetime.now()
        t0 = time.monotonic()
        if site not in node.service_cfg.peers:
            raise JoinRefused(f"{site} is not a peer in the siège's config: add "
                              f"[peers.{site}] (with its address, or let it announce itself) "
                              "and restart the siège's node")
        known = node.replica.read_state(f"epoch:{site}")
        if known and not resync:
            raise JoinRefused(f"{site} has been part of the mesh (its database's epoch is on "
                              f"record here): rebuild it with `siege-ctl resync {site}` (its "
                              "node waiting with `siege-node resync`), so that nothing it "
                              "wrote is lost and its old numbers are never reused")
        address = self._reach(site)
        bundle, _changed = node.watcher.refresh()
        with transport.channel(address, bundle, site) as ch:
            if sync_pb2_grpc.SyncNodeStub(ch).RestoreStatus(
                    sync_pb2.RestoreStatusRequest(), timeout=30).joined:
                raise JoinRefused(f"{site}'s node serves its database: nothing is sent. For a "
                                  f"{what}, stop it and start `siege-node {what} --config "
                                  "FILE` there first")
        # No purge until the site has synced once: the events after the copy must still be
        # there for it (purge.py reads this mark).
        node.replica.write_state(f"{JOINING}{site}", datetime.now().isoformat())
        spool = self._snapshot(progress, site)
        sent, summary, resumes, epoch = self._send(site, spool, progress)
        snapshot = spool.whole()
        progress(coordinator_pb2.JoinProgress(site=site, phase="sync",
                                              bytes_done=snapshot.size,
                                              bytes_total=snapshot.size))
        # Its database is a new one: its epoch replaces any it had (a resync), and what
        # rounds found it needed is done.
        node.replica.write_state(f"epoch:{site}", epoch)
        node.replica.write_state(f"{NEEDS_RESYNC}{site}", "")
        first = self._first_exchange(site)
        seconds = time.monotonic() - t0
        report = coordinator_pb2.RoundReport(
            trigger=what, started=started.isoformat(timespec="seconds"),
            ended=datetime.now().isoformat(timespec="seconds"),
            # A resync is titled as one (the report's title is its outcome).
            outcome=(("resynced" if resync else "joined") if not first.problems
                     else ("resynced" if resync else "joined") + ", unsynced"),
            note=(f"{site} {'resynced' if resync else 'joined'} from a copy of "
                  f"{node.cfg.site}'s database: "
                  f"{snapshot.size:,} bytes of backup, {sent:,} sent"
                  + (f", resumed after a cut at byte {', '.join(f'{r:,}' for r in resumes)}"
                     if resumes else "")
                  + f", {seconds:.1f} s. {summary}. First exchange: "
                  f"{first.pulled_events} events in, {first.pushed_events} out"
                  + (f"; {'; '.join(first.problems)}" if first.problems else "")))
        entry = report.sites.add(site=site, outcome="complete" if not first.problems
                                 else "failed", events_in=first.pulled_events,
                                 events_out=first.pushed_events,
                                 duration_ms=int(seconds * 1000))
        entry.errors.extend(first.problems)
        with node.replica.database() as con:
            reports.store(con, report)
        if self._alerter is not None:
            with speaking(node.cfg.language):
                subject = (_("{site} was resynced") if resync
                           else _("{site} joined the mesh")).format(site=site)
            self._alerter.send(f"{what} {site}", subject, report.note)
        shutil.rmtree(self._spool / site, ignore_errors=True)
        if not first.problems:  # synced once: the purge may go on (else: at its first round)
            node.replica.write_state(f"{JOINING}{site}", "")
        progress(coordinator_pb2.JoinProgress(site=site, phase="done",
                                              bytes_done=snapshot.size,
                                              bytes_total=snapshot.size))
        log.info("[%s] %s", node.cfg.site, report.note)
        return report

    def _reach(self, site: str) -> str:
        reached = self._node.addresses.reach(site)
        if reached.candidate is None:
            raise JoinRefused(f"{reached.explain(site)}. Start `siege-node join --config "
                              "FILE` at the new site first (its database must not exist)")
        return reached.candidate.address

    # --- the snapshot ---------------------------------------------------------------------

    def _snapshot(self, progress: Progress, site: str) -> _Spooling:
        """The spooled snapshot for ``site`` if recent (a cut join resumes on it), else a new
        one — being written by the server while it is sent (``_Spooling``)."""
        folder = self._spool / site
        held = _read(folder)
        if held is not None and time.time() - held.made < REUSE_SNAPSHOT_S:
            log.info("[%s] join %s: resuming snapshot %s", self._node.cfg.site, site,
                     held.join_id)
            return _Spooling(held.join_id, held.path, held)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        progress(coordinator_pb2.JoinProgress(site=site, phase="snapshot"))
        node = self._node
        # Published first — through the replica, which publishes only once a peer has
        # confirmed this node's chain (a rewound siège must not ship reused numbers).
        node.replica.vector(publish=True)
        spool = _Spooling(uuid.uuid4().hex, folder / "snapshot.fbk")
        threading.Thread(target=self._backup, args=(spool, folder), name="snapshot",
                         daemon=True).start()
        return spool

    def _backup(self, spool: _Spooling, folder: Path) -> None:
        spec = self._node.cfg.database
        out = _Hashing(spool.path)
        try:
            # By the server that serves the database (the embedded engine for a path),
            # never by opening its file: written by that server beside it and read as it
            # grows when this machine may, else streamed through its service manager.
            where = dbserver.served(spec.dsn)
            if not dbserver.backup_by_server(where, spec, out):
                dbserver.backup(where, spec, out)
            out.close()
            snapshot = Snapshot(spool.join_id, spool.path, spool.path.stat().st_size,
                                out.digest(), time.time())
            (folder / "meta").write_text(snapshot.meta())
            spool.snapshot = snapshot
        except Exception as exc:  # noqa: BLE001 - said by the join (_send)
            spool.error = (f"the snapshot of {self._node.cfg.site}'s database failed: "
                           f"{' '.join(str(exc).split())}")
        finally:
            out.close()
            spool.done.set()

    # --- the transfer ---------------------------------------------------------------------

    def _send(self, site: str, spool: _Spooling, progress: Progress
              ) -> tuple[int, str, list[int], str]:
        """Stream until the site has restored it: bytes sent, the site's summary, where
        each transfer after a cut resumed, and its new database's epoch."""
        sent = 0
        resumes: list[int] = []
        last_problem = ""
        whole_first = False  # a site whose node wants the sha256 in the first chunk
        attempt = 0
        while attempt <= RETRIES:
            if attempt:
                time.sleep(RETRY_PAUSE_S)
            attempt += 1
            if spool.error:
                raise JoinRefused(spool.error)
            try:
                address = self._reach(site)
            except JoinRefused as exc:
                last_problem = str(exc)
                continue
            if whole_first:
                spool.done.wait()
                if spool.error:
                    raise JoinRefused(spool.error)
            bundle, _changed = self._node.watcher.refresh()
            with transport.channel(address, bundle, site) as ch:
                stub = sync_pb2_grpc.SyncNodeStub(ch)
                counter = [0]  # bytes handed to gRPC in this attempt
                try:
                    status = stub.RestoreStatus(
                        sync_pb2.RestoreStatusRequest(join_id=spool.join_id), timeout=30)
                    if attempt > 1 and status.joined:
                        # Restored, but the reply was lost on the way back.
                        return sent, "restored (its reply was lost on the way)", resumes, \
                            status.epoch
                    held = status.received
                    if attempt > 1 and held:
                        resumes.append(held)
                    reply = stub.Restore(self._chunks(site, spool, held, progress, counter),
                                         timeout=24 * 3600)
                    sent += counter[0]
                except grpc.RpcError as exc:
                    sent += counter[0]
                    if spool.error:
                        raise JoinRefused(spool.error) from exc
                    if exc.code() is grpc.StatusCode.FAILED_PRECONDITION and \
                            "must name the snapshot (id, source, sha256)" in (exc.details()
                                                                             or ""):
                        # A node of an earlier version: it takes a whole snapshot only.
                        whole_first = True
                        attempt -= 1
                        continue
                    if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                      grpc.StatusCode.PERMISSION_DENIED):
                        raise JoinRefused(f"{site} refused the snapshot: {exc.details()}") \
                            from exc
                    last_problem = f"{exc.code().name}: {exc.details()}"
                    log.warning("[%s] join %s cut (%s); resuming", self._node.cfg.site,
                                site, last_problem)
                    continue
            if reply.joined:
                return sent, reply.summary, resumes, reply.epoch
            if spool.error:
                raise JoinRefused(spool.error)
            size = spool.whole().size if spool.snapshot else "a snapshot still growing"
            last_problem = f"the transfer ended at byte {reply.received} of {size}"
        raise JoinRefused(f"the transfer to {site} failed {RETRIES + 1} times (last: "
                          f"{last_problem}); run siege-ctl join {site} again: it resumes "
                          "from what the site holds")

    def _chunks(self, site: str, spool: _Spooling, start: int, progress: Progress,
                counter: list[int]) -> Iterator[sync_pb2.SnapshotChunk]:
        """From byte ``start``, following the spool file while the server writes it. The
        total and sha256 go with the first chunk when the snapshot is whole by then, and
        always with the last (empty) one."""
        with open(spool.path, "rb") as f:
            f.seek(start)
            offset = start
            first = True
            while True:
                data = f.read(CHUNK)
                if not data and not spool.done.is_set():
                    time.sleep(0.02)
                    continue
                if not data:
                    if spool.error:
                        return  # said by _send; the site keeps what it has
                    data = f.read(CHUNK)  # written between the read and the end
                chunk = sync_pb2.SnapshotChunk(join_id=spool.join_id, offset=offset,
                                               data=data)
                whole = spool.snapshot
                if first:
                    chunk.source = self._node.cfg.site
                if whole is not None and (first or not data):
                    chunk.total, chunk.sha256 = whole.size, whole.sha256
                first = False
                yield chunk
                offset += len(data)
                counter[0] += len(data)
                progress(coordinator_pb2.JoinProgress(
                    site=site, phase="transfer", bytes_done=offset,
                    bytes_total=whole.size if whole is not None else 0))
                if not data:
                    return

    def _first_exchange(self, site: str, timeout: float = 120.0) -> sync_pb2.ExchangeReply:
        """The site restarts as itself after the restore: exchange once its node serves
        its database (RestoreStatus says joined from the normal service only)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self._node.address(site)
            if address is not None:
                bundle, _changed = self._node.watcher.refresh()
                try:
                    with transport.channel(address, bundle, site) as ch:
                        if sync_pb2_grpc.SyncNodeStub(ch).RestoreStatus(
                                sync_pb2.RestoreStatusRequest(), timeout=10).joined:
                            return self._node.exchange(site)
                except grpc.RpcError:
                    pass  # between its two servers: try again
            time.sleep(0.5)
        return sync_pb2.ExchangeReply(peer=site, unreachable=True, problems=[
            f"{site} did not come back serving its database within {timeout:.0f} s: is "
            "its node running? The next round syncs it"])

class _Spooling:
    """A snapshot in the spool: whole (``snapshot``), or still being written by the server
    (``done`` not set), or failed (``error``)."""

    def __init__(self, join_id: str, path: Path, whole: Snapshot | None = None) -> None:
        self.join_id, self.path = join_id, path
        self.snapshot = whole
        self.error = ""
        self.done = threading.Event()
        if whole is not None:
            self.done.set()

    def whole(self) -> Snapshot:
        assert self.snapshot is not None, "the snapshot is not whole yet"
        return self.snapshot


class _Hashing(io.RawIOBase):
    """The spool file, hashed as the server's bytes arrive (no second read); unbuffered,
    so what is written can be sent at once."""

    def __init__(self, path: Path) -> None:
        self._out = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by close())
        self._sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sha.update(data)
        return self._out.write(data)

    def digest(self) -> bytes:
        return self._sha.digest()

    def close(self) -> None:
        if not self.closed:
            self._out.close()
        super().close()


def _read(folder: Path) -> Snapshot | None:
    try:
        join_id, size, sha, made = (folder / "meta").read_text().split("\n")[:4]
        path = folder / "snapshot.fbk"
        if path.stat().st_size != int(size):
            return None
        return Snapshot(join_id, path, int(size), bytes.fromhex(sha), float(made))
    except (OSError, ValueError):
        return None
