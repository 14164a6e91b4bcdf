"""The capture objects in a site's database: install, upgrade, uninstall.

Owns every ``SYNC$`` object: one image table per replicated table (``SYNC$I<n>``: one row
per captured change — who, when, which transaction, a change mask, and the changed values in
the table's own column types so every value is kept exactly; ids from ``SYNC$LOG_SEQ``), the
log ``SYNC$LOG`` (clock markers and capture failures), the generated capture triggers
(``SYNC$TR<n>``), the state, table-registry, heartbeat, event and BLOB tables, and the
guards in application triggers.

Rules this module must keep (DESIGN §3.1):
* a capture trigger only INSERTs (never updates a sync table: inside an application's
  SNAPSHOT transaction that would raise update conflicts and fail the customer's invoice);
* its privileges are granted to the trigger itself, so an application connecting as an
  ordinary user needs nothing more;
* an update that changes no byte is not logged, and any byte change is (text is compared
  as bytes, never through its collation); a primary-key change — a byte change of a key
  column, even one the collation calls equal — is a delete of the old key and an insert of
  the new one with the full image;
* it never touches the application's own objects except the marked guards.

Image tables only ever gain columns (never dropped or reordered), so the change mask of an
old entry still lines up with the image columns after an upgrade.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from firebird.driver import Connection

from . import guard
from .config import GeneratorRange
from .database import READ_COMMITTED_RW, SNAPSHOT_RW, literal, quote, transaction
from .schema import Column, ColumnType, Kind, Schema, Table, TableSelection, introspect

log = logging.getLogger(__name__)

LOG_TABLE = "SYNC$LOG"
LOG_SEQ = "SYNC$LOG_SEQ"
STATE_TABLE = "SYNC$STATE"
TABLES_TABLE = "SYNC$TABLES"
HEARTBEAT_TABLE = "SYNC$HEARTBEAT"
EVENTS_TABLE = "SYNC$EVENTS"  # published events, stored verbatim (see eventlog.py)
BLOBS_TABLE = "SYNC$BLOBS"  # large BLOB values referenced by events, by sha256
ROWS_TABLE = "SYNC$ROWS"  # each row's merge registers (see registers.py)
CONFLICTS_TABLE = "SYNC$CONFLICTS"  # losing versions on record (see apply.py)
VECTOR_TABLE = "SYNC$VECTOR"  # per origin: what this database applied (see apply.py)
PARKED_TABLE = "SYNC$PARKED"  # origins whose next transaction cannot apply (parking.py)
REPORTS_TABLE = "SYNC$REPORTS"  # sync round reports, kept by whichever node coordinates
# Events of tables this site does not have yet (another site upgraded first): kept, applied
# once the table is installed here (catchup.py).
DEFERRED_TABLE = "SYNC$DEFERRED"
CAPTURED_STATE = "captured:"  # + table number: its columns and types when capture was installed
HEARTBEAT_NO = 0  # the heartbeat table's number: it travels through the capture path too
IMAGE_PREFIX = "SYNC$I"
TRIGGER_PREFIX = "SYNC$TR"
IMAGE_ID = "SYNC$ID"
IMAGE_MASK = "SYNC$MASK"
# Every change is one row of its table's image: who, when and which transaction, then the
# change mask and the values. One INSERT per change keeps the trigger cheap (measured: each
# extra INSERT costs the application about as much as its own row).
IMAGE_META = ("SYNC$ID", "SYNC$TX", "SYNC$OP", "SYNC$AT", "SYNC$USR", "SYNC$ADDR",
              "SYNC$FLAGS", "SYNC$MASK")
SCHEMA_VERSION = "1"
# The publisher's state rows (publish.py), created here so that concurrent publishers only
# ever update (and lock) them: two first inserts of one row would clash.
COUNTERS = (("seq", "0"), ("chain_head", ""), ("last_stamp", "0"), ("incarnation", "1"),
            ("marker_offset_us", ""), ("marker_at_us", ""), ("db_created", ""))
# Registers are keyed by the engine's identity of each key since this version (install
# moves those of an older install once).
KEY_IDENTITY_STATE, KEY_IDENTITY_VERSION = "key_identity", "1"
# A row's registers up to this size stay inline (no BLOB round trip), larger in REGS_BLOB.
INLINE_REGISTERS = 4000

# Operations: I/U/D in image rows; in SYNC$LOG, 'M' is a clock marker written by the node
# (see clock.py) and 'E' records that a capture trigger failed (the application's change
# went through, its capture did not).
OP_INSERT, OP_UPDATE, OP_DELETE, OP_MARKER, OP_ERROR = "I", "U", "D", "M", "E"
# FLAGS bits: the change was made inside a transaction the node was applying; the image
# holds every column's value (a delete's old row; an update's new values, BLOBs only when
# written) — image rows captured by older triggers hold the written columns only.
FLAG_DURING_APPLY = 1
FLAG_FULL_IMAGE = 2


def id_type(dialect: int) -> str:
    """Dialect 1 has no BIGINT; a DOUBLE holds every id below 2^53 exactly."""
    return "BIGINT" if dialect == 3 else "DOUBLE PRECISION"


def heartbeat_table(dialect: int) -> Table:
    return Table(
        HEARTBEAT_TABLE,
        (
            Column("SITE", ColumnType(37, length=252, char_length=63, charset="UTF8"), False),
            Column("BEAT_AT", ColumnType(35)),
            Column("ROUND_NO", ColumnType(16 if dialect == 3 else 27)),
        ),
        ("SITE",),
    )


@dataclass
class InstallReport:
    created: list[str] = field(default_factory=list)
    upgraded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    guarded: list[str] = field(default_factory=list)
    unguardable: list[str] = field(default_factory=list)  # source stripped by the vendor
    generators: list[str] = field(default_factory=list)
    schema: Schema | None = None


def _ddl(con: Connection, sql: str) -> None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        tm.execute_immediate(sql)


def _query(con: Connection, sql: str, params: Iterable[object] = ()) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(sql, tuple(params))
            return cur.fetchall()
        finally:
            cur.close()


def _relation_names(con: Connection) -> set[str]:
    return {r[0].strip() for r in _query(con, "SELECT RDB$RELATION_NAME FROM RDB$RELATIONS")}


def _generator_names(con: Connection) -> set[str]:
    return {r[0].strip() for r in _query(con, "SELECT RDB$GENERATOR_NAME FROM RDB$GENERATORS")}


def is_installed(con: Connection) -> bool:
    return LOG_TABLE in _relation_names(con)


def _core_ddl(dialect: int) -> list[tuple[str, str]]:
    idt = id_type(dialect)
    hb = heartbeat_table(dialect)
    hb_cols = ", ".join(f"{quote(c.name, dialect)} {c.type.ddl()}"
                        + ("" if c.nullable else " NOT NULL") for c in hb.columns)
    return [
        (STATE_TABLE, f"CREATE TABLE {STATE_TABLE} (NAME VARCHAR(63) CHARACTER SET UTF8 NOT NULL "
                      f"PRIMARY KEY, VAL VARCHAR(4000) CHARACTER SET UTF8)"),
        (TABLES_TABLE, f"CREATE TABLE {TABLES_TABLE} (TBL_NO INTEGER NOT NULL PRIMARY KEY, "
                       f"NAME VARCHAR(31) CHARACTER SET UTF8 NOT NULL UNIQUE, "
                       f"KEY_COLS VARCHAR(2000) CHARACTER SET UTF8, ACTIVE SMALLINT)"),
        (LOG_SEQ, f"CREATE SEQUENCE {LOG_SEQ}"),
        (LOG_TABLE, f"CREATE TABLE {LOG_TABLE} (LOG_ID {idt} NOT NULL PRIMARY KEY, "
                    f"TX_ID {idt}, TBL_NO INTEGER, OP CHAR(1) CHARACTER SET ASCII, "
                    f"CAPTURED TIMESTAMP, USR VARCHAR(63) CHARACTER SET UTF8, "
                    f"ADDR VARCHAR(255) CHARACTER SET UTF8, FLAGS SMALLINT, UTC_US {idt}, "
                    f"DETAIL VARCHAR(255) CHARACTER SET UTF8)"),
        (HEARTBEAT_TABLE, f"CREATE TABLE {HEARTBEAT_TABLE} ({hb_cols}, PRIMARY KEY (SITE))"),
        # Runs of consecutive events of one origin, verbatim (see eventlog.py).
        (EVENTS_TABLE, f"CREATE TABLE {EVENTS_TABLE} (ORIGIN VARCHAR(63) CHARACTER SET UTF8 "
                       f"NOT NULL, INCARNATION INTEGER NOT NULL, FIRST_SEQ {idt} NOT NULL, "
                       f"LAST_SEQ {idt} NOT NULL, LAST_STAMP {idt} NOT NULL, "
                       f"HEAD CHAR(32) CHARACTER SET OCTETS NOT NULL, BODY BLOB SUB_TYPE 0 "
                       f"NOT NULL, PRIMARY KEY (ORIGIN, INCARNATION, FIRST_SEQ))"),
        (BLOBS_TABLE, f"CREATE TABLE {BLOBS_TABLE} (SHA256 CHAR(32) CHARACTER SET OCTETS "
                      f"NOT NULL PRIMARY KEY, LEN {idt} NOT NULL, DATA BLOB SUB_TYPE 0)"),
        (ROWS_TABLE, f"CREATE TABLE {ROWS_TABLE} (TBL_NO INTEGER NOT NULL, "
                     f"KEY_HASH CHAR(32) CHARACTER SET OCTETS NOT NULL, "
                     f"MAX_WALL {idt} NOT NULL, "
                     f"REGS VARCHAR({INLINE_REGISTERS}) CHARACTER SET OCTETS, "
                     f"REGS_BLOB BLOB SUB_TYPE 0, PRIMARY KEY (TBL_NO, KEY_HASH))"),
        # IDENT: sha256 of (table, key, loss identity) — the same at every site.
        (CONFLICTS_TABLE, f"CREATE TABLE {CONFLICTS_TABLE} (IDENT CHAR(32) CHARACTER SET "
                          f"OCTETS NOT NULL PRIMARY KEY, TBL_NO INTEGER NOT NULL, "
                          f"KEY_HASH CHAR(32) CHARACTER SET OCTETS NOT NULL, "
                          f"KIND VARCHAR(20) CHARACTER SET ASCII NOT NULL, "
                          f"GEN VARCHAR(200) CHARACTER SET UTF8 NOT NULL, "
                          f"LOSER VARCHAR(200) CHARACTER SET UTF8 NOT NULL, "
                          f"COL VARCHAR(63) CHARACTER SET UTF8, "
                          f"WINNER VARCHAR(200) CHARACTER SET UTF8, "
                          f"VAL BLOB SUB_TYPE 0, RECORDED TIMESTAMP, "
                          f"KEY_DATA VARCHAR(4000) CHARACTER SET OCTETS, REAPPLIED TIMESTAMP, "
                          f"DECIDE SMALLINT)"),
        (VECTOR_TABLE, f"CREATE TABLE {VECTOR_TABLE} (ORIGIN VARCHAR(63) CHARACTER SET UTF8 "
                       f"NOT NULL, INCARNATION INTEGER NOT NULL, APPLIED {idt} NOT NULL, "
                       f"HEAD CHAR(32) CHARACTER SET OCTETS, PRIMARY KEY (ORIGIN, INCARNATION))"),
        (PARKED_TABLE, f"CREATE TABLE {PARKED_TABLE} (ORIGIN VARCHAR(63) CHARACTER SET UTF8 "
                       f"NOT NULL, INCARNATION INTEGER NOT NULL, SEQ {idt} NOT NULL, "
                       f"REASON VARCHAR(2000) CHARACTER SET UTF8, FIRST_SEEN TIMESTAMP, "
                       f"LAST_SEEN TIMESTAMP, ATTEMPTS INTEGER, "
                       f"PRIMARY KEY (ORIGIN, INCARNATION))"),
        (DEFERRED_TABLE, f"CREATE TABLE {DEFERRED_TABLE} (ORD {idt} NOT NULL PRIMARY KEY, "
                         f"ORIGIN VARCHAR(63) CHARACTER SET UTF8 NOT NULL, "
                         f"INCARNATION INTEGER NOT NULL, SEQ {idt} NOT NULL, "
                         f"TBL VARCHAR(63) CHARACTER SET UTF8 NOT NULL, BODY BLOB SUB_TYPE 0, "
                         f"RECORDED TIMESTAMP)"),
        (REPORTS_TABLE, f"CREATE TABLE {REPORTS_TABLE} (ID INTEGER NOT NULL PRIMARY KEY, "
                        f"STARTED TIMESTAMP, ENDED TIMESTAMP, OUTCOME VARCHAR(20), "
                        f"BODY BLOB SUB_TYPE 0)"),
    ]


def install(con: Connection, selection: TableSelection = TableSelection(),
            fire: Iterable[str] = (), generators: Iterable[GeneratorRange] = ()) -> InstallReport:
    """Create or upgrade the capture objects for the live schema. Idempotent."""
    report = InstallReport()
    dialect = con.sql_dialect
    existing = _relation_names(con) | _generator_names(con)
    for name, ddl in _core_ddl(dialect):
        if name not in existing:
            _ddl(con, ddl)
            report.created.append(name)
    schema = introspect(con, selection)
    report.schema = schema
    numbers = _table_numbers(con)
    wanted = {HEARTBEAT_TABLE: heartbeat_table(dialect), **schema.tables}
    for name, table in wanted.items():
        number = numbers.get(name)
        if number is None:
            number = HEARTBEAT_NO if name == HEARTBEAT_TABLE else max(
                [n for n in numbers.values()] + [0]) + 1
            with transaction(con) as tm:
                tm.cursor().execute(
                    f"INSERT INTO {TABLES_TABLE} (TBL_NO, NAME, KEY_COLS, ACTIVE) "
                    "VALUES (?, ?, ?, 1)", (number, name, ",".join(table.primary_key)))
            numbers[name] = number
        else:
            with transaction(con) as tm:
                tm.cursor().execute(
                    f"UPDATE {TABLES_TABLE} SET KEY_COLS = ?, ACTIVE = 1 WHERE TBL_NO = ?",
                    (",".join(table.primary_key), number))
        changed = _ensure_image(con, table, number, dialect)
        _ddl(con, capture_trigger_sql(table, number, image_columns(con, number), dialect))
        _grant(con, number)
        if changed == "upgraded":
            report.upgraded.append(f"{name} (as {IMAGE_PREFIX}{number})")
        elif changed == "created":
            report.created.append(f"{name} (as {IMAGE_PREFIX}{number})")
    for name, number in numbers.items():
        if name not in wanted:
            _drop_trigger(con, number)
            with transaction(con) as tm:
                tm.cursor().execute(f"UPDATE {TABLES_TABLE} SET ACTIVE = 0 WHERE TBL_NO = ?",
                                    (number,))
            report.removed.append(f"capture of {name} (no longer replicated)")
    _apply_guards(con, schema, frozenset(fire), report)
    for gen in generators:
        report.generators.append(_set_generator_range(con, gen))
    set_state(con, "schema_version", SCHEMA_VERSION)
    set_state(con, "schema_fingerprint", schema.fingerprint())
    for name, table in schema.tables.items():
        # What capture was installed for (upgrade.drift compares the live schema with it).
        set_state(con, f"{CAPTURED_STATE}{numbers[name]}", captured_shape(table))
    for name, initial in COUNTERS:
        if get_state(con, name) is None:
            set_state(con, name, initial)
    if get_state(con, KEY_IDENTITY_STATE) != KEY_IDENTITY_VERSION:
        _rekey(con, schema, numbers)
    if get_state(con, "epoch") is None:
        # A random identity for this database's life; a copy restored elsewhere keeps it,
        # a fresh install never reuses one (DESIGN §3.6).
        set_state(con, "epoch", secrets.token_hex(16))
    return report


def _rekey(con: Connection, schema: Schema, numbers: dict[str, int]) -> None:
    """Once per database: move the registers of rows whose key the engine compares other
    than by bytes (collations, trailing blanks) to their identity (registers.key_identity).
    Registers were keyed by exact bytes before; a fresh install has none to move."""
    # registers builds on this module's tables: imported here to keep the import one-way.
    from . import registers

    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            for name, table in schema.tables.items():
                moved = registers.rekey(cur, numbers[name], table, schema.dialect)
                if moved:
                    log.info("%s: registers of %d rows moved to their key identity", name,
                             moved)
        finally:
            cur.close()
    set_state(con, KEY_IDENTITY_STATE, KEY_IDENTITY_VERSION)


def _table_numbers(con: Connection) -> dict[str, int]:
    return {name: no for no, name in _query(con, f"SELECT TBL_NO, NAME FROM {TABLES_TABLE}")}


def table_registry(con: Connection) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Table number -> (table name, key column names), for every table ever captured."""
    return {
        no: (name, tuple(k for k in (keys or "").split(",") if k))
        for no, name, keys in _query(con, f"SELECT TBL_NO, NAME, KEY_COLS FROM {TABLES_TABLE}")
    }


def image_columns(con: Connection, number: int) -> list[Column]:
    """The data columns of an image table, in position order (the change mask's order)."""
    name = f"{IMAGE_PREFIX}{number}"
    image = introspect(con, include_sync=True, only=name).tables.get(name)
    if image is None:
        return []
    return [c for c in image.columns if c.name not in IMAGE_META]


def image_tables(con: Connection) -> list[int]:
    """Numbers of the image tables that exist (a table no longer replicated keeps its image
    until its captured changes are published)."""
    names = _relation_names(con)
    return sorted(no for no in table_registry(con) if f"{IMAGE_PREFIX}{no}" in names)


def _ensure_image(con: Connection, table: Table, number: int, dialect: int) -> str | None:
    name = f"{IMAGE_PREFIX}{number}"
    current = {c.name: c for c in image_columns(con, number)}
    if not current and name not in _relation_names(con):
        cols = ", ".join(f"{quote(c.name, dialect)} {c.type.ddl()}" for c in table.columns)
        idt = id_type(dialect)
        _ddl(con, f"CREATE TABLE {name} (SYNC$ID {idt} NOT NULL PRIMARY KEY, SYNC$TX {idt}, "
                  f"SYNC$OP CHAR(1) CHARACTER SET ASCII, SYNC$AT TIMESTAMP, "
                  f"SYNC$USR VARCHAR(63) CHARACTER SET UTF8, "
                  f"SYNC$ADDR VARCHAR(255) CHARACTER SET UTF8, SYNC$FLAGS SMALLINT, "
                  f"SYNC$MASK VARCHAR(4000) CHARACTER SET ASCII, {cols})")
        return "created"
    changed = None
    for col in table.columns:
        have = current.get(col.name)
        if have is None:
            _ddl(con, f"ALTER TABLE {name} ADD {quote(col.name, dialect)} {col.type.ddl()}")
            changed = "upgraded"
        elif have.type.ddl() != col.type.ddl():
            # Widening keeps the column's position, so old masks stay aligned.
            _ddl(con, f"ALTER TABLE {name} ALTER {quote(col.name, dialect)} "
                      f"TYPE {col.type.ddl()}")
            changed = "upgraded"
    return changed


def capture_trigger_sql(table: Table, number: int, image: list[Column], dialect: int) -> str:
    """The capture trigger of one table: one INSERT into its image table per change (two
    for a key change); a failure is recorded in the log instead of failing the application."""
    q = lambda name: quote(name, dialect)  # noqa: E731
    live = {c.name for c in table.columns}
    key = table.primary_key
    image_names = [c.name for c in image]

    def change_insert(op: str, values: list[str], mask: str, flags: str = ":F") -> str:
        cols = ", ".join(list(IMAGE_META) + [q(n) for n in image_names])
        return (f"INSERT INTO {IMAGE_PREFIX}{number} ({cols}) VALUES (NEXT VALUE FOR {LOG_SEQ}, "
                f"CURRENT_TRANSACTION, '{op}', CAST('NOW' AS TIMESTAMP), CURRENT_USER, "
                f"RDB$GET_CONTEXT('SYSTEM', 'CLIENT_ADDRESS'), {flags}, {mask}, "
                f"{', '.join(values)});")

    full_mask = literal("".join("1" if n in live else "0" for n in image_names))
    key_mask = literal("".join("1" if n in key else "0" for n in image_names))
    new_full = [f"NEW.{q(n)}" if n in live else "NULL" for n in image_names]
    # A delete keeps the whole old row and an update every column's new value (BLOBs only
    # when written): the publisher needs them for a row its registers do not know — it
    # predates install — so that the row can be restored whole anywhere (DESIGN §3.1).
    old_full = [f"OLD.{q(n)}" if n in live else "NULL" for n in image_names]
    full_image = f":F + {FLAG_FULL_IMAGE}"
    key_changed = " OR ".join(changed_condition(table.column(k), dialect) for k in key)
    mask_parts = []
    new_changed = []
    for col in image:
        n = col.name
        if n not in live:
            mask_parts.append("'0'")
            new_changed.append("NULL")
        elif n in key:
            mask_parts.append("'0'")
            new_changed.append(f"NEW.{q(n)}")
        else:
            if col.type.dimensions:
                # Firebird cannot compare two ARRAYs (it fails the statement at run time)
                # nor put one in an expression: any non-null array counts as written here,
                # and the publisher drops it when it equals the registers' value.
                mask_parts.append(f"IIF(NEW.{q(n)} IS NULL AND OLD.{q(n)} IS NULL, '0', '1')")
                new_changed.append(f"NEW.{q(n)}")
                continue
            cond = changed_condition(table.column(n), dialect)
            mask_parts.append(f"IIF({cond}, '1', '0')")
            if col.type.is_blob:  # copying an unchanged BLOB on every update costs too much
                new_changed.append(f"IIF({cond}, NEW.{q(n)}, NULL)")
            else:
                new_changed.append(f"NEW.{q(n)}")
    unchanged = literal("0" * len(image_names))
    mask_expr = " || ".join(mask_parts) if mask_parts else "''"
    return f"""CREATE OR ALTER TRIGGER {TRIGGER_PREFIX}{number} FOR {q(table.name)}
ACTIVE AFTER INSERT OR UPDATE OR DELETE POSITION 32000 AS
DECLARE F SMALLINT;
DECLARE M VARCHAR(4000) CHARACTER SET ASCII;
BEGIN
  /* generated by siege-sync: capture only INSERTs into its own log */
  /* Written inside the node's apply (a cascade, a trigger set to fire): flagged. A repair
     is this site's own change. */
  F = IIF(COALESCE(RDB$GET_CONTEXT('USER_TRANSACTION', '{guard.APPLY_CONTEXT}'),
                   '{guard.REPAIR_CONTEXT}') = '{guard.REPAIR_CONTEXT}', 0, {FLAG_DURING_APPLY});
  /* The node applying other sites' changes to this very table: already an event. */
  IF (RDB$GET_CONTEXT('USER_TRANSACTION', '{guard.APPLY_CONTEXT}') = '{number}') THEN EXIT;
  BEGIN
  IF (DELETING OR (UPDATING AND ({key_changed}))) THEN
    {change_insert(OP_DELETE, old_full, key_mask, full_image)}
  IF (INSERTING OR (UPDATING AND ({key_changed}))) THEN
    {change_insert(OP_INSERT, new_full, full_mask)}
  ELSE IF (UPDATING) THEN
  BEGIN
    M = {mask_expr};
    IF (M <> {unchanged}) THEN
      {change_insert(OP_UPDATE, new_changed, ":M", full_image)}
  END
  WHEN ANY DO
    /* Never fail the application's transaction: record that capture failed, loudly. */
    INSERT INTO {LOG_TABLE} (LOG_ID, TX_ID, TBL_NO, OP, CAPTURED, USR, ADDR, FLAGS, DETAIL)
    VALUES (NEXT VALUE FOR {LOG_SEQ}, CURRENT_TRANSACTION, {number}, '{OP_ERROR}',
            CAST('NOW' AS TIMESTAMP), CURRENT_USER, RDB$GET_CONTEXT('SYSTEM', 'CLIENT_ADDRESS'),
            :F, 'capture failed: gdscode ' || GDSCODE || ', sqlstate ' || SQLSTATE);
  END
END"""


def changed_condition(column: Column, dialect: int) -> str:
    """PSQL that is true when an UPDATE changed ``column``'s stored value (DESIGN §3.1:
    exact means bytes).

    ``IS DISTINCT FROM`` on text follows the column's collation and PAD SPACE: a fix of
    ``Hélène`` to ``helene`` in a ``*_CI_AI`` column, or ``'abc'`` to ``'abc  '``, compares
    equal. Text is therefore compared as OCTETS, plus its byte length (OCTETS pads with NUL
    when comparing: ``'ab'`` equals ``'ab' || x'00'``). Text BLOBs compare as binary BLOBs
    (contents, byte for byte). Other types compare by value, which is their stored value.
    """
    n = quote(column.name, dialect)
    ctype = column.type
    kind = ctype.element_kind
    if kind in (Kind.CHAR, Kind.VARCHAR) and not ctype.dimensions:
        octets = f"VARCHAR({max(ctype.length, 1)}) CHARACTER SET OCTETS"
        return (f"(CAST(NEW.{n} AS {octets}) IS DISTINCT FROM CAST(OLD.{n} AS {octets}) "
                f"OR OCTET_LENGTH(NEW.{n}) IS DISTINCT FROM OCTET_LENGTH(OLD.{n}))")
    if kind is Kind.BLOB_TEXT:
        return (f"CAST(NEW.{n} AS BLOB SUB_TYPE BINARY) IS DISTINCT FROM "
                f"CAST(OLD.{n} AS BLOB SUB_TYPE BINARY)")
    return f"NEW.{n} IS DISTINCT FROM OLD.{n}"


def _grant(con: Connection, number: int) -> None:
    trigger = f"{TRIGGER_PREFIX}{number}"
    for sql in (
        f"GRANT INSERT ON {LOG_TABLE} TO TRIGGER {trigger}",  # capture failures
        f"GRANT INSERT ON {IMAGE_PREFIX}{number} TO TRIGGER {trigger}",
        f"GRANT USAGE ON SEQUENCE {LOG_SEQ} TO TRIGGER {trigger}",
    ):
        _ddl(con, sql)


def _drop_trigger(con: Connection, number: int) -> None:
    name = f"{TRIGGER_PREFIX}{number}"
    if _query(con, "SELECT 1 FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = ?", (name,)):
        _ddl(con, f"DROP TRIGGER {name}")


def _apply_guards(con: Connection, schema: Schema, fire: frozenset[str],
                  report: InstallReport) -> None:
    for triggers in schema.triggers.values():
        for trig in triggers:
            if trig.source is None:
                if trig.name not in fire:
                    report.unguardable.append(trig.name)
                continue
            want = trig.name not in fire
            new_source = guard.add_guard(trig.source) if want else guard.remove_guard(
                trig.source)
            if new_source == trig.source:
                continue
            # Also rewrites a guard an earlier version placed on a line of its own.
            _ddl(con, f"ALTER TRIGGER {quote(trig.name, schema.dialect)} {new_source}")
            if want:
                report.guarded.append(trig.name)


def _set_generator_range(con: Connection, gen: GeneratorRange) -> str:
    rows = _query(con, "SELECT RDB$GENERATOR_NAME FROM RDB$GENERATORS WHERE RDB$GENERATOR_NAME = ?",
                  (gen.name,))
    if not rows:
        raise InstallError(f"generator {gen.name} (config [generators]) does not exist")
    name = quote(gen.name, con.sql_dialect)
    current = _query(con, f"SELECT GEN_ID({name}, 0) FROM RDB$DATABASE")[0][0]
    if current < gen.start - 1:
        # Never moves a generator backwards: numbers already handed out stay unique.
        _ddl(con, f"ALTER SEQUENCE {name} RESTART WITH {gen.start - 1}")
        return f"{gen.name}: moved from {int(current)} to the site's range starting {gen.start}"
    if gen.end is not None and current >= gen.end:
        return f"{gen.name}: at {int(current)}, PAST the site's range end {gen.end}"
    return f"{gen.name}: at {int(current)}, inside the site's range"


class InstallError(Exception):
    pass


def pending_entries(con: Connection) -> int:
    """Committed captured changes not yet published (capture failures included)."""
    counts = [f"SELECT COUNT(*) FROM {IMAGE_PREFIX}{no}" for no in image_tables(con)]
    counts.append(f"SELECT COUNT(*) FROM {LOG_TABLE} WHERE OP = '{OP_ERROR}'")
    return sum(_query(con, sql)[0][0] for sql in counts)


def captured_shape(table: Table) -> str:
    """``COL1,COL2,...|<hash of their types>``: what a capture trigger was made for."""
    types = hashlib.sha256("|".join(c.type.ddl() for c in table.columns).encode())
    return ",".join(c.name for c in table.columns) + "|" + types.hexdigest()[:16]


def drop_capture_triggers(con: Connection) -> list[str]:
    """Drop every capture trigger (nothing else): what a vendor's DROP COLUMN would trip on.
    ``install`` creates them again."""
    dropped = []
    for (name,) in _query(con, "SELECT RDB$TRIGGER_NAME FROM RDB$TRIGGERS "
                               f"WHERE RDB$TRIGGER_NAME STARTING WITH '{TRIGGER_PREFIX}'"):
        _ddl(con, f"DROP TRIGGER {name.strip()}")
        dropped.append(name.strip())
    return dropped


def uninstall(con: Connection, force: bool = False) -> list[str]:
    """Remove exactly the sync's objects and guards. Refuses while changes are unpublished."""
    removed: list[str] = []
    if not is_installed(con):
        return removed
    waiting = pending_entries(con)
    if waiting and not force:
        raise InstallError(
            f"{waiting} captured changes are not published yet; run a sync first, or "
            "uninstall --force to drop them (they are lost for the other sites)")
    schema = introspect(con)
    for triggers in schema.triggers.values():
        for trig in triggers:
            if trig.source and guard.is_guarded(trig.source):
                _ddl(con, f"ALTER TRIGGER {quote(trig.name, schema.dialect)} "
                          f"{guard.remove_guard(trig.source)}")
                removed.append(f"guard in {trig.name}")
    removed += drop_capture_triggers(con)
    for name in sorted(_relation_names(con)):
        if name.startswith(IMAGE_PREFIX) or name in (LOG_TABLE, STATE_TABLE, TABLES_TABLE,
                                                     HEARTBEAT_TABLE, EVENTS_TABLE,
                                                     BLOBS_TABLE, ROWS_TABLE,
                                                     CONFLICTS_TABLE, VECTOR_TABLE,
                                                     PARKED_TABLE, REPORTS_TABLE,
                                                     DEFERRED_TABLE):
            _ddl(con, f"DROP TABLE {name}")
            removed.append(name)
    if LOG_SEQ in _generator_names(con):
        _ddl(con, f"DROP SEQUENCE {LOG_SEQ}")
        removed.append(LOG_SEQ)
    return removed


def get_state(con: Connection, name: str) -> str | None:
    rows = _query(con, f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?", (name,))
    return rows[0][0] if rows else None


def state_names(con: Connection) -> list[str]:
    return [str(r[0]) for r in _query(con, f"SELECT NAME FROM {STATE_TABLE}")]


def set_state(con: Connection, name: str, value: str) -> None:
    with transaction(con) as tm:
        tm.cursor().execute(
            f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) MATCHING (NAME)",
            (name, value))


STATE_PART = 3900  # characters of a long value per SYNC$STATE row (VAL holds 4000)
_PARTS = "parts:"  # + count: the value of a long state's own row; its parts are NAME#1...


def set_long_state(con: Connection, name: str, value: str) -> None:
    """A value that may outgrow one state row (vectors of many sites), kept in parts written
    in one transaction: ``get_long_state`` sees the old value or the new one, never a mix."""
    parts = [value[i:i + STATE_PART] for i in range(0, len(value), STATE_PART)]
    sql = f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?) MATCHING (NAME)"
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"DELETE FROM {STATE_TABLE} WHERE NAME STARTING WITH ?", (f"{name}#",))
            if len(parts) <= 1 and not value.startswith(_PARTS):
                cur.execute(sql, (name, value))
                return
            cur.execute(sql, (name, f"{_PARTS}{len(parts)}"))
            for number, part in enumerate(parts, 1):
                cur.execute(sql, (f"{name}#{number}", part))
        finally:
            cur.close()


def get_long_state(con: Connection, name: str) -> str | None:
    """A value ``set_long_state`` wrote (or ``set_state``), read in one snapshot."""
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?", (name,))
            row = cur.fetchone()
            if row is None or not str(row[0]).startswith(_PARTS):
                return row[0] if row else None
            count = int(str(row[0])[len(_PARTS):])
            cur.execute(f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME STARTING WITH ?",
                        (f"{name}#",))
            found = {str(n): str(v) for n, v in cur.fetchall()}
        finally:
            cur.close()
    return "".join(found[f"{name}#{number}"] for number in range(1, count + 1))


def write_marker(con: Connection, utc_now_us: int) -> None:
    """A clock marker: the engine's local 'NOW' next to the node's UTC time (see clock.py)."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(
                f"INSERT INTO {LOG_TABLE} (LOG_ID, OP, CAPTURED, UTC_US) VALUES "
                f"(NEXT VALUE FOR {LOG_SEQ}, '{OP_MARKER}', CAST('NOW' AS TIMESTAMP), ?)",
                (utc_now_us,))
        finally:
            cur.close()


def beat(con: Connection, site: str, round_no: int) -> None:
    """Write this site's heartbeat row; it travels through the capture path like any change."""
    with transaction(con) as tm:
        tm.cursor().execute(
            f"UPDATE OR INSERT INTO {HEARTBEAT_TABLE} (SITE, BEAT_AT, ROUND_NO) "
            "VALUES (?, CAST('NOW' AS TIMESTAMP), ?) MATCHING (SITE)", (site, round_no))


def heartbeats(con: Connection) -> dict[str, int]:
    """Per site, the round number of the last heartbeat this database holds."""
    return {str(site).strip(): int(n or 0) for site, n in _query(
        con, f"SELECT SITE, ROUND_NO FROM {HEARTBEAT_TABLE}")}
