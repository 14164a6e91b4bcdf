"""The committed protobuf/gRPC modules are exactly what ``make proto`` generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parent.parent
COMMITTED = ROOT / "siege_sync" / "proto"


def _gen_proto() -> ModuleType:
    # tools/ is not a package: load the generator from its file.
    path = ROOT / "tools" / "gen_proto.py"
    spec = importlib.util.spec_from_file_location("siege_gen_proto", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    generated = _gen_proto().generate(tmp_path)
    assert generated, "tools/gen_proto.py generated nothing"
    stale = []
    for path in generated:
        committed = COMMITTED / path.name
        if not committed.is_file() or committed.read_bytes() != path.read_bytes():
            stale.append(path.name)
    # Every committed generated module must still have a .proto that produces it.
    names = {p.name for p in generated}
    stale += sorted(p.name for p in COMMITTED.glob("*_pb2*.py*") if p.name not in names)
    if stale:
        pytest.fail(f"protobuf modules are stale: run make proto ({', '.join(sorted(stale))})",
                    pytrace=False)
