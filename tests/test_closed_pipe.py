"""``siege-node tables | head``: a program whose reader went away ends quietly (issue 18, item
7). The pipe's read end is closed before the program writes anything, as ``head`` does once it
has its lines: every write then fails, and each program must end with exit status 141 (what a
shell reports for a program SIGPIPE stopped) and nothing on stderr — not a BrokenPipeError
traceback, an "error: Broken pipe" line, or "Exception ignored" at interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siege_sync.console import CLOSED_PIPE_STATUS

DDL = [
    "CREATE TABLE CLIENT (ID INTEGER NOT NULL PRIMARY KEY, NOM VARCHAR(40) CHARACTER SET WIN1252)",
    "CREATE TABLE FACTURE (ID INTEGER NOT NULL PRIMARY KEY, CLIENT INTEGER REFERENCES CLIENT, "
    "MONTANT NUMERIC(15,2))",
]


def _run_into_closed_pipe(module: str, *args: str, env: dict[str, str] | None = None
                          ) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", module, *args], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120, env=env, check=False)
    finally:
        os.close(write_end)


@pytest.fixture
def installed_site(make_db, tmp_path: Path) -> Path:
    make_db("lyon", ddl=DDL).close()
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'site = "lyon"\n[database]\ndsn = "{tmp_path / "lyon.fdb"}"\n',
                   encoding="utf-8")
    return cfg


@pytest.mark.parametrize("command", ["install", "tables", "status"])
def test_siege_node_into_a_closed_pipe_ends_quietly(installed_site, command):
    if command != "install":
        first = _run_into_closed_pipe("siege_sync.node.cli", "install", "-c", str(installed_site))
        assert first.returncode == CLOSED_PIPE_STATUS, first.stderr.decode()
    done = _run_into_closed_pipe("siege_sync.node.cli", command, "-c", str(installed_site))
    assert done.stderr.decode() == ""
    assert done.returncode == CLOSED_PIPE_STATUS


@pytest.mark.parametrize(("module", "args"), [
    ("siege_sync.node.cli", ["--help"]),
    ("siege_sync.siege.ctl", ["--help"]),
    ("siege_sync.certs.cli", ["--help"]),
])
def test_help_into_a_closed_pipe_ends_quietly(module, args):
    done = _run_into_closed_pipe(module, *args)
    assert done.stderr.decode() == ""
    # argparse itself drops a help text it cannot write, and exits 0.
    assert done.returncode in (0, CLOSED_PIPE_STATUS)


def test_siege_certs_listing_into_a_closed_pipe_ends_quietly(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    made = subprocess.run([sys.executable, "-m", "siege_sync.certs.cli", "init", "--dir",
                           str(tmp_path / "ca"), "--mesh", "chaine"], capture_output=True,
                          env=env, timeout=60, check=False)
    assert made.returncode == 0, made.stderr.decode()
    done = _run_into_closed_pipe("siege_sync.certs.cli", "list", "--dir", str(tmp_path / "ca"),
                                 env=env)
    assert done.stderr.decode() == ""
    assert done.returncode == CLOSED_PIPE_STATUS
