"""A new site joins from a copy of the siège's database (DESIGN §3.6, §5).

Owns the new site's side of ``siege-ctl join``: ``Restorer`` receives the siège's snapshot (a
gbak backup stream, siege/join.py) next to where the database will live, chunk by chunk and
resumable — a cut transfer goes on from the bytes already held, as long as it is the same
snapshot —, checks its sha256, restores it through the Firebird services API, and
``take_identity`` makes the copy this site's own:

* the site id, the mesh, a fresh epoch, incarnation 1 and an empty log sequence: nothing the
  siège published is ever sent again under this site's name;
* the snapshot's version vector: every origin's events the siège had applied, and the
  siège's own published ones (its counters in the copy), are applied here — what happened
  during the copy arrives with the next round, nothing is applied twice;
* what belongs to the siège alone is dropped: its captured changes not yet published (the
  siège publishes them itself), its conflicts on record, its parked transactions, its
  reports and what it learnt of other sites' addresses;
* capture is installed again for this site, which moves the key generators into its own
  range (``[generators]``).

**Resync** (``siege-node resync`` here, ``siege-ctl resync SITE`` at the siège) is the same
for a site that has a database the mesh no longer takes (replaced, re-created, lagged past
retention, or rebuilt on an operator's word): the copy is restored beside it; what this site
wrote that the copy does not hold — its captured changes (published first) and its events
past what the siège had applied — is put on record in the new database as losing versions
(kind ``resync``: ``siege-ctl conflicts`` shows them, ``--reapply`` writes one again); the old
database is kept beside, renamed ``*.before-resync-<time>``; the site takes a new
incarnation.

Must never overwrite a database: a join restores only while the database file does not
exist, a resync only beside it (the old one is renamed, never deleted); and only a
coordinator (relay certificate) may send a snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from firebird.driver import Connection, connect_server

from ..proto import events_pb2, sync_pb2
from . import capture, conflicts, eventlog, guardwatch, rewind
from .config import NodeConfig
from .database import connection, transaction
from .publish import Publisher
from .upgrade import others_attached

log = logging.getLogger(__name__)

_PARTIAL = ".join-partial"  # the backup as received so far, next to the database
_META = ".join-meta"  # join id, source, total and sha256 of the snapshot being received
# Kept: "unfit:" (values the copy's narrower columns hold aside, written when they widen),
# "columns:", "captured:", "epoch:<peer>" of the other sites. Dropped: what is the siège's
# alone, and its clock markers (the log they refer to is emptied).
_SIEGE_ONLY_STATES = ("announced:", "retention_snapshot", "restore_boundary", "restores",
                      "capture_errors", "last_capture_errors", "marker_offset_us",
                      "marker_at_us", "joining:", "purge_order")


class JoinError(Exception):
    """The snapshot cannot be taken as it came (out of order, damaged, no place to go)."""


def awaiting(cfg: NodeConfig) -> bool:
    """This site has no database yet: its node waits for the siège's snapshot."""
    path = local_path(cfg)
    return path is not None and not path.exists()


def local_path(cfg: NodeConfig) -> Path | None:
    """The database file when the DSN names one on this machine (embedded, or a server
    on this host); None for a remote server."""
    dsn = cfg.database.dsn
    host, sep, rest = dsn.partition(":")
    if sep and len(host) > 1 and host not in ("localhost", "127.0.0.1"):
        return None
    return Path(rest if sep and len(host) > 1 else dsn)


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
    def __init__(self, cfg: NodeConfig, mesh: str, resync: bool = False) -> None:
        """``resync``: the site has a database, replaced by the copy (module docstring)."""
        path = local_path(cfg)
        if path is None:
            raise JoinError(f"{cfg.database.dsn}: a site joins into a database on its own "
                            "machine (an embedded path, or localhost:/path)")
        self._cfg, self._mesh, self._path, self.resync = cfg, mesh, path, resync
        self._partial = path.with_name(path.name + _PARTIAL)
        self._meta = path.with_name(path.name + _META)
        self._lock = threading.Lock()
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

    def _receive(self, chunks: Iterator[sync_pb2.SnapshotChunk]) -> sync_pb2.RestoreReply:
        if self.joined.is_set() or (self._path.exists() and not self.resync):
            raise JoinError(f"{self._path} exists: this site has joined already")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        meta: _Meta | None = None
        out = None
        try:
            for chunk in chunks:
                if meta is None:
                    meta = self._begin(chunk)
                    received = self.status(meta.join_id)
                    out = open(self._partial, "ab")  # noqa: SIM115 (closed below)
                if chunk.join_id != meta.join_id or chunk.offset != received:
                    raise JoinError(f"a chunk of {chunk.join_id} at byte {chunk.offset}, "
                                    f"expected {meta.join_id} at {received}")
                assert out is not None
                out.write(chunk.data)
                received += len(chunk.data)
                if received > meta.total:
                    raise JoinError(f"more bytes than the snapshot's {meta.total}")
        finally:
            if out is not None:
                out.close()
        if meta is None or received < meta.total:
            return sync_pb2.RestoreReply(received=received)
        return self._finish(meta)

    def _begin(self, chunk: sync_pb2.SnapshotChunk) -> _Meta:
        meta = _Meta(chunk.join_id, chunk.source, chunk.total, chunk.sha256)
        if not meta.join_id or not meta.source or len(meta.sha256) != 32:
            raise JoinError("the first chunk must name the snapshot (id, source, sha256)")
        held = _Meta.read(self._meta)
        if held is None or held.join_id != meta.join_id:
            # Another snapshot: what was held of an older one is of no use.
            self._partial.unlink(missing_ok=True)
            self._meta.write_text(meta.text())
        return meta

    def _finish(self, meta: _Meta) -> sync_pb2.RestoreReply:
        digest = hashlib.sha256()
        with open(self._partial, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.digest() != meta.sha256:
            self._partial.unlink(missing_ok=True)
            self._meta.unlink(missing_ok=True)
            raise JoinError("the snapshot's sha256 does not match what arrived (damaged on "
                            "the way): it is dropped; run siege-ctl join again")
        log.info("[%s] snapshot of %s received (%d bytes): restoring", self._cfg.site,
                 meta.source, meta.total)
        summary, epoch = self._install_copy()
        self._partial.unlink(missing_ok=True)
        self._meta.unlink(missing_ok=True)
        self.joined.set()
        log.info("[%s] joined from %s's snapshot: %s", self._cfg.site, meta.source, summary)
        return sync_pb2.RestoreReply(received=meta.total, joined=True, summary=summary,
                                     epoch=epoch)

    def _restore(self, target: Path) -> None:
        spec = self._cfg.database
        host, sep, _rest = spec.dsn.partition(":")
        server = f"{host}:service_mgr" if sep and len(host) > 1 else "service_mgr"
        with connect_server(server, user=spec.user, password=spec.password or "") as srv, \
                open(self._partial, "rb") as stream:
            srv.database.local_restore(backup_stream=stream, database=str(target))

    def _install_copy(self) -> tuple[str, str]:
        """Everything is done on the copy beside the database — restore, this site's
        identity and capture, its unsynced work on record — and only then is it renamed
        into place (the old database, if any, renamed aside first): a crash at any point
        leaves either the old database or none at the path, never a half-made one; the
        next attempt starts again. Returns the summary and the new epoch."""
        site = self._cfg.site
        fresh = self._path.with_name(self._path.name + ".copy-new")
        fresh.unlink(missing_ok=True)
        self._restore(fresh)
        spec = self._cfg.database
        host, sep, _rest = spec.dsn.partition(":")
        fresh_spec = replace(spec, dsn=f"{host}:{fresh}" if sep and len(host) > 1
                             else str(fresh))
        try:
            with connection(fresh_spec) as con:
                held, known = _mesh_view(con, site)
            unsynced: list[events_pb2.Event] = []
            incarnations = set(held)
            if self._path.exists():
                with connection(spec) as old:
                    found, old_incarnations = _unsynced(old, self._cfg, held, known)
                unsynced += found
                incarnations |= old_incarnations
            with connection(fresh_spec) as con:
                summary = take_identity(con, self._cfg, self._mesh,
                                        incarnation=max(incarnations, default=0) + 1)
                numbers = {name: no for no, (name, _k) in capture.table_registry(con).items()}
                recorded = _record_unsynced(con, site, unsynced, numbers)
                epoch = capture.get_state(con, "epoch") or ""
        except BaseException:
            fresh.unlink(missing_ok=True)
            raise
        aside = None
        if self._path.exists():
            aside = self._path.with_name(
                f"{self._path.stem}.before-resync-{datetime.now():%Y%m%d-%H%M%S}"
                f"{self._path.suffix}")
            self._path.rename(aside)
        fresh.rename(self._path)
        if aside is not None:
            summary += (f"; {recorded} value(s) this site wrote that the mesh did not have "
                        f"put on record (siege-ctl conflicts); its old database kept as "
                        f"{aside}")
        return summary, epoch


def _mesh_view(con: Connection, site: str) -> tuple[dict[int, int], dict[tuple[int, int], bytes]]:
    """In the siège's copy: how far it applied each incarnation of ``site``, and the hash
    of each of that site's events it still stores."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT INCARNATION, APPLIED FROM {capture.VECTOR_TABLE} "
                    "WHERE ORIGIN = ?", (site,))
        held = {int(i): int(n) for i, n in cur.fetchall()}
        cur.close()
    known: dict[tuple[int, int], bytes] = {}
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
        Publisher(old, site, policies=cfg.policies).publish()
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
        for table in (capture.CONFLICTS_TABLE, capture.PARKED_TABLE, capture.REPORTS_TABLE):
            cur.execute(f"DELETE FROM {table}")
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
            "yet published dropped (it publishes them itself)")
