"""The capture objects in a site's database: install, upgrade, uninstall.

Owns every ``SYNC$`` object: one image table per replicated table (``SYNC$I<n>``: one row
per captured change — who, when, which transaction, a change mask, and the changed values in
the table's own column types so every value is kept exactly; ids from ``SYNC$LOG_SEQ``), the
log ``SYNC$LOG`` (clock markers and capture failures), the generated capture triggers
(``SYNC$TR<n>``), the state, table-registry, heartbeat, event and BLOB tables, the registers
(``SYNC$ROWS``), conflicts, vector, parked, deferred and reports tables, the DDL
counter (``SYNC$DDL``, filled by the database trigger ``SYNC$DDL_TR``: the node's schema
cache, ``schemacache.py``, knows from it when the schema may have changed), and the guards
in application triggers.

Rules this module must keep (DESIGN §3.1):
* a capture trigger only INSERTs (never updates a sync table: inside an application's
  SNAPSHOT transaction that would raise update conflicts and fail the customer's invoice),
  and posts ``NEWS_EVENT`` for the application's own changes (delivered at commit, none on
  rollback: the node's wake on commit, news.py);
* its privileges are granted to the trigger itself, so an application connecting as an
  ordinary user needs nothing more;
* an update that changes no byte is not logged, and any byte change is (text is compared
  as bytes, never through its collation); a primary-key change — a byte change of a key
  column, even one the collation calls equal — is a delete of the old key and an insert of
  the new one with the full image;
* it never touches the application's own objects except the marked guards.

Image tables only ever gain columns (never dropped or reordered), so the change mask of an
old entry still lines up with the image columns after an upgrade. Besides its data columns
(one per column of its table, the mask's order) an image has one more per ARRAY column
(``before_column``): an update's old value of that array, which the trigger cannot compare
with the new one (the publisher does).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from firebird.driver import Connection, Cursor, DatabaseError, TransactionManager

from ..db import guard
from ..db.database import READ_COMMITTED_RW, SNAPSHOT_RW, literal, quote, transaction
from ..db.schema import Column, ColumnType, Kind, Schema, Table, TableSelection, introspect
from ..model import registers
from ..model.config import GeneratorRange
from ..model.registers import INLINE_REGISTERS, ROWS_TABLE  # (its table, created with the others)

log = logging.getLogger(__name__)

LOG_TABLE = "SYNC$LOG"
LOG_SEQ = "SYNC$LOG_SEQ"
STATE_TABLE = "SYNC$STATE"
TABLES_TABLE = "SYNC$TABLES"
HEARTBEAT_TABLE = "SYNC$HEARTBEAT"
# Event.table = HEARTBEAT_TABLE as serialized (field 5, length-delimited): how a stream's
# heartbeats are told apart without parsing them (is_heartbeat; tests/test_counts.py).
_HEARTBEAT_FIELD = bytes([5 << 3 | 2, len(HEARTBEAT_TABLE)]) + HEARTBEAT_TABLE.encode()
EVENTS_TABLE = "SYNC$EVENTS"  # published events, stored verbatim (see eventlog.py)
BLOBS_TABLE = "SYNC$BLOBS"  # large BLOB values referenced by events, by sha256
CONFLICTS_TABLE = "SYNC$CONFLICTS"  # losing versions on record (see apply.py)
VECTOR_TABLE = "SYNC$VECTOR"  # per origin: what this database applied (see apply.py)
PARKED_TABLE = "SYNC$PARKED"  # origins whose next transaction cannot apply (parking.py)
REPORTS_TABLE = "SYNC$REPORTS"  # sync round reports, kept by whichever node coordinates
# Events of tables this site does not have yet (another site upgraded first): kept, applied
# once the table is installed here (catchup.py).
DEFERRED_TABLE = "SYNC$DEFERRED"
# One row per committed DDL statement (AFTER ANY DDL STATEMENT): its row count is the key of
# the node's schema cache. Rows are never deleted, so a count is never seen twice. A DDL
# whose row could not be written bumps DDL_MISSED instead, which turns the cache off.
DDL_TABLE, DDL_TRIGGER, DDL_MISSED = "SYNC$DDL", "SYNC$DDL_TR", "SYNC$DDL_MISSED"
CAPTURED_STATE = "captured:"  # + table number: its columns and types when capture was installed
HEARTBEAT_NO = 0  # the heartbeat table's number: it travels through the capture path too
# Posted by the capture triggers for the application's changes (never for the node's own
# writes, nor for heartbeats): delivered once per commit to the node listening (news.py).
NEWS_EVENT = "SIEGE$NEWS"
IMAGE_PREFIX = "SYNC$I"
TRIGGER_PREFIX = "SYNC$TR"
IMAGE_ID = "SYNC$ID"
IMAGE_MASK = "SYNC$MASK"
# Every change is one row of its table's image: who, when and which transaction, then the
# change mask and the values. One INSERT per change keeps the trigger cheap (measured: each
# extra INSERT costs the application about as much as its own row).
IMAGE_META = ("SYNC$ID", "SYNC$TX", "SYNC$OP", "SYNC$AT", "SYNC$USR", "SYNC$ADDR",
              "SYNC$FLAGS", "SYNC$MASK")
# + an ARRAY column's position in the change mask (from 0): that array's old value in an
# update's image row (see FLAG_ARRAYS_BEFORE).
IMAGE_BEFORE = "SYNC$OLD"
SCHEMA_VERSION = "1"
# The publisher's state rows (publish.py), created here so that concurrent publishers only
# ever update (and lock) them: two first inserts of one row would clash.
COUNTERS = (("seq", "0"), ("chain_head", ""), ("last_stamp", "0"), ("incarnation", "1"),
            ("marker_offset_us", ""), ("marker_at_us", ""), ("db_created", ""))
# Registers are keyed by the engine's identity of each key since this version (install
# moves those of an older install once).
KEY_IDENTITY_STATE, KEY_IDENTITY_VERSION = "key_identity", "1"

# Operations: I/U/D in image rows; in SYNC$LOG, 'M' is a clock marker written by the node
# (see clock.py) and 'E' records that a capture trigger failed (the application's change
# went through, its capture did not).
OP_INSERT, OP_UPDATE, OP_DELETE, OP_MARKER, OP_ERROR = "I", "U", "D", "M", "E"
# FLAGS bits: the change was made inside a transaction the node was applying; the image
# holds every column's value (a delete's old row; an update's new values, BLOBs only when
# written) — image rows captured by older triggers hold the written columns only.
FLAG_DURING_APPLY = 1
FLAG_FULL_IMAGE = 2
# An update's image holds each ARRAY column's old value too (``before_column``): Firebird
# cannot compare two arrays, so the trigger records every non-null one as written and the
# publisher compares it with the old value. Rows captured by older triggers lack it (NULL
# there is not an old value).
FLAG_ARRAYS_BEFORE = 4


@dataclass(frozen=True)
class Image:
    """What an image table holds besides its metadata."""

    columns: list[Column]  # the data columns, in position order (the change mask's order)
    # The ARRAY columns whose old value an update's row holds (``before_column``).
    befores: frozenset[str] = frozenset()


def before_column(position: int) -> str:
    """The image column holding the old value of the ARRAY at ``position`` in the mask.
    Named by position: a name of 31 characters leaves no room for a prefix."""
    return f"{IMAGE_BEFORE}{position}"


def _is_before(name: str) -> bool:
    return name.startswith(IMAGE_BEFORE) and name[len(IMAGE_BEFORE):].isdigit()


def _image_of(table: Table) -> Image:
    data = [c for c in table.columns if c.name not in IMAGE_META and not _is_before(c.name)]
    names = {c.name for c in table.columns}
    return Image(data, frozenset(c.name for i, c in enumerate(data)
                                 if c.type.dimensions and before_column(i) in names))


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
    notes: list[str] = field(default_factory=list)  # e.g. why the schema cache is off
    schema: Schema | None = None


def _ddl(con: Connection, sql: str) -> None:
    """One DDL statement in its own transaction, rolled back when it fails — at commit too,
    where the engine checks most of it (an object in use, a row too long)."""
    tm = con.transaction_manager(default_tpb=READ_COMMITTED_RW)
    tm.begin()
    try:
        tm.execute_immediate(sql)
        tm.commit()
    finally:
        if tm.is_active():
            tm.rollback()
        tm.close()


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


def _added_columns(dialect: int) -> list[tuple[str, str, str]]:
    """Columns of the node's own tables added after those tables first shipped: (table,
    column, type). ``upgrade_core`` adds the missing ones to a database installed earlier."""
    # CHANGED_US: when the losing write was made (its HLC stamp, µs UTC), for the listings.
    return [(CONFLICTS_TABLE, "CHANGED_US", id_type(dialect))]


def upgrade_core(con: Connection) -> list[str]:
    """Add to the node's own tables the columns a later version of the node writes; returns
    what it added. Run by ``install`` and at every start of the node (the application never
    uses these tables, so the ALTER waits for nobody)."""
    added = []
    for table, column, type_ in _added_columns(con.sql_dialect):
        if table in _relation_names(con) and not _query(
                con, "SELECT 1 FROM RDB$RELATION_FIELDS WHERE RDB$RELATION_NAME = ? "
                     "AND RDB$FIELD_NAME = ?", (table, column)):
            _step(con, [(f"add {column} to {table}", f"ALTER TABLE {table} ADD {column} {type_}")],
                  "the node's own tables")
            added.append(f"{table}.{column}")
    return added


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
                          f"DECIDE SMALLINT, CHANGED_US {idt})"),
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


# Tables installed per transaction: each table's image, capture trigger, grants, registry
# row and captured shape commit together (a table is captured whole or not at all), and a
# few dozen per commit keep a 600-table install from paying 4,000 commits.
INSTALL_BATCH = 40


def install(con: Connection, selection: TableSelection = TableSelection(),
            fire: Iterable[str] = (), generators: Iterable[GeneratorRange] = ()) -> InstallReport:
    """Create or upgrade the capture objects for the live schema. Idempotent, and restartable:
    when a step fails, ``InstallError`` says which step of which table, every table before
    it is installed whole and that one not at all, and running install again continues."""
    report = InstallReport()
    dialect = con.sql_dialect
    existing = _relation_names(con) | _generator_names(con)
    for name, ddl in _core_ddl(dialect):
        if name not in existing:
            _step(con, [(f"create {name}", ddl)], "the node's own tables")
            report.created.append(name)
    report.created += upgrade_core(con)
    if ROWS_TABLE not in existing:
        # Nothing to re-key in a fresh install: registers are keyed by identity from the
        # first publish, which may run while a long install is still going.
        set_state(con, KEY_IDENTITY_STATE, KEY_IDENTITY_VERSION)
    _initial_state(con)
    schema = introspect(con, selection)
    report.schema = schema
    numbers = _table_numbers(con)
    images = _images(con)
    wanted = {HEARTBEAT_TABLE: heartbeat_table(dialect), **schema.tables}
    pending = list(wanted.items())
    for start in range(0, len(pending), INSTALL_BATCH):
        _install_tables(con, pending[start:start + INSTALL_BATCH], numbers, images, dialect,
                        report)
    gone = [(name, number) for name, number in numbers.items() if name not in wanted]
    for name, number in gone:
        statements = []
        if _query(con, "SELECT 1 FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = ?",
                  (f"{TRIGGER_PREFIX}{number}",)):
            statements.append(("drop its capture trigger",
                               f"DROP TRIGGER {TRIGGER_PREFIX}{number}"))
        statements.append(("mark it inactive in " + TABLES_TABLE,
                           f"UPDATE {TABLES_TABLE} SET ACTIVE = 0 WHERE TBL_NO = {int(number)}"))
        _step(con, statements, f"table {name}")
        report.removed.append(f"capture of {name} (no longer replicated)")
    _apply_guards(con, schema, frozenset(fire), report)
    for gen in generators:
        report.generators.append(_set_generator_range(con, gen))
    set_state(con, "schema_version", SCHEMA_VERSION)
    set_state(con, "schema_fingerprint", schema.fingerprint())
    if get_state(con, KEY_IDENTITY_STATE) != KEY_IDENTITY_VERSION:
        _rekey(con, schema, numbers)
    problem = install_ddl_counter(con)
    if problem:
        report.notes.append(problem)
    return report


def _initial_state(con: Connection) -> None:
    """The publisher's counters and the database's epoch, before any table is captured: a
    publish during (or after a failed) install then publishes what is captured."""
    have = set(state_names(con))
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            for name, initial in COUNTERS:
                if name not in have:
                    cur.execute(f"INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES (?, ?)",
                                (name, initial))
            if "epoch" not in have:
                # A random identity for this database's life; a copy restored elsewhere
                # keeps it, a fresh install never reuses one (DESIGN §3.6).
                cur.execute(f"INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES ('epoch', ?)",
                            (secrets.token_hex(16),))
        finally:
            cur.close()


def _images(con: Connection) -> dict[str, Table]:
    """Every image table as it is (one read of the system tables for all of them)."""
    return {name: table for name, table in introspect(con, include_sync=True).tables.items()
            if name.startswith(IMAGE_PREFIX)}


def _install_tables(con: Connection, batch: list[tuple[str, Table]], numbers: dict[str, int],
                    images: dict[str, Table], dialect: int, report: InstallReport) -> None:
    """Install ``batch`` in one transaction; when it fails, again one table per transaction,
    so that the tables before the failing one are installed and the error names it."""
    planned = []
    for name, table in batch:
        number = numbers.get(name)
        if number is None:
            number = HEARTBEAT_NO if name == HEARTBEAT_TABLE else max(
                [n for n in numbers.values()] + [0]) + 1
            numbers[name] = number
        statements, changed = _table_statements(table, number,
                                                images.get(f"{IMAGE_PREFIX}{number}"), dialect)
        planned.append((name, number, statements, changed))
    try:
        _together(con, [(f"table {name}", statements) for name, _n, statements, _c in planned])
    except InstallError:
        if len(planned) == 1:
            raise
        for name, number, statements, changed in planned:
            _together(con, [(f"table {name}", statements)])
            _installed(report, name, number, changed)
        return
    for name, number, _statements, changed in planned:
        _installed(report, name, number, changed)


def _installed(report: InstallReport, name: str, number: int, changed: str | None) -> None:
    if changed == "upgraded":
        report.upgraded.append(f"{name} (as {IMAGE_PREFIX}{number})")
    elif changed == "created":
        report.created.append(f"{name} (as {IMAGE_PREFIX}{number})")


def _together(con: Connection, work: list[tuple[str, list[tuple[str, str]]]]) -> None:
    """Run the steps of each ``(what, steps)`` in one transaction. The engine checks most of
    a DDL statement at commit (a row too long, a trigger it cannot compile): a failing commit
    names every object of the transaction, and it is rolled back."""
    tm = con.transaction_manager(default_tpb=READ_COMMITTED_RW)
    tm.begin()
    try:
        for what, statements in work:
            _run(tm, statements, what)
        try:
            tm.commit()
        except DatabaseError as exc:
            whats = ", ".join(what for what, _s in work)
            raise InstallError(_failed("commit (the engine checks the new objects then)",
                                       whats, exc)) from exc
    finally:
        if tm.is_active():
            tm.rollback()
        tm.close()


def _run(tm: TransactionManager, statements: list[tuple[str, str]], what: str) -> None:
    cur = tm.cursor()
    try:
        for step, sql in statements:
            try:
                if sql.startswith(("INSERT ", "UPDATE ", "DELETE ")):
                    cur.execute(sql)
                else:
                    tm.execute_immediate(sql)
            except DatabaseError as exc:
                raise InstallError(_failed(step, what, exc)) from exc
    finally:
        cur.close()


def _failed(step: str, what: str, exc: Exception) -> str:
    reason = " ".join(str(exc).split())
    hint = ""
    if "in use" in reason or "lock" in reason.lower():
        hint = (" Another connection is using it (an open transaction, a prepared statement): "
                "close the application or wait for it, then")
    elif "privilege" in reason or "permission" in reason:
        hint = " Install as the database owner or SYSDBA, then"
    elif "record size" in reason:
        hint = (" An image table holds every column of its table plus about 1.4 KB of capture "
                "data, and Firebird limits a row to 64 KB: list the table in [tables] exclude "
                "or narrow its columns, then")
    else:
        hint = " Fix that cause, then"
    return (f"install stopped at {what}, step '{step}': {reason}.{hint} run siege-node install "
            "again: what was installed before stays, nothing of this one was kept, and install "
            "continues from here.")


def _step(con: Connection, statements: list[tuple[str, str]], what: str) -> None:
    _together(con, [(what, statements)])


def _table_statements(table: Table, number: int, image: Table | None, dialect: int
                      ) -> tuple[list[tuple[str, str]], str | None]:
    """Every statement that installs or upgrades one table's capture, with a step name
    each, and whether its image is created, upgraded or left as it was."""
    name = f"{IMAGE_PREFIX}{number}"
    keys = literal(",".join(table.primary_key))
    statements = [(f"register it in {TABLES_TABLE}",
                   f"UPDATE OR INSERT INTO {TABLES_TABLE} (TBL_NO, NAME, KEY_COLS, ACTIVE) "
                   f"VALUES ({int(number)}, {literal(table.name)}, {keys}, 1) MATCHING (TBL_NO)")]
    changed = None
    if image is None:
        cols = ", ".join([f"{quote(c.name, dialect)} {c.type.ddl()}" for c in table.columns]
                         + [f"{before_column(i)} {c.type.ddl()}"
                            for i, c in enumerate(table.columns) if c.type.dimensions])
        idt = id_type(dialect)
        statements.append((f"create its image table {name}",
                           f"CREATE TABLE {name} (SYNC$ID {idt} NOT NULL PRIMARY KEY, "
                           f"SYNC$TX {idt}, SYNC$OP CHAR(1) CHARACTER SET ASCII, "
                           f"SYNC$AT TIMESTAMP, SYNC$USR VARCHAR(63) CHARACTER SET UTF8, "
                           f"SYNC$ADDR VARCHAR(255) CHARACTER SET UTF8, SYNC$FLAGS SMALLINT, "
                           f"SYNC$MASK VARCHAR({_mask_length(len(table.columns))}) "
                           f"CHARACTER SET ASCII, {cols})"))
        columns = list(table.columns)
        changed = "created"
        befores = frozenset(c.name for c in table.columns if c.type.dimensions)
    else:
        shape = _image_of(image)
        columns, befores = list(shape.columns), shape.befores
        current = {c.name: c for c in columns}
        for col in table.columns:
            have = current.get(col.name)
            if have is None:
                statements.append((f"add column {col.name} to {name}",
                                   f"ALTER TABLE {name} ADD {quote(col.name, dialect)} "
                                   f"{col.type.ddl()}"))
                columns.append(col)
                changed = "upgraded"
            elif have.type.ddl() != col.type.ddl():
                # Widening keeps the column's position, so old masks stay aligned.
                statements.append((f"widen column {col.name} of {name}",
                                   f"ALTER TABLE {name} ALTER {quote(col.name, dialect)} "
                                   f"TYPE {col.type.ddl()}"))
                columns[columns.index(have)] = col
                changed = "upgraded"
                if col.name in befores:
                    statements.append((
                        f"widen column {before_column(columns.index(col))} of {name}",
                        f"ALTER TABLE {name} ALTER {before_column(columns.index(col))} "
                        f"TYPE {col.type.ddl()}"))
        mask = next((c for c in image.columns if c.name == IMAGE_MASK), None)
        if mask is not None and (mask.type.char_length or 0) < len(columns):
            statements.append((f"widen the change mask of {name}",
                               f"ALTER TABLE {name} ALTER {IMAGE_MASK} TYPE "
                               f"VARCHAR({_mask_length(len(columns))}) CHARACTER SET ASCII"))
    live = {c.name for c in table.columns}
    for i, col in enumerate(columns):
        if col.type.dimensions and col.name in live and col.name not in befores:
            # Also an upgrade from a version without them (the trigger below fills it).
            statements.append((f"add column {before_column(i)} to {name}",
                               f"ALTER TABLE {name} ADD {before_column(i)} {col.type.ddl()}"))
            changed = changed or "upgraded"
    trigger = f"{TRIGGER_PREFIX}{number}"
    statements.append((f"create its capture trigger {trigger}",
                       capture_trigger_sql(table, number, columns, dialect)))
    statements += [(f"grant its capture trigger {trigger} what it writes", sql)
                   for sql in _grants(number)]
    # What capture was installed for (upgrade.drift compares the live schema with it).
    if table.name != HEARTBEAT_TABLE:
        statements += [("record its captured shape", sql) for sql in _long_state_sql(
            f"{CAPTURED_STATE}{number}", captured_shape(table))]
    return statements, changed


def _long_state_sql(name: str, value: str) -> list[str]:
    """The statements of ``set_long_state`` (one state row, or parts: a table of hundreds of
    columns has a longer shape than a row holds), to run in the caller's transaction."""
    parts = [value[i:i + STATE_PART] for i in range(0, len(value), STATE_PART)]
    upsert = f"UPDATE OR INSERT INTO {STATE_TABLE} (NAME, VAL) VALUES ({{}}, {{}}) MATCHING (NAME)"
    out = [f"DELETE FROM {STATE_TABLE} WHERE NAME STARTING WITH {literal(name + '#')}"]
    if len(parts) <= 1 and not value.startswith(_PARTS):
        return [*out, upsert.format(literal(name), literal(value))]
    out.append(upsert.format(literal(name), literal(f"{_PARTS}{len(parts)}")))
    out += [upsert.format(literal(f"{name}#{n}"), literal(part)) for n, part in
            enumerate(parts, 1)]
    return out


def _mask_length(columns: int) -> int:
    """A change mask holds one character per image column: sized to the table (a row of an
    image table must fit in 64 KB like the table's own), with room to grow."""
    return min(4000, max(64, -(-columns * 2 // 64) * 64))


def _rekey(con: Connection, schema: Schema, numbers: dict[str, int]) -> None:
    """Once per database: move the registers of rows whose key the engine compares other
    than by bytes (collations, trailing blanks) to their identity (registers.key_identity).
    Registers were keyed by exact bytes before; a fresh install has none to move."""
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


def image(con: Connection, number: int) -> Image:
    """An image table's data columns and ARRAY old values (none when it does not exist)."""
    name = f"{IMAGE_PREFIX}{number}"
    table = introspect(con, include_sync=True, only=name).tables.get(name)
    return Image([]) if table is None else _image_of(table)


def all_images(con: Connection) -> dict[int, Image]:
    """``image`` of every image table, from one read of the system tables."""
    return {int(name[len(IMAGE_PREFIX):]): _image_of(table)
            for name, table in _images(con).items() if name[len(IMAGE_PREFIX):].isdigit()}


def image_columns(con: Connection, number: int) -> list[Column]:
    """The data columns of an image table, in position order (the change mask's order)."""
    return image(con, number).columns


def image_tables(con: Connection) -> list[int]:
    """Numbers of the image tables that exist (a table no longer replicated keeps its image
    until its captured changes are published)."""
    names = _relation_names(con)
    return sorted(no for no in table_registry(con) if f"{IMAGE_PREFIX}{no}" in names)


def capture_trigger_sql(table: Table, number: int, image: list[Column], dialect: int) -> str:
    """The capture trigger of one table: one INSERT into its image table per change (two
    for a key change); a failure is recorded in the log instead of failing the application."""
    q = lambda name: quote(name, dialect)  # noqa: E731
    live = {c.name for c in table.columns}
    key = table.primary_key
    image_names = [c.name for c in image]

    def change_insert(op: str, values: list[str], mask: str, flags: str = ":F",
                      extra: Iterable[tuple[str, str]] = ()) -> str:
        more = list(extra)
        cols = ", ".join(list(IMAGE_META) + [q(n) for n in image_names]
                         + [name for name, _v in more])
        return (f"INSERT INTO {IMAGE_PREFIX}{number} ({cols}) VALUES (NEXT VALUE FOR {LOG_SEQ}, "
                f"CURRENT_TRANSACTION, '{op}', CAST('NOW' AS TIMESTAMP), CURRENT_USER, "
                f"RDB$GET_CONTEXT('SYSTEM', 'CLIENT_ADDRESS'), {flags}, {mask}, "
                f"{', '.join(values + [v for _n, v in more])});")

    full_mask = literal("".join("1" if n in live else "0" for n in image_names))
    key_mask = literal("".join("1" if n in key else "0" for n in image_names))
    new_full = [f"NEW.{q(n)}" if n in live else "NULL" for n in image_names]
    # A delete keeps the whole old row and an update every column's new value (BLOBs only
    # when written): the publisher needs them for a row its registers do not know — it
    # predates install — so that the row can be restored whole anywhere (DESIGN §3.1).
    old_full = [f"OLD.{q(n)}" if n in live else "NULL" for n in image_names]
    full_image = f":F + {FLAG_FULL_IMAGE}"
    # Every live ARRAY's old value (install creates these columns with the trigger).
    befores = [(before_column(i), f"OLD.{q(c.name)}") for i, c in enumerate(image)
               if c.type.dimensions and c.name in live]
    update_flags = f"{full_image} + {FLAG_ARRAYS_BEFORE}" if befores else full_image
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
                # its old value goes along (``befores``), and the publisher drops it when
                # it equals that (a row that predates install: its registers do not know
                # the array) or the registers' value.
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
    # (Firebird delivers a transaction's posts once, at commit, and none on rollback.)
    news = "" if number == HEARTBEAT_NO else f"""
  IF (F = 0) THEN POST_EVENT '{NEWS_EVENT}';"""
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
      {change_insert(OP_UPDATE, new_changed, ":M", update_flags, befores)}
  END{news}
  WHEN GDSCODE io_error DO
    /* The database cannot be written (a full disk, a failing one): the application's own
       write fails, as it would without capture. Recording the failure below would commit
       a change the mesh never receives — the row written, its log entry not (a full disk
       let the smaller error row in): the chaos run found hundreds so (issue 19). */
    EXCEPTION;
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
    (contents, byte for byte). DOUBLE and FLOAT compare by value and by the sign of a zero
    (-0.0 equals 0.0 by value). Other types compare by value, which is their stored value.
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
    if kind in (Kind.DOUBLE, Kind.FLOAT) and not ctype.dimensions:
        # -0.0 = 0.0 by value, yet the stored bits differ (and travel as bits): the sign of
        # a zero shows in ATAN2(zero, -1), -pi or +pi.
        return (f"(NEW.{n} IS DISTINCT FROM OLD.{n} OR (NEW.{n} = 0 AND "
                f"ATAN2(NEW.{n}, -1) <> ATAN2(OLD.{n}, -1)))")
    return f"NEW.{n} IS DISTINCT FROM OLD.{n}"


def _grants(number: int) -> list[str]:
    trigger = f"{TRIGGER_PREFIX}{number}"
    return [
        f"GRANT INSERT ON {LOG_TABLE} TO TRIGGER {trigger}",  # capture failures
        f"GRANT INSERT ON {IMAGE_PREFIX}{number} TO TRIGGER {trigger}",
        f"GRANT USAGE ON SEQUENCE {LOG_SEQ} TO TRIGGER {trigger}",
    ]


def _ddl_counter_sql(dialect: int) -> list[tuple[str, str]]:
    return [
        ("create its sequence", f"CREATE SEQUENCE {DDL_MISSED}"),
        ("create its table", f"CREATE TABLE {DDL_TABLE} (DONE_AT TIMESTAMP)"),
        # Nothing in it can fail the application's DDL: a table without constraints, and any
        # error swallowed; a row that could not be written bumps DDL_MISSED instead, which
        # turns the schema cache off for good (schemacache.py).
        ("create its trigger", f"""CREATE OR ALTER TRIGGER {DDL_TRIGGER}
ACTIVE AFTER ANY DDL STATEMENT POSITION 32000 AS
DECLARE N {id_type(dialect)};
BEGIN
  /* generated by siege-sync: counts committed DDL, so the node knows when to read the
     schema again; never fails the statement */
  BEGIN
    EXECUTE STATEMENT 'INSERT INTO {DDL_TABLE} (DONE_AT) VALUES (CURRENT_TIMESTAMP)';
    WHEN ANY DO
    BEGIN
      BEGIN
        N = GEN_ID({DDL_MISSED}, 1);
        WHEN ANY DO N = 0;
      END
    END
  END
END"""),
        ("grant its trigger what it writes",
         f"GRANT INSERT ON {DDL_TABLE} TO PUBLIC"),
        ("grant its trigger what it writes",
         f"GRANT USAGE ON SEQUENCE {DDL_MISSED} TO TRIGGER {DDL_TRIGGER}"),
    ]


def install_ddl_counter(con: Connection) -> str | None:
    """Create the DDL counter (what the schema cache is keyed by) when it is missing; None
    when it is there, else why the node reads the schema at every publish instead (creating
    a database trigger takes the database owner, SYSDBA or RDB$ADMIN)."""
    existing = _relation_names(con) | _generator_names(con)
    if DDL_MISSED in existing and _query(con, f"SELECT GEN_ID({DDL_MISSED}, 0) "
                                              "FROM RDB$DATABASE")[0][0]:
        # A DDL statement's row could not be written once: the cache was off since. Every
        # cache reads the schema again after this (the restart is DDL, counted too).
        _ddl(con, f"ALTER SEQUENCE {DDL_MISSED} RESTART WITH 0")
    have = _query(con, "SELECT 1 FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = ? "
                       "AND RDB$TRIGGER_INACTIVE = 0", (DDL_TRIGGER,))
    if have:
        return None
    statements = [(step, sql) for step, sql in _ddl_counter_sql(con.sql_dialect)
                  if not sql.startswith(("CREATE SEQUENCE", "CREATE TABLE"))
                  or sql.split()[2] not in existing]
    try:
        _step(con, statements, f"the DDL counter {DDL_TRIGGER}")
    except InstallError as exc:
        log.warning("%s", exc)
        return (f"the schema cache is off ({exc}); every publish and apply reads the schema "
                "from the system tables, which costs about a second with hundreds of tables")
    return None


def ddl_key(cur: Cursor) -> tuple[int, ...] | None:
    """The schema cache's key: committed DDL statements so far, the number of registered
    tables, and — for DDL run where database triggers are switched off (``isql
    -nodbtriggers``, as the owner) — the tables' format versions and count, which move with
    every table or column change. None when the counter cannot be trusted: missing,
    inactive, or a DDL statement whose row could not be written."""
    try:
        cur.execute(f"SELECT (SELECT COUNT(*) FROM {DDL_TABLE}), GEN_ID({DDL_MISSED}, 0), "
                    f"(SELECT COUNT(*) FROM {TABLES_TABLE}), "
                    "(SELECT RDB$TRIGGER_INACTIVE FROM RDB$TRIGGERS "
                    f"WHERE RDB$TRIGGER_NAME = '{DDL_TRIGGER}'), "
                    "(SELECT SUM(RDB$FORMAT) FROM RDB$RELATIONS), "
                    "(SELECT COUNT(*) FROM RDB$RELATIONS) FROM RDB$DATABASE")
        count, missed, tables, inactive, formats, relations = cur.fetchone()
    except DatabaseError:
        return None
    if missed or inactive is None or inactive:
        return None
    return int(count), int(tables), int(formats or 0), int(relations)


def _apply_guards(con: Connection, schema: Schema, fire: frozenset[str],
                  report: InstallReport) -> None:
    changes: list[tuple[str, bool, str]] = []
    # Table triggers, and ON TRANSACTION COMMIT/ROLLBACK triggers that write replicated
    # tables (schema.guard_candidates): the node's mark is set when those run.
    for trig in schema.guard_candidates():
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
        changes.append((trig.name, want, f"ALTER TRIGGER {quote(trig.name, schema.dialect)} "
                                          f"{new_source}"))
    for start in range(0, len(changes), INSTALL_BATCH):
        batch = changes[start:start + INSTALL_BATCH]
        try:
            _together(con, [(f"trigger {name}", [("guard it" if want else "remove its guard",
                                                  sql)]) for name, want, sql in batch])
        except InstallError:
            if len(batch) == 1:
                raise
            for name, want, sql in batch:  # again one at a time: the error names the trigger
                _step(con, [("guard it" if want else "remove its guard", sql)],
                      f"trigger {name}")
        report.guarded += [name for name, want, _sql in batch if want]


def _set_generator_range(con: Connection, gen: GeneratorRange) -> str:
    rows = _query(con, "SELECT RDB$GENERATOR_NAME FROM RDB$GENERATORS WHERE RDB$GENERATOR_NAME = ?",
                  (gen.name,))
    if not rows:
        raise InstallError(f"generator {gen.name} (config [generators]) does not exist")
    name = quote(gen.name, con.sql_dialect)
    current = _query(con, f"SELECT GEN_ID({name}, 0) FROM RDB$DATABASE")[0][0]
    # After a join or resync the database is the siège's copy: its generator is the siège's,
    # but this site's own rows came back in it. Restarting at the range start re-handed
    # their keys (the application's inserts failed on the primary key after a resync: found
    # by the chaos run, issue 19), so the floor is also the highest key of the range in use.
    used = _highest_key_in_range(con, gen.start, gen.end)
    floor = max(gen.start - 1, used if used is not None else gen.start - 1)
    if current < floor:
        # Never moves a generator backwards: numbers already handed out stay unique.
        _ddl(con, f"ALTER SEQUENCE {name} RESTART WITH {floor}")
        return (f"{gen.name}: moved from {int(current)} to the site's range starting "
                f"{gen.start}" + (f", past its keys in use (up to {used})" if used else ""))
    if gen.end is not None and current >= gen.end:
        return f"{gen.name}: at {int(current)}, PAST the site's range end {gen.end}"
    return f"{gen.name}: at {int(current)}, inside the site's range"


def _highest_key_in_range(con: Connection, start: int, end: int | None) -> int | None:
    """The highest value within [start, end] of any user table's single-column integer
    primary key (what a site's generator handed out before, when its rows came back in a
    copy); None when no key lies there. Keys a generator feeds elsewhere (a composite key,
    a non-key column) are not seen: a generator's own value is all that counts for them."""
    rows = _query(con, """
        SELECT TRIM(rc.RDB$RELATION_NAME), TRIM(MIN(s.RDB$FIELD_NAME)), MIN(f.RDB$FIELD_TYPE)
        FROM RDB$RELATION_CONSTRAINTS rc
        JOIN RDB$INDEX_SEGMENTS s ON s.RDB$INDEX_NAME = rc.RDB$INDEX_NAME
        JOIN RDB$RELATION_FIELDS rf ON rf.RDB$RELATION_NAME = rc.RDB$RELATION_NAME
             AND rf.RDB$FIELD_NAME = s.RDB$FIELD_NAME
        JOIN RDB$FIELDS f ON f.RDB$FIELD_NAME = rf.RDB$FIELD_SOURCE
        WHERE rc.RDB$CONSTRAINT_TYPE = 'PRIMARY KEY'
          AND rc.RDB$RELATION_NAME NOT STARTING WITH 'SYNC$'
          AND f.RDB$FIELD_TYPE IN (7, 8, 16) AND COALESCE(f.RDB$FIELD_SCALE, 0) = 0
        GROUP BY rc.RDB$RELATION_NAME
        HAVING COUNT(*) = 1""")
    top = None
    for table, column, field_type in rows:
        widest = {7: 2**15 - 1, 8: 2**31 - 1}.get(field_type, 2**63 - 1)
        high = min(end if end is not None else widest, widest)
        if start > high:
            continue  # the column cannot hold a key of this range
        found = _query(con, f"SELECT MAX({quote(column, con.sql_dialect)}) FROM "
                            f"{quote(table, con.sql_dialect)} WHERE "
                            f"{quote(column, con.sql_dialect)} BETWEEN ? AND ?",
                       (start, high))[0][0]
        if found is not None and (top is None or found > top):
            top = int(found)
    return top


class InstallError(Exception):
    pass


def pending_entries(con: Connection) -> int:
    """Committed captured changes not yet published (capture failures included)."""
    counts = [f"(SELECT COUNT(*) FROM {IMAGE_PREFIX}{no})" for no in image_tables(con)]
    counts.append(f"(SELECT COUNT(*) FROM {LOG_TABLE} WHERE OP = '{OP_ERROR}')")
    total = 0
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            # A statement takes at most 255 contexts: a hundred tables a statement.
            for start in range(0, len(counts), 100):
                cur.execute(f"SELECT {' + '.join(counts[start:start + 100])} FROM RDB$DATABASE")
                total += int(cur.fetchone()[0])
        finally:
            cur.close()
    return total


def captured_shape(table: Table) -> str:
    """``COL1,COL2,...|<hash of their types>``: what a capture trigger was made for."""
    types = hashlib.sha256("|".join(c.type.ddl() for c in table.columns).encode())
    return ",".join(c.name for c in table.columns) + "|" + types.hexdigest()[:16]


def drop_capture_triggers(con: Connection) -> list[str]:
    """Drop every capture trigger (nothing else): what a vendor's DROP COLUMN would trip on.
    ``install`` creates them again."""
    names = [str(name).strip() for (name,) in _query(
        con, "SELECT RDB$TRIGGER_NAME FROM RDB$TRIGGERS "
             f"WHERE RDB$TRIGGER_NAME STARTING WITH '{TRIGGER_PREFIX}'")]
    for start in range(0, len(names), INSTALL_BATCH):
        _step(con, [(f"drop {name}", f"DROP TRIGGER {name}")
                    for name in names[start:start + INSTALL_BATCH]], "the capture triggers")
    return names


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
    for trig in schema.guard_candidates():
        if trig.source and guard.is_guarded(trig.source):
            _ddl(con, f"ALTER TRIGGER {quote(trig.name, schema.dialect)} "
                      f"{guard.remove_guard(trig.source)}")
            removed.append(f"guard in {trig.name}")
    if _query(con, "SELECT 1 FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = ?", (DDL_TRIGGER,)):
        _ddl(con, f"DROP TRIGGER {DDL_TRIGGER}")
        removed.append(DDL_TRIGGER)
    removed += drop_capture_triggers(con)
    for name in sorted(_relation_names(con)):
        if name.startswith(IMAGE_PREFIX) or name in (LOG_TABLE, STATE_TABLE, TABLES_TABLE,
                                                     HEARTBEAT_TABLE, EVENTS_TABLE,
                                                     BLOBS_TABLE, ROWS_TABLE,
                                                     CONFLICTS_TABLE, VECTOR_TABLE,
                                                     PARKED_TABLE, REPORTS_TABLE,
                                                     DEFERRED_TABLE, DDL_TABLE):
            try:
                _ddl(con, f"DROP TABLE {name}")
            except DatabaseError as exc:
                # A running node keeps its reads of the image tables prepared.
                raise InstallError(
                    f"uninstall stopped at dropping {name}: {' '.join(str(exc).split())}. Stop "
                    "siege-node run (and every other connection using the sync's tables), "
                    "then run uninstall again; it goes on from there") from exc
            removed.append(name)
    for sequence in (LOG_SEQ, DDL_MISSED):
        if sequence in _generator_names(con):
            _ddl(con, f"DROP SEQUENCE {sequence}")
            removed.append(sequence)
    return removed


def get_state(con: Connection, name: str) -> str | None:
    rows = _query(con, f"SELECT VAL FROM {STATE_TABLE} WHERE NAME = ?", (name,))
    return rows[0][0] if rows else None


def state_names(con: Connection) -> list[str]:
    return [str(r[0]) for r in _query(con, f"SELECT NAME FROM {STATE_TABLE}")]


def states_starting(con: Connection, prefix: str) -> dict[str, str]:
    """Every state whose name starts with ``prefix`` (name -> value), in one read: what a
    coordinator asks at every exchange (certificates, epochs) grows with the sites."""
    return {str(n): v for n, v in _query(
        con, f"SELECT NAME, VAL FROM {STATE_TABLE} WHERE NAME STARTING WITH ?", (prefix,))
        if v is not None}


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


def is_heartbeat(body: bytes) -> bool:
    """Whether a serialized event is a heartbeat, without parsing it (counting what a stream
    carries): its table field as serialized. Only a count depends on it (another event whose
    value held those 16 bytes would be counted as a heartbeat)."""
    return _HEARTBEAT_FIELD in body


def heartbeats(con: Connection) -> dict[str, int]:
    """Per site, the round number of the last heartbeat this database holds."""
    return {str(site).strip(): int(n or 0) for site, n in _query(
        con, f"SELECT SITE, ROUND_NO FROM {HEARTBEAT_TABLE}")}
