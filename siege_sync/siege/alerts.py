"""Email alerts from the siège: what an operator must know without watching a screen.

Owns deciding which alerts a round's report calls for and sending them: SMTP with STARTTLS
(always) and login, at most one email per kind of alert per ``every_minutes``. Kinds: a round
that failed, was partial or was stopped; a site unreachable past its limit; a site reachable
but silent (broken capture); new losing versions on record; transactions held at the siège;
each transaction held at a site and refused by its database (one email each, with its
origin, events, rows and values, the database's message, since when and what to do — a
waiting one only past the time limit: it usually applies by itself); a clock
offset past its limit; a certificate expiring soon; little free disk or a large log at the
siège; an application trigger that lost its guard (at a site or at the siège). A failure to
send is logged, never raised into the round.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage

from ..i18n import _, ngettext, number, speaking
from ..proto import coordinator_pb2
from .reports import held_lines, render_text, word
from .settings import Alerts

log = logging.getLogger(__name__)


class Alerter:
    """``language``: what the emails speak (the siège's ``[operator] language``)."""

    def __init__(self, settings: Alerts, siege: str,
                 clock: Callable[[], float] = time.monotonic, language: str = "en") -> None:
        self._settings = settings
        self._siege = siege
        self._clock = clock
        self._language = language
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._unreachable_since: dict[str, float] = {}
        self.sent: list[EmailMessage] = []  # what went out (for status and tests)

    def after_round(self, report: coordinator_pb2.RoundReport) -> None:
        """Send the alerts this round calls for."""
        with speaking(self._language):
            self._after_round(report)

    def _after_round(self, report: coordinator_pb2.RoundReport) -> None:
        s = self._settings
        now = self._clock()
        found: list[tuple[str, str]] = []
        if report.outcome in ("failed", "partial", "stopped"):
            found.append((f"round-{report.outcome}", _("sync {id} {outcome}").format(
                id=report.id, outcome=word(report.outcome).upper())))
        for site in report.sites:
            if site.unreachable:
                since = self._unreachable_since.setdefault(site.site, now)
                if now - since >= s.unreachable_after_minutes * 60:
                    found.append((f"unreachable-{site.site}", _(
                        "{site} unreachable for {minutes} minutes").format(
                            site=site.site, minutes=number((now - since) / 60))))
            else:
                self._unreachable_since.pop(site.site, None)
            todo = next((e for e in site.errors if "NEEDS A RESYNC" in e), None)
            if todo is not None:  # rounds.resync_todo: the commands to run are in it
                found.append((f"resync-{site.site}", todo))
            if site.silent:
                found.append((f"silent-{site.site}", _(
                    "{site} reachable but silent: its capture is broken").format(site=site.site)))
            if site.lost_guards:
                found.append((f"guards-{site.site}", _(
                    "{site}: application triggers lost their guard (their effects are "
                    "doubled): run siege-node install there").format(site=site.site)))
            if site.parked:
                found.append((f"parked-{site.site}", ngettext(
                    "{count} transaction of {site} held at the siège",
                    "{count} transactions of {site} held at the siège",
                    site.parked).format(count=site.parked, site=site.site)))
            if abs(site.clock_offset_us) > s.clock_offset_seconds * 1e6:
                found.append((f"clock-{site.site}", _(
                    "{site}'s clock is off by {seconds} s").format(
                        site=site.site, seconds=f"{site.clock_offset_us / 1e6:+.0f}")))
        for site in report.sites:
            if site.HasField("cert_days_left") and site.cert_days_left <= s.cert_days:
                found.append((f"cert-{site.site}", _(
                    "{site}'s certificate expires in {days} days: siege-certs renew {site}"
                ).format(site=site.site, days=site.cert_days_left)))
        if report.HasField("siege_cert_days_left") and \
                report.siege_cert_days_left <= s.cert_days:
            found.append(("cert-siege", _(
                "the siège's certificate expires in {days} days: siege-certs renew").format(
                    days=report.siege_cert_days_left)))
        if report.HasField("siege_disk_free_mb") and report.siege_disk_free_mb < s.disk_free_mb:
            found.append(("disk", _(
                "only {mb} MB free where the siège's database lives").format(
                    mb=number(report.siege_disk_free_mb))))
        if report.siege_stored_events > s.log_events:
            found.append(("log-size", _(
                "the siège's log holds {count} changes: a site lagging behind keeps them "
                "(status)").format(count=number(report.siege_stored_events))))
        if report.siege_lost_guards:
            found.append(("guards-siege", _(
                "the siège: application triggers lost their guard (their effects are "
                "doubled): run siege-node install there")))
        if report.new_conflicts:
            found.append(("conflicts", ngettext(
                "{count} change set aside, on record (siege-ctl conflicts)",
                "{count} changes set aside, on record (siege-ctl conflicts)",
                report.new_conflicts).format(count=report.new_conflicts)))
        for kind, subject in found:
            self.send(kind, subject, render_text(report))
        for held in report.held:
            if held.state == "refused" or held.past_limit:
                # One kind per transaction: a new one is never swallowed by an older one's
                # rate limit; the same one is said again once per every_minutes.
                self.send(f"held-{held.site}-{held.origin}-{held.incarnation}-{held.first_seq}",
                          _("a transaction of {origin} {state} at {site}").format(
                              origin=held.origin, state=word(held.state).upper(),
                              site=held.site),
                          "\n".join(held_lines(held)) + "\n\n" + render_text(report))

    def send(self, kind: str, subject: str, body: str) -> bool:
        """Send unless this kind was sent within the rate limit; whether it went out."""
        with self._lock:
            now = self._clock()
            last = self._last_sent.get(kind)
            if last is not None and now - last < self._settings.every_minutes * 60:
                log.info("[%s] alert %s not sent again yet (rate limit)", self._siege, kind)
                return False
            self._last_sent[kind] = now
        msg = EmailMessage()
        msg["Subject"] = f"[siege-sync {self._siege}] {subject}"
        msg["From"] = self._settings.sender
        msg["To"] = ", ".join(self._settings.to)
        with speaking(self._language):
            signature = _("siege-sync, the siège node {site}").format(site=self._siege)
        msg.set_content(f"{subject}\n\n{body}\n\n-- \n{signature}\n")
        msg["Content-Language"] = self._language  # (after: set_content resets Content-*)
        try:
            self._deliver(msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.error("[%s] could not send the alert %r to %s: %s", self._siege, subject,
                      ", ".join(self._settings.to), exc)
            return False
        log.info("[%s] alert sent: %s", self._siege, subject)
        self.sent.append(msg)
        return True

    def _deliver(self, msg: EmailMessage) -> None:
        s = self._settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=context)
            if s.user:
                smtp.login(s.user, s.password or "")
            smtp.send_message(msg)
