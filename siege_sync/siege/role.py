"""The coordinator role, attached to a node at start (entry point ``siege_sync.roles``).

Owns the decision to attach the role — to the configured siège (``[node] siege``), and to the
nodes that may stand in for it (``[node] coordinator = true``, relay role in the
certificate), whose ``Election`` says when they run rounds — and putting the role's parts
together: rounds, the ``Coordinator`` service, the schedule, the alerts, the election. Its
settings (``[siege]``) are checked here, before the node serves anything.
"""

from __future__ import annotations

from datetime import datetime

import grpc

from ..certs import Role
from ..i18n import _, speaking
from ..node.mesh.daemon import Node, NodeError
from ..proto import coordinator_pb2, coordinator_pb2_grpc
from .alerts import Alerter
from .election import Election
from .join import Joiner
from .purge import Purger
from .reports import ELECTION, store
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
        self._node = node
        self.purger = Purger(node, self.settings.retention_lag_days)
        self.alerter = (Alerter(self.settings.alerts, node.cfg.site,
                                language=node.cfg.language)
                        if self.settings.alerts else None)
        self.rounds = Rounds(node, finish=self._finish, cap=self.settings.cap)
        self.election = Election(node, self.role_changed)
        self.scheduler = Scheduler(self.rounds, self.settings.schedule, self.after_round,
                                   may_run=lambda: self.election.active)

    def _finish(self, report: coordinator_pb2.RoundReport) -> None:
        """Before the round's report is stored: the purge, and the alert emails that could
        not be sent so far (the report says so)."""
        self.purger.after_round(report)
        report.alert_problems.extend(self.alert_problems())

    def alert_problems(self) -> list[str]:
        return self.alerter.problems() if self.alerter is not None else []

    def after_round(self, report: coordinator_pb2.RoundReport) -> None:
        if self.alerter is not None:
            self.alerter.after_round(report)

    def role_changed(self, active: bool, why: str) -> None:
        """Said everywhere an operator looks: the log (election.py), a report, an email."""
        if self.alerter is not None:  # first: the email goes out even if the store fails
            # One kind per direction: the rate limit must not swallow the way back.
            with speaking(self._node.cfg.language):
                subject = (_("{site} now coordinates") if active
                           else _("{site} stands by")).format(site=self._node.cfg.site)
            self.alerter.send("role taken" if active else "role given back", subject, why)
        now = datetime.now().isoformat(timespec="seconds")
        report = coordinator_pb2.RoundReport(
            trigger=ELECTION, started=now, ended=now,
            outcome="took the role" if active else "stood by", note=why)
        with self._node.replica.database() as con:
            store(con, report)

    def close(self) -> None:
        self.rounds.stop()  # a round in progress ends at its next batch boundary
        self.election.stop()
        self.scheduler.stop()
        self.rounds.close()  # and stores its report before the database closes
        if self.alerter is not None:
            self.alerter.close()


def attach(node: Node, server: grpc.Server) -> CoordinatorRole | None:
    svc = node.service_cfg
    where = node.cfg.path or "config"
    if svc.siege != node.cfg.site and not svc.coordinator:
        if node.cfg.role_settings:
            raise NodeError(f"{where}: [siege] is set but this node is neither the siège "
                            f"([node] siege = {svc.siege!r}) nor a stand-in ([node] "
                            "coordinator = true)")
        return None
    if svc.siege != node.cfg.site and not node.watcher.bundle.identity.has_role(Role.RELAY):
        raise NodeError(f"{where}: [node] coordinator = true, but {node.cfg.site}'s "
                        "certificate lacks the relay role: the other sites would refuse the "
                        "events it relays. Issue it again with siege-certs issue "
                        f"{node.cfg.site} --relay")
    role = CoordinatorRole(node)
    if svc.siege != node.cfg.site and not role.settings.schedule.active:
        raise NodeError(f"{where}: [node] coordinator = true, but [siege] has no schedule: "
                        "a stand-in would take the role and run no round. Give it the "
                        "siège's (interval_minutes, times or continuous)")
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(
        CoordinatorService(node, role.rounds, role.after_round, role.election.describe,
                           Joiner(node, role.alerter), role.alerter, role.scheduler),
        server)
    role.scheduler.start()
    role.election.start()
    node.news_hooks.append(role.scheduler.news)
    return role
