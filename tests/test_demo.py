"""`make demo` keeps working: the demo mesh syncs and every site ends identical."""

from __future__ import annotations

import http.cookiejar
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_mesh_converges(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--keep",
                           str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every site holds the same data" in done.stdout
    assert "kept-by-reference" in done.stdout and "column" in done.stdout
    assert "$ siege-ctl manual" in done.stdout and "COMPLETE" in done.stdout
    assert "python tools/demo.py --dashboard" in done.stdout  # the head office's screen


def test_the_demo_serves_the_dashboard_on_its_mesh_until_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "demo.py"),
                             "--dashboard", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "the dashboard is at" in line:
                break
        url = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", "".join(lines))
        assert url, "".join(lines)
        browser = urllib.request.build_opener(  # keeps the cookie the token's address sets
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(url.group(1), timeout=60) as page:
            body = page.read().decode()
        assert "lyon" in body and "nice" in body and "in step" in body, body[:2000]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the dashboard stops, the mesh closes
        rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest[-3000:]
    assert "Traceback" not in rest
