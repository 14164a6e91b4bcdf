"""The package's layers hold (issue 26 item 2): `siege` → `node` → `certs` → the wire
contract, the language and the console, never back; inside `node`, cli → mesh → operations →
pipeline → journal → model → db; and no two modules of a package import each other, however
indirectly — the contracts of pyproject.toml's [tool.importlinter], run by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_every_import_points_down_the_layers():
    done = lint(ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout  # the layers, node's layers, no cycle inside


def test_an_import_up_the_layers_is_caught(tmp_path):
    """The checker sees this package's imports: the same contract upside down (node below
    certs) is broken by the imports node makes of certs, and named."""
    upside_down = tmp_path / "upside-down.toml"
    upside_down.write_text('[tool.importlinter]\nroot_package = "siege_sync"\n\n'
                           '[[tool.importlinter.contracts]]\nname = "upside down"\n'
                           'type = "layers"\nlayers = ["siege_sync.certs", "siege_sync.node"]\n')
    done = lint(upside_down)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "BROKEN" in done.stdout and "siege_sync.node" in done.stdout
