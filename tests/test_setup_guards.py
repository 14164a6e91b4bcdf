"""Dangerous setups refused (issue 24 item 5), on real Firebird and real nodes:

1. Two nodes on one database (through the Firebird server, as two machines would): the
   second refuses to start and says who serves it; once the first stops, it starts. A
   connection the node opens again (a restarted server) carries the mark again.
2. ``[node] siege`` naming no known site: refused when the config is read, saying what to
   add.
3. ``siege-node install`` on another site's database: refused like ``run``, exit 2, and
   nothing in that database changed (its generators stay where they were).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from siege_sync.node.db.database import (
    READ_COMMITTED_RW,
    DatabaseSpec,
    open_connection,
    transaction,
)
from siege_sync.node.journal import capture
from siege_sync.node.journal.occupant import MARK
from siege_sync.node.mesh.daemon import Node, NodeError
from siege_sync.node.model import config
from tools.fbserver import free_port
from tools.localmesh import Pki, node_config

DDL = ["CREATE TABLE ITEMS (ID INTEGER NOT NULL PRIMARY KEY, LABEL VARCHAR(40))",
       "CREATE GENERATOR GEN_ITEMS"]


def _marks(con) -> list[str]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT MON$VARIABLE_VALUE FROM MON$CONTEXT_VARIABLES "
                    "WHERE MON$VARIABLE_NAME = ?", (MARK,))
        found = [r[0] for r in cur.fetchall()]
        cur.close()
    return found


def test_one_node_per_database_through_the_server(fb_server, tmp_path: Path):
    name = f"guards{free_port()}"
    con = fb_server.create_database(name, ddl=DDL)
    capture.install(con)
    pki = Pki(tmp_path)
    bundle = pki.site("lyon")
    cfg = node_config(tmp_path, "lyon", fb_server.dsn(name), bundle, free_port(),
                      user="SYSDBA", password=fb_server.password)
    first = Node(cfg)
    try:
        assert len(_marks(con)) == 1 and "site lyon" in _marks(con)[0]
        with pytest.raises(NodeError, match="another node already serves") as refused:
            Node(node_config(tmp_path, "lyon", fb_server.dsn(name), bundle, free_port(),
                             user="SYSDBA", password=fb_server.password))
        assert "site lyon, process" in str(refused.value)  # who holds it
        assert len(_marks(con)) == 1, "the refused node left no mark behind"
        # The server drops the node's connection (a restart would): the one it opens
        # again is marked as well.
        first.replica._reconnect()
        assert len(_marks(con)) == 1
    finally:
        first.replica.close()
    assert _marks(con) == []
    second = Node(cfg)  # the first is gone: this one starts
    second.replica.close()
    con.close()


def test_a_siege_no_peer_names_is_refused_when_the_config_is_read(tmp_path: Path):
    bundle = Pki(tmp_path).site("lyon")
    raw = {"site": "lyon", "database": {"dsn": str(tmp_path / "lyon.fdb")},
           "node": {"listen": "127.0.0.1:7443", "bundle": str(bundle), "siege": "siegee"},
           "peers": {"siege": {"address": "127.0.0.1:7444"}}}
    with pytest.raises(config.ConfigError, match=r"siege = 'siegee': no \[peers.siegee\]"):
        config.parse(raw, tmp_path / "lyon.toml")
    raw["node"]["siege"] = "siege"
    assert config.parse(raw, tmp_path / "lyon.toml").service.siege == "siege"


def test_install_on_another_sites_database_is_refused(make_db, tmp_path: Path):
    con = make_db("nice", ddl=DDL)
    capture.install(con)
    capture.set_state(con, "site", "nice")  # (what nice's node recorded when it first ran)
    with transaction(con, READ_COMMITTED_RW) as tm:
        tm.cursor().execute("SET GENERATOR GEN_ITEMS TO 42")
    con.close()
    path = tmp_path / "lyon.toml"
    path.write_text(f'site = "lyon"\n[database]\ndsn = "{tmp_path / "nice.fdb"}"\n'
                    '[generators.GEN_ITEMS]\nstart = 2000000\nend = 2999999\n')
    done = subprocess.run([sys.executable, "-m", "siege_sync.node.cli", "install", "--config",
                           str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is the database of site 'nice'" in done.stderr and "Traceback" not in done.stderr
    con = open_connection(DatabaseSpec(str(tmp_path / "nice.fdb")))
    try:
        with transaction(con, READ_COMMITTED_RW) as tm:
            cur = tm.cursor()
            cur.execute("SELECT GEN_ID(GEN_ITEMS, 0) FROM RDB$DATABASE")
            assert cur.fetchone()[0] == 42, "its generator was moved"
            cur.close()
    finally:
        con.close()
