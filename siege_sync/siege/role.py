"""The coordinator role, attached to a node at start (entry point ``siege_sync.roles``).

Owns the decision to take the role: today, the node whose site is the configured siège
(``[node] siege``) coordinates. (Electing a stand-in when the siège is gone comes later.)
"""

from __future__ import annotations

import grpc

from ..node.daemon import Node
from ..proto import coordinator_pb2, coordinator_pb2_grpc
from .rounds import Rounds
from .service import CoordinatorService


class CoordinatorRole:
    service_names = (coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,)

    def __init__(self, node: Node) -> None:
        self.rounds = Rounds(node)

    def close(self) -> None:
        self.rounds.stop()


def attach(node: Node, server: grpc.Server) -> CoordinatorRole | None:
    if node.service_cfg.siege != node.cfg.site:
        return None
    role = CoordinatorRole(node)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
        CoordinatorService(node, role.rounds), server)
    return role
