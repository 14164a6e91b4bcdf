"""A new site joins from a copy of the siège's database (DESIGN §3.6, §5).

Owns the new site's side of ``siege-ctl join``: ``Restorer`` receives the siège's snapshot (a
gbak backup stream, siege/join.py) into a file on this machine (beside an embedded database,
else beside the node's config), chunk by chunk and resumable — a cut transfer goes on from
the bytes already held, as long as it is the same snapshot —; restores it as it arrives
through the services API of the server the DSN names (node/db/dbserver.py) into ``.copy-new``
beside the database; checks its sha256 once whole (a mismatch drops the copy); and
``take_identity`` makes the copy this site's own:

* the site id, the mesh, a fresh epoch, incarnation 1 and an empty log sequence: nothing the
  siège published is ever sent again under this site's name;
* the snapshot's version vector: every origin's events the siège had applied, and the
  siège's own published ones (its counters in the copy), are applied here — what happened
  during the copy arrives with the next round, nothing is applied twice;
* what belongs to the siège alone is dropped: its captured changes not yet published (the
  siège publishes them itself; a row they deleted is first written back as the registers
  say, ``unpublished.py``), what its operator put on record (``analyse``, ``resync``),
  its parked transactions, its reports and what it learnt of other sites' addresses. The
  merge's records stay (the same at every site, and read back: a row a UNIQUE clash hides
  comes back through them — dropped, it never came back at a joined site);
* capture is installed again for this site, which moves the key generators into its own
  range (``[generators]``).

**Resync** (``siege-node resync`` here, ``siege-ctl resync SITE`` at the siège) is the same
for a site that has a database the mesh no longer takes (replaced, re-created, lagged past
retention, or rebuilt on an operator's word): the copy is restored beside it; what this site
wrote that the copy does not hold — its captured changes (published first) and its events
past what the siège had applied — is put on record in the new database as losing versions
(kind ``resync``: ``siege-ctl conflicts`` shows them, ``--reapply`` writes one again); its
generators go on from where the old database had them (``sequences.py``); the old database
is kept beside, renamed ``*.before-resync-<time>``; the site takes a new incarnation.

The prepared copy is moved into place by renaming files when they are on this machine and
this user may rename them; else — the server is another machine of the LAN — through the
server, which cannot rename: the old database is copied to its aside name by backup and
restore, dropped once that copy is whole, and the copy restored at the path (``resume``,
which also finishes a move a stopped node left half done).

Must never overwrite a database: a join restores only while the database file does not
exist, a resync only beside it (the old one is kept under its aside name: renamed, or,
through the server, copied there whole before it is dropped); and only the configured siège
(``[node] siege``, with the relay role) may send a snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firebird.driver import Connection

from ...proto import events_pb2, sync_pb2
from ..db import dbserver
from ..db.database import DatabaseSpec, connection, transaction
from ..journal import capture, conflicts, eventlog, guardwatch, rewind
from ..journal.seal import sealer_for
from ..model.config import NodeConfig
from ..model.merge import LossKind
from ..pipeline.publish import Publisher
from . import sequences
from .unpublished import undo_unpublished
from .upgrade import others_attached

log = logging.getLogger(__name__)

_PARTIAL = ".join-partial"  # the backup as received so far, next to the database
_META = ".join-meta"  # join id, source, total and sha256 of the snapshot being received
_PLACING = ".join-placing"  # a prepared copy being moved into place through the server
_DROP_ATTEMPTS = 5  # a damaged snapshot's copy: dropped until it stays away, this many times
_DROP_SETTLE_S = 0.3
# Kept: "unfit:" (values the copy's narrower columns hold aside, written when they widen),
# "columns:", "captured:", "epoch:<peer>" of the other sites. Dropped: what is the siège's
# alone, and its clock markers (the log they refer to is emptied).
_SIEGE_ONLY_STATES = ("announced:", "retention_snapshot", "restore_boundary", "restores",
                      "capture_errors", "last_capture_errors", "marker_offset_us",
                      "marker_at_us", "joining:", "purge_order")


class JoinError(Exception):
    """The snapshot cannot be taken as it came (out of order, damaged, no place to go)."""


def move_under_way(cfg: NodeConfig) -> bool:
    """An earlier join or resync was stopped while its copy was moved into place through
    the server: the node's next start finishes that (``Restorer.resume``)."""
    where = dbserver.served(cfg.database.dsn)
    return (_spool_folder(cfg, where) / (where.pure().name + _PLACING)).exists()


def _spool_folder(cfg: NodeConfig, where: dbserver.Served) -> Path:
    """What arrives is kept on this machine: beside an embedded database, else beside the
    node's config (a server's folder may be on another machine, or not ours)."""
    return (Path(where.path).parent if where.embedded else
            cfg.path.parent if cfg.path else Path(tempfile.gettempdir()))


def database_exists(cfg: NodeConfig) -> bool:
    """Whether the DSN's database exists — asked of the server that holds it (an attach)
    when the DSN names one."""
    where = dbserver.served(cfg.database.dsn)
    if where.embedded:
        return Path(where.path).exists()
    try:
        return dbserver.exists(where, cfg.database)
    except dbserver.ServerWorkError as exc:
        raise JoinError(str(exc)) from None


@dataclass
class _Meta:
    join_id: str
    source: str
    total: int
    sha256: bytes

    def text(self) -> str:
        return f"{self.join_id}\n{self.source}\n{self.total}\n{self.sha256.hex()}\n"

    @classmethod
    def read(cls, path: Path) -> _Meta | None:
        try:
            join_id, source, total, sha = path.read_text().split("\n")[:4]
            return cls(join_id, source, int(total), bytes.fromhex(sha))
        except (OSError, ValueError):
            return None


class Restorer:
    def __init__(self, cfg: NodeConfig, mesh: str, resync: bool = False,
                 by_server: bool | None = None) -> None:
        """``resync``: the site has a database, replaced by the copy (module docstring).
        ``by_server``: move the copy into place through the server even when its files are
        on this machine (what a server on another machine of the LAN needs; None: only
        then)."""
        self._cfg, self._mesh, self.resync = cfg, mesh, resync
        self._where = dbserver.served(cfg.database.dsn)
        self._by_server = by_server
        name = self._where.pure().name
        spool = _spool_folder(cfg, self._where)
        self._partial = spool / (name + _PARTIAL)
        self._meta = spool / (name + _META)
        self._placing = spool / (name + _PLACING)
        self._lock = threading.Lock()
        self._worker: _RestoreWorker | None = None
        self.joined = threading.Event()

    def status(self, join_id: str) -> int:
        """Bytes of snapshot ``join_id`` held (0 for another snapshot or none)."""
        meta = _Meta.read(self._meta)
        if meta is None or meta.join_id != join_id or not self._partial.exists():
            return 0
        return self._partial.stat().st_size

    def receive(self, chunks: Iterator[sync_pb2.SnapshotChunk]) -> sync_pb2.RestoreReply:
        if not self._lock.acquire(blocking=False):
            raise JoinError("another transfer to this node is in progress")
        try:
            return self._receive(chunks)
        finally:
            self._lock.release()

    def _exists(self, where: dbserver.Served) -> bool:
        if where.embedded:
            return Path(where.path).exists()
        try:
            return dbserver.exists(where, self._cfg.database)
        except dbserver.ServerWorkError as exc:
            raise JoinError(str(exc)) from None

    def _receive(self, chunks: Iterator[sync_pb2.SnapshotChunk]) -> sync_pb2.RestoreReply:
        if self.joined.is_set() or (not self.resync and self._exists(self._where)):
            raise JoinError(f"{self._where.dsn} exists: this site has joined already")
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        meta: _Meta | None = None
        out = None
        try:
            for chunk in chunks:
                if meta is None:
                    meta = self._begin(chunk)
                    received = self.status(meta.join_id)
                    # Unbuffered: the restore follows the file as it grows (_Follower).
                    out = open(self._partial, "ab", buffering=0)  # noqa: SIM115 (below)
                    self._restoring(meta.join_id)
                if chunk.join_id != meta.join_id or chunk.offset != received:
                    raise JoinError(f"a chunk of {chunk.join_id} at byte {chunk.offset}, "
                                    f"expected {meta.join_id} at {received}")
                if chunk.sha256 and not meta.sha256:  # a streamed snapshot's last chunk
                    meta = _Meta(meta.join_id, meta.source, chunk.total, chunk.sha256)
                    self._meta.write_text(meta.text())
                assert out is not None
                out.write(chunk.data)
                received += len(chunk.data)
                if meta.sha256 and received > meta.total:
                    raise JoinError(f"more bytes than the snapshot's {meta.total}")
        finally:
            if out is not None:
                out.close()
        if meta is None or not meta.sha256 or received < meta.total:
            return sync_pb2.RestoreReply(received=received)
        return self._finish(meta)

    def _begin(self, chunk: sync_pb2.SnapshotChunk) -> _Meta:
        """The snapshot's first chunk of this call. Its total and sha256 come with it, or
        — a snapshot streamed while the siège's server still writes it — with its last."""
        meta = _Meta(chunk.join_id, chunk.source, chunk.total, chunk.sha256)
        if not meta.join_id or not meta.source or len(meta.sha256) not in (0, 32):
            raise JoinError("the first chunk must name the snapshot (id, source)")
        held = _Meta.read(self._meta)
        if held is None or held.join_id != meta.join_id:
            # Another snapshot: what was held of an older one is of no use.
            self._stop_restoring()
            self._partial.unlink(missing_ok=True)
            self._meta.write_text(meta.text())
            return meta
        if held.sha256 or not meta.sha256:
            return held
        self._meta.write_text(meta.text())  # its total and sha256, known now
        return meta

    # --- the restore, as the bytes arrive ----------------------------------------------

    def _restoring(self, join_id: str) -> None:
        """Restore the copy through the server while the snapshot still arrives (the
        engine's restore and the transfer overlap). Into ``.copy-new``, never the
        database: checked against the sha256 before anything uses it (``_finish``)."""
        worker = self._worker
        if worker is not None and worker.join_id == join_id and not worker.failed():
            return
        self._stop_restoring()
        self._worker = _RestoreWorker(join_id, self._partial, self._meta, self._fresh(),
                                      self._cfg.database, self._prepare_fresh)
        self._worker.start()

    def _stop_restoring(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    def _fresh(self) -> dbserver.Served:
        return self._where.beside(self._where.pure().name + ".copy-new")

    def _prepare_fresh(self) -> None:
        """Before a restore into ``.copy-new``: an earlier move into place finished, what
        an earlier attempt left dropped."""
        self.resume()
        self._drop(self._fresh())

    def _finish(self, meta: _Meta) -> sync_pb2.RestoreReply:
        digest = hashlib.sha256()
        with open(self._partial, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.digest() != meta.sha256:
            self._stop_restoring()
            # The engine's restore service may end after the call that fed it returned (seen
            # under load: the copy was there again after it was dropped): dropped until it
            # stays away.
            for _attempt in range(_DROP_ATTEMPTS):
                with contextlib.suppress(Exception):
                    self._drop(self._fresh())
                time.sleep(_DROP_SETTLE_S)
                with contextlib.suppress(Exception):
                    if not self._exists(self._fresh()):
                        break
            self._partial.unlink(missing_ok=True)
            self._meta.unlink(missing_ok=True)
            raise JoinError("the snapshot's sha256 does not match what arrived (damaged on "
                            "the way): it is dropped; run siege-ctl join again")
        log.info("[%s] snapshot of %s received (%d bytes): restoring into %s",
                 self._cfg.site, meta.source, meta.total, self._where.dsn)
        worker, self._worker = self._worker, None
        restored = worker is not None and worker.join_id == meta.join_id and worker.finish()
        summary, epoch = self._install_copy(restored)
        self._partial.unlink(missing_ok=True)
        self._meta.unlink(missing_ok=True)
        self.joined.set()
        log.info("[%s] %s from %s's snapshot: %s", self._cfg.site,
                 "resynced" if self.resync else "joined", meta.source, summary)
        return sync_pb2.RestoreReply(received=meta.total, joined=True, summary=summary,
                                     epoch=epoch)

    def _drop(self, where: dbserver.Served) -> None:
        """Remove what a failed attempt left (a restore that fails leaves its database,
        shut down: only SYSDBA or its owner may open it)."""
        if where.embedded:
            Path(where.path).unlink(missing_ok=True)
        elif self._exists(where):
            dbserver.drop(where, self._cfg.database)

    def _install_copy(self, restored: bool = False) -> tuple[str, str]:
        """Everything is done on the copy beside the database — restore (through the
        database's server when the DSN names one), this site's identity and capture, its
        unsynced work on record — and only then is it moved into place (the old database,
        if any, kept aside first): a crash at any point leaves either the old database or
        none usable at the path, never a half-made one; the next attempt starts again.
        ``restored``: the copy was restored as the snapshot arrived. Returns the summary
        and the new epoch."""
        site = self._cfg.site
        spec = self._cfg.database
        fresh = self._fresh()
        if not restored:  # (the restore that followed the transfer failed, or none ran)
            self._prepare_fresh()
            with open(self._partial, "rb") as stream:
                try:
                    dbserver.restore(fresh, spec, stream)
                except dbserver.ServerWorkError as exc:
                    with contextlib.suppress(Exception):
                        self._drop(fresh)
                    raise JoinError(str(exc)) from None
        had_old = self._exists(self._where)
        try:
            with connection(fresh.spec(spec)) as con:
                held, known = _mesh_view(con, site)
            unsynced: list[events_pb2.Event] = []
            incarnations = set(held)
            counters: dict[str, int] = {}
            if had_old:
                with connection(spec) as old:
                    found, old_incarnations = _unsynced(old, self._cfg, held, known)
                    counters = sequences.generator_values(old)
                unsynced += found
                incarnations |= old_incarnations
            with connection(fresh.spec(spec)) as con:
                raised = sequences.carry_over(con, counters, site)
                summary = take_identity(con, self._cfg, self._mesh,
                                        incarnation=max(incarnations, default=0) + 1)
                if raised:
                    summary += f"; generators going on from the old database: {', '.join(raised)}"
                numbers = {name: no for no, (name, _k) in capture.table_registry(con).items()}
                recorded = _record_unsynced(con, site, unsynced, numbers)
                epoch = capture.get_state(con, "epoch") or ""
        except BaseException:
            with contextlib.suppress(Exception):
                self._drop(fresh)
            raise
        pure = self._where.pure()
        aside = self._where.beside(f"{pure.stem}.before-resync-"
                                   f"{datetime.now():%Y%m%d-%H%M%S}{pure.suffix}")
        how = self._place(fresh, aside if had_old else None)
        if had_old:
            summary += (f"; {recorded} value(s) this site wrote that the mesh did not have "
                        f"put on record in {site}'s new database as losing versions of kind "
                        f"resync (`siege-node conflicts --config FILE` at {site} lists them, "
                        f"`--reapply ID` writes one again); its old database kept as "
                        f"{aside.path} ({how})")
        return summary, epoch

    # --- moving the prepared copy into place -------------------------------------------

    def _place(self, fresh: dbserver.Served, aside: dbserver.Served | None) -> str:
        """Put ``fresh`` at the database's path, the old database (if ``aside``) kept
        under that name. Renamed when the files are on this machine and this user may
        rename them; else through the server (module docstring). Says which."""
        where = self._where
        if where.embedded or (self._by_server is not True and where.on_this_machine
                              and Path(fresh.path).exists()):
            try:
                _rename_into_place(Path(fresh.path), Path(where.path),
                                   Path(aside.path) if aside else None)
                return "renamed"
            except PermissionError as exc:
                if where.embedded:
                    raise JoinError(f"cannot rename in {Path(where.path).parent}: {exc}; "
                                    "the node's user must be allowed to rename files in "
                                    "the database's folder") from None
                log.warning("[%s] renaming in %s is not allowed (%s): the copy is moved "
                            "through the server instead", self._cfg.site,
                            Path(where.path).parent, exc)
        self._placing.write_text(f"{fresh.path}\n{aside.path if aside else ''}\n")
        self.resume()
        return "copied by the server under that name: its files cannot be renamed from here"

    def resume(self) -> bool:
        """Finish moving a copy into place through the server if an earlier attempt was
        cut (``_PLACING`` says what to where); nothing if none was under way.

        Through the server a file cannot be renamed: the old database is copied (backup
        and restore) to its aside name, dropped once that copy is whole, and the prepared
        copy restored at the path. A restore cut midway leaves a database only SYSDBA or
        its owner may open (shut down): never the application's; this finds it and starts
        that step again. True when it finished one (the site has its database now)."""
        try:
            fresh_path, aside_path = self._placing.read_text().split("\n")[:2]
        except (OSError, ValueError):
            return False
        spec, where = self._cfg.database, self._where
        log.info("[%s] moving the prepared copy %s into place through the server",
                 self._cfg.site, fresh_path)
        fresh = where.at(fresh_path)
        if not self._exists(fresh):  # done, all but forgetting it
            self._placing.unlink(missing_ok=True)
            return True
        if aside_path:
            aside = where.at(aside_path)
            if self._exists(where) and not _is_copy_of(where, fresh, spec):
                if _half_made(where, spec):
                    self._drop(where)
                else:  # the old database: copied aside whole before it is dropped
                    if self._exists(aside) and _half_made(aside, spec):
                        self._drop(aside)
                    if not self._exists(aside):
                        _copy(where, aside, spec, self._partial.parent)
                    self._drop(where)
        if self._exists(where) and _half_made(where, spec):
            self._drop(where)
        if not self._exists(where):
            _copy(fresh, where, spec, self._partial.parent)
        self._drop(fresh)
        self._placing.unlink(missing_ok=True)
        return True


class _RestoreWorker:
    """A restore through the server fed from the snapshot file as it is received."""

    def __init__(self, join_id: str, partial: Path, meta: Path, fresh: dbserver.Served,
                 spec: DatabaseSpec, prepare: Callable[[], None]) -> None:
        self.join_id = join_id
        self._follower = _Follower(partial, meta, join_id)
        self._fresh, self._spec, self._prepare = fresh, spec, prepare
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="restore", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._prepare()
            dbserver.restore(self._fresh, self._spec, self._follower)
        except BaseException as exc:  # noqa: BLE001 - finish() says it and restores again
            self._error = exc
            if not self._follower.cancelled.is_set():
                log.warning("restoring as the snapshot arrives failed (%s): it is restored "
                            "again once whole", exc)

    def failed(self) -> bool:
        return self._error is not None

    def finish(self) -> bool:
        """Wait for the restore (the snapshot is whole); whether it made the copy."""
        self._thread.join()
        return self._error is None

    def cancel(self) -> None:
        self._follower.cancelled.set()
        self._thread.join(timeout=600)


class _Follower(io.RawIOBase):
    """The snapshot file read while it grows: a read waits for bytes until the snapshot is
    whole (its total known and read), is cancelled, or nothing came for ``IDLE_S`` (a cut
    that is not resumed: the restore gives up, and runs again once the file is whole)."""

    IDLE_S = 600.0

    def __init__(self, path: Path, meta: Path, join_id: str) -> None:
        self._path, self._meta, self._join_id = path, meta, join_id
        self._file = None
        self._read = 0
        self.cancelled = threading.Event()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        waited = 0.0
        while True:
            if self.cancelled.is_set():
                raise OSError("the snapshot being restored was replaced or dropped")
            if self._file is None and self._path.exists():
                self._file = open(self._path, "rb")  # noqa: SIM115 (closed by close())
            data = self._file.read(size if size > 0 else 1 << 20) if self._file else b""
            if data:
                self._read += len(data)
                return data
            meta = _Meta.read(self._meta)
            if meta is None or meta.join_id != self._join_id:
                raise OSError("the snapshot being restored was replaced")
            if meta.sha256 and self._read >= meta.total:
                return b""
            if waited >= self.IDLE_S:
                raise OSError(f"no bytes of the snapshot for {self.IDLE_S:.0f} s")
            time.sleep(0.02)
            waited += 0.02

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def _rename_into_place(fresh: Path, path: Path, aside: Path | None) -> None:
    if aside is not None:
        path.rename(aside)
    try:
        fresh.rename(path)
    except OSError:
        if aside is not None:
            aside.rename(path)  # the old one back where it was
        raise


def _copy(source: dbserver.Served, target: dbserver.Served, spec: DatabaseSpec,
          spool: Path) -> None:
    """``target`` made from a backup of ``source``, both on the server; the backup passes
    through a file here (the services API streams to the client)."""
    with tempfile.TemporaryFile(dir=spool) as buffer:
        try:
            dbserver.backup(source, spec, buffer)
            buffer.seek(0)
            dbserver.restore(target, spec, buffer)
        except dbserver.ServerWorkError as exc:
            raise JoinError(f"{exc} (moving the copy into place: run the {source.path} "
                            "resync again once this is fixed, it goes on from here)") from None


def _half_made(where: dbserver.Served, spec: DatabaseSpec) -> bool:
    """A restore that did not finish leaves its database shut down."""
    with connection(where.spec(spec)) as con, transaction(con) as tm:
        cur = tm.cursor()
        cur.execute("SELECT MON$SHUTDOWN_MODE FROM MON$DATABASE")
        mode = cur.fetchone()[0]
        cur.close()
    return bool(mode)


def _is_copy_of(where: dbserver.Served, fresh: dbserver.Served, spec: DatabaseSpec) -> bool:
    """``where`` holds the prepared copy already (the same epoch)."""
    if _half_made(where, spec):
        return False
    with connection(where.spec(spec)) as a, connection(fresh.spec(spec)) as b:
        return capture.get_state(a, "epoch") == capture.get_state(b, "epoch")


def _mesh_view(con: Connection, site: str) -> tuple[dict[int, int], dict[tuple[int, int], bytes]]:
    """In the siège's copy: how far it applied each incarnation of ``site``, and the hash
    of each of that site's events it still stores, and of the last one it applied (its
    vector's head: known even once purged)."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT INCARNATION, APPLIED, HEAD FROM {capture.VECTOR_TABLE} "
                    "WHERE ORIGIN = ?", (site,))
        rows = cur.fetchall()
        cur.close()
    held = {int(i): int(n) for i, n, _h in rows}
    known: dict[tuple[int, int], bytes] = {(int(i), int(n)): bytes(h) for i, n, h in rows
                                           if h and int(n) > 0}
    for inc in held:
        for body in eventlog.read(con, site, 0, incarnation=inc):
            known[(inc, events_pb2.Event.FromString(body).seq)] = hashlib.sha256(body).digest()
    return held, known


def _unsynced(old: Connection, cfg: NodeConfig, held: dict[int, int],
              known: dict[tuple[int, int], bytes]) -> tuple[list[events_pb2.Event], set[int]]:
    """What this site's old database holds of its own that the mesh does not: events past
    what the siège applied, or under the same numbers with other content (a copy that
    went on from an older state). An event the mesh no longer stores (purged: applied
    everywhere) counts as synced. Also every incarnation it used."""
    site = cfg.site
    owner = capture.get_state(old, "site")
    if owner not in (None, site):
        raise JoinError(f"{cfg.database.dsn} is the database of site {owner!r}, not "
                        f"{site!r}: nothing was changed; point [database] dsn at this "
                        "site's own database")
    others = others_attached(old)
    if others:
        raise JoinError("other connections are attached to the database being replaced: "
                        + "; ".join(others) + ". Close the application first (what it "
                        "writes now would be lost); nothing was changed")
    try:  # what users wrote and capture holds becomes events first
        # A restored copy waiting for its own older events (rewind.py) never gets them now:
        # every captured change goes on record instead (a change published twice is only
        # recorded twice there, never applied).
        rewind.release(old, site, "resync: its captured changes are put on record")
        Publisher(old, site, policies=cfg.policies, sealer=sealer_for(
            cfg.service.bundle if cfg.service else None)).publish()
    except Exception as exc:  # noqa: BLE001 - the old database may be damaged
        log.warning("[%s] resync: publishing the old database's captured changes failed "
                    "(%s); its published events are kept on record", site, exc)
    with transaction(old) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT DISTINCT INCARNATION FROM {capture.EVENTS_TABLE} "
                    "WHERE ORIGIN = ?", (site,))
        incarnations = {int(r[0]) for r in cur.fetchall()}
        cur.close()
    incarnations.add(int(capture.get_state(old, "incarnation") or "1"))
    unsynced = []
    for inc in sorted(incarnations):
        for body in eventlog.read(old, site, 0, incarnation=inc):
            event = events_pb2.Event.FromString(body)
            theirs = known.get((inc, event.seq))
            if event.seq > held.get(inc, 0) or (
                    theirs is not None and theirs != hashlib.sha256(body).digest()):
                unsynced.append(event)
    return unsynced, incarnations


def _record_unsynced(con: Connection, site: str, unsynced: list[events_pb2.Event],
                     numbers: dict[str, int]) -> int:
    """Each value of each unsynced event, as a losing version of kind ``resync``."""
    recorded = 0
    with transaction(con) as tm:
        cur = tm.cursor()
        for event in unsynced:
            number = numbers.get(event.table)
            if number is None:
                log.warning("[%s] resync: an unsynced change of %s, a table not replicated "
                            "any more, is not kept", site, event.table)
                continue
            loser = f"{site}#{event.seq} (not synced before the resync)"
            columns = [(c.column, c.value) for c in event.columns] or [(None, None)]
            for column, value in columns:
                conflicts.record_overwritten(cur, number, list(event.key), column, value,
                                             kind="resync", loser=loser,
                                             winner="the mesh's copy")
                recorded += 1
        cur.close()
    return recorded


def take_identity(con: Connection, cfg: NodeConfig, mesh: str,
                  incarnation: int = 1) -> str:
    """Make a restored copy of another site's database this site's own (module docstring):
    ``incarnation`` 1 for a join, the next one for a resync. Returns what it did."""
    # Before the source's captured changes are dropped: a row they deleted that the registers
    # show is written back, as the source's events about it expect (unpublished.py).
    put_back = undo_unpublished(con, cfg.policies)
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT NAME, VAL FROM {capture.STATE_TABLE} WHERE NAME IN "
                    "('site', 'seq', 'chain_head', 'incarnation')")
        state = dict(cur.fetchall())
        source = state.get("site")
        if not source:
            raise JoinError("the snapshot does not say which site it was taken at")
        seq = int(state.get("seq") or 0)
        if seq:
            # The siège's own events up to the copy are in it: applied here.
            cur.execute(f"UPDATE OR INSERT INTO {capture.VECTOR_TABLE} (ORIGIN, INCARNATION, "
                        "APPLIED, HEAD) VALUES (?, ?, ?, ?) MATCHING (ORIGIN, INCARNATION)",
                        (source, int(state.get("incarnation") or 1), seq,
                         bytes.fromhex(state.get("chain_head") or "")))
        dropped = capture.pending_entries(con)
        cur.execute(f"DELETE FROM {capture.LOG_TABLE}")
        for number in capture.image_tables(con):
            cur.execute(f"DELETE FROM {capture.IMAGE_PREFIX}{number}")
        for table in (capture.PARKED_TABLE, capture.REPORTS_TABLE):
            cur.execute(f"DELETE FROM {table}")
        # The merge's records are the same at every site, and it reads some back (the rows
        # a UNIQUE clash hides come back through them, and the rows re-pointed from those;
        # constraints.py): kept, as never re-applied here. An operator's records (analyse,
        # resync) are the siège's own.
        merge_kinds = [k.value for k in LossKind]
        cur.execute(f"DELETE FROM {capture.CONFLICTS_TABLE} WHERE KIND NOT IN "
                    f"({', '.join('?' * len(merge_kinds))})", merge_kinds)
        cur.execute(f"UPDATE {capture.CONFLICTS_TABLE} SET REAPPLIED = NULL")
        for prefix in (*_SIEGE_ONLY_STATES, f"epoch:{cfg.site}"):
            cur.execute(f"DELETE FROM {capture.STATE_TABLE} WHERE NAME STARTING WITH ?",
                        (prefix,))
        cur.execute("SELECT MON$CREATION_DATE FROM MON$DATABASE")
        created = cur.fetchone()[0].isoformat()
        for name, value in (("site", cfg.site), ("mesh", mesh),
                            ("epoch", secrets.token_hex(16)),
                            ("incarnation", str(incarnation)),
                            ("seq", "0"), ("chain_head", ""), ("db_created", created),
                            ("joined_from", f"{source}@{seq}")):
            cur.execute(f"UPDATE OR INSERT INTO {capture.STATE_TABLE} (NAME, VAL) VALUES "
                        "(?, ?) MATCHING (NAME)", (name, value))
        cur.close()
    # This site's key ranges, guards and capture objects (the generators move forward only).
    capture.install(con, cfg.tables, cfg.fire_triggers, cfg.generators)
    guardwatch.remember_install(con, cfg.fire_triggers)  # what this site fires, not the siège
    return (f"copy of {source} at its event {seq}; {dropped} of its captured entries not "
            f"yet published dropped (it publishes them itself), {put_back} rows they deleted put "
            "back as its registers say")
