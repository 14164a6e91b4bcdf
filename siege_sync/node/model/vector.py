"""Version vectors: how far a node holds each origin's events.

A vector maps an origin — (site, incarnation) — to the last sequence number held and the hash
of that event (the chain head). Origins' events are dense sequences applied in order, so one
counter per origin says exactly which events a node holds; the head lets a peer notice a
rewound origin (same number, other content). A node holds what it applied: received events
that cannot be applied yet are not kept (their sender sends them again).

Values only: no database, no network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ...proto import sync_pb2

Origin = tuple[str, int]  # (site, incarnation)


@dataclass(frozen=True)
class Vector:
    seqs: Mapping[Origin, int] = field(default_factory=dict)
    heads: Mapping[Origin, bytes] = field(default_factory=dict)

    def seq(self, origin: Origin) -> int:
        return self.seqs.get(origin, 0)

    def __iter__(self) -> Iterator[Origin]:
        return iter(sorted(self.seqs))

    def lacks(self, other: Vector) -> dict[Origin, int]:
        """Per origin, from which seq (exclusive) ``self`` lacks events ``other`` holds."""
        return {o: self.seq(o) for o in other if other.seq(o) > self.seq(o)}

    def to_proto(self) -> sync_pb2.Vector:
        msg = sync_pb2.Vector()
        for site, inc in self:
            msg.origins.add(site=site, incarnation=inc, seq=self.seqs[(site, inc)],
                            head=self.heads.get((site, inc), b""))
        return msg

    @classmethod
    def from_proto(cls, msg: sync_pb2.Vector) -> Vector:
        seqs: dict[Origin, int] = {}
        heads: dict[Origin, bytes] = {}
        for o in msg.origins:
            if not o.site:
                raise ValueError("a vector entry without a site")
            seqs[(o.site, o.incarnation)] = o.seq
            heads[(o.site, o.incarnation)] = o.head
        return cls(seqs, heads)
