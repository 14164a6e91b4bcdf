"""The shipped systemd unit starts the node the way the command line expects, and the node
tells a ``Type=notify`` service manager when it is ready (node/mesh/readiness.py). The whole
deployment, unit included, is run by tests/test_guide.py."""

from __future__ import annotations

import configparser
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from siege_sync.node.mesh.readiness import NOTIFY_SOCKET, notify

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "siege-node@.service"


def test_the_unit_runs_the_node_command_its_instance_names_with_a_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0] == "/opt/siege-sync/bin/siege-node" and argv[1:3] == ["%i", "--config"]
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["Type"] == "notify"
    for command in ("run", "join", "resync"):
        done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", command, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "--config" in done.stdout


@pytest.mark.parametrize("abstract", [True, False])
def test_notify_reaches_the_service_managers_socket(tmp_path, monkeypatch, abstract):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        name = f"siege-test-{tmp_path.name}"
        manager.bind("\0" + name if abstract else str(tmp_path / "notify"))
        monkeypatch.setenv(NOTIFY_SOCKET, "@" + name if abstract else str(tmp_path / "notify"))
        notify("READY=1", "STATUS=serving lyon")
        manager.settimeout(5)
        assert manager.recv(4096).decode().splitlines() == ["READY=1", "STATUS=serving lyon"]


def test_notify_without_a_service_manager_does_nothing(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(NOTIFY_SOCKET, raising=False)
    notify("READY=1")
    assert not caplog.records
    monkeypatch.setenv(NOTIFY_SOCKET, str(tmp_path / "nobody-listens"))
    notify("READY=1")  # a socket that is not there: logged, never raised
    assert "could not tell the service manager" in caplog.text
