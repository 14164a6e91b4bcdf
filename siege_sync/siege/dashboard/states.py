"""Each site's state at a glance, as a head-office manager reads it every morning.

From the siège's ``MeshStatusReply`` only (what ``siege-ctl status`` shows), one ``SiteState``
per site: a level (``ok``, ``warn``, ``bad``, ``off``) for the colour, and one sentence in the
operator's language — *in step*, *behind by N changes*, *unreachable*, *silent* (a site that
dials in and has not for an hour), *N held transactions*, *never synced*, *decommissioned* —
with the last complete sync; and each site's certificate as the last syncs found it (days
left, ``warn`` within ``CERT_WARN_DAYS``). Must never ask the mesh anything itself: pure
functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...i18n import _, ngettext, when
from ...proto import coordinator_pb2


@dataclass(frozen=True)
class SiteState:
    site: str
    level: str  # "ok", "warn", "bad", "off"
    words: str
    last_sync: str  # the last complete sync, as the language writes it ("" never)
    pending: int | None  # changes published there the siège does not hold yet (None: unknown)
    held: int
    problem: str
    dials_in: bool


def site_state(s: coordinator_pb2.SiteStatus) -> SiteState:
    last = when(s.last_complete_sync) if s.last_complete_sync else ""
    pending = max(s.published - s.held_here, 0) + s.backlog if s.reachable else None

    def state(level: str, words: str) -> SiteState:
        return SiteState(s.site, level, words, last, pending, s.parked, s.problem, s.dials_in)

    if s.decommissioned:
        return state("off", _("decommissioned on {when}").format(
            when=when(s.decommissioned, seconds=False)))
    if not s.reachable:
        if s.dials_in:
            return state("bad", _("silent: it dials in and has not for an hour"))
        return state("bad", _("unreachable"))
    if s.parked:
        return state("bad", ngettext("{count} held transaction", "{count} held transactions",
                                     s.parked).format(count=s.parked))
    if s.problem:
        return state("warn", s.problem)
    if pending:
        return state("warn", ngettext("behind by {count} change", "behind by {count} changes",
                                      pending).format(count=pending))
    if not s.last_complete_sync:
        return state("warn", _("never synced"))
    return state("ok", _("in step"))


CERT_WARN_DAYS = 30  # as [siege.alerts] cert_days by default


@dataclass(frozen=True)
class Certificate:
    days: int  # left before it expires, as the last sync that read it found
    level: str  # "ok", or "warn" within CERT_WARN_DAYS, "bad" expired


def certificates(reports: list[coordinator_pb2.RoundReport], coordinator: str
                 ) -> dict[str, Certificate]:
    """Each site's certificate as the newest sync that read it found (a sync reads every
    site's certificate it reached; ``reports`` newest first, kept by ``coordinator``, whose
    own certificate they give too)."""
    found: dict[str, Certificate] = {}

    def note(site: str, days: int) -> None:
        if site not in found:
            level = "bad" if days < 0 else "warn" if days <= CERT_WARN_DAYS else "ok"
            found[site] = Certificate(days, level)

    for report in reports:
        for site in report.sites:
            if site.HasField("cert_days_left"):
                note(site.site, site.cert_days_left)
        if report.HasField("siege_cert_days_left") and report.sites:
            note(coordinator, report.siege_cert_days_left)
    return found


def warnings(reply: coordinator_pb2.MeshStatusReply) -> list[str]:
    """What ``siege-ctl status`` lists under its table: schema drift, values kept back,
    guards lost, keys handed out alike, alert emails not sent — each with its site."""
    out = [f"{reply.coordinator}: {line}" for line in reply.alert_problems]
    per_site = [(reply.coordinator, reply.schema_changes, reply.kept_values, reply.lost_guards,
                 reply.key_warnings)]
    per_site += [(s.site, s.schema_changes, s.kept_values, s.lost_guards, s.key_warnings)
                 for s in reply.sites if not s.decommissioned]
    for site, changes, kept, guards, keys in per_site:
        out += [f"{site}: " + _("schema changed since capture was installed: {change} "
                                "— run siege-node upgrade (or install) there").format(change=c)
                for c in changes]
        out += [f"{site}: {line}" for line in kept]
        out += [f"{site}: " + _("WARNING: {warning}").format(warning=w) for w in (*guards, *keys)]
    return out
