"""How the package's command-line programs end when their reader goes away.

``siege-node tables | head``: ``head`` exits after its lines and the pipe closes; the next write
to standard output raises ``BrokenPipeError``. Every program (``siege-node``, ``siege-ctl``,
``siege-certs``) wraps its ``main`` in :func:`quiet_on_closed_pipe`: the program then ends
quietly with exit status 141 (128 + SIGPIPE, what a shell reports for a program a closed pipe
stopped, so ``set -o pipefail`` scripts still see that the output was cut), never a traceback or
a "Exception ignored" line. Nothing else lives here: this module sits below the three layers and
imports none of them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

CLOSED_PIPE_STATUS = 141

Main = Callable[[Sequence[str] | None], int]


def quiet_on_closed_pipe(main: Main) -> Main:
    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            try:
                return main(argv)
            finally:
                # What is still buffered fails here, not at interpreter exit where nobody can
                # catch it (argparse's --help ends in SystemExit, which passes through).
                sys.stdout.flush()
        except BrokenPipeError:
            # The interpreter flushes stdout once more on exit: point it at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return CLOSED_PIPE_STATUS
    return run
