"""The head office's screen (issue 25), in a real browser: the OS's headless Chromium driven
by Selenium through the OS's chromedriver, against `siege-ctl dashboard` (a real process)
talking over mTLS to a three-site local mesh (real nodes, embedded Firebird).

The overview before and after a sync started from its button, a report and its PDF, a change
set aside acknowledged, the page in French, a request without the token refused, the server
on loopback only, and what the page says when the siège is gone. Screenshots of every page go
to build/test-artifacts/dashboard/ (look at them: a manager must read them at a glance).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from siege_sync.siege.dashboard.access import COOKIE
from tests.test_apply import run_sql
from tests.test_capture_random import snapshot
from tests.test_siege import ctl, mesh_with

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts" / "dashboard"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def mesh(tmp_path):
    m = mesh_with(tmp_path)
    yield m
    m.close()


@pytest.fixture
def dashboard(mesh) -> Iterator[tuple[str, subprocess.Popen]]:
    """`siege-ctl dashboard --port 0` for the mesh: the address it printed, the process."""
    proc = subprocess.Popen([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                             str(mesh.folder / "siege-ctl.toml"), "dashboard", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
    assert found, line + (proc.stdout.read() if proc.poll() is not None else "")
    yield found.group(1), proc
    proc.terminate()
    proc.wait(15)


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Chromium and its driver come from the OS: apt-get install chromium chromium-driver "
        "(make os-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 "--lang=en-GB", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-GB,en"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)  # an element looked for right after a click: the page loads
    yield driver
    driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def states(driver: webdriver.Chrome) -> dict[str, tuple[str, str]]:
    """site -> (level, words) as the overview shows them."""
    return {row.get_attribute("data-site"): (row.get_attribute("data-level") or "",
                                             row.find_element(By.CSS_SELECTOR, ".badge").text)
            for row in driver.find_elements(By.CSS_SELECTOR, "tr.site[data-level]")}


def wait_done(driver: webdriver.Chrome, timeout: float = 180) -> str:
    """The action page refreshes itself while the command runs: its final state."""
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: d.find_element(By.ID, "state").text not in ("running", "en cours"))
    return driver.find_element(By.ID, "state").text


def fetch(url: str, cookie: str | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers={"Cookie": f"{COOKIE}={cookie}"}
                                     if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_a_manager_sees_every_site_runs_a_sync_reads_its_report_and_acknowledges_a_change(
        mesh, dashboard, browser):
    url, _proc = dashboard
    base = url.split("?")[0]
    run_sql(mesh.cons["siege"], "INSERT INTO T (ID, A) VALUES (1, 'Hélène à Besançon')")
    run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A) VALUES (2, 'vendu à Lyon')")

    browser.get(url)
    assert browser.current_url == base, "the token leaves the address once the cookie is set"
    before = states(browser)
    assert set(before) == {"lyon", "nice"}, before
    assert all(level != "ok" for level, _w in before.values()), before  # never synced yet
    assert "siège role: siege" in browser.page_source
    shot(browser, "1-overview-before")

    browser.find_element(By.LINK_TEXT, "Actions").click()
    shot(browser, "2-actions")
    browser.find_element(By.ID, "action-manual").click()
    assert wait_done(browser) == "done", browser.find_element(By.ID, "output").text
    output = browser.find_element(By.ID, "output").text
    assert "COMPLETE" in output and "lyon" in output and "nice" in output, output
    shot(browser, "3-manual-sync")

    browser.find_element(By.LINK_TEXT, "Overview").click()
    after = states(browser)
    assert after == {"lyon": ("ok", "in step"), "nice": ("ok", "in step")}, after
    assert snapshot(mesh.cons["nice"]) == snapshot(mesh.cons["siege"])  # read independently
    certs = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".badge.cert")]
    assert len(certs) == 3 and all(re.fullmatch(r"36[45] days left", c) for c in certs), certs
    shot(browser, "4-overview-in-step")

    browser.find_element(By.LINK_TEXT, "Syncs").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.round")
    assert len(rows) == 1 and "complete" in rows[0].text, [r.text for r in rows]
    shot(browser, "5-syncs")
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Sync 1")
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.report"))
    assert "lyon" in browser.page_source and "nice" in browser.page_source
    browser.switch_to.default_content()
    shot(browser, "6-report")
    cookie = browser.get_cookie(COOKIE)["value"]
    status, pdf, kind = fetch(browser.find_element(By.ID, "pdf").get_attribute("href"), cookie)
    assert status == 200 and kind == "application/pdf" and pdf.startswith(b"%PDF"), status
    import pypdfium2

    text = pypdfium2.PdfDocument(pdf)[0].get_textpage().get_text_range()
    assert "Sync 1" in text and "lyon" in text, text[:300]

    # Two shops change the same customer: one change is set aside, on record.
    run_sql(mesh.cons["lyon"], "UPDATE T SET A = 'lyon: Hélène Dupré' WHERE ID = 1")
    time.sleep(0.05)
    run_sql(mesh.cons["nice"], "UPDATE T SET A = 'nice: Hélène Martin' WHERE ID = 1")
    assert ctl(mesh, "manual").returncode == 0
    browser.find_element(By.LINK_TEXT, "Changes set aside").click()
    records = browser.find_elements(By.CSS_SELECTOR, "tr.conflict")
    assert len(records) == 1 and "lyon: Hélène Dupré" in records[0].text, \
        [r.text for r in records]
    assert "nice: Hélène Martin" in records[0].text  # what the row holds now
    shot(browser, "7-conflicts")
    records[0].find_element(By.CSS_SELECTOR, "button.ack").click()
    assert "marked seen" in browser.find_element(By.CSS_SELECTOR, ".notice.ok").text
    assert browser.find_elements(By.CSS_SELECTOR, "tr.conflict") == []
    assert "1 seen left out" in browser.page_source
    seen = ctl(mesh, "conflicts", "--all")  # the command sees the same acknowledgement
    assert seen.returncode == 0 and "seen" in seen.stdout.splitlines()[2], seen.stdout
    shot(browser, "8-conflict-acknowledged")

    status, body, _kind = fetch(base + "rounds/99", cookie)  # a report that does not exist
    assert status == 404 and b"Not found" in body and b"does not answer" not in body, body[:500]

    browser.find_element(By.LINK_TEXT, "Held transactions").click()
    assert "no transaction is held at any site" in browser.page_source

    browser.get(base + "?lang=fr")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    assert states(browser) == {"lyon": ("ok", "à jour"), "nice": ("ok", "à jour")}
    assert "Vue d'ensemble" in browser.page_source
    shot(browser, "9-overview-fr")
    browser.get(base + "actions")  # the choice is kept
    WebDriverWait(browser, 20).until(lambda d: "Synchronisation manuelle" in d.page_source)
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"


def test_the_dashboard_refuses_requests_without_its_token_and_listens_on_loopback_only(
        dashboard):
    url, _proc = dashboard
    base, token = url.split("?token=")
    port = int(base.rsplit(":", 1)[1].strip("/"))
    for path in ("", "rounds", "rounds/1/pdf", "static/style.css", f"?token={token}x"):
        status, body, _kind = fetch(base + path)
        assert status == 403 and b"Refused" in body, (path, status)
    status, _body, _kind = fetch(base, cookie="not-the-token")
    assert status == 403
    # A form posted without the token (another page of the browser) does nothing.
    request = urllib.request.Request(base + "actions", data=b"command=manual",
                                     headers={"Cookie": f"{COOKIE}={token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    listening = _listening(port)
    assert listening == {"127.0.0.1"}, listening
    other = _an_address_of_this_machine()
    if other is not None:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(3)
            s.connect((other, port))


def test_the_dashboard_says_so_when_the_siege_does_not_answer(mesh, dashboard, browser):
    url, proc = dashboard
    browser.get(url)
    mesh.nodes["siege"].stop(grace=1)
    browser.get(url.split("?")[0])
    problem = browser.find_element(By.ID, "problem").text
    assert "UNAVAILABLE" in problem or "does not answer" in problem, problem
    assert "The mesh does not answer" in browser.page_source
    shot(browser, "10-siege-unreachable")
    browser.find_element(By.LINK_TEXT, "Actions").click()  # the rest still works
    assert browser.find_element(By.ID, "action-test").is_displayed()
    assert proc.poll() is None


def test_while_the_siege_is_gone_the_dashboard_talks_to_the_stand_in_and_says_so(
        tmp_path, browser):
    from tests.test_election import as_stand_in, ctl_config, until
    from tools.localmesh import LocalMesh

    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": True, "nice": False},
                     ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(40))"])
    proc = None
    try:
        election = as_stand_in(mesh, "lyon", {"interval_minutes": 60}).roles[0].election
        config = ctl_config(mesh)  # [stand_ins] lyon
        mesh.nodes["siege"].stop(grace=1)
        until(lambda: election.active)
        proc = subprocess.Popen([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                                 str(config), "dashboard", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)
        browser.get(url)
        notice = browser.find_element(By.CSS_SELECTOR, ".notice.warn").text
        assert "this is the stand-in lyon" in notice, notice
        assert "siège role: lyon, stand-in since" in browser.page_source
        assert set(states(browser)) == {"siege", "nice"}
        shot(browser, "11-stand-in")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        mesh.close()


def test_a_port_already_taken_is_said_with_what_to_do(mesh):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = ctl(mesh, "dashboard", "--port", str(port), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_certificate_near_its_end_is_shown_from_the_newest_sync_that_read_it():
    from siege_sync.proto import coordinator_pb2 as pb
    from siege_sync.siege.dashboard.states import certificates

    newest = pb.RoundReport(id=2, siege_cert_days_left=200, sites=[
        pb.SiteReport(site="lyon", cert_days_left=12), pb.SiteReport(site="nice")])
    older = pb.RoundReport(id=1, siege_cert_days_left=201, sites=[
        pb.SiteReport(site="lyon", cert_days_left=13),
        pb.SiteReport(site="nice", cert_days_left=-1)])
    found = certificates([newest, older], "siege")
    assert {k: (c.days, c.level) for k, c in found.items()} == {
        "lyon": (12, "warn"), "nice": (-1, "bad"), "siege": (200, "ok")}


def _listening(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on ``port`` (/proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    if len(address) == 8:
                        found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.add("ipv6:" + address)
    return found


def _an_address_of_this_machine() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one (no packet is sent)."""
    ip = shutil.which("ip")
    if ip is None:
        return None
    out = subprocess.run([ip, "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else None
