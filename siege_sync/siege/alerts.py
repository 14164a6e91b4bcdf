"""Email alerts from the siège: what an operator must know without watching a screen.

Owns deciding which alerts a round's report calls for and sending them (mailer.py speaks
SMTP): **one email per round** listing every alert it calls for, then the round's report;
each kind of alert said at most once per ``every_minutes`` (a kind that was not delivered
does not count). Kinds: a round that failed, was partial or was stopped; a site unreachable
past its limit; a site reachable but silent (broken capture); new changes set aside on
record; transactions held at the siège; each transaction held at a site and refused by its
database (its origin, rows and values, the database's message, since when and what to do — a
waiting one only past the time limit: it usually applies by itself); a clock offset past its
limit; a certificate expiring soon; little free disk or a large log at the siège; an
application trigger that lost its guard (at a site or at the siège).

A send that fails is kept and tried again with back-off (``RETRY_S``) until it goes; the
alerts that come meanwhile join it. Until then the failure is said in ``siege-ctl status``
and in the next round's report (``problems``), and in the log; it is never raised into the
round. Every email has ``Date`` and ``Message-ID`` headers and says its language.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from ..i18n import _, ngettext, number, speaking, when
from ..proto import coordinator_pb2
from .mailer import Delivery, MailError, deliver
from .reports import held_lines, render_text, word
from .settings import Alerts

log = logging.getLogger(__name__)

RETRY_S = (60.0, 120.0, 300.0, 600.0, 1800.0)  # between attempts of an email not sent
TIMEOUT_JOIN_S = 5.0  # a stop waits this long for a retry under way


@dataclass(frozen=True)
class Alert:
    kind: str  # the rate limit's key ("round-partial", "clock-lyon", ...)
    subject: str
    details: str = ""  # said under the list (a held transaction's facts)


class Alerter:
    """``language``: what the emails speak (the siège's ``[operator] language``);
    ``retry_s``: the waits between attempts of an email that was not sent."""

    def __init__(self, settings: Alerts, siege: str,
                 clock: Callable[[], float] = time.monotonic, language: str = "en",
                 retry_s: tuple[float, ...] = RETRY_S) -> None:
        self._settings = settings
        self._siege = siege
        self._clock = clock
        self._language = language
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # one conversation with the server at a time
        self._last_sent: dict[str, float] = {}
        self._unreachable_since: dict[str, float] = {}
        self._pending: dict[str, Alert] = {}  # kind -> not delivered yet
        self._report = ""  # the report the pending email ends with
        self._failure: tuple[datetime, str, int] | None = None  # since, why, attempts
        self._stopping = threading.Event()
        self._retrying: threading.Thread | None = None
        self.sent: list[EmailMessage] = []  # what went out (for status and tests)

    @property
    def recipients(self) -> list[str]:
        return list(self._settings.to)

    def close(self) -> None:
        self._stopping.set()
        if self._retrying is not None:
            self._retrying.join(timeout=TIMEOUT_JOIN_S)

    def problems(self) -> list[str]:
        """An email not delivered yet, in the language of the work in progress."""
        with self._lock:
            failure, waiting = self._failure, len(self._pending)
        if failure is None:
            return []
        since, why, attempts = failure
        return [ngettext("{count} alert email not sent since {since} ({attempts} attempts): "
                         "{why}. It is tried again",
                         "{count} alert emails not sent since {since} ({attempts} attempts): "
                         "{why}. They are tried again", waiting).format(
            count=waiting, since=when(since), attempts=attempts, why=why)]

    def after_round(self, report: coordinator_pb2.RoundReport) -> bool:
        """Send the alerts this round calls for, in one email; whether one went out."""
        with speaking(self._language):
            found = self._found(report)
            text = render_text(report)
        return self.alert(found, text)

    def _found(self, report: coordinator_pb2.RoundReport) -> list[Alert]:
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
        alerts = [Alert(kind, subject) for kind, subject in found]
        for held in report.held:
            if held.state == "refused" or held.past_limit:
                # One kind per transaction: a new one is never swallowed by an older one's
                # rate limit; the same one is said again once per every_minutes.
                alerts.append(Alert(
                    f"held-{held.site}-{held.origin}-{held.incarnation}-{held.first_seq}",
                    _("a transaction of {origin} {state} at {site}").format(
                        origin=held.origin, state=word(held.state).upper(), site=held.site),
                    "\n".join(held_lines(held))))
        return alerts

    def send(self, kind: str, subject: str, body: str) -> bool:
        """One alert outside a round (a role change, a join), ``body`` under it."""
        return self.alert([Alert(kind, subject)], body)

    def alert(self, alerts: list[Alert], report: str) -> bool:
        """Send ``alerts`` (those not said within the rate limit) with ``report`` under
        them, joined to any not delivered yet; whether an email went out now."""
        with self._lock:
            now = self._clock()
            for item in alerts:
                last = self._last_sent.get(item.kind)
                if last is not None and now - last < self._settings.every_minutes * 60:
                    log.info("[%s] alert %s not sent again yet (rate limit)", self._siege,
                             item.kind)
                    continue
                self._pending[item.kind] = item
            if not self._pending:
                return False
            if report:
                self._report = report
        return self._flush()

    def test(self) -> tuple[Delivery, str]:
        """``siege-ctl alert-test``: an email now, whatever the rate limit; what the server
        said, and the problem ("" when it went)."""
        with speaking(self._language):
            subject = _("test email: alerts from this siège reach you")
            msg = self._message([Alert("test", subject)], _(
                "This email was sent by siege-ctl alert-test: the alerts of this siège "
                "reach this address."))
        try:
            with self._sending:
                done = deliver(self._settings, msg)
        except MailError as exc:
            return Delivery(exc.said), str(exc)
        self.sent.append(msg)
        return done, ""

    def _flush(self) -> bool:
        with self._sending:
            with self._lock:
                alerts, report = list(self._pending.values()), self._report
            if not alerts:
                return False
            with speaking(self._language):
                msg = self._message(alerts, report)
            try:
                deliver(self._settings, msg)
            except MailError as exc:
                with self._lock:
                    since, _why, attempts = self._failure or (datetime.now(), "", 0)
                    self._failure = (since, str(exc), attempts + 1)
                log.error("[%s] could not send the alert email %r to %s: %s", self._siege,
                          msg["Subject"], ", ".join(self._settings.to), exc)
                self._retry_later()
                return False
            with self._lock:
                now = self._clock()
                for item in alerts:
                    self._last_sent[item.kind] = now
                    if self._pending.get(item.kind) is item:
                        del self._pending[item.kind]
                self._failure = None
        log.info("[%s] alert sent: %s", self._siege, msg["Subject"])
        self.sent.append(msg)
        return True

    def _retry_later(self) -> None:
        with self._lock:
            if self._retrying is not None and self._retrying.is_alive():
                return
            self._retrying = threading.Thread(target=self._retry, name="alert-retry",
                                              daemon=True)
            self._retrying.start()

    def _retry(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self._failure is None:
                    return
                attempts = self._failure[2]
            if self._stopping.wait(self._retry_s[min(attempts - 1, len(self._retry_s) - 1)]):
                return
            if self._flush_quietly():
                return

    def _flush_quietly(self) -> bool:
        try:
            return self._flush()
        except Exception:  # a retry must outlive anything
            log.exception("[%s] retrying the alert email failed", self._siege)
            return False

    def _message(self, alerts: list[Alert], report: str) -> EmailMessage:
        """One email: every alert's subject, their details, then the report."""
        first = alerts[0].subject
        subject = first if len(alerts) == 1 else ngettext(
            "{count} alert: {first}", "{count} alerts: {first}, …", len(alerts)).format(
                count=len(alerts), first=first)
        msg = EmailMessage()
        msg["Subject"] = f"[siege-sync {self._siege}] {subject}"
        msg["From"] = self._settings.sender
        msg["To"] = ", ".join(self._settings.to)
        msg["Date"] = formatdate(localtime=True)
        domain = parseaddr(self._settings.sender)[1].rpartition("@")[2] or "siege-sync"
        msg["Message-ID"] = make_msgid("siege-sync", domain=domain)
        lines = [f"- {a.subject}" for a in alerts]
        details = [a.details for a in alerts if a.details]
        signature = _("siege-sync, the siège node {site}").format(site=self._siege)
        body = "\n".join(lines) + "".join(f"\n\n{d}" for d in details)
        msg.set_content(f"{body}\n\n{report}\n\n-- \n{signature}\n" if report
                        else f"{body}\n\n-- \n{signature}\n")
        msg["Content-Language"] = self._language  # (after: set_content resets Content-*)
        return msg

