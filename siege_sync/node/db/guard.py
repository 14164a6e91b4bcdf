"""Guards in application triggers: a first statement that skips changes the node applies.

A remote change arrives as events that already carry every effect its origin's triggers had;
firing the local copy of those triggers again would duplicate history rows or stamp
``DATE_MODIF`` differently per site. The guard is one marked statement inserted right after
the trigger body's outer ``BEGIN``, on the same line: the lines of the application's own
statements keep their numbers, so "At trigger 'X' line: N" in its errors still points where
its vendor's source says (only columns after ``BEGIN`` on that one line shift). Guards of
earlier versions sat on a line of their own; :func:`add_guard` moves such a guard onto the
``BEGIN`` line (install rewrites them). This module only rewrites source text: it never runs
SQL, and removing a guard removes exactly the marked text (the vendor's source is never
"restored" from a copy).
"""

from __future__ import annotations

import re

APPLY_CONTEXT = "SYNC$APPLY"  # set by the node's transactions: the guards skip them
# Its value while repairing (``analyse --repair``): no table number, so every capture trigger
# records the writes as this site's own changes (not flagged as an apply's side effects),
# while the guarded application triggers skip them like applied changes.
REPAIR_CONTEXT = "repair"
GUARD_START = "/*SYNC$GUARD*/"
GUARD_END = "/*SYNC$GUARD END*/"
GUARD = (
    f"{GUARD_START} IF (RDB$GET_CONTEXT('USER_TRANSACTION', '{APPLY_CONTEXT}') IS NOT NULL) "
    f"THEN EXIT; {GUARD_END}"
)

# Tokens that matter for finding the body: comments, strings and quoted names are skipped
# whole so that a BEGIN inside them is never taken for a keyword.
_TOKEN = re.compile(
    r"/\*.*?\*/|--[^\n]*|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\b(?:BEGIN|END|CASE)\b",
    re.IGNORECASE | re.DOTALL,
)


class GuardError(Exception):
    pass


def is_guarded(source: str) -> bool:
    return GUARD_START in source


def _body_begin(source: str) -> int:
    """Offset just after the outer BEGIN of the trigger body.

    Sub-routines declared before the body (``DECLARE PROCEDURE ... AS BEGIN ... END``) have
    their own BEGIN at depth 0; the body is the last depth-0 BEGIN. CASE ... END nests too.
    """
    depth = 0
    last = -1
    for match in _TOKEN.finditer(source):
        word = match.group(0).upper()
        if word in ("BEGIN", "CASE"):
            if depth == 0 and word == "BEGIN":
                last = match.end()
            depth += 1
        elif word == "END":
            depth -= 1
    if last < 0 or depth != 0:
        raise GuardError("cannot find the trigger body's BEGIN ... END")
    return last


def add_guard(source: str) -> str:
    """``source`` with the guard right after its body's ``BEGIN``, on that line. Idempotent; a
    guard of an earlier version, on a line of its own, is moved there."""
    bare = remove_guard(source)
    at = _body_begin(bare)
    return f"{bare[:at]} {GUARD}{bare[at:]}"


def remove_guard(source: str) -> str:
    start = source.find(GUARD_START)
    if start < 0:
        return source
    end = source.find(GUARD_END, start)
    if end < 0:
        raise GuardError("guard start marker without its end marker; edit the trigger by hand")
    # Remove what add_guard put in front too: a space (or, from earlier versions, a newline
    # and indentation).
    head = source[:start].rstrip(" ")
    if head.endswith("\n"):
        head = head[:-1]
    return head + source[end + len(GUARD_END):]
