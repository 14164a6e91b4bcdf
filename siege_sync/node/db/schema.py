"""Introspection of a live Firebird 3 database: what can be replicated, and why not.

Owns the description of tables, columns, exact column types, primary keys, the constraints
the applier must decide the same way everywhere (foreign keys, UNIQUE, CHECK, NOT NULL,
defaults), application triggers — on tables and on the database (ON CONNECT, ON TRANSACTION
COMMIT, DDL) — the foreign keys that cross the edge of what is replicated, the generators that
feed keys, and the schema fingerprint sites compare, read from the system tables. Read-only:
it must never change the database. The sync's own objects (``SYNC$...``), views, system and
temporary tables and computed columns are never part of the replicated schema.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property

from firebird.driver import Connection

from .database import READ_COMMITTED_RW, quote, transaction
from .guard import APPLY_CONTEXT, is_guarded

SYNC_PREFIX = "SYNC$"
_PLAIN_NAME = re.compile(r"^[A-Z][A-Z0-9_$]*$")


class Kind(Enum):
    """How a column's value is represented exactly (see ``values.py``)."""

    SMALLINT = "smallint"
    INTEGER = "integer"
    BIGINT = "bigint"
    SCALED = "scaled"  # NUMERIC/DECIMAL stored as a scaled integer (dialect 3, or small ones)
    FLOAT = "float"
    DOUBLE = "double"  # DOUBLE PRECISION, and dialect 1 NUMERIC(>9, s) stored as a double
    BOOLEAN = "boolean"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    CHAR = "char"
    VARCHAR = "varchar"
    BLOB_TEXT = "blob_text"
    BLOB = "blob"  # any non-text BLOB sub_type
    ARRAY = "array"


# RDB$FIELD_TYPE codes of Firebird 3.
_FT_SMALLINT, _FT_INTEGER, _FT_FLOAT, _FT_DATE, _FT_TIME = 7, 8, 10, 12, 13
_FT_CHAR, _FT_BIGINT, _FT_BOOLEAN, _FT_DOUBLE, _FT_TIMESTAMP = 14, 16, 23, 27, 35
_FT_VARCHAR, _FT_BLOB = 37, 261
_FT_D_FLOAT, _FT_QUAD = 11, 9

_ELEMENT_KIND = {
    _FT_SMALLINT: Kind.SMALLINT,
    _FT_INTEGER: Kind.INTEGER,
    _FT_BIGINT: Kind.BIGINT,
    _FT_FLOAT: Kind.FLOAT,
    _FT_DOUBLE: Kind.DOUBLE,
    _FT_D_FLOAT: Kind.DOUBLE,
    _FT_BOOLEAN: Kind.BOOLEAN,
    _FT_DATE: Kind.DATE,
    _FT_TIME: Kind.TIME,
    _FT_TIMESTAMP: Kind.TIMESTAMP,
    _FT_CHAR: Kind.CHAR,
    _FT_VARCHAR: Kind.VARCHAR,
}


@dataclass(frozen=True)
class Collation:
    """How the engine compares a text column's values when it is not by its charset's default
    collation (RDB$COLLATIONS): whether trailing blanks count (PAD SPACE: they do not), case
    and accents. It decides which key values are one row (see ``collation.py``)."""

    name: str
    pad_space: bool = True
    case_insensitive: bool = False
    accent_insensitive: bool = False
    base: str | None = None  # the collation it was created from (CREATE COLLATION ... FROM)
    # RDB$SPECIFIC_ATTRIBUTES without COLL-VERSION (the ICU version: it differs between
    # sites' Firebird builds, and the fingerprint must not).
    attributes: str = ""


@dataclass(frozen=True)
class ColumnType:
    """A column's exact storage type, as RDB$FIELDS describes it."""

    field_type: int
    sub_type: int = 0
    length: int = 0  # bytes
    char_length: int | None = None  # characters, for CHAR/VARCHAR
    precision: int | None = None
    scale: int = 0  # 0 or negative
    charset: str | None = None  # e.g. UTF8, WIN1252, NONE, OCTETS
    segment_length: int | None = None
    dimensions: tuple[tuple[int, int], ...] = ()  # ARRAY bounds, outermost first
    # None: the charset's default collation. Not in repr (nor in ddl()): the fingerprint of
    # a column with the default collation stays what it was before collations were read.
    collation: Collation | None = field(default=None, repr=False)

    @cached_property  # (per instance: a frozen type; asked for every value applied)
    def element_kind(self) -> Kind:
        """The kind of one value (of one element, for an ARRAY)."""
        if self.field_type == _FT_BLOB:
            return Kind.BLOB_TEXT if self.sub_type == 1 else Kind.BLOB
        if self.scale < 0 and self.field_type in (_FT_SMALLINT, _FT_INTEGER, _FT_BIGINT):
            return Kind.SCALED
        try:
            return _ELEMENT_KIND[self.field_type]
        except KeyError:
            raise UnsupportedType(f"field type {self.field_type}") from None

    @property
    def kind(self) -> Kind:
        return Kind.ARRAY if self.dimensions else self.element_kind

    @property
    def is_bytes(self) -> bool:
        """Text stored without a known encoding: handled as raw bytes, never decoded."""
        return self.charset in ("NONE", "OCTETS") and self.element_kind in (
            Kind.CHAR,
            Kind.VARCHAR,
        )

    @property
    def is_blob(self) -> bool:
        return self.field_type == _FT_BLOB

    def ddl(self) -> str:
        """The type as written in a column definition (charset included, no constraints)."""
        base = self._element_ddl()
        if self.dimensions:
            bounds = ", ".join(f"{lo}:{hi}" for lo, hi in self.dimensions)
            if " CHARACTER SET " in base:
                head, cs = base.split(" CHARACTER SET ", 1)
                return f"{head} [{bounds}] CHARACTER SET {cs}"
            return f"{base} [{bounds}]"
        return base

    def _element_ddl(self) -> str:
        kind = self.element_kind
        if kind is Kind.SCALED or (kind is Kind.DOUBLE and self.scale < 0):
            word = "DECIMAL" if self.sub_type == 2 else "NUMERIC"
            precision = self.precision or {_FT_SMALLINT: 4, _FT_INTEGER: 9}.get(
                self.field_type, 18 if self.field_type == _FT_BIGINT else 15
            )
            return f"{word}({precision},{-self.scale})"
        if kind in (Kind.CHAR, Kind.VARCHAR):
            length = self.char_length if self.char_length is not None else self.length
            return f"{kind.name}({length}){self._charset_clause()}"
        if kind is Kind.BLOB_TEXT:
            return f"BLOB SUB_TYPE TEXT{self._charset_clause()}"
        if kind is Kind.BLOB:
            return f"BLOB SUB_TYPE {self.sub_type}"
        return {
            Kind.SMALLINT: "SMALLINT",
            Kind.INTEGER: "INTEGER",
            Kind.BIGINT: "BIGINT",
            Kind.FLOAT: "FLOAT",
            Kind.DOUBLE: "DOUBLE PRECISION",
            Kind.BOOLEAN: "BOOLEAN",
            Kind.DATE: "DATE",
            Kind.TIME: "TIME",
            Kind.TIMESTAMP: "TIMESTAMP",
        }[kind]

    def _charset_clause(self) -> str:
        return f" CHARACTER SET {self.charset}" if self.charset else ""


class UnsupportedType(Exception):
    pass


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True  # effective: NOT NULL on the column or on its domain
    identity_generator: str | None = None
    # Effective default (the column's, else its domain's) and the domain's CHECK, as
    # normalised source text (see ``normalised_source``); None when there is none. Read by a
    # full introspection only (not ``columns_only``).
    default: str | None = None
    domain_check: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    """``table (columns)`` references ``parent (parent_columns)``. ``table`` may be a table
    that is not replicated (its rows still keep a parent from being deleted)."""

    name: str
    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    # ON UPDATE / ON DELETE: "NO ACTION" (Firebird's RESTRICT is the same rule), "CASCADE",
    # "SET NULL" or "SET DEFAULT".
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"

    @property
    def actions(self) -> str:
        """The rules as written in DDL, the default ones left out."""
        return " ".join(f"ON {what} {rule}" for what, rule in (("DELETE", self.on_delete),
                                                                ("UPDATE", self.on_update))
                        if rule != "NO ACTION")

    def ddl(self) -> str:
        text = (f"{self.table} ({', '.join(self.columns)}) REFERENCES {self.parent} "
                f"({', '.join(self.parent_columns)})")
        return f"{text} {self.actions}" if self.actions else text


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()  # this table's references to parents
    referenced_by: tuple[ForeignKey, ...] = ()  # other tables' references to this one
    uniques: tuple[tuple[str, ...], ...] = ()  # UNIQUE constraints and indexes, key excluded
    has_checks: bool = False  # CHECK constraints (a merged row may break them)
    checks: tuple[str, ...] = ()  # their normalised source texts, sorted

    def column(self, name: str) -> Column:
        return self.by_name[name]

    # Computed once per instance (the table is frozen; ``replace`` makes a new one): asked
    # for several times for every event applied.
    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {col.name: col for col in self.columns}

    @cached_property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.column(name) for name in self.primary_key)

    @cached_property
    def identities(self) -> dict[tuple[bytes, ...], bytes]:
        """Row identities computed for keys of this table (``registers.key_identity``, a
        function of the key's bytes and this table's key types), kept while it is in use."""
        return {}

    @property
    def has_blobs(self) -> bool:
        return any(c.type.is_blob or c.type.dimensions for c in self.columns)


@dataclass(frozen=True)
class Refusal:
    """A table that will not be replicated, why, and what the operator can do."""

    table: str
    reason: str
    temporary: bool = False  # a global temporary table: never replicated, nothing to do


@dataclass(frozen=True)
class Crossing:
    """A foreign key between a replicated table and one that is not (``[tables]`` leaves it
    out, or it is refused): changes of the one left out never travel."""

    key: ForeignKey
    left_out: str  # the table that is not replicated (the key's parent or its child)
    why: str  # why it is not replicated

    @property
    def parent_left_out(self) -> bool:
        return self.left_out == self.key.parent

    def meaning(self) -> str:
        """What it does to replication, and what the operator can do."""
        fk = self.key
        if self.parent_left_out:
            text = (f"{fk.parent} is not replicated ({self.why}): changes to its rows never "
                    f"travel, so a {fk.table} row may arrive at a site where the "
                    f"{fk.parent} row it references does not exist; that transaction is "
                    "then held there (siege-node held) until the row is created at that "
                    "site")
            if fk.on_delete in ("CASCADE", "SET NULL", "SET DEFAULT"):
                text += (f". Its ON DELETE {fk.on_delete} changes {fk.table} rows when a "
                         f"{fk.parent} row is deleted at one site, and those changes travel "
                         "to every site")
        else:
            rule = "" if fk.on_delete == "NO ACTION" else f", despite ON DELETE {fk.on_delete}"
            text = (f"{fk.table} is not replicated ({self.why}): its rows stay at each site, "
                    f"and a {fk.parent} row deleted at another site while {fk.table} rows "
                    f"reference it here is kept here{rule} (the delete is put on record as "
                    f"losing, siege-node conflicts): that {fk.parent} row then differs between "
                    "sites")
        return (text + f". To do: replicate {self.left_out} too (add it to [tables]), or "
                "accept this if its rows are meant to differ between sites")


# Database-level trigger types (RDB$TRIGGER_TYPE with RDB$RELATION_NAME NULL, Firebird 3).
_DB_EVENTS = {8192: "ON CONNECT", 8193: "ON DISCONNECT", 8194: "ON TRANSACTION START",
              8195: "ON TRANSACTION COMMIT", 8196: "ON TRANSACTION ROLLBACK"}
_DDL_FLAG = 0x4000  # a DDL trigger; bit 0 is AFTER, bits 1.. the statements it fires for
_DDL_EVENTS = {
    1: "CREATE TABLE", 2: "ALTER TABLE", 3: "DROP TABLE", 4: "CREATE PROCEDURE",
    5: "ALTER PROCEDURE", 6: "DROP PROCEDURE", 7: "CREATE FUNCTION", 8: "ALTER FUNCTION",
    9: "DROP FUNCTION", 10: "CREATE TRIGGER", 11: "ALTER TRIGGER", 12: "DROP TRIGGER",
    16: "CREATE EXCEPTION", 17: "ALTER EXCEPTION", 18: "DROP EXCEPTION", 19: "CREATE VIEW",
    20: "ALTER VIEW", 21: "DROP VIEW", 22: "CREATE DOMAIN", 23: "ALTER DOMAIN",
    24: "DROP DOMAIN", 25: "CREATE ROLE", 26: "ALTER ROLE", 27: "DROP ROLE",
    28: "CREATE INDEX", 29: "ALTER INDEX", 30: "DROP INDEX", 31: "CREATE SEQUENCE",
    32: "ALTER SEQUENCE", 33: "DROP SEQUENCE", 34: "CREATE USER", 35: "ALTER USER",
    36: "DROP USER", 37: "CREATE COLLATION", 38: "DROP COLLATION", 39: "ALTER CHARACTER SET",
    40: "CREATE PACKAGE", 41: "ALTER PACKAGE", 42: "DROP PACKAGE", 43: "CREATE PACKAGE BODY",
    44: "DROP PACKAGE BODY", 45: "CREATE MAPPING", 46: "ALTER MAPPING", 47: "DROP MAPPING",
}
_WRITE = re.compile(r'(?:INSERT INTO|UPDATE OR INSERT INTO|MERGE INTO|DELETE FROM|UPDATE) '
                    r'("(?:[^"]|"")*"|[A-Z0-9_$]+)')


@dataclass(frozen=True)
class DatabaseTrigger:
    """A trigger of the application on the database itself (connect, transaction, DDL)."""

    name: str
    type_code: int
    position: int
    active: bool
    source: str | None  # None when the vendor stripped it
    writes: tuple[str, ...] = ()  # replicated tables it (or a procedure it runs) writes
    dynamic: bool = False  # EXECUTE STATEMENT: what it writes cannot be read from its source

    @property
    def is_ddl(self) -> bool:
        return bool(self.type_code & _DDL_FLAG) and self.type_code not in _DB_EVENTS

    @property
    def event(self) -> str:
        if not self.is_ddl:
            return _DB_EVENTS.get(self.type_code, f"type {self.type_code}")
        when = "AFTER" if self.type_code & 1 else "BEFORE"
        bits = [bit for bit in _DDL_EVENTS if self.type_code >> bit & 1]
        if len(bits) == len(_DDL_EVENTS):
            return f"{when} ANY DDL STATEMENT"
        return f"{when} " + " OR ".join(_DDL_EVENTS[bit] for bit in bits)

    def needs_attention(self, fires: bool = False) -> bool:
        """Whether it changes what replicates (it writes replicated tables, or what it writes
        cannot be read) and is not guarded against it."""
        if not self.active:
            return False
        if not (self.writes or self.source is None or self.dynamic):
            return False
        if self.guardable:
            return not fires and not (self.source is not None and is_guarded(self.source))
        return True

    @property
    def guardable(self) -> bool:
        """Whether the node's guard can make it skip applied transactions: only a trigger
        that runs inside the transaction after the node marked it (``SYNC$APPLY`` is set by
        then). At connect, disconnect and transaction start the mark is not set yet; DDL is
        the node's own install or upgrade, never an apply."""
        return self.type_code in (8195, 8196)

    def effect(self, fires: bool = False) -> str:
        """What it does to replication and what to do (``fires``: the config's [triggers]
        fire lists it)."""
        if not self.active:
            return "inactive: no effect while it stays so"
        written = ", ".join(self.writes)
        if self.source is None:
            what = ("its source is not stored: what it writes cannot be read. If it writes "
                    "replicated tables, ")
        elif self.dynamic and not self.writes:
            what = ("it runs EXECUTE STATEMENT: what that writes cannot be read from its "
                    "source. If it writes replicated tables, ")
        elif self.writes:
            what = f"it writes replicated tables ({written}): "
        else:
            what = ""
        skip = (f"make it skip the node's transactions — first statement IF (RDB$GET_CONTEXT("
                f"'USER_TRANSACTION', '{APPLY_CONTEXT}') IS NOT NULL) THEN EXIT; — ")
        if self.is_ddl:
            base = ("fires for the node's own DDL too (install, upgrade and uninstall create "
                    "and alter SYNC$ objects and guard application triggers): an exception "
                    "it raises makes them fail. DDL never travels: run a schema change at "
                    "every site (siege-node upgrade)")
            if what:
                base += (f"; {what}those writes made during the node's DDL are captured as "
                         "this site's changes and travel to every site")
            return base
        if self.guardable:
            when = "commit" if self.type_code == 8195 else "rollback"
            if self.source is not None and is_guarded(self.source):
                return (f"guarded: skips the {when} of transactions the node applies; at the "
                        "origin its writes are captured and travel with the transaction")
            if not what:
                return (f"writes no replicated table: no effect on replication (it also runs "
                        f"at the {when} of every transaction the node applies)")
            if fires:
                return (f"{what}fires at the {when} of every transaction the node applies "
                        "(config [triggers] fire): those writes are captured as this site's "
                        "own changes and travel on; at the other sites they fire it again")
            return (f"{what}it fires at every site, also at the {when} of every transaction "
                    "the node applies there (and of the node's own, publish and status): "
                    "those writes are captured as that site's own changes and travel on, and "
                    "applying them fires it again elsewhere (duplicated rows, a change that "
                    "never stops travelling); a write at the commit of the node's read-only "
                    "transactions fails them (IF (RDB$GET_CONTEXT('SYSTEM', 'READ_ONLY') = "
                    f"'FALSE') avoids it). To do: {skip}or keep what it writes out of "
                    "[tables]")
        event = {8192: "connection", 8193: "disconnection",
                 8194: "transaction start"}.get(self.type_code, "event")
        if not what:
            return (f"writes no replicated table: no effect on replication (it also runs for "
                    f"every {event} of the node; an exception it raises stops the node's work)")
        return (f"{what}it runs for every {event} of the node too (publish, apply, status), "
                "before the node can mark its transaction, so it cannot be guarded: those "
                "writes are captured as this site's changes and travel to every site. To do: "
                "give the node a user of its own ([database] user) and make the trigger skip "
                "it (IF (CURRENT_USER = 'THAT_USER') THEN EXIT;), or keep what it writes out "
                "of [tables]")


@dataclass(frozen=True)
class AppTrigger:
    """A trigger of the application on a table (never one of ours)."""

    name: str
    table: str
    type_code: int
    position: int
    active: bool
    source: str | None  # None when the vendor stripped it

    @property
    def before(self) -> bool:
        return not (self.type_code + 1) & 1

    @property
    def actions(self) -> list[str]:
        # Firebird packs up to three actions in two-bit slots of (type + 1).
        found = []
        for slot in (1, 2, 3):
            action = ((self.type_code + 1) >> (slot * 2 - 1)) & 3
            if action:
                found.append({1: "INSERT", 2: "UPDATE", 3: "DELETE"}[action])
        return found

    @property
    def description(self) -> str:
        return f"{'BEFORE' if self.before else 'AFTER'} {' OR '.join(self.actions)}"


@dataclass(frozen=True)
class TableSelection:
    """Which tables the config asks to replicate: all by default, then include/exclude."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, name: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


# The fingerprint's form: version 1 (no prefix, 16 hex digits) hashed tables, columns, exact
# types, collations and keys; version 2 adds nullability, defaults, CHECKs, UNIQUE keys and
# foreign keys with their actions. A fingerprint is only ever compared with one of its own form.
FINGERPRINT_VERSION = 2
_FINGERPRINT_PREFIX = f"v{FINGERPRINT_VERSION}-"


def fingerprint_version(fingerprint: str) -> int:
    """The form a fingerprint was computed in (1: by a node before version 2 existed)."""
    head, sep, _rest = fingerprint.partition("-")
    if sep and head.startswith("v") and head[1:].isdigit():
        return int(head[1:])
    return 1


def fingerprints_comparable(a: str, b: str) -> bool:
    """Two fingerprints say something about each other only in the same form: nodes of
    different versions (or an install recorded by an older node) are not compared. None
    recorded ("") compares with anything (and differs from any recorded one)."""
    return not (a and b) or fingerprint_version(a) == fingerprint_version(b)


@dataclass
class Schema:
    dialect: int
    tables: dict[str, Table] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    triggers: dict[str, list[AppTrigger]] = field(default_factory=dict)  # by table
    key_generators: dict[str, list[str]] = field(default_factory=dict)  # table -> generators
    crossings: list[Crossing] = field(default_factory=list)  # FKs across the replicated edge
    database_triggers: list[DatabaseTrigger] = field(default_factory=list)

    def guard_candidates(self) -> list[AppTrigger | DatabaseTrigger]:
        """The application's triggers the node's guard is for: every trigger on a replicated
        table, and the database triggers that run inside a transaction the node applies (ON
        TRANSACTION COMMIT / ROLLBACK) when they write replicated tables or what they write
        cannot be read — at every site they would write again what the origin's already
        wrote and sent. Other database triggers are left alone (a guard could not see the
        node's mark, or there is nothing to keep from travelling)."""
        found: list[AppTrigger | DatabaseTrigger] = [
            trig for triggers in self.triggers.values() for trig in triggers]
        found += [trig for trig in self.database_triggers
                  if trig.guardable and (trig.writes or trig.dynamic or trig.source is None
                                         or (trig.source and is_guarded(trig.source)))]
        return found

    def fingerprint(self) -> str:
        """A hash of what is replicated and what decides how a row applies: tables, column
        names, exact types and collations, keys, each column's effective nullability,
        default and domain CHECK, the tables' CHECKs, UNIQUE keys and foreign keys with their
        ON UPDATE / ON DELETE rules. Never a name the engine makes up (INTEG_12, RDB$1) nor
        an internal id: two Firebird builds holding the same schema agree. Needs a full
        introspection (``columns_only`` leaves the constraints out)."""
        h = hashlib.sha256(f"siege-sync schema {FINGERPRINT_VERSION}\0".encode())
        for name in sorted(self.tables):
            table = self.tables[name]
            h.update(f"T{name}\0K{','.join(table.primary_key)}\0".encode())
            for col in table.columns:
                h.update(f"C{col.name}\0{col.type!r}\0{col.type.collation!r}\0"
                         f"N{int(col.nullable)}\0I{int(col.identity_generator is not None)}\0"
                         f"D{col.default}\0V{col.domain_check}\0".encode())
            for check in sorted(table.checks):
                h.update(f"X{check}\0".encode())
            for unique in sorted(set(table.uniques)):
                h.update(f"U{','.join(unique)}\0".encode())
            for fk in sorted((fk.columns, fk.parent, fk.parent_columns, fk.on_update,
                              fk.on_delete) for fk in table.foreign_keys):
                h.update(f"F{fk!r}\0".encode())
        return _FINGERPRINT_PREFIX + h.hexdigest()[:16]

    def fingerprint_v1(self) -> str:
        """The fingerprint as nodes before version 2 computed it (tables, column names, exact
        types, collations, keys): what a site installed by such a node recorded."""
        h = hashlib.sha256()
        for name in sorted(self.tables):
            table = self.tables[name]
            h.update(f"T{name}\0K{','.join(table.primary_key)}\0".encode())
            for col in table.columns:
                collate = col.type.collation
                h.update(f"C{col.name}\0{col.type!r}\0".encode())
                if collate is not None:
                    h.update(f"COLLATE {collate!r}\0".encode())
        return h.hexdigest()[:16]

    def fingerprint_like(self, recorded: str) -> str:
        """This schema's fingerprint in the form of ``recorded`` (one an older node stored at
        install), so that the two compare like with like."""
        return self.fingerprint_v1() if fingerprint_version(recorded) == 1 else \
            self.fingerprint()


_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|/\*.*?\*/|--[^\n]*|[A-Za-z0-9_$]+|\S",
                        re.DOTALL)


def normalised_source(text: str | None) -> str | None:
    """Source text (a default, a CHECK) as the engine understands it, the same whatever its
    layout: comments dropped, words outside quotes in capitals, a space only between two
    words. ``DEFAULT NULL`` is no default. None for None."""
    if text is None:
        return None
    out: list[str] = []
    was_word = False
    for token in _SQL_TOKEN.findall(text):
        if token.startswith(("/*", "--")):
            continue
        word = token[0].isalnum() or token[0] in "_$"
        if word and was_word:
            out.append(" ")
        out.append(token if token[0] in "'\"" else token.upper())
        was_word = word
    found = "".join(out)
    return None if found in ("", "DEFAULT NULL") else found


def _rows(con: Connection, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(sql, params)
            rows = []
            for row in cur:
                rows.append(tuple(_read_blob(v) for v in row))
            return rows
        finally:
            cur.close()


def _read_blob(value: object) -> object:
    if hasattr(value, "read") and hasattr(value, "close"):
        try:
            return value.read()
        finally:
            value.close()
    return value


def _trim(value: object) -> str | None:
    return value.strip() if isinstance(value, str) else None


_COLUMNS_SQL = """
SELECT rf.RDB$RELATION_NAME, rf.RDB$FIELD_NAME, rf.RDB$NULL_FLAG, rf.RDB$GENERATOR_NAME,
       f.RDB$FIELD_NAME, f.RDB$FIELD_TYPE, f.RDB$FIELD_SUB_TYPE, f.RDB$FIELD_LENGTH,
       f.RDB$CHARACTER_LENGTH, f.RDB$FIELD_PRECISION, f.RDB$FIELD_SCALE,
       cs.RDB$CHARACTER_SET_NAME, f.RDB$SEGMENT_LENGTH, f.RDB$DIMENSIONS,
       IIF(f.RDB$COMPUTED_BLR IS NULL, 0, 1), f.RDB$NULL_FLAG,
       co.RDB$COLLATION_ID, co.RDB$COLLATION_NAME, co.RDB$COLLATION_ATTRIBUTES,
       co.RDB$BASE_COLLATION_NAME, CAST(co.RDB$SPECIFIC_ATTRIBUTES AS VARCHAR(2000))
FROM RDB$RELATION_FIELDS rf
JOIN RDB$FIELDS f ON f.RDB$FIELD_NAME = rf.RDB$FIELD_SOURCE
LEFT JOIN RDB$CHARACTER_SETS cs ON cs.RDB$CHARACTER_SET_ID = f.RDB$CHARACTER_SET_ID
LEFT JOIN RDB$COLLATIONS co ON co.RDB$CHARACTER_SET_ID = f.RDB$CHARACTER_SET_ID
    AND co.RDB$COLLATION_ID = COALESCE(rf.RDB$COLLATION_ID, f.RDB$COLLATION_ID, 0)
JOIN RDB$RELATIONS r ON r.RDB$RELATION_NAME = rf.RDB$RELATION_NAME
WHERE COALESCE(r.RDB$SYSTEM_FLAG, 0) = 0 AND r.RDB$VIEW_BLR IS NULL {only}
ORDER BY rf.RDB$RELATION_NAME, rf.RDB$FIELD_POSITION
"""


def introspect(con: Connection, selection: TableSelection = TableSelection(),
               include_sync: bool = False, only: str | None = None,
               columns_only: bool = False) -> Schema:
    """Describe the replicable schema of the live database behind ``con``.

    ``include_sync`` describes the sync's own tables instead (the capture module reads its
    image tables' exact column types this way); their triggers are not read. ``only`` reads
    just the table of that exact name (cheap enough for every publish step);
    ``columns_only`` leaves out constraints, triggers and key generators.
    """
    schema = Schema(dialect=con.sql_dialect)
    params: tuple[str, ...] = (only,) if only is not None else ()
    relations = {
        _trim(name): rtype or 0
        for name, rtype in _rows(
            con,
            "SELECT RDB$RELATION_NAME, RDB$RELATION_TYPE FROM RDB$RELATIONS "
            "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND RDB$VIEW_BLR IS NULL"
            + (" AND RDB$RELATION_NAME = ?" if only is not None else ""), params,
        )
    }
    dims: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for fname, _dim, lo, hi in _rows(
        con,
        "SELECT RDB$FIELD_NAME, RDB$DIMENSION, RDB$LOWER_BOUND, RDB$UPPER_BOUND "
        "FROM RDB$FIELD_DIMENSIONS ORDER BY RDB$FIELD_NAME, RDB$DIMENSION",
    ):
        dims[_trim(fname)].append((lo, hi))

    columns: dict[str, list[Column]] = defaultdict(list)
    computed: dict[str, list[str]] = defaultdict(list)
    unsupported: dict[str, list[str]] = defaultdict(list)
    columns_sql = _COLUMNS_SQL.format(
        only="AND rf.RDB$RELATION_NAME = ?" if only is not None else "")
    for row in _rows(con, columns_sql, params):
        (rel, col, rf_null, gen, fsrc, ftype, subtype, length, charlen, prec, scale,
         charset, seglen, _ndims, is_computed, f_null, *collation) = row
        rel, col = _trim(rel), _trim(col)
        if is_computed:
            computed[rel].append(col)
            continue
        text = ftype in (_FT_CHAR, _FT_VARCHAR) or (ftype == _FT_BLOB and subtype == 1)
        ctype = ColumnType(
            field_type=ftype,
            sub_type=subtype or 0,
            length=length or 0,
            char_length=charlen,
            precision=prec or None,
            scale=scale or 0,
            charset=_trim(charset) if text else None,
            segment_length=seglen,
            dimensions=tuple(dims.get(_trim(fsrc), ())),
            collation=_collation(*collation) if text else None,
        )
        try:
            _ = ctype.kind  # raises for a type this version cannot represent
        except UnsupportedType as exc:
            unsupported[rel].append(f"{col} ({exc})")
            continue
        columns[rel].append(
            Column(name=col, type=ctype, nullable=not (rf_null or f_null),
                   identity_generator=_trim(gen))
        )

    keys: dict[str, list[str]] = defaultdict(list)
    for rel, col in _rows(
        con,
        "SELECT rc.RDB$RELATION_NAME, s.RDB$FIELD_NAME FROM RDB$RELATION_CONSTRAINTS rc "
        "JOIN RDB$INDEX_SEGMENTS s ON s.RDB$INDEX_NAME = rc.RDB$INDEX_NAME "
        "WHERE rc.RDB$CONSTRAINT_TYPE = 'PRIMARY KEY' "
        "ORDER BY rc.RDB$RELATION_NAME, s.RDB$FIELD_POSITION",
    ):
        keys[_trim(rel)].append(_trim(col))

    if not include_sync and not columns_only:
        _read_column_sources(con, columns, only)

    left_out: dict[str, str] = {}  # tables not replicated, and why
    for name in sorted(relations):
        if name.startswith(SYNC_PREFIX) != include_sync:
            continue
        if not selection.wants(name):
            left_out[name] = "[tables] leaves it out"
            continue
        if include_sync:
            schema.tables[name] = Table(name, tuple(columns[name]), tuple(keys.get(name, ())))
            continue
        refusal = _refusal(name, relations[name], columns[name], keys.get(name, []),
                           unsupported.get(name, []), schema.dialect)
        if refusal:
            schema.refused.append(Refusal(name, refusal, relations[name] in _TEMPORARY))
            left_out[name] = f"refused: {refusal.split(':', 1)[0]}"
            continue
        schema.tables[name] = Table(name, tuple(columns[name]), tuple(keys[name]))

    if not include_sync and not columns_only:
        _read_constraints(con, schema, left_out if only is None else None)
        _read_triggers(con, schema)
        _read_key_generators(con, schema)
        if only is None:
            _read_database_triggers(con, schema)
    return schema


def _long_text(expr: str, alias: str) -> str:
    """Select list items for a BLOB of source text: a VARCHAR when it is short (no BLOB round
    trips through a server, thousands of columns have defaults), the BLOB when it is not."""
    return (f"CAST(IIF(CHAR_LENGTH({expr}) <= 2000, {expr}, NULL) AS VARCHAR(2000)) {alias}, "
            f"IIF(CHAR_LENGTH({expr}) > 2000, {expr}, NULL) {alias}_LONG")


def _read_column_sources(con: Connection, columns: dict[str, list[Column]],
                         only: str | None) -> None:
    """Each column's effective default (its own, else its domain's) and its domain's CHECK."""
    found: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for rel, col, default, default_long, check, check_long in _rows(
        con,
        "SELECT rf.RDB$RELATION_NAME, rf.RDB$FIELD_NAME, "
        + _long_text("COALESCE(rf.RDB$DEFAULT_SOURCE, f.RDB$DEFAULT_SOURCE)", "D") + ", "
        + _long_text("f.RDB$VALIDATION_SOURCE", "V")
        + " FROM RDB$RELATION_FIELDS rf "
        "JOIN RDB$FIELDS f ON f.RDB$FIELD_NAME = rf.RDB$FIELD_SOURCE "
        "WHERE COALESCE(rf.RDB$SYSTEM_FLAG, 0) = 0 AND (rf.RDB$DEFAULT_SOURCE IS NOT NULL "
        "OR f.RDB$DEFAULT_SOURCE IS NOT NULL OR f.RDB$VALIDATION_SOURCE IS NOT NULL)"
        + (" AND rf.RDB$RELATION_NAME = ?" if only is not None else ""),
        (only,) if only is not None else (),
    ):
        found[(_trim(rel), _trim(col))] = (normalised_source(_text(default_long or default)),
                                           normalised_source(_text(check_long or check)))
    for rel, cols in columns.items():
        for i, col in enumerate(cols):
            if (rel, col.name) in found:
                default, check = found[(rel, col.name)]
                cols[i] = replace(col, default=default, domain_check=check)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


# RDB$COLLATION_ATTRIBUTES bits (Firebird's TEXTTYPE_ATTR_*).
_PAD_SPACE, _CASE_INSENSITIVE, _ACCENT_INSENSITIVE = 1, 2, 4


def _collation(coll_id: int | None, name: str | None, attributes: int | None,
               base: str | None, specific: str | None) -> Collation | None:
    """A text column's collation, None for its charset's default one (id 0)."""
    if not coll_id or name is None:
        return None
    flags = _PAD_SPACE if attributes is None else attributes
    options = ";".join(part for part in (specific or "").split(";")
                       if part.strip() and not part.strip().upper().startswith("COLL-VERSION="))
    return Collation(name=name.strip(), pad_space=bool(flags & _PAD_SPACE),
                     case_insensitive=bool(flags & _CASE_INSENSITIVE),
                     accent_insensitive=bool(flags & _ACCENT_INSENSITIVE),
                     base=_trim(base) or None, attributes=options)


def key_types(con: Connection, table: str) -> tuple[ColumnType, ...] | None:
    """The exact types of ``table``'s primary key columns, in key order (None: no such
    table or no key), for the row identity (``registers.key_identity``). Cheaper than
    :func:`introspect` (no constraints, triggers or generators)."""
    schema = introspect(con, only=table, columns_only=True)
    found = schema.tables.get(table)
    if found is None or not found.primary_key:
        return None
    return tuple(c.type for c in found.key_columns)


def _read_constraints(con: Connection, schema: Schema,
                      left_out: dict[str, str] | None = None) -> None:
    """Foreign keys (both ways, with their actions), UNIQUE constraints or indexes and CHECK
    constraints of replicated tables; with ``left_out`` (the tables that are not replicated,
    and why) also the foreign keys between those and replicated ones. Every foreign key of
    the database is read anyway: finding the ones that cross costs nothing more."""
    fk_parts: dict[str, list[tuple[str, str, str, str, str, str]]] = defaultdict(list)
    for name, child, col, parent, pcol, on_update, on_delete in _rows(
        con,
        "SELECT rc.RDB$CONSTRAINT_NAME, rc.RDB$RELATION_NAME, s.RDB$FIELD_NAME, "
        "prc.RDB$RELATION_NAME, ps.RDB$FIELD_NAME, ref.RDB$UPDATE_RULE, ref.RDB$DELETE_RULE "
        "FROM RDB$RELATION_CONSTRAINTS rc "
        "JOIN RDB$REF_CONSTRAINTS ref ON ref.RDB$CONSTRAINT_NAME = rc.RDB$CONSTRAINT_NAME "
        "JOIN RDB$RELATION_CONSTRAINTS prc ON prc.RDB$CONSTRAINT_NAME = ref.RDB$CONST_NAME_UQ "
        "JOIN RDB$INDEX_SEGMENTS s ON s.RDB$INDEX_NAME = rc.RDB$INDEX_NAME "
        "JOIN RDB$INDEX_SEGMENTS ps ON ps.RDB$INDEX_NAME = prc.RDB$INDEX_NAME "
        "AND ps.RDB$FIELD_POSITION = s.RDB$FIELD_POSITION "
        "WHERE rc.RDB$CONSTRAINT_TYPE = 'FOREIGN KEY' "
        "ORDER BY rc.RDB$CONSTRAINT_NAME, s.RDB$FIELD_POSITION",
    ):
        fk_parts[_trim(name)].append((_trim(child), _trim(col), _trim(parent), _trim(pcol),
                                      _rule(on_update), _rule(on_delete)))
    fks = [ForeignKey(name, parts[0][0], tuple(p[1] for p in parts), parts[0][2],
                      tuple(p[3] for p in parts), parts[0][4], parts[0][5])
           for name, parts in sorted(fk_parts.items())]
    unique_parts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for index, rel, col in _rows(
        con,
        "SELECT i.RDB$INDEX_NAME, i.RDB$RELATION_NAME, s.RDB$FIELD_NAME FROM RDB$INDICES i "
        "JOIN RDB$INDEX_SEGMENTS s ON s.RDB$INDEX_NAME = i.RDB$INDEX_NAME "
        "WHERE i.RDB$UNIQUE_FLAG = 1 AND i.RDB$EXPRESSION_BLR IS NULL "
        "AND COALESCE(i.RDB$INDEX_INACTIVE, 0) = 0 AND NOT EXISTS (SELECT 1 FROM "
        "RDB$RELATION_CONSTRAINTS rc WHERE rc.RDB$INDEX_NAME = i.RDB$INDEX_NAME "
        "AND rc.RDB$CONSTRAINT_TYPE = 'PRIMARY KEY') "
        "ORDER BY i.RDB$INDEX_NAME, s.RDB$FIELD_POSITION",
    ):
        unique_parts[(_trim(rel), _trim(index))].append(_trim(col))
    checks: dict[str, list[str]] = defaultdict(list)
    # A CHECK is two system triggers (before insert, type 1, and before update) of one source.
    for rel, source, source_long in _rows(
        con,
        "SELECT rc.RDB$RELATION_NAME, " + _long_text("t.RDB$TRIGGER_SOURCE", "S")
        + " FROM RDB$RELATION_CONSTRAINTS rc "
        "JOIN RDB$CHECK_CONSTRAINTS cc ON cc.RDB$CONSTRAINT_NAME = rc.RDB$CONSTRAINT_NAME "
        "JOIN RDB$TRIGGERS t ON t.RDB$TRIGGER_NAME = cc.RDB$TRIGGER_NAME "
        "WHERE rc.RDB$CONSTRAINT_TYPE = 'CHECK' AND t.RDB$TRIGGER_TYPE = 1",
    ):
        checks[_trim(rel)].append(normalised_source(_text(source_long or source)) or "")
    for name, table in list(schema.tables.items()):
        uniques = tuple(tuple(cols) for (rel, _i), cols in sorted(unique_parts.items())
                        if rel == name and tuple(cols) != table.primary_key)
        schema.tables[name] = replace(
            table,
            foreign_keys=tuple(fk for fk in fks if fk.table == name),
            referenced_by=tuple(fk for fk in fks if fk.parent == name),
            uniques=tuple(dict.fromkeys(uniques)),
            has_checks=name in checks,
            checks=tuple(sorted(checks.get(name, ()))))
    if left_out is not None:
        for fk in fks:
            if fk.table in schema.tables and fk.parent in left_out:
                schema.crossings.append(Crossing(fk, fk.parent, left_out[fk.parent]))
            elif fk.parent in schema.tables and fk.table in left_out:
                schema.crossings.append(Crossing(fk, fk.table, left_out[fk.table]))


def _rule(text: str | None) -> str:
    """A foreign key's rule; Firebird writes RESTRICT for the default, which is NO ACTION."""
    rule = (text or "").strip().upper()
    return "NO ACTION" if rule in ("", "RESTRICT") else rule


# RDB$RELATION_TYPE of global temporary tables (ON COMMIT PRESERVE / DELETE ROWS).
_TEMPORARY = (4, 5)


def _refusal(name: str, relation_type: int, columns: list[Column], key: list[str],
             unsupported: list[str], dialect: int) -> str | None:
    if relation_type in _TEMPORARY:
        return ("global temporary table: never replicated (its rows are private to one "
                "connection or transaction and vanish with it); nothing to do")
    if relation_type != 0:
        return f"external or virtual table (relation type {relation_type}): cannot be captured"
    if not key:
        shown = name if _PLAIN_NAME.match(name) else quote(name, dialect)
        return (
            "no primary key: its rows cannot be identified across sites, so none of its "
            "changes is replicated. To do: add a primary key on columns that identify a row "
            f"(ALTER TABLE {shown} ADD PRIMARY KEY (...), then siege-node install), or list "
            f"it in the node's config to keep it to each site ([tables] exclude = "
            f"[\"{name}\"]), which also ends this message"
        )
    if unsupported:
        return f"unsupported column types: {', '.join(unsupported)}; exclude the table"
    by_name = {c.name: c for c in columns}
    for k in key:
        if by_name[k].type.is_blob or by_name[k].type.dimensions:
            return f"primary key column {k} is a BLOB or ARRAY: cannot identify rows"
    reserved = [c.name for c in columns if c.name.startswith(SYNC_PREFIX)]
    if reserved:
        return f"columns {', '.join(reserved)} use the reserved prefix {SYNC_PREFIX}; rename them"
    if dialect == 1:
        odd = [n for n in [name, *by_name] if not _PLAIN_NAME.match(n)]
        if odd:
            return (f"names {', '.join(odd)} need quotes, which dialect 1 cannot write; "
                    "rename them or exclude the table")
    return None


def _read_triggers(con: Connection, schema: Schema) -> None:
    for name, rel, ttype, seq, inactive, source in _rows(
        con,
        "SELECT RDB$TRIGGER_NAME, RDB$RELATION_NAME, RDB$TRIGGER_TYPE, RDB$TRIGGER_SEQUENCE, "
        "RDB$TRIGGER_INACTIVE, RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS "
        "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND RDB$RELATION_NAME IS NOT NULL "
        "ORDER BY RDB$RELATION_NAME, RDB$TRIGGER_SEQUENCE, RDB$TRIGGER_NAME",
    ):
        name, rel = _trim(name), _trim(rel)
        if name.startswith(SYNC_PREFIX) or rel not in schema.tables:
            continue
        if isinstance(source, bytes):
            source = source.decode("utf-8", "replace")
        schema.triggers.setdefault(rel, []).append(
            AppTrigger(name, rel, ttype, seq or 0, not inactive, source or None)
        )


def _read_database_triggers(con: Connection, schema: Schema) -> None:
    """The application's database-level triggers (connect, transaction, DDL), and which
    replicated tables each writes — itself or through the procedures it runs."""
    uses: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
    for dependent, dtype, on, on_type in _rows(
        con,
        "SELECT DISTINCT RDB$DEPENDENT_NAME, RDB$DEPENDENT_TYPE, RDB$DEPENDED_ON_NAME, "
        "RDB$DEPENDED_ON_TYPE FROM RDB$DEPENDENCIES WHERE RDB$DEPENDENT_TYPE IN (2, 5) "
        "AND RDB$DEPENDED_ON_TYPE IN (0, 5)",
    ):
        uses[(_trim(dependent), dtype)].add((_trim(on), on_type))
    found = []
    for name, ttype, seq, inactive, source in _rows(
        con,
        "SELECT RDB$TRIGGER_NAME, RDB$TRIGGER_TYPE, RDB$TRIGGER_SEQUENCE, "
        "RDB$TRIGGER_INACTIVE, RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS "
        "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0 AND RDB$RELATION_NAME IS NULL "
        "ORDER BY RDB$TRIGGER_TYPE, RDB$TRIGGER_SEQUENCE, RDB$TRIGGER_NAME",
    ):
        name = _trim(name)
        if name.startswith(SYNC_PREFIX):
            continue
        found.append((name, ttype, seq or 0, not inactive, _text(source) or None))
    if not found:
        return
    # The procedures they run, however deep, and those procedures' sources.
    reached = {name: _reached(uses, (name, 2)) for name, *_ in found}
    wanted = sorted(set().union(*reached.values()))
    sources: dict[str, str] = {}
    for at in range(0, len(wanted), 500):
        part = wanted[at:at + 500]
        for pname, psource in _rows(
            con,
            "SELECT RDB$PROCEDURE_NAME, RDB$PROCEDURE_SOURCE FROM RDB$PROCEDURES "
            f"WHERE RDB$PACKAGE_NAME IS NULL AND RDB$PROCEDURE_NAME IN "
            f"({', '.join('?' * len(part))})", part,
        ):
            sources[_trim(pname)] = _text(psource) or ""
    for name, ttype, seq, active, source in found:
        texts = [source or ""] + [sources.get(p, "") for p in sorted(reached[name])]
        written: set[str] = set()
        dynamic = False
        for text in texts:
            plain = normalised_source(text) or ""
            dynamic = dynamic or "EXECUTE STATEMENT" in plain
            for target in _WRITE.findall(plain):
                table = target[1:-1].replace('""', '"') if target.startswith('"') else target
                if table in schema.tables:
                    written.add(table)
        schema.database_triggers.append(DatabaseTrigger(
            name, ttype, seq, active, source, tuple(sorted(written)), dynamic))


def _reached(uses: dict[tuple[str, int], set[tuple[str, int]]],
             start: tuple[str, int]) -> set[str]:
    """The procedures ``start`` runs, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for on, on_type in uses.get(todo.pop(), ()):
            if on_type == 5 and on not in seen:
                seen.add(on)
                todo.append((on, 5))
    return seen


def _read_key_generators(con: Connection, schema: Schema) -> None:
    """Generators that feed a replicated table's keys: identity columns, and generators its
    BEFORE INSERT triggers use (where keys are assigned)."""
    by_trigger: dict[str, list[str]] = defaultdict(list)
    for trig, gen in _rows(
        con,
        "SELECT RDB$DEPENDENT_NAME, RDB$DEPENDED_ON_NAME FROM RDB$DEPENDENCIES "
        "WHERE RDB$DEPENDENT_TYPE = 2 AND RDB$DEPENDED_ON_TYPE = 14",
    ):
        by_trigger[_trim(trig)].append(_trim(gen))
    for name, table in schema.tables.items():
        gens: list[str] = [c.identity_generator for c in table.columns if c.identity_generator]
        for trig in schema.triggers.get(name, []):
            if trig.before and "INSERT" in trig.actions:
                gens.extend(by_trigger.get(trig.name, []))
        if gens:
            schema.key_generators[name] = sorted(set(g for g in gens if g))


def column_list(columns: Iterable[Column], dialect: int, prefix: str = "") -> str:
    return ", ".join(prefix + quote(c.name, dialect) for c in columns)
