"""Regenerate the committed protobuf/gRPC modules from ``siege_sync/proto/*.proto``.

Run ``make proto`` (or ``python tools/gen_proto.py``). ``generate(out_dir)`` is also used by
the test that fails when the committed modules are stale.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "siege_sync" / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Generate into ``out_dir`` (laid out like the repository); return the files written.

    gRPC stubs only for files that declare a service: the others would be empty boilerplate.
    """
    include = Path(protoc.__file__).parent / "_proto"
    for proto in proto_files():
        wants_grpc = re.search(r"^\s*service\s", proto.read_text(), re.MULTILINE)
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                *([f"--grpc_python_out={out_dir}"] if wants_grpc else []),
                str(proto.relative_to(ROOT))]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto.name}")
    return sorted((out_dir / "siege_sync" / "proto").glob("*_pb2*.py*"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy(path, PROTO_DIR / path.name)
            print(f"wrote {PROTO_DIR.relative_to(ROOT) / path.name}")


if __name__ == "__main__":
    sys.exit(main())
