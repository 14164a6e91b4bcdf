"""What finding a peer costs an exchange: every exchange first checks the peer's address
with the gRPC health check over mutual TLS (``node/mesh/discovery.py``), a second connection
before the exchange's own.

Prints, as JSON: ``exchange_ms`` (an exchange with nothing to move, health check included,
as rounds run it), ``bare_exchange_ms`` (the same exchange given the address),
``reach_ms`` (the health check alone) and ``reach_share`` (reach ÷ exchange). Two nodes in
this process on loopback (embedded databases), so latency is the machine's, not a line's: on
a line each adds its round trips (the check is a TLS handshake and one call, the exchange a
handshake and three calls). Run: ``python -m tools.bench_reach [--exchanges N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siege_sync.node.mesh.exchange import exchange  # noqa: E402
from tools.localmesh import LocalMesh  # noqa: E402

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10))"]


def _mean_ms(work: Callable[[], object], times: int) -> float:
    started = time.perf_counter()
    for _ in range(times):
        work()
    return (time.perf_counter() - started) * 1000 / times


def run(exchanges: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        mesh = LocalMesh(Path(folder), {"siege": True, "lyon": False}, DDL)
        try:
            node = mesh.nodes["siege"]
            for _ in range(5):  # warm: chains confirmed, channels' first costs paid
                node.exchange("lyon")
            bundle, _ = node.watcher.refresh()
            address = node.address("lyon")
            assert address is not None, "lyon does not answer"
            full = _mean_ms(lambda: node.exchange("lyon"), exchanges)
            bare = _mean_ms(lambda: exchange(node.replica, bundle, "lyon", address), exchanges)
            reach = _mean_ms(lambda: node.addresses.reach("lyon"), exchanges)
        finally:
            mesh.close()
    return {"exchange_ms": round(full, 1), "bare_exchange_ms": round(bare, 1),
            "reach_ms": round(reach, 1), "reach_share": round(reach / full, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=40)
    print(json.dumps(run(parser.parse_args().exchanges), sort_keys=True))


if __name__ == "__main__":
    main()
