"""``siege-node`` as an operator uses it: commands, and clear errors for mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siege_sync.node.cli import main
from siege_sync.node.model import config
from tools.localmesh import Pki

DDL = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(40))",
    "CREATE TABLE LOOSE (X INTEGER)",
    "CREATE SEQUENCE GEN_CUST",
    "CREATE TRIGGER CUST_BI FOR CUSTOMER BEFORE INSERT AS BEGIN "
    "IF (NEW.ID IS NULL) THEN NEW.ID = GEN_ID(GEN_CUST, 1); END",
]


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def node_config(make_db, tmp_path):
    con = make_db(ddl=DDL)
    con.close()
    return write_config(tmp_path, f'site = "lyon"\n[database]\ndsn = "{tmp_path / "site.fdb"}"\n'
                                  '[generators.GEN_CUST]\nstart = 5000\nend = 5999\n')


def test_install_tables_publish_status_uninstall(node_config, capsys, tmp_path):
    assert main(["install", "--config", str(node_config)]) == 0
    out = capsys.readouterr().out
    assert "capture installed on 1 tables" in out and "NOT replicated: LOOSE" in out
    assert "guarded triggers: CUST_BI" in out and "GEN_CUST: moved" in out
    assert main(["tables", "-c", str(node_config)]) == 0
    out = capsys.readouterr().out
    assert "CUSTOMER" in out and "SYNC$I1" in out and "no primary key" in out
    assert "CUST_BI" in out and "guarded" in out and "GEN_CUST (site range 5000..5999)" in out
    from firebird.driver import connect

    con = connect(str(node_config.parent / "site.fdb"), user="SYSDBA", charset="UTF8")
    con.cursor().execute("INSERT INTO CUSTOMER (NAME) VALUES ('Ana')")
    con.commit()
    con.close()
    assert main(["status", "-c", str(node_config)]) == 0
    assert "waiting to publish:    1" in capsys.readouterr().out
    # Without the node's bundle nothing is signed, so nothing is published (peers would
    # refuse it); with it, the change is.
    assert main(["publish", "-c", str(node_config)]) == 2
    assert "names no [node] bundle" in capsys.readouterr().err
    assert main(["status", "-c", str(node_config)]) == 0
    assert "waiting to publish:    1" in capsys.readouterr().out
    bundle = Pki(tmp_path / "pki").site("lyon")
    with open(node_config, "a") as f:
        f.write(f'[node]\nlisten = "127.0.0.1:1"\nbundle = "{bundle}"\nsiege = "lyon"\n')
    assert main(["publish", "-c", str(node_config)]) == 0
    assert "published 1 change (1 transaction) (seq 1..1)" in capsys.readouterr().out
    assert main(["status", "-c", str(node_config)]) == 0
    out = capsys.readouterr().out
    assert "published changes:     1" in out and "waiting to publish:    0" in out
    assert main(["uninstall", "-c", str(node_config)]) == 0
    assert "SYNC$LOG" in capsys.readouterr().out


@pytest.mark.parametrize(("body", "message"), [
    ("site = 'a'\n", "missing section [database]"),
    ("site = 'a b'\n[database]\ndsn='x'\n", "without spaces"),
    ("site = 'a'\n[database]\ndsn='x'\npassword_env='SIEGE_NOPE_UNSET'\n", "not set"),
    ("site = 'a'\n[database]\ndsn='x'\n[tables]\nexclude='T'\n", "list of strings"),
    ("site = 'a'\nsitee = 'b'\n[database]\ndsn='x'\n", "unknown keys"),
    ("site = 'a'\n[database\n", "not valid TOML"),
    ("site = 'a'\n[database]\ndsn='x'\n[policies]\nT = 'fastest'\n", "prefer-site SITE"),
])
def test_config_mistakes_are_explained(tmp_path, body, message):
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[")):
        config.load(write_config(tmp_path, body))


def test_password_file_must_be_private(tmp_path):
    pw = tmp_path / "db.pw"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    path = write_config(tmp_path, "site='a'\n[database]\ndsn='x'\npassword_file='db.pw'\n")
    with pytest.raises(config.ConfigError, match="chmod 600"):
        config.load(path)
    pw.chmod(0o600)
    assert config.load(path).database.password == "secret"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siege_sync.node.cli", *args],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def test_operator_mistakes_exit_2_without_traceback(tmp_path):
    missing = run_cli("status", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such config file" in missing.stderr
    bad_db = write_config(tmp_path, f'site="a"\n[database]\ndsn="{tmp_path}/absent.fdb"\n')
    result = run_cli("install", "--config", str(bad_db))
    assert result.returncode == 2 and "cannot open database" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("program", ["siege-node", "siege-ctl", "siege-certs"])
def test_every_program_says_its_version_and_a_plain_help(program):
    from siege_sync import __version__

    module = {"siege-node": "siege_sync.node.cli", "siege-ctl": "siege_sync.siege.ctl",
              "siege-certs": "siege_sync.certs.cli"}[program]
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"{program} {__version__}"
    shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                           text=True, timeout=60)
    description = shown.stdout.split("\n\n")[1]
    assert shown.returncode == 0 and description.rstrip().endswith("."), description
    assert "``" not in shown.stdout, "RST markup in the help"
