"""The schema as the node last read it, kept across publishes and applies until DDL commits.

Owns the reuse of what ``schema.introspect`` and the capture registry return: the replicated
schema, the table registry, the image tables and their columns. Reading them costs about a
second on 600 tables (thousands of system-table rows, unpacked one by one by the driver),
and every publish and apply needs them.

Validity: ``check()`` reads ``capture.ddl_key`` — the number of committed DDL statements
(one row each in ``SYNC$DDL``, written by the database trigger install creates; rows are only
ever added, so a count never comes back), the number of registered tables, and the tables'
format versions and count (table and column changes made with database triggers switched
off) — in one query, and forgets everything when it moved. The key is read *before*
anything it guards, so what is kept is at least as new as its key: a DDL committing in
between makes the next key differ and the next check read again. Without a trustworthy
key (no trigger: install lacked the privilege; a DDL whose row could not be written) nothing
outlives one ``check``: the schema is still read once per publish or apply, not once per
use. A running publisher also keeps its planning reads prepared (``reader.plan``): a DROP
of an image table (uninstall) waits until that node stops.

Must never hand out a schema older than its key, nor let callers change what it keeps (they
get the shared objects: read-only by contract; ``Applier`` copies before adding to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from firebird.driver import TPB, Connection, Isolation, TraAccessMode

from ..db.database import transaction
from ..db.schema import ColumnType, Schema, Table, TableSelection, introspect
from . import capture

# The key is only read: a read-only transaction costs no write at its commit.
READ_ONLY = TPB(isolation=Isolation.READ_COMMITTED_RECORD_VERSION,
                access_mode=TraAccessMode.READ, ignore_limbo=True).get_buffer()


@dataclass
class _Kept:
    """What was read under one key."""

    schema: Schema | None = None
    registry: dict[int, tuple[str, tuple[str, ...]]] | None = None
    image_tables: list[int] | None = None
    images: dict[int, capture.Image] = field(default_factory=dict)
    all_images: bool = False


class SchemaCache:
    """One connection's schema, read once per DDL. Not thread-safe (one per publisher)."""

    def __init__(self, con: Connection) -> None:
        self._con = con
        self._key: tuple[int, ...] | None = None
        self._kept = _Kept()
        self.reads = 0  # full schema reads so far (tests and benchmarks look at it)

    def check(self) -> bool:
        """Forget what was read unless no DDL committed since (one query); whether what was
        kept is still good (statements prepared on the old schema may be kept too)."""
        with transaction(self._con, READ_ONLY) as tm:
            cur = tm.cursor()
            try:
                key = capture.ddl_key(cur)
            finally:
                cur.close()
        kept = key is not None and key == self._key
        if not kept:
            self._kept = _Kept()
        self._key = key
        return kept

    @property
    def trusted(self) -> bool:
        """Whether what is read is kept past the next ``check``."""
        return self._key is not None

    def schema(self) -> Schema:
        """Every replicable table with its constraints and triggers (no selection)."""
        if self._kept.schema is None:
            self._kept.schema = introspect(self._con)
            self.reads += 1
        return self._kept.schema

    def selected(self, selection: TableSelection) -> Schema:
        """What ``introspect(con, selection)`` returns, from the kept schema (a copy), but
        for ``crossings`` (foreign keys across the edge of what is replicated depend on the
        selection: left empty here, ``introspect`` says them)."""
        full = self.schema()
        tables = {n: t for n, t in full.tables.items() if selection.wants(n)}
        return replace(full, tables=tables, crossings=[],
                       refused=[r for r in full.refused if selection.wants(r.table)],
                       triggers={n: t for n, t in full.triggers.items() if n in tables},
                       key_generators={n: g for n, g in full.key_generators.items()
                                       if n in tables})

    def table(self, name: str) -> Table | None:
        return self.schema().tables.get(name)

    def key_types(self, name: str) -> tuple[ColumnType, ...] | None:
        """As ``schema.key_types``: the key columns' exact types, None for a table that is
        not (or no longer) replicable or has no key."""
        table = self.table(name)
        if table is None or not table.primary_key:
            return None
        return tuple(c.type for c in table.key_columns)

    def registry(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        if self._kept.registry is None:
            self._kept.registry = capture.table_registry(self._con)
        return self._kept.registry

    def image_tables(self) -> list[int]:
        if self._kept.image_tables is None:
            self._kept.image_tables = capture.image_tables(self._con)
        return self._kept.image_tables

    def image(self, number: int) -> capture.Image:
        """As ``capture.image``. Kept: every image table is read at once (one system-table
        read instead of one per table and publish)."""
        kept = self._kept
        if number not in kept.images:
            if self.trusted and not kept.all_images:
                kept.images.update(capture.all_images(self._con))
                kept.all_images = True
            if number not in kept.images:
                kept.images[number] = capture.image(self._con, number)
        return kept.images[number]
