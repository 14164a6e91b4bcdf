"""The deployment guide's command blocks, as README.md gives them.

A block is a fenced ``sh`` block preceded by the comment ``<!-- guide: M1 M2 -->`` naming the
machines that run it (``build``: a copy of the repository). Must never change a block: the
test runs what the README says, or the README is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_BLOCK = re.compile(r"<!-- guide: ([a-z ]+) -->\n```sh\n(.*?)\n```", re.S)


@dataclass(frozen=True)
class Block:
    machines: tuple[str, ...]
    script: str
    line: int  # in README.md, for messages


def blocks(readme: Path) -> list[Block]:
    text = readme.read_text(encoding="utf-8")
    return [Block(tuple(m.group(1).split()), m.group(2), text.count("\n", 0, m.start()) + 1)
            for m in _BLOCK.finditer(text)]
