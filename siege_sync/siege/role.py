"""The coordinator role, attached to a node at start (entry point ``siege_sync.roles``).

Owns the decision to take the role — today, the node whose site is the configured siège
(``[node] siege``) coordinates; electing a stand-in when the siège is gone comes later — and
putting the role's parts together: rounds, the ``Coordinator`` service, the schedule, the
alerts. Its settings (``[siege]``) are checked here, before the node serves anything.
"""

from __future__ import annotations

import grpc

from ..node.daemon import Node, NodeError
from ..proto import coordinator_pb2, coordinator_pb2_grpc
from .alerts import Alerter
from .purge import Purger
from .rounds import Rounds
from .schedule import Scheduler
from .service import CoordinatorService
from .settings import SettingsError, parse


class CoordinatorRole:
    service_names = (coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,)

    def __init__(self, node: Node) -> None:
        where = f"{node.cfg.path or 'config'} [siege]"
        try:
            self.settings = parse(node.cfg.role_settings, where, node.cfg.path)
        except SettingsError as exc:
            raise NodeError(str(exc)) from None
        self.purger = Purger(node, self.settings.retention_lag_days)
        self.rounds = Rounds(node, finish=self.purger.after_round, cap=self.settings.cap)
        self.alerter = (Alerter(self.settings.alerts, node.cfg.site)
                        if self.settings.alerts else None)
        self.scheduler = Scheduler(self.rounds, self.settings.schedule, self.after_round)

    def after_round(self, report: coordinator_pb2.RoundReport) -> None:
        if self.alerter is not None:
            self.alerter.after_round(report)

    def close(self) -> None:
        self.rounds.stop()  # a round in progress ends at its next batch boundary
        self.scheduler.stop()
        self.rounds.close()  # and stores its report before the database closes


def attach(node: Node, server: grpc.Server) -> CoordinatorRole | None:
    if node.service_cfg.siege != node.cfg.site:
        if node.cfg.role_settings:
            raise NodeError(f"{node.cfg.path or 'config'}: [siege] is set but this node is "
                            f"not the siège ([node] siege = {node.service_cfg.siege!r})")
        return None
    role = CoordinatorRole(node)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
        CoordinatorService(node, role.rounds, role.after_round), server)
    role.scheduler.start()
    return role
