"""What settling a row can answer instead of writing it: each tells the applier (or the
publisher) what to do with the transaction at hand.

* ``ConstraintError`` — the constraints cannot be satisfied from the events: the origin's
  transaction is held for an operator, with the rows and the constraint named;
* ``NotArrived`` — something it needs has not arrived yet (a parent row, a large BLOB's
  bytes): it waits;
* ``LocalChangePending`` — a row it would write has a local change not yet published:
  publish first, then apply again;
* ``Deferred`` — the event must come after a later event of its own source transaction.

Values only: must never hold a connection or decide anything.
"""

from __future__ import annotations


class ConstraintError(Exception):
    """The constraints cannot be satisfied from the events (the origin is stopped)."""


class NotArrived(Exception):
    """Something the transaction needs has not arrived here yet: a parent row this site has
    never had, or the bytes of a large BLOB. The transaction waits for it."""


class LocalChangePending(Exception):
    """A row to be written has a captured local change not yet published."""


class Deferred(Exception):
    """The event must wait for the next event of ``row`` (table name, key identity) in its
    own source transaction (a parent inserted later, a referencing row deleted later).
    Raised before anything of the event is written or stored."""

    def __init__(self, row: tuple[str, bytes], why: str) -> None:
        super().__init__(why)
        self.row = row
