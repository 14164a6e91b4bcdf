"""A site's own chain, confirmed by a peer; a rewound site takes a new incarnation.

A site restored from an old copy of its database would publish new events under sequence
numbers its peers already hold with other content. So, after a start, a node publishes
nothing until a peer has told it how far it holds this site's events (the seq and the hash of
the last one) and that matches the site's own chain (DESIGN §3.6):

* the peer holds nothing newer, and the hashes agree: confirmed, publishing may go on;
* the peer holds *more* of our events than we published: we were rewound. We take a new
  incarnation (a new origin identity: its numbers start again at 1, so none is ever reused)
  and record that our old incarnation is applied up to where our copy stops — the peers then
  send the rest of it back, and it is applied like any other site's events;
* the peer's hash differs at a number we also published: our copy went on publishing
  different events under the same numbers. Nothing is changed automatically; it needs an
  operator's ``resync``.

Changes the publisher's counters and the vector in one transaction; never wipes anything.
"""

from __future__ import annotations

import hashlib
import logging
from enum import Enum

from firebird.driver import Connection

from ..proto import events_pb2
from .capture import STATE_TABLE, VECTOR_TABLE
from .database import SNAPSHOT_RW, transaction
from .eventlog import read

log = logging.getLogger(__name__)


class ChainCheck(Enum):
    CONFIRMED = "confirmed"
    NEW_INCARNATION = "new-incarnation"
    DIVERGED = "diverged"


def _event_hash(con: Connection, site: str, incarnation: int, seq: int) -> bytes | None:
    """The hash of our event ``seq``, or None when it is no longer stored (purged)."""
    for body in read(con, site, seq - 1, incarnation):
        if events_pb2.Event.FromString(body).seq != seq:
            return None  # the first one stored is a later one
        return hashlib.sha256(body).digest()
    return None


def confirm_own_chain(con: Connection, site: str, peer_seq: int,
                      peer_head: bytes) -> ChainCheck:
    """Compare what a peer holds of this site's current incarnation with our own chain."""
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME IN "
                        "('seq', 'incarnation', 'chain_head')")
            state = dict(cur.fetchall())
            seq = int(state.get("seq", "0"))
            incarnation = int(state.get("incarnation", "1"))
            head = bytes.fromhex(state.get("chain_head", "") or "")
            if peer_seq == 0:
                return ChainCheck.CONFIRMED
            if peer_seq <= seq:
                ours = head if peer_seq == seq else _event_hash(con, site, incarnation, peer_seq)
                if ours == peer_head or ours is None:
                    # None: that event is purged here, which retention does only once every
                    # site held it — this peer included. Nothing left to compare.
                    return ChainCheck.CONFIRMED
                log.error("[%s] a peer holds a different event #%d of this site: this database "
                          "went on from an older copy; run resync", site, peer_seq)
                return ChainCheck.DIVERGED
            # The peer holds events of ours we do not: we are an older copy. Our old
            # incarnation is ours up to `seq`; the rest comes back from the peers.
            log.warning("[%s] rewound: a peer holds this site's events up to #%d, this "
                        "database only up to #%d; taking incarnation %d", site, peer_seq, seq,
                        incarnation + 1)
            cur.execute(f"UPDATE OR INSERT INTO {VECTOR_TABLE} (ORIGIN, INCARNATION, APPLIED, "
                        "HEAD) VALUES (?, ?, ?, ?) MATCHING (ORIGIN, INCARNATION)",
                        (site, incarnation, seq, head))
            for name, value in (("incarnation", str(incarnation + 1)), ("seq", "0"),
                                ("chain_head", "")):
                cur.execute(f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) "
                            "MATCHING (NAME)", (name, value))
            return ChainCheck.NEW_INCARNATION
        finally:
            cur.close()
