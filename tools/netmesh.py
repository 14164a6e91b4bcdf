"""A mesh of ``siege-node run`` processes, one per network namespace (tools/netns.py): the
multi-host tests of discovery, dial-out sites and the election (tests/test_discovery.py).

Each site is a host on a private LAN with its own embedded Firebird database (a file in the
test's folder). Its node listens on ``0.0.0.0:7443`` in its namespace. The caller shapes
each site's config (``[node]`` keys, peers with or without addresses, a ``[siege]`` section)
and drives the sites as an operator would: ``write`` stops a site's node, writes, and starts
it again (an embedded database admits one process); ``digests`` and ``ctl`` run inside the
site's namespace against its own node, with the admin certificate "ops". Processes are
ended by their pid (netns.Lan does it), namespaces deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess, Popen
from typing import Any

from siege_sync.node.db.database import DatabaseSpec, open_connection
from siege_sync.node.journal import capture
from tests.fbdb import create_db
from tools.localmesh import Pki
from tools.netns import Host, Lan

PORT = 7443
PYTHON = sys.executable
ENV = {"GRPC_VERBOSITY": "ERROR"}

# Run inside a namespace: the node's own table digests, as JSON (or {"error": ...}).
_DIGESTS = """
import json, sys
import grpc
from siege_sync.certs import load_bundle
from siege_sync.node.mesh.transport import channel
from siege_sync.proto import sync_pb2, sync_pb2_grpc
site, bundle, port = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    with channel("127.0.0.1:" + port, load_bundle(bundle), site) as ch:
        reply = sync_pb2_grpc.SyncNodeStub(ch).Status(sync_pb2.StatusRequest(digests=True),
                                                      timeout=20)
    print(json.dumps({d.table: [d.digest, d.rows] for d in reply.digests}))
except grpc.RpcError as exc:
    print(json.dumps({"error": exc.code().name + ": " + str(exc.details())}))
"""

_REPORTS = """
import json, sys
from google.protobuf.json_format import MessageToDict
from siege_sync.certs import load_bundle
from siege_sync.node.mesh.transport import channel
from siege_sync.proto import coordinator_pb2, coordinator_pb2_grpc
site, bundle, port = sys.argv[1], sys.argv[2], sys.argv[3]
with channel("127.0.0.1:" + port, load_bundle(bundle), site) as ch:
    reply = coordinator_pb2_grpc.CoordinatorStub(ch).Reports(
        coordinator_pb2.ReportsRequest(limit=0), timeout=60)
print(json.dumps([MessageToDict(r, preserving_proto_field_name=True,
                                always_print_fields_with_no_presence=True)
                  for r in reply.reports]))
"""


@dataclass
class SiteSpec:
    relay: bool = False
    node: dict[str, Any] = field(default_factory=dict)  # extra [node] keys
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # [peers.X] sections
    siege: dict[str, Any] | None = None  # its [siege] section, if it may coordinate
    siege_site: str = "siege"  # its [node] siege


class NetMesh:
    def __init__(self, lan: Lan, folder: Path, sites: Mapping[str, SiteSpec],
                 ddl: list[str]) -> None:
        self.lan, self.folder, self.specs = lan, folder, dict(sites)
        self.pki = Pki(folder)
        self.admin = self.pki.admin("ops")
        self.hosts: dict[str, Host] = {}
        self.procs: dict[str, Popen] = {}
        self.bundles: dict[str, Path] = {}
        for site, spec in self.specs.items():
            self.hosts[site] = lan.add_host(site)
            self.bundles[site] = self.pki.site(site, relay=spec.relay)
            con = create_db(self.db(site), ddl=ddl)
            capture.install(con)
            con.close()

    def db(self, site: str) -> Path:
        return self.folder / f"{site}.fdb"

    def address(self, site: str) -> str:
        return f"{self.hosts[site].address}:{PORT}"

    def write_config(self, site: str) -> Path:
        spec = self.specs[site]
        node = {"listen": f"0.0.0.0:{PORT}", "bundle": str(self.bundles[site]),
                "siege": spec.siege_site, **spec.node}
        lines = [f'site = "{site}"', "[database]", f'dsn = "{self.db(site)}"', "[node]"]
        lines += [f"{k} = {_toml(v)}" for k, v in node.items()]
        for peer, keys in spec.peers.items():
            lines.append(f"[peers.{peer}]")
            lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
        if spec.siege is not None:
            lines.append("[siege]")
            lines += [f"{k} = {_toml(v)}" for k, v in spec.siege.items()]
        path = self.folder / f"{site}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, site: str, timeout: float = 30.0) -> None:
        """Start the site's node and wait until its log says it listens."""
        log = self.folder / f"{site}.log"
        mark = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self.procs[site] = self.lan.run(
                site, [PYTHON, "-m", "siege_sync.node.cli", "run", "--config",
                       str(self.write_config(site))], env=ENV, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_bytes()[mark:].decode(errors="replace")
            if "listening on" in text:
                return
            if self.procs[site].poll() is not None:
                raise RuntimeError(f"{site}'s node exited:\n{text}")
            time.sleep(0.1)
        raise RuntimeError(f"{site}'s node did not start:\n{self.log(site)[-3000:]}")

    def stop(self, site: str) -> None:
        proc = self.procs.pop(site, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, site: str) -> str:
        path = self.folder / f"{site}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write(self, site: str, *statements: str) -> None:
        """As the site's application: its node stopped meanwhile (one process per file)."""
        running = site in self.procs
        self.stop(site)
        con = open_connection(DatabaseSpec(str(self.db(site))))
        try:
            for sql in statements:
                con.execute_immediate(sql)
            con.commit()
        finally:
            con.close()
        if running:
            self.start(site)

    def digests(self, site: str) -> dict[str, Any]:
        return self.digests_of([site])[site]

    def digests_of(self, sites: list[str]) -> dict[str, dict[str, Any]]:
        """Each site's own table digests, asked in its namespace — all at once (a probe is a
        Python start, about a second)."""
        probes = {site: self.lan.run(site, [PYTHON, "-c", _DIGESTS, site, str(self.admin),
                                            str(PORT)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for site in sites}
        out: dict[str, dict[str, Any]] = {}
        for site, proc in probes.items():
            try:
                stdout, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            try:
                out[site] = json.loads(stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                out[site] = {"error": (stdout + stderr)[-2000:]}
        return out

    def reports(self, site: str) -> list[dict[str, Any]]:
        """Every round report stored at ``site`` (it coordinates), newest first, as dicts of
        the RoundReport fields — one probe instead of one `report show` per report."""
        done = self.lan.call(site, [PYTHON, "-c", _REPORTS, site, str(self.admin), str(PORT)],
                             timeout=120, check=False)
        if done.returncode != 0:
            raise AssertionError(f"reports of {site}: {done.stdout}{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def ctl(self, site: str, *args: str, timeout: float = 120) -> CompletedProcess:
        """``siege-ctl`` in the site's namespace against its own node."""
        return self.lan.call(site, [PYTHON, "-m", "siege_sync.siege.ctl", "--address",
                                    f"127.0.0.1:{PORT}", "--siege", site, "--bundle",
                                    str(self.admin), *args], timeout=timeout, check=False)

    def wait_equal(self, sites: list[str], table: str, rows: int,
                   timeout: float = 60.0) -> dict[str, Any]:
        """Until every site holds ``rows`` rows of ``table`` with one digest."""
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {site: found.get(table) for site, found in self.digests_of(sites).items()}
            values = list(seen.values())
            if all(v is not None and v[1] == rows for v in values) \
                    and len({v[0] for v in values}) == 1:
                return seen
            time.sleep(0.5)
        raise AssertionError(f"{table} not equal at {sites} after {timeout} s: {seen}\n"
                             + "\n".join(f"--- {s} log ---\n{self.log(s)[-2500:]}"
                                         for s in sites))

    def close(self) -> None:
        for site in list(self.procs):
            self.stop(site)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))
