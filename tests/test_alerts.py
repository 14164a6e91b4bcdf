"""Email alerts through a real SMTP server (aiosmtpd, STARTTLS and login required), the
schedule firing rounds by itself, and the [siege] settings' mistakes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from email import message_from_bytes
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from siege_sync.proto import coordinator_pb2
from siege_sync.siege.alerts import Alerter
from siege_sync.siege.settings import SettingsError, parse
from tests.test_apply import run_sql
from tools.localmesh import LocalMesh, free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def tls_files(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def smtp(tmp_path):
    cert, key = tls_files(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = Inbox()

    def auth(server, session, envelope, mechanism, data):
        ok = (data.login, data.password) == (b"alerts", b"s3cret")
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx,
                            require_starttls=True, authenticator=auth, auth_require_tls=True)
    controller.start()
    yield inbox, {"smtp_host": "127.0.0.1", "smtp_port": port, "user": "alerts",
                  "password": "s3cret", "sender": "siege-sync <alerts@example.net>",
                  "to": ["it@example.net"], "ca_file": str(cert), "every_minutes": 60}
    controller.stop()


def report(outcome: str, **site) -> coordinator_pb2.RoundReport:
    r = coordinator_pb2.RoundReport(id=7, trigger="schedule", outcome=outcome,
                                    started="2026-11-30T12:00:00", ended="2026-11-30T12:01:00")
    r.sites.add(site="lyon", outcome="complete")
    r.sites.add(site="nice", **{"outcome": "failed", **site})
    return r


def test_a_partial_round_is_emailed_once_per_rate_limit(smtp):
    inbox, alerts = smtp
    settings = parse({"alerts": alerts})
    alerter = Alerter(settings.alerts, "siege")
    alerter.after_round(report("partial", errors=["UNAVAILABLE: connection refused"]))
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert "sync 7 PARTIAL" in msg["Subject"] and msg["To"] == "it@example.net"
    body = msg.get_payload()
    assert "nice" in body and "connection refused" in body and "did NOT complete" in body
    alerter.after_round(report("partial"))  # the same kind again, within the hour
    assert len(inbox.messages) == 1


def test_every_alert_a_round_calls_for_goes_in_one_email(smtp):
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": alerts}).alerts, "siege")
    alerter.after_round(report("partial", silent=True, parked=2,
                               clock_offset_us=3_600_000_000))
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert "4 alerts: sync 7 PARTIAL" in str(make_header(decode_header(msg["Subject"])))
    body = msg.get_payload(decode=True).decode()
    listed = [line for line in body.splitlines() if line.startswith("- ")]
    assert len(listed) == 4 and "did NOT complete" in body, body
    assert any("reachable but silent" in s for s in listed)
    assert any("2 transactions of nice held at the siège" in s for s in listed)
    assert any("clock is off by +3600 s" in s for s in listed)
    assert msg["Date"] and msg["Message-ID"].endswith("@example.net>"), msg.items()


def test_a_wrong_password_is_logged_not_raised(smtp, caplog):
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": {**alerts, "password": "wrong"}}).alerts, "siege")
    try:
        assert alerter.send("round-failed", "test", "body") is False
        assert not inbox.messages and "could not send the alert" in caplog.text
        assert "refused the login of alerts" in alerter.problems()[0]
    finally:
        alerter.close()


def test_settings_mistakes_name_the_key():
    with pytest.raises(SettingsError, match="interval_minutes"):
        parse({"interval_minutes": -1})
    with pytest.raises(SettingsError, match="HH:MM"):
        parse({"times": ["noon"]})
    with pytest.raises(SettingsError, match="to = "):
        parse({"alerts": {"smtp_host": "h", "sender": "a@b"}})
    with pytest.raises(SettingsError, match="unknown keys"):
        parse({"intervall": 5})


def test_the_schedule_fires_rounds_and_alerts_by_itself(tmp_path, smtp):
    inbox, alerts = smtp
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"],
                     # no disk alert on a CI machine's small temporary disk
                     siege_settings={"interval_minutes": 0.02,  # every 1.2 s
                                     "alerts": {**alerts, "every_minutes": 0,
                                                "disk_free_mb": 0}})
    try:
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'x')")
        role = mesh.nodes["siege"].roles[0]
        # A round may run before lyon's node listens (the siège starts first): it fails; the
        # schedule goes on and a later one completes.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with mesh.nodes["siege"].replica.database() as con:
                from siege_sync.siege import reports

                done = reports.listing(con)
            if any(r.trigger == "schedule" and r.outcome == "complete" for r in done):
                break
            time.sleep(0.2)
        assert any(r.trigger == "schedule" and r.outcome == "complete" for r in done), done
        assert role.scheduler is not None
        before = len(inbox.messages)
        mesh.nodes["lyon"].stop(grace=1)  # now the next scheduled round fails
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                "FAILED" in m["Subject"] for m in inbox.messages[before:]):
            time.sleep(0.2)
        assert any("FAILED" in m["Subject"] for m in inbox.messages[before:]), \
            [m["Subject"] for m in inbox.messages]
    finally:
        mesh.close()


def test_expiring_certificates_little_disk_and_a_large_log_are_alerts(smtp):
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": {**alerts, "disk_free_mb": 100,
                                        "log_events": 1000}}).alerts, "siege")
    r = report("complete")
    r.sites[0].cert_days_left = 12
    r.sites[1].outcome = "complete"
    r.siege_cert_days_left = 300
    r.siege_disk_free_mb = 50
    r.siege_stored_events = 5000
    alerter.after_round(r)
    assert len(inbox.messages) == 1
    listed = [line for line in inbox.messages[0].get_payload(decode=True).decode().splitlines()
              if line.startswith("- ")]
    assert len(listed) == 3, listed
    assert any("lyon's certificate expires in 12 days" in s for s in listed)
    assert any("only 50 MB free" in s for s in listed)
    assert any("log holds 5,000 changes" in s for s in listed)


def test_continuous_mode_runs_rounds_back_to_back(tmp_path):
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"],
                     siege_settings={"continuous": True, "pause_seconds": 0.1})
    try:
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (1, 'soon')")
        from siege_sync.siege import reports

        # Rounds may have run (and failed) before lyon's node listened: count from the
        # first complete one, which came after the insert.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with mesh.nodes["siege"].replica.database() as con:
                done = reports.listing(con, limit=0)
            complete = [r for r in done if r.outcome == "complete" and r.trigger == "schedule"]
            if len(complete) >= 3:
                break
            time.sleep(0.1)
        # (lyon's insert may also have brought a round of its own: wake on commit)
        assert len(complete) >= 3 and all(r.trigger in ("schedule", "news") for r in done), done
        from tests.test_capture_random import snapshot

        assert snapshot(mesh.cons["siege"]) == snapshot(mesh.cons["lyon"])
        with pytest.raises(SettingsError, match="one of"):
            parse({"continuous": True, "interval_minutes": 5})
    finally:
        mesh.close()


def test_bandwidth_caps_by_site_and_time_of_day():
    import datetime as _dt

    settings = parse({"bandwidth": [{"site": "lyon", "kbit": 512},
                                    {"site": "lyon", "kbit": 128, "from": "08:00",
                                     "to": "19:30"},
                                    {"site": "nice", "kbit": 64, "from": "22:00", "to": "06:00"}]})
    assert settings.cap("lyon", _dt.time(12, 0)) == 128_000  # the lowest that applies
    assert settings.cap("lyon", _dt.time(21, 0)) == 512_000
    assert settings.cap("nice", _dt.time(23, 0)) == 64_000  # across midnight
    assert settings.cap("nice", _dt.time(12, 0)) is None
    with pytest.raises(SettingsError, match="both from and to"):
        parse({"bandwidth": [{"site": "lyon", "kbit": 5, "from": "08:00"}]})
    with pytest.raises(SettingsError, match="kbit"):
        parse({"bandwidth": [{"site": "lyon", "kbit": 0}]})


def test_the_pacer_keeps_the_average_under_the_cap():
    import os as _os

    from siege_sync.node.mesh.pacing import Pacer

    now = [0.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(80_000, clock=lambda: now[0], sleep=sleep)  # 10 kB/s
    for _ in range(10):
        pacer.after(_os.urandom(5_000))  # incompressible: ~5 kB on the wire each
    assert 4.9 < now[0] < 5.3 and pacer.waited == pytest.approx(sum(slept))


def test_a_capped_exchange_is_paced(tmp_path):
    """The cap makes the exchange take at least bytes / rate (a lower bound: a slow machine
    only takes longer)."""
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(200))"])
    try:
        import os as _os

        from tests.test_mesh import transaction_of

        with transaction_of(mesh.cons["lyon"]) as cur:
            for i in range(1500):
                cur.execute("INSERT INTO T (ID, A) VALUES (?, ?)", (i, _os.urandom(60).hex()))
        started = time.monotonic()
        reply = mesh.nodes["siege"].exchange("lyon", cap_bits_per_s=400_000)  # 50 kB/s
        took = time.monotonic() - started
        assert not reply.problems and reply.pulled_events == 1500
        # 1,500 events of ~120 random hex characters: well over 150 kB after gzip.
        assert took >= 3.0, took
    finally:
        mesh.close()


# --- alerts that arrive: each TLS mode, a refused mode, a send tried again, alert-test --------


def _server(inbox: Inbox, tmp_path, mode: str, port: int | None = None) -> Controller:
    """aiosmtpd on loopback: STARTTLS required, implicit TLS, or a plain relay."""
    cert, key = tls_files(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    options = {"starttls": {"tls_context": ctx, "require_starttls": True},
               "tls": {"ssl_context": ctx}, "none": {}}[mode]
    controller = Controller(inbox, hostname="127.0.0.1", port=port or free_port(), **options)
    controller.start()
    return controller


@pytest.mark.parametrize("mode", ["starttls", "tls", "none"])
def test_each_tls_mode_delivers_to_a_self_signed_server(tmp_path, mode):
    inbox = Inbox()
    controller = _server(inbox, tmp_path, mode)
    try:
        settings = {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "tls": mode,
                    "sender": "siege-sync <alerts@example.net>", "to": ["it@example.net"]}
        if mode != "none":
            settings["ca_file"] = str(tmp_path / "smtp.crt")  # its self-signed certificate
        alerter = Alerter(parse({"alerts": settings}).alerts, "siege")
        done, problem = alerter.test()
        assert problem == "" and len(inbox.messages) == 1, (problem, done)
        assert done.said[-1].startswith("DATA: 250"), done.said
        assert ("STARTTLS: 220" in " ".join(done.said)) == (mode == "starttls")
        assert inbox.messages[0]["Date"] and inbox.messages[0]["Message-ID"]
    finally:
        controller.stop()


def test_a_plain_relay_is_refused_unless_near():
    base = {"smtp_host": "8.8.8.8", "sender": "a@example.net", "to": ["b@example.net"],
            "tls": "none"}
    with pytest.raises(SettingsError, match="in clear: only to a relay on loopback or the LAN"):
        parse({"alerts": base})
    with pytest.raises(SettingsError, match='write "starttls"'):
        parse({"alerts": {**base, "tls": "ssl"}})
    near = parse({"alerts": {**base, "smtp_host": "192.168.1.10"}}).alerts
    assert near.tls == "none" and near.smtp_port == 25
    assert parse({"alerts": {**base, "tls": "tls"}}).alerts.smtp_port == 465


def test_an_email_not_sent_is_tried_again_and_takes_the_alerts_that_came_meanwhile(tmp_path):
    """The server is down: the round's email waits (said by ``problems``, as status and the
    next report say it), a later round's alerts join it, and once the server answers one
    email carries both; the problem is gone."""
    port = free_port()
    settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none",
                "sender": "siege-sync <alerts@example.net>", "to": ["it@example.net"]}
    alerter = Alerter(parse({"alerts": settings}).alerts, "siege", retry_s=(0.3,))
    inbox = Inbox()
    controller = None
    try:
        assert alerter.after_round(report("partial")) is False
        assert "cannot reach 127.0.0.1" in alerter.problems()[0]
        late = report("complete")
        late.sites[1].outcome = "complete"
        late.sites[1].clock_offset_us = 3_600_000_000
        alerter.after_round(late)
        assert "2 alert emails not sent" in alerter.problems()[0]
        controller = _server(inbox, tmp_path, "none", port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not inbox.messages:
            time.sleep(0.1)
        assert len(inbox.messages) == 1
        body = inbox.messages[0].get_payload(decode=True).decode()
        listed = [line for line in body.splitlines() if line.startswith("- ")]
        assert any("PARTIAL" in s for s in listed) and any("clock is off" in s for s in listed)
        assert alerter.problems() == []
    finally:
        alerter.close()
        if controller is not None:
            controller.stop()


def test_siege_ctl_alert_test_says_what_the_server_answered(tmp_path, smtp):
    import subprocess
    import sys

    inbox, alerts = smtp
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"],
                     siege_settings={"alerts": alerts})
    mesh.pki.admin("ops")
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\nbundle = "bundles/ops"\n')

    def ctl() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                               str(tmp_path / "siege-ctl.toml"), "alert-test"],
                              capture_output=True, text=True, timeout=120)
    try:
        done = ctl()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "STARTTLS: 220" in done.stdout and "login: 235" in done.stdout
        assert "DATA: 250" in done.stdout and "it@example.net" in done.stdout
        assert len(inbox.messages) == 1 and "test email" in inbox.messages[0]["Subject"]
    finally:
        mesh.close()
    # A wrong password: said with the server's answer, exit 1.
    mesh = LocalMesh(tmp_path / "again", {"siege": True, "lyon": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"],
                     siege_settings={"alerts": {**alerts, "password": "wrong"}})
    (tmp_path / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
        f'bundle = "{mesh.pki.admin("ops")}"\n')
    try:
        wrong = ctl()
        assert wrong.returncode == 1 and "refused the login of alerts" in wrong.stderr
        assert "535" in wrong.stdout, wrong.stdout
    finally:
        mesh.close()
