"""Handing an email to the SMTP server of ``[siege.alerts]``, and what it answered.

Owns the SMTP conversation: TLS as ``tls`` says — ``starttls`` (plain connection upgraded,
port 587), ``tls`` (implicit TLS from the first byte, port 465) or ``none`` (a relay on
loopback or the LAN: settings.py refuses it elsewhere) —, the server's certificate checked
against ``ca_file`` when given (a relay with a private or self-signed certificate), else the
system's store; login when a user is given; then the envelope and the message. Every answer
of the server is kept, step by step (``Delivery.said``): ``siege-ctl alert-test`` shows it
and a failure says where it stopped.

Must never decide what to send or when (alerts.py), nor log the password.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr

from .settings import Alerts

TIMEOUT_S = 30.0


class MailError(Exception):
    """Not handed over; the message says at which step and what the server said."""

    def __init__(self, message: str, said: list[str]) -> None:
        super().__init__(message)
        self.said = said


@dataclass
class Delivery:
    said: list[str] = field(default_factory=list)  # "STARTTLS: 220 Ready to start TLS"

    def step(self, name: str, answer: tuple[int, bytes | str]) -> tuple[int, str]:
        code, raw = answer
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        self.said.append(f"{name}: {code} {' '.join(text.split())}")
        return code, text


def deliver(settings: Alerts, msg: EmailMessage) -> Delivery:
    """Hand ``msg`` to the server; what it said. MailError when it was not taken."""
    done = Delivery()
    try:
        _conversation(settings, msg, done)
    except smtplib.SMTPException as exc:
        code = getattr(exc, "smtp_code", None)
        answer = getattr(exc, "smtp_error", b"")
        if code is not None:
            done.step("refused", (code, answer))
        raise MailError(_why(settings, exc), done.said) from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with {settings.smtp_host}:{settings.smtp_port} failed ({exc}): "
                        "its certificate is not one this node trusts — give its CA as "
                        "ca_file in [siege.alerts] — or the tls mode is not the server's",
                        done.said) from None
    except OSError as exc:
        raise MailError(f"cannot reach {settings.smtp_host}:{settings.smtp_port}: "
                        f"{exc.strerror or exc}", done.said) from None
    return done


def _conversation(settings: Alerts, msg: EmailMessage, done: Delivery) -> None:
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file else None)
    # Connected by the constructor: it is what gives TLS the name to check the server by.
    where = (settings.smtp_host, settings.smtp_port)
    smtp = (smtplib.SMTP_SSL(*where, timeout=TIMEOUT_S, context=context)
            if settings.tls == "tls" else smtplib.SMTP(*where, timeout=TIMEOUT_S))
    try:
        done.said.append(f"connect: {settings.smtp_host}:{settings.smtp_port} "
                         f"({'TLS' if settings.tls == 'tls' else 'plain'}): 220")
        done.step("EHLO", smtp.ehlo())
        if settings.tls == "starttls":
            done.step("STARTTLS", smtp.starttls(context=context))
            done.step("EHLO", smtp.ehlo())
        if settings.user:
            done.step("login", smtp.login(settings.user, settings.password or ""))
        code, text = done.step("MAIL FROM", smtp.mail(_address(msg["From"])))
        if code != 250:
            raise MailError(f"the server refused the sender {msg['From']}: {code} {text}",
                            done.said)
        taken = []
        for to in settings.to:
            code, text = done.step(f"RCPT TO {to}", smtp.rcpt(to))
            if code in (250, 251):
                taken.append(to)
        if not taken:
            raise MailError("the server refused every recipient (see its answers)", done.said)
        # CRLF line ends: smtplib adds them to text, not to bytes (send_message does so).
        code, text = done.step("DATA", smtp.data(msg.as_bytes(
            policy=msg.policy.clone(linesep="\r\n"))))
        if code != 250:
            raise MailError(f"the server refused the message: {code} {text}", done.said)
        try:
            smtp.quit()
        except smtplib.SMTPException:
            pass  # taken already
    finally:
        smtp.close()


def _address(header: str) -> str:
    return parseaddr(header)[1] or header


def _why(settings: Alerts, exc: smtplib.SMTPException) -> str:
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"{where} refused the login of {settings.user}: check user and password "
                "(password_env or password_file) in [siege.alerts]")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return (f"{where} does not offer {'STARTTLS' if settings.tls == 'starttls' else 'it'}"
                f" ({exc}): is tls = {settings.tls!r} the server's mode (\"tls\" for port "
                "465)?")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return (f"{where} closed the connection ({exc}): is tls = {settings.tls!r} the "
                "server's mode (\"starttls\" on 587, \"tls\" on 465)?")
    return f"{where}: {exc}"
