"""The dashboard's buttons: each runs the ``siege-ctl`` command itself, as a child process.

A button is the command an operator would type — ``test``, ``manual``, ``stop``, ``analyse
[--table T] [--site S] [--repair --prefer SITE]`` — run with the dashboard's own way to the
siège (its ``--config``/``--address``/``--siege``/``--bundle``) and the page's language, so
nothing an action does exists twice. Its output is kept line by line as it comes (a round's
per-site progress, a test's table) for the page to show while it runs, with the exit code.

Owns those child processes: ended by their pid when the dashboard stops. Must never run
anything but ``siege-ctl`` with one of ``COMMANDS``, nor pass a value through a shell.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime

COMMANDS = ("test", "manual", "stop", "analyse")
KEPT_LINES = 5000  # of one action's output (the newest)
LISTED = 10  # actions the page lists


@dataclass
class Action:
    number: int
    argv: list[str]  # what runs, from the command's name on (``manual``, ``analyse --table T``)
    started: datetime = field(default_factory=datetime.now)
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None
    ended: datetime | None = None

    @property
    def running(self) -> bool:
        return self.returncode is None

    @property
    def command_line(self) -> str:
        return "siege-ctl " + " ".join(self.argv)


class Actions:
    """The actions started from the page, numbered from 1, each running ``ctl + argv``."""

    def __init__(self, ctl: list[str]) -> None:
        self._ctl = ctl  # e.g. [python, -m, siege_sync.siege.ctl, --config, FILE]
        self._lock = threading.Lock()
        self._actions: dict[int, Action] = {}
        self._procs: dict[int, subprocess.Popen[str]] = {}

    def start(self, argv: list[str], language: str) -> Action:
        if not argv or argv[0] not in COMMANDS:
            raise ValueError(f"not a dashboard action: {argv!r}")
        env = {**os.environ, "LANGUAGE": language, "PYTHONUNBUFFERED": "1"}
        with self._lock:
            action = Action(len(self._actions) + 1, list(argv))
            proc = subprocess.Popen([*self._ctl, *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, encoding="utf-8", errors="replace", env=env)
            self._actions[action.number] = action
            self._procs[action.number] = proc
        threading.Thread(target=self._follow, args=(action, proc), daemon=True,
                         name=f"dashboard-action-{action.number}").start()
        return action

    def _follow(self, action: Action, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # (universal newlines: a progress "\r" is a line too)
            with self._lock:
                action.lines.append(line.rstrip("\n"))
                del action.lines[:-KEPT_LINES]
        code = proc.wait()
        with self._lock:
            action.returncode, action.ended = code, datetime.now()
            self._procs.pop(action.number, None)

    def get(self, number: int) -> Action | None:
        with self._lock:
            return self._actions.get(number)

    def recent(self) -> list[Action]:
        with self._lock:
            return sorted(self._actions.values(), key=lambda a: -a.number)[:LISTED]

    def close(self) -> None:
        """End every action still running (by its pid), and wait for it."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
