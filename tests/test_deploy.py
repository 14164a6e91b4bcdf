"""The shipped systemd unit starts the node the way the command line expects."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "siege-node.service"


def test_the_unit_runs_siege_node_run_with_a_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/siege-node") and argv[1:3] == ["run", "--config"]
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", *argv[1:2], "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--config" in done.stdout
