"""This site's database as the mesh sees it: its vector, the events a peer lacks, applying
what a peer sends.

Owns the node's main connection and its one pipeline: every step of the sync goes through a
lock (the commit watch, ``news.py``, and the revocation list's number, ``daemon.py``, use
connections of their own), publish before serve and publish before apply, so the service's
threads never interleave two database steps. What a peer lacks is read for it in short
transactions, through that pipeline (``outbox.py``).

With the node's bundle, its transactions are signed as they are published and others'
checked before they apply (``seal.py``).

What it applies from whom is posted to its ``bulletin`` (tidings.py: the sites that dial out
and listen here are told). A connection it opens again is marked as the node's own first
(``on_reconnect``: occupant.py).

After a start it publishes nothing until a peer has confirmed its own chain (``rewind.py``);
a peer that says this database is an older copy is believed only when it shows one of this
site's own signed transactions the database lacks (``ownchain.py``).

Must never decide whom to trust: the service and the exchange check who may send what. (The
one exception: whose word on this site's own chain counts — the coordinators its config names,
as for purges.)
"""

from __future__ import annotations

import base64
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from firebird.driver import Connection, DatabaseError
from google.protobuf.message import DecodeError

from ... import __version__
from ...certs import Bundle
from ...proto import events_pb2, sync_pb2
from ..db.database import connection_lost, open_connection
from ..db.schema import FINGERPRINT_VERSION, fingerprint_version, introspect
from ..journal import capture, catchup, retention, rewind, status
from ..journal.digest import TableDigest, table_digest
from ..journal.schemacache import SchemaCache
from ..journal.seal import Sealer, Verifier
from ..model import keysources
from ..model.clock import Clock, SystemClock
from ..model.config import NodeConfig
from ..model.merge import Policy
from ..model.vector import Vector
from ..operations.upgrade import drift
from ..pipeline.apply import Applier, ApplyResult, catch_up, printable
from ..pipeline.publish import Publisher
from . import blobs
from .outbox import DEFAULT_BATCH_EVENTS, Outbox
from .ownchain import OwnChain, PeerRefused
from .tidings import Bulletin

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CARRIED = 200_000  # events received but not applicable yet, kept across batches


@dataclass(frozen=True)
class Identity:
    site: str
    incarnation: int
    epoch: str
    schema_fingerprint: str
    node_version: str = __version__


class NotReady(Exception):
    """The node cannot serve events yet (its own chain is not confirmed by a peer)."""


class PurgeRefused(Exception):
    """A purge order this site must not follow (malformed, or it claims every site applied
    events this one has not): nothing is purged."""


_EPOCH_OF = "epoch:"  # + site: the database epoch this node holds for that site
_EPOCH_MAX = 80
_PURGE_ORDER = "purge_order"  # the last purge ordered as coordinator, for sites that dial in


class Replica:
    """A lost database connection (the Firebird server restarted, the attachment was killed)
    is opened again, and the step that met it is run again once — every step is all or
    nothing, and applying again what was applied is a no-op."""

    def __init__(self, cfg: NodeConfig, con: Connection, clock: Clock = SystemClock(),
                 credentials: Callable[[], Bundle] | None = None,
                 on_reconnect: Callable[[Connection], None] | None = None) -> None:
        """``credentials()``: the node's certificate bundle (the daemon's, reloaded when it
        changes): its transactions are signed with it and others' checked (seal.py). None:
        neither (a replica no peer talks to: tests of the merge). ``on_reconnect(con)``:
        run on each connection opened again before it is used (the daemon marks it as
        the node's own: occupant.py)."""
        self._on_reconnect = on_reconnect
        self.site = cfg.site
        self._cfg = cfg
        self._sealer = Sealer(credentials) if credentials is not None else None
        self.verifier = Verifier(credentials) if credentials is not None else None
        self.clock = clock  # the node's one notion of time (fault injection skews it)
        self._lock = threading.RLock()
        # After a start nothing is published until a peer has confirmed our chain head:
        # a database restored from an old copy must not reuse sequence numbers (rewind.py).
        self._chain = OwnChain(self.site, self.verifier, self.coordinators)
        self._caught_up = False
        self._shut = False  # closed for good (the node stops): never reopened
        # Whose changes this site got: told to the sites listening (tidings.py).
        self.bulletin = Bulletin()
        # What peers lack of what this database holds, read in short transactions.
        self.outbox = Outbox(self.vector, self.on_connection, self.certificates)
        self._attach(con)

    def _attach(self, con: Connection) -> None:
        self._con = con
        self._publisher = Publisher(con, self._cfg.site, policies=self._cfg.policies,
                                    clock=self.clock, sealer=self._sealer)
        self._applier = Applier(con, self._cfg.site, self._publisher, self._cfg.policies,
                                verifier=self.verifier)

    def _reconnect(self) -> None:
        log.warning("[%s] the database connection was lost: opening it again", self.site)
        try:
            if not self._con.is_closed():
                self._con.close()
        except Exception:  # it is dead: closing may fail too
            pass
        con = open_connection(self._cfg.database)
        if self._on_reconnect is not None:
            try:
                self._on_reconnect(con)
            except BaseException:
                con.close()
                raise
        self._attach(con)

    def _ensure_open(self) -> None:
        """A reopen that failed (the server was still down) left the connection closed:
        try again now, rather than fail every later call (found by the chaos run: a site
        still applying a cut push met a server restart, and stayed unusable)."""
        if self._con.is_closed() and not self._shut:
            self._reconnect()

    def _retrying(self, step: Callable[[], T]) -> T:
        with self._lock:
            self._ensure_open()
            try:
                return step()
            except DatabaseError as exc:
                if not connection_lost(exc):
                    raise
                self._reconnect()
                return step()

    def close(self) -> None:
        with self._lock:
            self._shut = True
            if not self._con.is_closed():
                self._con.close()

    @property
    def schemas(self) -> SchemaCache:
        """The publisher's schema cache (schemacache.py): use it inside ``database()``, it is
        not thread-safe."""
        return self._publisher.schemas

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @contextmanager
    def database(self) -> Iterator[Connection]:
        """The connection, for a role's own short transactions, inside the pipeline (a lost
        connection is opened again for the next caller)."""
        with self._lock:
            self._ensure_open()
            try:
                yield self._con
            except DatabaseError as exc:
                if connection_lost(exc):
                    self._reconnect()
                raise

    @property
    def policies(self) -> Mapping[str, Policy]:
        """The merge policies of this node's config (``[policies]``)."""
        return self._cfg.policies

    def replicated_tables(self) -> list[str]:
        """Every table ever captured here (the applier merges events of each of them); a
        lost connection is opened again first (a hello is often a restarted server's first
        caller)."""
        return self._retrying(lambda: [
            name for name, _keys in capture.table_registry(self._con).values()
            if not name.startswith("SYNC$")])

    def read_state(self, name: str) -> str | None:
        """A ``SYNC$STATE`` value (a lost connection is opened again first)."""
        return self._retrying(lambda: capture.get_state(self._con, name))

    def write_state(self, name: str, value: str) -> None:
        self._retrying(lambda: capture.set_state(self._con, name, value))

    def schema_drift(self) -> list[str]:
        """Replicated tables and columns changed since capture was installed (upgrade.py)."""
        # Every hello asks: from the publisher's schema cache, not a fresh read of the system
        # tables (a second with 600 tables; issue 18).
        return self._retrying(lambda: drift(self._con, self._cfg.tables,
                                            self._publisher.schemas))

    def key_warnings(self) -> list[str]:
        """Keys this site hands out as every other site does: generators without a per-site
        range, identity columns, MAX()+1 (keysources.py)."""
        def warnings() -> list[str]:
            schemas = self._publisher.schemas  # read again only after DDL (schemacache.py)
            schemas.check()
            return keysources.warnings(self._con, schemas.selected(self._cfg.tables),
                                       self._cfg.generators)

        return self._retrying(warnings)

    def kept_values(self) -> list[str]:
        """Values other sites wrote that a narrower column here cannot hold yet (catchup.py)."""
        return self._retrying(lambda: [u.describe() for u in catchup.unfit(self._con)])

    def identity(self) -> Identity:
        return self._retrying(lambda: Identity(
            site=self.site,
            incarnation=int(capture.get_state(self._con, "incarnation") or "1"),
            epoch=capture.get_state(self._con, "epoch") or "",
            schema_fingerprint=self._schema_fingerprint(),
        ))

    def _schema_fingerprint(self) -> str:
        """The fingerprint install recorded. One an older node recorded (an older form) is
        recorded again in this version's form once, when the live schema still matches it
        in its own form: the schema capture was installed for has not changed, and peers
        compare fingerprints of one form only (schema.fingerprints_comparable)."""
        recorded = capture.get_state(self._con, "schema_fingerprint") or ""
        if recorded and fingerprint_version(recorded) != FINGERPRINT_VERSION:
            live = introspect(self._con, self._cfg.tables)
            if live.fingerprint_like(recorded) == recorded:
                recorded = live.fingerprint()
                capture.set_state(self._con, "schema_fingerprint", recorded)
        return recorded

    def vector(self, publish: bool = True) -> Vector:
        """What this site holds, after publishing its committed local changes (once the
        chain is confirmed)."""
        def step() -> Vector:
            if publish and self._chain.confirmed:
                self._publisher.publish()
            seqs, heads = self._applier.vector()
            return Vector(seqs, heads)

        return self._retrying(step)

    def meet(self, peer: str, epoch: str, peer_vector: Vector,
             proof: list[bytes] | None = None, purged: bool = False) -> None:
        """What a hello tells us: the peer's database epoch (a changed one means it was
        restored or replaced: refused until an operator resyncs it) and how far it holds
        our own events (confirms our chain, or says that we were rewound). ``proof``: what
        a hello *reply* brought of our own events beyond our chain (None for a hello
        request, whose sender could not know what we hold) and whether it said it no longer
        stores them (``purged``): see ``ownchain``."""
        if not epoch:
            raise ValueError(f"{peer}'s hello names no database epoch")
        self._retrying(lambda: self._meet(peer, epoch, peer_vector, proof, purged))

    def _meet(self, peer: str, epoch: str, peer_vector: Vector,
              proof: list[bytes] | None, purged: bool) -> None:
        known = capture.get_state(self._con, f"{_EPOCH_OF}{peer}")
        if known is None:
            capture.set_state(self._con, f"{_EPOCH_OF}{peer}", epoch)
        elif known != epoch:
            raise PeerRefused(
                # printable(): the epoch is the caller's words, it goes to the log.
                f"{peer}'s database changed (epoch {known} -> {printable(epoch, 80)}): it was "
                f"restored from a copy or replaced. Nothing is exchanged with it until "
                f"an operator runs `siege-ctl resync {peer}`")
        self._chain.meet(self._con, peer, peer_vector, proof, purged)

    # --- a peer says this database is an older copy: believed on proof only (ownchain) --

    @property
    def claim_pending(self) -> bool:
        return self._chain.claim_pending

    def prove_claim(self, bodies: list[bytes]) -> bool:
        """Whether the claim is settled (none pending, or ``bodies`` proved it: a new
        incarnation is taken). A forged proof refutes it."""
        return not self._chain.claim_pending or \
            self._retrying(lambda: self._chain.prove(self._con, bodies)) is True

    def claim_purged(self, peer: str) -> None:
        """``peer`` says it no longer stores the events of ours it claims."""
        self._retrying(lambda: self._chain.purged(self._con, peer))

    def claim_unproved(self, peer: str) -> None:
        """``peer``'s stream ended without the events it claimed: its claim is refuted."""
        self._chain.unproved(peer)

    def proof_for(self, peer: str, peer_vector: Vector) -> tuple[list[bytes], bool]:
        """When ``peer``'s vector shows that we hold more of its own events than it
        published (it was rewound): the transaction that proves it (``ownchain``), or
        ([], True) when we no longer store them (purged). ([], False) otherwise."""
        mine = {inc: n for (site, inc), n in peer_vector.seqs.items() if site == peer}
        if not mine:
            return [], False
        current = max(mine)

        def read() -> tuple[list[bytes], bool]:
            held, _heads = self._applier.vector()
            ours = {inc: n for (site, inc), n in held.items() if site == peer}
            newer = max((inc for inc in ours if inc > current), default=None)
            if ours.get(current, 0) <= mine[current] and newer is None:
                return [], False
            found = rewind.transaction_beyond(self._con, peer, current, mine[current], newer)
            return found, not found

        return self._retrying(read)

    def coordinators(self) -> set[str]:
        """The sites this node's config says may coordinate: the siège and the stand-ins."""
        svc = self._cfg.service
        return set(svc.coordinators(self.site)) if svc is not None else set()

    def learn_certificates(self, pems: Iterable[bytes]) -> list[str]:
        """Keep the site certificates a stream brought (checked against the mesh CA)."""
        if self.verifier is None:
            return []
        verifier = self.verifier
        return self._retrying(lambda: verifier.learn(self._con, pems))

    def certificates_held(self) -> list[str]:
        """The serials (hex) of the certificates this node keeps (told to its peers)."""
        if self.verifier is None:
            return []
        verifier = self.verifier
        return self._retrying(lambda: verifier.held(self._con))

    def certificates(self) -> list[bytes]:
        """What a stream this node sends carries first: the certificates its seals need."""
        if self.verifier is None:
            return []
        verifier = self.verifier
        return self._retrying(lambda: verifier.certificates(self._con))

    @property
    def siege(self) -> str | None:
        """The configured siège (``[node] siege``): the only site whose word on other sites'
        epochs is taken (``learn_epochs``)."""
        return self._cfg.service.siege if self._cfg.service is not None else None

    def epochs(self) -> dict[str, str]:
        """The database epoch this node holds for each site it met (or joined)."""
        def read() -> dict[str, str]:
            return {name[len(_EPOCH_OF):]: value for name, value in
                    capture.states_starting(self._con, _EPOCH_OF).items() if value}

        return self._retrying(read)

    def learn_epochs(self, epochs: Mapping[str, str], siege: str) -> None:
        """Take the configured siège's epochs of the sites this node met: a site the siège
        joined or resynced has a new database, which this node would otherwise refuse (a
        stand-in that coordinated it before). Never this site's own, never a site not met."""
        def step() -> None:
            for site, epoch in epochs.items():
                if site == self.site or not epoch or len(epoch) > _EPOCH_MAX \
                        or printable(epoch, _EPOCH_MAX) != epoch:
                    continue
                known = capture.get_state(self._con, f"{_EPOCH_OF}{site}")
                if known is not None and known != epoch:
                    capture.set_state(self._con, f"{_EPOCH_OF}{site}", epoch)
                    log.warning("[%s] %s's database is a new one (epoch %s -> %s), as the "
                                "siège %s holds it since a join or resync there", self.site,
                                printable(site, 63), known, epoch, siege)

        self._retrying(step)

    def batches_for(self, have: Vector, max_events: int = DEFAULT_BATCH_EVENTS,
                    only_origin: str | None = None, skip_origin: str | None = None
                    ) -> Iterator[list[bytes]]:
        """What a peer holding ``have`` lacks, in batches of whole source transactions
        (outbox.py)."""
        return self.outbox.batches_for(have, max_events, only_origin, skip_origin)

    def outgoing(self, have: Vector, max_events: int = DEFAULT_BATCH_EVENTS,
                 only_origin: str | None = None,
                 peer_holds: Collection[str] = (),
                 skip_origin: str | None = None) -> Iterator[sync_pb2.Batch]:
        """``batches_for`` as messages, certificates and large BLOBs first (outbox.py)."""
        return self.outbox.outgoing(have, max_events, only_origin, peer_holds, skip_origin)

    def on_connection(self, step: Callable[[Connection], T]) -> T:
        """``step`` on the current connection, inside the pipeline (a lost connection is
        opened again and the step run again once)."""
        return self._retrying(lambda: step(self._con))

    def receiver(self, peer: str = "") -> Receiver:
        """Takes incoming batches from ``peer``: stores the BLOBs, applies the events (those
        that cannot be applied yet are tried again with the next batch)."""
        return Receiver(self, peer)

    def beat(self, round_no: int) -> None:
        """This site's heartbeat for a coordinator's round, written like any change."""
        self._retrying(lambda: capture.beat(self._con, self.site, round_no))

    def heartbeats(self) -> dict[str, int]:
        """Per site, the last round whose heartbeat this database holds."""
        return self._retrying(lambda: capture.heartbeats(self._con))

    def purge(self, applied_everywhere: Vector, held_then: Vector | None,
              published_then: Vector | None) -> retention.PurgeResult:
        return self._retrying(lambda: retention.purge(
            self._con, dict(applied_everywhere.seqs),
            dict(held_then.seqs) if held_then is not None else None,
            dict(published_then.seqs) if published_then is not None else None))

    def obey_purge(self, order: sync_pb2.PurgeRequest, by: str) -> retention.PurgeResult:
        """Follow a coordinator's purge order (``by`` names it), after checking that it
        claims nothing this site has not applied itself."""
        try:
            applied = Vector.from_proto(order.applied_everywhere)
            held = Vector.from_proto(order.held_then) if order.HasField("held_then") else None
            published = (Vector.from_proto(order.published_then)
                         if order.HasField("published_then") else None)
        except ValueError as exc:
            raise PurgeRefused(f"malformed purge order from {by}: {exc}") from None
        mine = self.vector(publish=False)
        if any(applied.seq(o) > mine.seq(o) for o in applied):
            raise PurgeRefused(f"{by} says every site applied events this site has not: "
                               "nothing purged")
        return self.purge(applied, held, published)

    def keep_purge_order(self, order: sync_pb2.PurgeRequest) -> None:
        """The purge this node just ordered as coordinator: sites that dial in ask for it
        (``last_purge_order``), since it cannot call them."""
        text = base64.b64encode(order.SerializeToString()).decode("ascii")
        self._retrying(lambda: capture.set_long_state(self._con, _PURGE_ORDER, text))

    def last_purge_order(self) -> sync_pb2.PurgeRequest:
        """The last purge this node ordered as coordinator; an empty message if none."""
        kept = self._retrying(lambda: capture.get_long_state(self._con, _PURGE_ORDER))
        return sync_pb2.PurgeRequest.FromString(base64.b64decode(kept)) if kept \
            else sync_pb2.PurgeRequest()

    def apply(self, bodies: Iterable[bytes],
              hold: frozenset[tuple[str, int]] = frozenset()) -> ApplyResult:
        if not self._chain.confirmed:
            raise NotReady(f"{self.site} applies nothing before a hello confirmed its own "
                           "chain")
        batch = list(bodies)

        def step() -> ApplyResult:
            if not self._caught_up:
                # Tables or columns installed since the node started (or while it was
                # down, by a plain `install`): catch up first (catchup.py).
                for line in catch_up(self._con, self.site, self._cfg.policies,
                                     self._publisher):  # its schema cache: read once
                    log.info("[%s] caught up with the new schema: %s", self.site, line)
                self._caught_up = True
            return self._applier.apply(batch, hold)

        result = self._retrying(step)
        if result.news_from:
            self.bulletin.post(result.news_from)
        return result

    def status(self, digests: bool = False) -> tuple[status.CaptureStatus, list[TableDigest]]:
        def step() -> tuple[status.CaptureStatus, list[TableDigest]]:
            st = status.capture_status(self._con)
            found = [table_digest(self._con, table) for _name, table in
                     sorted(introspect(self._con).tables.items())] if digests else []
            return st, found

        return self._retrying(step)


def _origin_site(body: bytes) -> str:
    try:
        return events_pb2.Event.FromString(body).origin.site
    except DecodeError:
        return ""  # (the applier says what is wrong with it)


class Receiver:
    """One stream of incoming batches (a pull or a push)."""

    def __init__(self, replica: Replica, peer: str = "") -> None:
        self._replica = replica
        self.peer = peer  # who sends the stream (its claims are settled by it)
        self._assembler = blobs.Assembler(replica.database)
        self._carry: list[bytes] = []
        self._mine: list[bytes] = []  # this site's own events, while a claim waits for them
        self.applied_events = 0
        self.already_applied = 0
        self.refused: list[str] = []
        self.waiting_for: list[str] = []
        # Origins whose next transaction needs a row an open local transaction holds: not
        # tried again in this stream (each try would wait for the lock again).
        self.busy: dict[tuple[str, int], str] = {}
        self.news_from: set[str] = set()  # whose changes (not only heartbeats) it applied
        self.heartbeats = 0  # of applied_events
        self.tables: Counter[str] = Counter()  # the changes, per table

    @property
    def waiting(self) -> int:
        return len(self._carry)

    def take(self, batch: sync_pb2.Batch) -> ApplyResult | None:
        """Raises ``blobs.BlobError`` for damaged BLOBs, ``ApplyError`` for malformed
        events, ``NotReady`` before the chain is confirmed."""
        if batch.certificates:
            self.refused.extend(self._replica.learn_certificates(batch.certificates))
        for chunk in batch.blobs:
            self._assembler.add(chunk)
        if batch.purged_yours and self.peer:
            self._replica.claim_purged(self.peer)
        if not batch.events:
            return None
        if self._assembler.unreferenced:  # (events are read for their BLOBs only then)
            self._assembler.referenced(r.sha256 for r in blobs.refs(batch.events))
        if self._replica.claim_pending:
            # A peer says we were rewound: its stream should bring the proof (replica.py);
            # until then nothing applies, and what came is kept for when it does.
            self._mine += [b for b in batch.events if _origin_site(b) == self._replica.site]
            held = [*self._carry, *batch.events]
            if not self._replica.prove_claim(self._mine):
                self._carry = held[:MAX_CARRIED]
                return None
        result = self._replica.apply([*self._carry, *batch.events], frozenset(self.busy))
        self.busy.update(result.busy)
        # Events waiting for others are kept for the next batches, within a bound: beyond
        # it they are dropped (their sender sends them again next time).
        self._carry = result.pending[:MAX_CARRIED]
        self.applied_events += result.applied_events
        self.already_applied += result.already_applied
        self.refused.extend(r for r in result.refused if r not in self.refused)
        self.waiting_for = result.waiting_for
        self.news_from |= result.news_from
        self.heartbeats += result.heartbeats
        self.tables.update(result.tables)
        return result

    @property
    def changes(self) -> int:
        """The events applied that an operator counts: heartbeats left out."""
        return self.applied_events - self.heartbeats

    def finish(self) -> None:
        """The stream ended normally: a claim of its sender not proved by now is refuted."""
        if self.peer:
            self._replica.claim_unproved(self.peer)

    def close(self) -> None:
        self._assembler.close()
