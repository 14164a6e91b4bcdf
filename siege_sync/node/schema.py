"""Introspection of a live Firebird 3 database: what can be replicated, and why not.

Owns the description of tables, columns, exact column types, primary keys, the constraints
the applier must decide the same way everywhere (foreign keys, UNIQUE), application triggers
and the generators that feed keys, read from the system tables. Read-only: it must
never change the database. The sync's own objects (``SYNC$...``), views, system and temporary
tables and computed columns are never part of the replicated schema.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from firebird.driver import Connection

from .database import READ_COMMITTED_RW, quote, transaction

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

    @property
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
    nullable: bool = True
    identity_generator: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    """``table (columns)`` references ``parent (parent_columns)``. ``table`` may be a table
    that is not replicated (its rows still keep a parent from being deleted)."""

    name: str
    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()  # this table's references to parents
    referenced_by: tuple[ForeignKey, ...] = ()  # other tables' references to this one
    uniques: tuple[tuple[str, ...], ...] = ()  # UNIQUE constraints and indexes, key excluded
    has_checks: bool = False  # CHECK constraints (a merged row may break them)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.column(name) for name in self.primary_key)

    @property
    def has_blobs(self) -> bool:
        return any(c.type.is_blob or c.type.dimensions for c in self.columns)


@dataclass(frozen=True)
class Refusal:
    """A table that will not be replicated, why, and what the operator can do."""

    table: str
    reason: str


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


@dataclass
class Schema:
    dialect: int
    tables: dict[str, Table] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    triggers: dict[str, list[AppTrigger]] = field(default_factory=dict)  # by table
    key_generators: dict[str, list[str]] = field(default_factory=dict)  # table -> generators

    def fingerprint(self) -> str:
        """A hash of what is replicated: tables, column names and exact types, keys."""
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

    for name in sorted(relations):
        if name.startswith(SYNC_PREFIX) != include_sync or not selection.wants(name):
            continue
        if include_sync:
            schema.tables[name] = Table(name, tuple(columns[name]), tuple(keys.get(name, ())))
            continue
        refusal = _refusal(name, relations[name], columns[name], keys.get(name, []),
                           unsupported.get(name, []), schema.dialect)
        if refusal:
            schema.refused.append(Refusal(name, refusal))
            continue
        schema.tables[name] = Table(name, tuple(columns[name]), tuple(keys[name]))

    if not include_sync and not columns_only:
        _read_constraints(con, schema)
        _read_triggers(con, schema)
        _read_key_generators(con, schema)
    return schema


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


def _read_constraints(con: Connection, schema: Schema) -> None:
    """Foreign keys (both ways), UNIQUE constraints or indexes, and whether CHECK
    constraints exist, for replicated tables."""
    fk_parts: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for name, child, col, parent, pcol in _rows(
        con,
        "SELECT rc.RDB$CONSTRAINT_NAME, rc.RDB$RELATION_NAME, s.RDB$FIELD_NAME, "
        "prc.RDB$RELATION_NAME, ps.RDB$FIELD_NAME FROM RDB$RELATION_CONSTRAINTS rc "
        "JOIN RDB$REF_CONSTRAINTS ref ON ref.RDB$CONSTRAINT_NAME = rc.RDB$CONSTRAINT_NAME "
        "JOIN RDB$RELATION_CONSTRAINTS prc ON prc.RDB$CONSTRAINT_NAME = ref.RDB$CONST_NAME_UQ "
        "JOIN RDB$INDEX_SEGMENTS s ON s.RDB$INDEX_NAME = rc.RDB$INDEX_NAME "
        "JOIN RDB$INDEX_SEGMENTS ps ON ps.RDB$INDEX_NAME = prc.RDB$INDEX_NAME "
        "AND ps.RDB$FIELD_POSITION = s.RDB$FIELD_POSITION "
        "WHERE rc.RDB$CONSTRAINT_TYPE = 'FOREIGN KEY' "
        "ORDER BY rc.RDB$CONSTRAINT_NAME, s.RDB$FIELD_POSITION",
    ):
        fk_parts[_trim(name)].append((_trim(child), _trim(col), _trim(parent), _trim(pcol)))
    fks = [ForeignKey(name, parts[0][0], tuple(p[1] for p in parts), parts[0][2],
                      tuple(p[3] for p in parts)) for name, parts in sorted(fk_parts.items())]
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
    checked = {_trim(rel) for (rel,) in _rows(
        con, "SELECT DISTINCT RDB$RELATION_NAME FROM RDB$RELATION_CONSTRAINTS "
             "WHERE RDB$CONSTRAINT_TYPE = 'CHECK'")}
    for name, table in list(schema.tables.items()):
        uniques = tuple(tuple(cols) for (rel, _i), cols in sorted(unique_parts.items())
                        if rel == name and tuple(cols) != table.primary_key)
        schema.tables[name] = replace(
            table,
            foreign_keys=tuple(fk for fk in fks if fk.table == name),
            referenced_by=tuple(fk for fk in fks if fk.parent == name),
            uniques=tuple(dict.fromkeys(uniques)),
            has_checks=name in checked)


def _refusal(name: str, relation_type: int, columns: list[Column], key: list[str],
             unsupported: list[str], dialect: int) -> str | None:
    if relation_type in (4, 5):
        return "global temporary table: its rows are private to a session, nothing to sync"
    if relation_type != 0:
        return f"external or virtual table (relation type {relation_type}): cannot be captured"
    if not key:
        return (
            "no primary key: rows cannot be identified across sites. Add a primary key "
            f"(ALTER TABLE {name} ADD CONSTRAINT ... PRIMARY KEY (...)) or exclude the table "
            "in the node's config ([tables] exclude)"
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
