"""`make demo` keeps working: the demo mesh syncs and every site ends identical."""

from __future__ import annotations

import subprocess
import sys
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
