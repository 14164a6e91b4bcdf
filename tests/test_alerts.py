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


def test_silent_sites_parked_transactions_and_clock_offsets_are_separate_alerts(smtp):
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": alerts}).alerts, "siege")
    alerter.after_round(report("partial", silent=True, parked=2,
                               clock_offset_us=3_600_000_000))
    subjects = sorted(str(make_header(decode_header(m["Subject"]))) for m in inbox.messages)
    assert len(subjects) == 4
    assert any("reachable but silent" in s for s in subjects)
    assert any("2 transactions of nice held at the siège" in s for s in subjects)
    assert any("clock is off by +3600 s" in s for s in subjects)


def test_a_wrong_password_is_logged_not_raised(smtp, caplog):
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": {**alerts, "password": "wrong"}}).alerts, "siege")
    assert alerter.send("round-failed", "test", "body") is False
    assert not inbox.messages and "could not send the alert" in caplog.text


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
    subjects = sorted(" ".join(m["Subject"].split()) for m in inbox.messages)  # unfolded
    assert len(subjects) == 3, subjects
    assert any("lyon's certificate expires in 12 days" in s for s in subjects)
    assert any("only 50 MB free" in s for s in subjects)
    assert any("log holds 5,000 changes" in s for s in subjects)


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

    from siege_sync.node.pacing import Pacer

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
