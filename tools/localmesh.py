"""Local meshes of real nodes, for the demo, the tests and the benchmark: a mesh CA with a
bundle per site (``Pki``), node configurations, and ``LocalMesh`` — sites with embedded
databases whose nodes serve over real mTLS on loopback, started in this process."""

from __future__ import annotations

import dataclasses
import socket
from datetime import datetime
from pathlib import Path

from siege_sync.certs import Authority, write_bundle
from siege_sync.node import capture, config
from siege_sync.node.config import Peer
from siege_sync.node.daemon import Node
from tests.fbdb import create_db

MESH = "acme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pki:
    """A mesh CA in ``folder/ca`` and bundles in ``folder/bundles/NAME``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = Authority.create(folder / "ca", MESH)

    def site(self, name: str, relay: bool = False, now: datetime | None = None,
             days: int = 365) -> Path:
        issued = self.ca.issue_site(name, relay=relay, now=now, days=days)
        return write_bundle(self.folder / "bundles" / name, issued)

    def admin(self, name: str) -> Path:
        return write_bundle(self.folder / "bundles" / name, self.ca.issue_admin(name))


def node_config(folder: Path, site: str, dsn: str, bundle: Path, port: int,
                peers: dict[str, int] | None = None, siege: dict | None = None,
                **database: str) -> config.NodeConfig:
    raw: dict = {
        "site": site,
        "database": {"dsn": dsn, **database},
        "node": {"listen": f"127.0.0.1:{port}", "bundle": str(bundle), "siege": "siege"},
        "peers": {p: {"address": f"127.0.0.1:{pp}"} for p, pp in (peers or {}).items()},
    }
    if siege:
        raw["siege"] = siege
    return config.parse(raw, folder / f"{site}.toml")


class LocalMesh:
    """Sites with embedded databases and nodes started in this process."""

    def __init__(self, folder: Path, sites: dict[str, bool], ddl: list[str],
                 siege_settings: dict | None = None) -> None:
        """``sites``: site id -> relay role; the site "siege" coordinates, with
        ``siege_settings`` as its ``[siege]`` section."""
        self.pki = Pki(folder)
        self.folder = folder
        self.ports = {s: free_port() for s in sites}
        self.cons = {}
        self.nodes: dict[str, Node] = {}
        for site, relay in sites.items():
            bundle = self.pki.site(site, relay=relay)
            con = create_db(folder / f"{site}.fdb", ddl=ddl)
            capture.install(con)
            self.cons[site] = con
            peers = {p: port for p, port in self.ports.items() if p != site}
            cfg = node_config(folder, site, str(folder / f"{site}.fdb"), bundle,
                              self.ports[site], peers,
                              siege=siege_settings if site == "siege" else None)
            self.nodes[site] = Node(cfg)
            self.nodes[site].start()

    def exchange(self, site: str, peer: str):
        return self.nodes[site].exchange(peer)

    def set_peer(self, site: str, peer: str, port: int) -> None:
        node = self.nodes[site]
        peers = {**node.service_cfg.peers, peer: Peer(peer, f"127.0.0.1:{port}")}
        node.service_cfg = dataclasses.replace(node.service_cfg, peers=peers)

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(grace=1)
        for con in self.cons.values():
            if not con.is_closed():
                con.close()
