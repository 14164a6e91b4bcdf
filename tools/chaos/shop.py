"""The application of a real shop, as the chaos run's sites run it (issue 19 item 3), and
its journal of every committed write.

Owns:
* ``SCHEMA`` (the shop's DDL, run at every site before install), ``TABLES``, ``GENERATORS``
  and ``generator_ranges`` (which generators need a block per site), ``DIGEST_SCHEMA`` (the
  tables described for ``tools.erpschema.digest``, the independent read the oracle uses).
* ``before_install``: the rows a shop held before siege-sync was installed, identical at
  every site, journaled once.
* ``Shop``: one site's application, as an ordinary Firebird user (never SYSDBA), in its own
  thread: random transactions of 1 to 2,000 events (mostly small), one in ten rolled back,
  some held open across rounds. Customers every site edits (their name, city, balance ...,
  deleted while others edit them); each site's own invoices numbered per site (UNIQUE
  (SITE, NUM)), their lines and payments (ON DELETE CASCADE), an application trigger keeping
  INVOICE.TOTAL and PAID and one writing HISTORY rows (a marker per origin write: REV:op);
  contacts renumbered (primary-key updates), a customer CHECK over two columns
  (``ACTIVE OR BALANCE = 0``: merging a deactivation with a concurrent balance breaks it), a
  UNIQUE TAXID two sites may register at once. Values as shops hold them: WIN1252 text with
  accents, the codes WIN1252 leaves undefined (0x81 0x8D 0x8F 0x90 0x9D) and trailing
  blanks, names under WIN_PTBR / UNICODE_CI_AI (case- and accent-insensitive), NUMERIC(15,2),
  DOUBLE edge values (-0.0, the smallest denormal, the largest double), DATE/TIMESTAMP at
  their limits, BOOLEAN, text and binary BLOBs (rarely a few MiB), an INTEGER[1:3] ARRAY.
* ``Journal``: thread-safe; for every committed write: site, table, key, the values written
  (or the delete), the values it replaced where it ran (``RETURNING OLD`` or a read under the
  row lock in the same transaction), when its transaction began and committed
  (``time.time()``), and the site node's clock skew then. A commit whose outcome is unknown
  (the connection died during it) is journaled as in doubt (``certain=False``). Whoever
  makes a fault tells it what the application cannot see: a clock jump
  (``Journal.note_skew``), a site put back from an older copy (``Journal.doubt``: what it
  committed since may be gone).

Must never: connect as SYSDBA from a ``Shop``, raise for a database error (an error is
counted in the ``Outcome``), journal a write that did not commit, or read the node's objects.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from firebird.driver import TPB, DatabaseError, Isolation

from siege_sync.node.db.database import connection_lost, is_concurrent_write
from siege_sync.node.model.config import GeneratorRange

# --- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # its DDL after the name
    kind: str  # tools.erpschema KINDS name: how the independent digest reads it
    charset: str | None = None  # text stored as bytes of this charset ("cp1252", "utf-8")
    blob: bool = False  # read back through a BlobReader when large


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    extra: tuple[str, ...] = ()  # constraints after the columns

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_ID = Column("ID", "BIGINT NOT NULL PRIMARY KEY", "id")
W1252 = "cp1252"
UTF8 = "utf-8"

SHOP_TABLES: tuple[Table, ...] = (
    Table("CUSTOMER", (
        _ID,
        Column("TAXID", "VARCHAR(16) CHARACTER SET WIN1252", "code", W1252),
        Column("NAME", "VARCHAR(60) CHARACTER SET WIN1252 COLLATE WIN_PTBR", "name", W1252),
        Column("CITY", "VARCHAR(40) CHARACTER SET UTF8 COLLATE UNICODE_CI_AI", "city", UTF8),
        Column("BALANCE", "NUMERIC(15,2) DEFAULT 0 NOT NULL", "amount"),
        Column("RATING", "DOUBLE PRECISION", "double"),
        Column("ACTIVE", "BOOLEAN DEFAULT TRUE NOT NULL", "int"),
        Column("SINCE", "DATE", "date"),
        Column("SEEN", "TIMESTAMP", "ts"),
        Column("NOTE", "BLOB SUB_TYPE TEXT CHARACTER SET WIN1252", "memo", blob=True),
        Column("PHOTO", "BLOB SUB_TYPE 0", "blob", blob=True),
        Column("TAGS", "INTEGER [1:3]", "int")),
        ("CONSTRAINT CUSTOMER_TAXID UNIQUE (TAXID)",
         "CONSTRAINT CUSTOMER_ACTIVE_BALANCE CHECK (ACTIVE OR BALANCE = 0)")),
    Table("CONTACT", (
        _ID,
        Column("CUSTOMER_ID", "BIGINT NOT NULL", "ref"),
        Column("NAME", "VARCHAR(60) CHARACTER SET WIN1252 COLLATE WIN_PTBR", "name", W1252),
        Column("PHONE", "VARCHAR(16) CHARACTER SET WIN1252", "code", W1252),
        Column("MAIN", "BOOLEAN DEFAULT FALSE NOT NULL", "int")),
        # No cascade: a site deletes a customer's contacts itself (it journals what it
        # deletes); a contact it has not seen refuses the delete.
        ("CONSTRAINT CONTACT_CUSTOMER FOREIGN KEY (CUSTOMER_ID) REFERENCES CUSTOMER (ID)",)),
    Table("INVOICE", (
        _ID,
        Column("SITE", "VARCHAR(20) CHARACTER SET UTF8 NOT NULL", "app", UTF8),
        Column("NUM", "INTEGER NOT NULL", "int"),
        Column("CUSTOMER_ID", "BIGINT NOT NULL", "ref"),
        Column("ISSUED", "DATE", "date"),
        Column("TOTAL", "NUMERIC(15,2) DEFAULT 0 NOT NULL", "amount"),
        Column("PAID", "NUMERIC(15,2) DEFAULT 0 NOT NULL", "amount"),
        Column("MEMO", "BLOB SUB_TYPE TEXT CHARACTER SET WIN1252", "memo", blob=True),
        Column("REV", "VARCHAR(20) CHARACTER SET UTF8 NOT NULL", "app", UTF8)),
        ("CONSTRAINT INVOICE_NUMBER UNIQUE (SITE, NUM)",
         "CONSTRAINT INVOICE_CUSTOMER FOREIGN KEY (CUSTOMER_ID) REFERENCES CUSTOMER (ID)",
         "CONSTRAINT INVOICE_AMOUNTS CHECK (TOTAL >= 0 AND PAID >= 0)")),
    Table("INVOICE_LINE", (
        _ID,
        Column("INVOICE_ID", "BIGINT NOT NULL", "ref"),
        Column("PRODUCT", "VARCHAR(20) CHARACTER SET UTF8", "app", UTF8),
        Column("QTY", "NUMERIC(15,2) NOT NULL", "amount"),
        Column("PRICE", "NUMERIC(15,2) NOT NULL", "amount"),
        Column("DISCOUNT", "DOUBLE PRECISION", "double")),
        ("CONSTRAINT LINE_INVOICE FOREIGN KEY (INVOICE_ID) REFERENCES INVOICE (ID) "
         "ON DELETE CASCADE", "CONSTRAINT LINE_QTY CHECK (QTY > 0 AND PRICE >= 0)")),
    Table("PAYMENT", (
        _ID,
        Column("INVOICE_ID", "BIGINT NOT NULL", "ref"),
        Column("AMOUNT", "NUMERIC(15,2) NOT NULL", "amount"),
        Column("PAID_AT", "TIMESTAMP", "ts"),
        Column("METHOD", "VARCHAR(16) CHARACTER SET WIN1252", "code", W1252),
        Column("RECEIPT", "BLOB SUB_TYPE 0", "blob", blob=True)),
        ("CONSTRAINT PAYMENT_INVOICE FOREIGN KEY (INVOICE_ID) REFERENCES INVOICE (ID) "
         "ON DELETE CASCADE", "CONSTRAINT PAYMENT_AMOUNT CHECK (AMOUNT > 0)")),
    # Append-only: written by INVOICE_HISTORY only, never updated or deleted.
    Table("HISTORY", (
        _ID,
        Column("INVOICE_ID", "BIGINT", "ref"),
        Column("OP", "CHAR(1) CHARACTER SET WIN1252", "kind", W1252),
        Column("AMOUNT", "NUMERIC(15,2)", "amount"),
        Column("MARKER", "VARCHAR(40) CHARACTER SET UTF8 NOT NULL", "city", UTF8),
        Column("STAMPED", "TIMESTAMP", "ts"))),
)
TABLES: tuple[str, ...] = tuple(t.name for t in SHOP_TABLES)
# CHECKs over several columns that merging concurrent writes can break (the row then falls
# back to whole-row last-writer-wins: DESIGN §3.5): table -> the columns.
CHECK_SPANS: dict[str, tuple[str, ...]] = {"CUSTOMER": ("ACTIVE", "BALANCE")}
BY_NAME: dict[str, Table] = {t.name: t for t in SHOP_TABLES}

# Every generator feeds keys (BEFORE INSERT triggers, and CONTACT's renumbering): each needs
# its own block per site. G_INVOICE_NUM numbers a site's invoices; UNIQUE (SITE, NUM) holds
# whatever it hands out, so it needs no range.
KEY_GENERATORS = ("G_CUSTOMER", "G_CONTACT", "G_INVOICE", "G_INVOICE_LINE", "G_PAYMENT",
                  "G_HISTORY")
RANGE_SIZE = 1_000_000_000
# Generator name -> the size of each site's block (site number n gets
# [(n + 1) * RANGE_SIZE + 1, (n + 2) * RANGE_SIZE - 1]; keys below RANGE_SIZE are the rows
# before install).
GENERATORS: dict[str, int] = {g: RANGE_SIZE for g in KEY_GENERATORS}


def generator_ranges(site_no: int) -> list[GeneratorRange]:
    """Site number ``site_no`` (0, 1, 2 ...)'s block of every key generator (``install``)."""
    start = (site_no + 1) * RANGE_SIZE + 1
    return [GeneratorRange(g, start, start + RANGE_SIZE - 2) for g in KEY_GENERATORS]


def _id_trigger(table: str, generator: str, extra: str = "") -> str:
    return (f"CREATE TRIGGER {table}_BI FOR {table} ACTIVE BEFORE INSERT POSITION 0 AS\n"
            f"BEGIN\n  IF (NEW.ID IS NULL) THEN NEW.ID = GEN_ID({generator}, 1);\n{extra}END")


_HISTORY_INSERT = ("INSERT INTO HISTORY (INVOICE_ID, OP, AMOUNT, MARKER, STAMPED) VALUES "
                   "({id}, '{op}', {amount}, {rev} || ':{op}', CAST('NOW' AS TIMESTAMP));")

SCHEMA: list[str] = [
    *(f"CREATE SEQUENCE {g}" for g in (*KEY_GENERATORS, "G_INVOICE_NUM")),
    *(f"CREATE TABLE {t.name} ({', '.join(f'{c.name} {c.sql}' for c in t.columns)}"
      + "".join(f", {x}" for x in t.extra) + ")" for t in SHOP_TABLES),
    "CREATE INDEX HISTORY_MARKER ON HISTORY (MARKER)",
    _id_trigger("CUSTOMER", "G_CUSTOMER"),
    _id_trigger("CONTACT", "G_CONTACT"),
    _id_trigger("INVOICE", "G_INVOICE",
                "  IF (NEW.NUM IS NULL) THEN NEW.NUM = GEN_ID(G_INVOICE_NUM, 1);\n"),
    _id_trigger("INVOICE_LINE", "G_INVOICE_LINE"),
    _id_trigger("PAYMENT", "G_PAYMENT"),
    _id_trigger("HISTORY", "G_HISTORY"),
    # The application keeps the invoice's totals (at the origin; the node guards them at
    # the other sites, where the captured totals arrive as events).
    "CREATE TRIGGER INVOICE_LINE_TOTAL FOR INVOICE_LINE ACTIVE AFTER INSERT OR UPDATE OR "
    "DELETE POSITION 10 AS\nDECLARE VARIABLE INV BIGINT;\nBEGIN\n"
    "  INV = IIF(DELETING, OLD.INVOICE_ID, NEW.INVOICE_ID);\n"
    "  UPDATE INVOICE SET TOTAL = (SELECT COALESCE(SUM(QTY * PRICE), 0) FROM INVOICE_LINE "
    "WHERE INVOICE_ID = :INV) WHERE ID = :INV;\nEND",
    "CREATE TRIGGER PAYMENT_PAID FOR PAYMENT ACTIVE AFTER INSERT OR UPDATE OR DELETE "
    "POSITION 10 AS\nDECLARE VARIABLE INV BIGINT;\nBEGIN\n"
    "  INV = IIF(DELETING, OLD.INVOICE_ID, NEW.INVOICE_ID);\n"
    "  UPDATE INVOICE SET PAID = (SELECT COALESCE(SUM(AMOUNT), 0) FROM PAYMENT "
    "WHERE INVOICE_ID = :INV) WHERE ID = :INV;\nEND",
    # One history row per application write of an invoice (a new REV): the totals the
    # triggers above keep do not write history.
    "CREATE TRIGGER INVOICE_HISTORY FOR INVOICE ACTIVE AFTER INSERT OR UPDATE OR DELETE "
    "POSITION 10 AS\nBEGIN\n"
    "  IF (INSERTING) THEN\n    "
    + _HISTORY_INSERT.format(id="NEW.ID", op="N", amount="NEW.TOTAL", rev="NEW.REV") + "\n"
    "  ELSE IF (DELETING) THEN\n    "
    + _HISTORY_INSERT.format(id="OLD.ID", op="X", amount="OLD.TOTAL", rev="OLD.REV") + "\n"
    "  ELSE IF (NEW.REV IS DISTINCT FROM OLD.REV) THEN\n    "
    + _HISTORY_INSERT.format(id="NEW.ID", op="O", amount="NEW.TOTAL", rev="NEW.REV") + "\n"
    "END",
    # An ordinary application user takes keys from the generators (triggers and renumbering).
    *(f"GRANT USAGE ON SEQUENCE {g} TO PUBLIC" for g in (*KEY_GENERATORS, "G_INVOICE_NUM")),
]


def grants(user: str) -> list[str]:
    """What the application user needs besides ``SCHEMA``'s sequence grants: its tables."""
    return [f"GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON {t} TO USER {user}"
            for t in TABLES]


def digest_schema():
    """The shop's tables described for ``tools.erpschema.digest`` (its independent read)."""
    from tools import erpschema

    tables = {t.name: erpschema.TableSpec(t.name, [erpschema.ColumnSpec(c.name, c.kind)
                                                   for c in t.columns]) for t in SHOP_TABLES}
    return erpschema.ErpSchema("shop", 0, SCHEMA, tables, list(KEY_GENERATORS), [], (), "")


# --- the journal -----------------------------------------------------------------------------

INSERT, UPDATE, DELETE = "insert", "update", "delete"


@dataclass(frozen=True)
class Write:
    """One committed write of one row.

    ``values``: column -> value written (an insert: the whole row). ``old``: column -> the
    value it replaced where it ran (an update: the columns it wrote; a delete: the whole
    row; an insert: empty). Text columns hold their stored bytes (``Column.charset``), text
    BLOBs ``str``, arrays tuples. ``marker``: an INVOICE write's HISTORY marker."""

    site: str
    table: str
    key: int
    op: str
    values: dict[str, object]
    old: dict[str, object]
    began: float  # time.time() before its transaction's first statement
    committed: float  # time.time() right after the commit returned
    skew: float  # the site node's clock skew (s) right after the commit
    tx: int  # its transaction's number in the journal
    certain: bool = True  # False: the commit's outcome is unknown (connection lost in it)
    before_install: bool = False
    marker: str | None = None


@dataclass(frozen=True)
class Doubt:
    """Writes of ``site`` committed in [since, until] may be gone legitimately (the site's
    database was replaced by an older copy, then resynced)."""

    site: str
    since: float
    until: float
    why: str


class Journal:
    """Every committed write of every site's ``Shop`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: list[Write] = []
        self._tx = 0
        self._skews: dict[str, list[tuple[float, float]]] = {}
        self._doubts: list[Doubt] = []
        self._before_install = False

    def next_tx(self) -> int:
        with self._lock:
            self._tx += 1
            return self._tx

    def record(self, writes: list[Write]) -> None:
        with self._lock:
            self._writes.extend(writes)
            for w in writes:
                self._note_skew(w.site, w.committed, w.skew)

    def note_skew(self, site: str, skew: float, at: float | None = None) -> None:
        """The node's clock skew at ``site`` (a clock jump, told by whoever makes it)."""
        with self._lock:
            self._note_skew(site, time.time() if at is None else at, skew)

    def _note_skew(self, site: str, at: float, skew: float) -> None:
        seen = self._skews.setdefault(site, [])
        if not seen or seen[-1][1] != skew:
            seen.append((at, skew))

    def doubt(self, site: str, since: float, until: float, why: str) -> None:
        """Writes of ``site`` committed in [since, until] may legitimately be gone."""
        with self._lock:
            self._doubts.append(Doubt(site, since, until, why))

    def claim_before_install(self) -> bool:
        """True once: the first site's rows before install are journaled, not the others'
        (they are the same rows)."""
        with self._lock:
            first, self._before_install = not self._before_install, True
            return first

    def writes(self) -> list[Write]:
        with self._lock:
            return list(self._writes)

    def skews(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            return {s: list(v) for s, v in self._skews.items()}

    def doubts(self) -> list[Doubt]:
        with self._lock:
            return list(self._doubts)

    def __len__(self) -> int:
        with self._lock:
            return len(self._writes)


# --- values as shops hold them ---------------------------------------------------------------

_WIN_NAMES = [b"Jos\xe9 Gon\xe7alves", b"H\xe9l\xe8ne Dupr\xe9  ", b"\xc9LODIE MARTIN",
              b"\xe9lodie martin", b"M\xfcller & S\xf6hne", b"\x8cuvres d'\xd8rsted",
              b"Caf\xe9 \x93Le Zinc\x94 \x80", b"Ana L\xfacia ", b"  Zo\xeb", b"PE\xd1A \x89 50",
              b"\x81\x8d\x8f\x90\x9d", b"x\x81 ", b""]
_CITIES = ["Besançon", "SÃO PAULO", "São Paulo", "Zürich ", "Łódź", "東京", "Reykjavík", "a",
           "ÅLESUND  "]
_MEMOS = ["Livraison prévue lundi.\nAttention: fragile — « haut »", "Obs.: pagamento à vista ",
          "", "ligne 1\r\nligne 2\tTab", "Æble, øl & ål", "Ça coûte 10 € ‰"]
_PRODUCTS = ["Câble", "câble ", "CABLE", "Écrou M8", "Tuyau ½\"", "ñandú", "x"]
_METHODS = [b"Esp\xe8ces", b"Ch\xe8que ", b"CB", b"Virement \x80", b"\x90\x9d"]
_DOUBLES = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
            -1.7976931348623157e308, 0.1, 1 / 3, 1e-300, 12.5, None]
_DATES = [date(1, 1, 1), date(9999, 12, 31), date(1899, 12, 30), date(2000, 2, 29),
          date(2024, 3, 31), None]
_ARRAYS = [(1, 2, 3), (0, 0, 0), (-2147483648, 2147483647, 0), (3, 2, 1), None]
POPULAR_TAXIDS = [b"FR-0000000001", b"FR-0000000002", b"BR-0000000003"]  # sites collide
POPULAR_TAXID_SHARE = 0.05  # of new customers: two sites may register the same one at once


def _stamp(rng: random.Random) -> datetime:
    """A TIMESTAMP at Firebird's resolution (100 µs)."""
    return datetime(rng.choice([1900, 2000, 2024, 2026, 9999]), rng.randint(1, 12),
                    rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59),
                    rng.randint(0, 59), rng.randint(0, 9999) * 100)


def _memo(rng: random.Random, tag: str, large: bool = True) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.12 and large:  # past the driver's stream threshold (64 KiB)
        return ("Relevé détaillé " * 4400)[:70_000] + tag
    return rng.choice(_MEMOS) + tag + " " * rng.randint(0, 2)


def _binary(rng: random.Random, large: bool = True) -> bytes | None:
    roll = rng.random()
    if roll < 0.3:
        return None
    if not large:
        return rng.randbytes(rng.randint(0, 600))
    if roll < 0.302:  # rarely a few MiB
        return rng.randbytes(rng.randint(1, 3) * 1024 * 1024)
    if roll < 0.32:
        return rng.randbytes(70_000)
    return rng.randbytes(rng.randint(0, 600))


# --- what a transaction reports --------------------------------------------------------------

@dataclass
class Outcome:
    committed: bool = False
    rolled_back: bool = False
    in_doubt: bool = False  # the commit's outcome is unknown (journaled as such)
    events: int = 0  # rows written (journaled when committed)
    expected_errors: Counter = field(default_factory=Counter)  # kind -> count
    failures: list[str] = field(default_factory=list)  # capture failures: findings
    seconds: float = 0.0


# The application: read committed, and a lock conflict fails at once (it retries later).
APP_TPB = TPB(isolation=Isolation.READ_COMMITTED_RECORD_VERSION, lock_timeout=0).get_buffer()

# Constraints the application itself may meet (another transaction of the site, a row that
# arrived from another site): the statement is refused, the transaction goes on.
_APP_CONSTRAINTS = ("CUSTOMER_TAXID", "CONTACT_CUSTOMER", "INVOICE_CUSTOMER",
                    "CUSTOMER_ACTIVE_BALANCE")


def classify(exc: BaseException) -> tuple[str, bool]:
    """(kind, expected) of a database error met by the application."""
    text = str(exc)
    low = text.lower()
    if connection_lost(exc):
        return "connection lost", True
    if is_concurrent_write(exc) or "lock conflict" in low or "deadlock" in low:
        return "lock conflict", True
    if ("no space" in low or "disk full" in low or "error writing" in low
            or "could not expand" in low or "i/o error" in low):
        return "disk full", True
    if "SYNC$" in text:
        return "capture", False
    if any(name in text for name in _APP_CONSTRAINTS):
        return "refused by the application's constraints", True
    if "PRIMARY or UNIQUE KEY" in text:  # a generator behind the keys it handed out
        return "key taken (a generator reissued it)", False
    return "other", False


class _Refused(Exception):
    """A statement the database refused for an expected reason: undone, the transaction
    goes on without it."""


@dataclass
class _Tx:
    tm: object
    cur: object
    began: float
    writes: list[tuple] = field(default_factory=list)  # (table, key, op, values, old, marker)
    totals: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)  # old totals
    outcome: Outcome = field(default_factory=Outcome)


class Shop:
    """One site's application (see the module docstring). Not thread-safe: one thread."""

    SHARED_CUSTOMERS = range(1, 13)  # before install, edited by every site

    def __init__(self, site: str, connect: Callable[[], object], rng: random.Random,
                 journal: Journal, clock_skew: Callable[[], float],
                 large_blobs: bool = True) -> None:
        """``large_blobs``: False keeps every BLOB under 64 KiB (a harness that moves
        events without their BLOB chunks)."""
        self.site, self.connect, self.rng, self.journal = site, connect, rng, journal
        self.large_blobs = large_blobs
        self.clock_skew = clock_skew
        self._con = None
        self._held: tuple[object, _Tx] | None = None
        self._token = secrets.token_hex(2)
        self._n = 0
        self._customers: list[int] = list(self.SHARED_CUSTOMERS)
        self._contacts: list[int] = []
        self._invoices: list[int] = []
        self._refreshed = 0

    # --- the public face ------------------------------------------------------------------

    def transaction(self) -> Outcome:
        """One random application transaction; committed, or rolled back one time in ten."""
        started = time.monotonic()
        con = self._connection()
        if con is None:
            out = Outcome()
            out.expected_errors["connection lost"] += 1
            return out
        try:
            tx = self._begin(con)
        except DatabaseError as exc:  # the connection died since its last transaction
            return self._not_begun(exc, con)
        out = tx.outcome
        try:
            if self._refreshed <= 0:
                self._refresh(tx.cur)
            size = self._size()
            while out.events < size:
                before = out.events
                self._operation(tx, big=size > 20)
                if out.events == before and self.rng.random() < 0.3:
                    break  # nothing to do here now (rows not arrived yet)
            if self.rng.random() < 0.1:
                tx.tm.rollback()
                out.rolled_back = True
            else:
                self._commit(tx)
        except DatabaseError as exc:
            self._failed(tx, exc, con)
        finally:
            self._end(tx)
            out.seconds = time.monotonic() - started
        return out

    def hold(self) -> Outcome:
        """Begin a transaction on a connection of its own, write, and leave it open
        (``release`` ends it); what went wrong beginning it is in the Outcome."""
        out = Outcome()
        if self._held is not None:
            return out
        try:
            con = self.connect()
        except DatabaseError:
            out.expected_errors["connection lost"] += 1
            return out
        try:
            tx = self._begin(con)
        except DatabaseError as exc:
            _close(con)
            return self._not_begun(exc, con)
        try:
            self._refresh(tx.cur)
            try:
                self._edit_customer(tx)  # its row lock also stands in the node's way
            except _Refused:
                pass
            if self._invoices:
                self._add_lines(tx, self.rng.choice(self._invoices), 1)
        except DatabaseError as exc:
            self._failed(tx, exc, con)
            self._end(tx)
            _close(con)
            return tx.outcome
        self._held = (con, tx)
        return out

    def release(self, commit: bool) -> Outcome:
        """End the held transaction (committed or rolled back)."""
        if self._held is None:
            return Outcome()
        con, tx = self._held
        self._held = None
        try:
            if commit:
                self._commit(tx)
            else:
                tx.tm.rollback()
                tx.outcome.rolled_back = True
        except DatabaseError as exc:
            self._failed(tx, exc, con)
        finally:
            self._end(tx)
            _close(con)
        return tx.outcome

    def close(self) -> None:
        if self._held is not None:
            self.release(commit=False)
        if self._con is not None:
            _close(self._con)
            self._con = None

    # --- running a transaction ------------------------------------------------------------

    def _connection(self):
        if self._con is None:
            try:
                self._con = self.connect()
            except DatabaseError:
                return None
        return self._con

    def _not_begun(self, exc: DatabaseError, con) -> Outcome:
        out = Outcome()
        kind, expected = classify(exc)
        if expected:
            out.expected_errors[kind] += 1
        else:
            out.failures.append(f"an application transaction at {self.site} could not "
                                f"begin ({kind}): {_first_lines(exc)}")
        if con is self._con:  # a new connection next time
            _close(con)
            self._con = None
        return out

    def _begin(self, con) -> _Tx:
        tm = con.transaction_manager(default_tpb=APP_TPB)
        began = time.time()
        tm.begin()
        return _Tx(tm, tm.cursor(), began)

    def _commit(self, tx: _Tx) -> None:
        self._read_totals(tx)
        tx.cur.close()
        try:
            tx.tm.commit()
        except DatabaseError as exc:
            if connection_lost(exc):
                # The commit may or may not have happened: journaled as in doubt.
                self._journal(tx, certain=False)
                tx.outcome.in_doubt = True
            raise
        self._journal(tx, certain=True)
        tx.outcome.committed = True
        self._refreshed -= 1

    def _journal(self, tx: _Tx, certain: bool) -> None:
        committed = time.time()
        try:
            skew = float(self.clock_skew())
        except Exception:  # noqa: BLE001 - a node that is down has the skew it had
            skew = 0.0
        number = self.journal.next_tx()
        self.journal.record([
            Write(self.site, table, key, op, values, old, tx.began, committed, skew, number,
                  certain, marker=marker)
            for table, key, op, values, old, marker in tx.writes])

    def _failed(self, tx: _Tx, exc: DatabaseError, con) -> None:
        kind, expected = classify(exc)
        if expected:
            tx.outcome.expected_errors[kind] += 1
        else:
            tx.outcome.failures.append(f"an application transaction at {self.site} failed "
                                       f"({kind}): {_first_lines(exc)}")
        try:
            if tx.tm.is_active():
                tx.tm.rollback()
        except DatabaseError:
            pass
        if connection_lost(exc) and con is self._con:
            _close(con)
            self._con = None

    def _end(self, tx: _Tx) -> None:
        try:
            if tx.tm.is_active():
                tx.tm.rollback()
            tx.tm.close()
        except DatabaseError:
            pass

    def _size(self) -> int:
        roll = self.rng.random()
        if roll < 0.002:
            return 2000
        if roll < 0.02:
            return self.rng.randint(50, 300)
        return self.rng.randint(1, 6)

    def _statement(self, tx: _Tx, sql: str, params: tuple = (), fetch: bool = True):
        """Run one statement; an expected refusal (a constraint the application meets)
        raises ``_Refused`` after counting it, anything else propagates."""
        try:
            tx.cur.execute(sql, params)
            return tx.cur.fetchone() if fetch else None
        except DatabaseError as exc:
            kind, expected = classify(exc)
            if kind == "refused by the application's constraints":
                tx.outcome.expected_errors[kind] += 1
                raise _Refused() from exc
            raise

    def _refresh(self, cur) -> None:
        """The keys to pick from, as this site sees them (refreshed every few transactions:
        a stale key just matches no row)."""
        cur.execute("SELECT ID FROM CUSTOMER")
        self._customers = [r[0] for r in cur.fetchall()] or list(self.SHARED_CUSTOMERS)
        cur.execute("SELECT ID FROM CONTACT")
        self._contacts = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT ID FROM INVOICE WHERE SITE = ?", (self.site,))
        self._invoices = [r[0] for r in cur.fetchall()]
        self._refreshed = 8

    # --- the operations (each appends what it wrote to tx.writes) ---------------------------

    def _operation(self, tx: _Tx, big: bool) -> None:
        ops = [(self._edit_customer, 30), (self._new_customer, 3), (self._delete_customer, 1.5),
               (self._contact, 8), (self._new_invoice, 10), (self._edit_invoice, 6),
               (self._lines, 10), (self._payment, 5), (self._delete_invoice, 1.5)]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        if big and self.rng.random() < 0.5:
            if self._invoices:  # a big order: many lines at once
                self._add_lines(tx, self.rng.choice(self._invoices), 200)
                return
        try:
            op(tx)
        except _Refused:
            pass

    def _tag(self) -> str:
        self._n += 1
        return f"{self._token}{self._n}"

    def _add(self, tx: _Tx, table: str, key: int, op: str, values: dict, old: dict,
             marker: str | None = None) -> None:
        tx.writes.append((table, key, op, values, old, marker))
        tx.outcome.events += 1

    def _customer_values(self, columns: list[str]) -> dict[str, object]:
        rng, tag = self.rng, self._tag()
        make = {
            "TAXID": lambda: (rng.choice(POPULAR_TAXIDS) if rng.random() < POPULAR_TAXID_SHARE
                              else f"T{self.site[:3]}{tag}".encode()[:16]),
            "NAME": lambda: (rng.choice(_WIN_NAMES) + b" " + tag.encode()
                             + b" " * rng.randint(0, 2))[:60],
            "CITY": lambda: (rng.choice(_CITIES) + tag)[:40].encode(UTF8),
            "BALANCE": lambda: Decimal(rng.randint(-99999, 999999)).scaleb(-2),
            "RATING": lambda: rng.choice(_DOUBLES),
            "ACTIVE": lambda: rng.random() < 0.8,
            "SINCE": lambda: rng.choice(_DATES),
            "SEEN": lambda: _stamp(rng) if rng.random() < 0.9 else None,
            "NOTE": lambda: _memo(rng, tag, self.large_blobs),
            "PHOTO": lambda: _binary(rng, self.large_blobs),
            "TAGS": lambda: rng.choice(_ARRAYS),
        }
        return {c: make[c]() for c in columns}

    def _edit_customer(self, tx: _Tx) -> None:
        key = self.rng.choice(self._customers)
        table = BY_NAME["CUSTOMER"]
        editable = [c for c in table.names if c not in ("ID", "ACTIVE", "TAXID")]
        columns = self.rng.sample(editable, self.rng.randint(1, 3))
        values = self._customer_values(columns)
        where = "ID = ?"
        roll = self.rng.random()
        if roll < 0.05:  # a customer closed: the CHECK wants a zero balance
            values.update(ACTIVE=False, BALANCE=Decimal("0.00"))
        elif roll < 0.1:
            values["ACTIVE"] = True
        elif values.get("BALANCE"):
            where += " AND ACTIVE"
        self._update(tx, table, key, values, where)

    def _update(self, tx: _Tx, table: Table, key: int, values: dict, where: str = "ID = ?",
                marker: str | None = None) -> bool:
        """UPDATE ... RETURNING the values it replaced; journaled when a row matched."""
        names = list(values)
        arrays = [n for n in names if _read_first(table.column(n))]
        before = self._lock_read(tx, table, key, arrays)
        if before is None:
            return False
        returned = [n for n in names if n not in arrays]
        sets = ", ".join(f"{n} = {_param(table.column(n))}" for n in names)
        olds = "".join(f", {_read(table.column(n), 'OLD.')}" for n in returned)
        row = self._statement(tx, f"UPDATE {table.name} SET {sets} WHERE {where} "
                                  f"RETURNING OLD.ID{olds}", (*_args(table, values), key))
        if row is None or row[0] is None:
            return False
        old = {**before, **{n: _value(table.column(n), v)
                            for n, v in zip(returned, row[1:], strict=True)}}
        old = {n: old[n] for n in names}
        self._add(tx, table.name, key, UPDATE, values, old, marker)
        return True

    def _insert(self, tx: _Tx, table: Table, values: dict, marker_rev: str | None = None,
                extra: tuple[str, ...] = ()) -> tuple | None:
        """INSERT ... RETURNING ID (and ``extra`` columns): the row journaled whole."""
        names = list(values)
        sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES "
               f"({', '.join(_param(table.column(n)) for n in names)}) "
               f"RETURNING {', '.join(('ID', *extra))}")
        row = self._statement(tx, sql, _args(table, values))
        whole = {c: None for c in table.names}
        whole.update(values)
        whole["ID"] = row[0]
        for name, value in zip(extra, row[1:], strict=True):
            whole[name] = value
        self._add(tx, table.name, row[0], INSERT, whole, {},
                  f"{marker_rev}:N" if marker_rev else None)
        return row

    def _delete(self, tx: _Tx, table: Table, key: int, where: str = "ID = ?",
                params: tuple = ()) -> dict | None:
        """DELETE ... RETURNING the whole row it removed (journaled)."""
        arrays = [c.name for c in table.columns if _read_first(c)]
        before = self._lock_read(tx, table, key, arrays)
        if before is None:
            return None
        returned = [c for c in table.columns if c.name not in arrays]
        row = self._statement(tx, f"DELETE FROM {table.name} WHERE {where} RETURNING "
                                  f"{', '.join(_read(c, '') for c in returned)}",
                              (key, *params))
        if row is None or row[0] is None:
            return None
        old = {**before, **{c.name: _value(c, v) for c, v in zip(returned, row, strict=True)}}
        old = {c: old[c] for c in table.names}
        marker = f"{_text(old['REV'])}:X" if table.name == "INVOICE" else None
        self._add(tx, table.name, key, DELETE, {}, old, marker)
        return old

    def _lock_read(self, tx: _Tx, table: Table, key: int, columns: list[str]
                   ) -> dict[str, object] | None:
        """The row's ARRAY and BLOB values, read under its row lock before it is written:
        ``RETURNING OLD`` of one reads the version being replaced, whose array or BLOB is
        gone when this transaction wrote the row before ("BLOB not found"). None when the
        row is not here."""
        if not columns:
            return {}
        row = self._statement(tx, f"SELECT {', '.join(columns)} FROM {table.name} "
                                  "WHERE ID = ? WITH LOCK", (key,))
        if row is None:
            return None
        return {n: _value(table.column(n), v) for n, v in zip(columns, row, strict=True)}

    def _new_customer(self, tx: _Tx) -> None:
        table = BY_NAME["CUSTOMER"]
        values = self._customer_values([c for c in table.names if c not in ("ID", "ACTIVE")])
        values["ACTIVE"] = True
        row = self._insert(tx, table, values)
        self._customers.append(row[0])

    def _delete_customer(self, tx: _Tx) -> None:
        """A customer with no invoice here, with its contacts (deleted first: what a site
        deletes, it journals)."""
        tx.cur.execute("SELECT FIRST 5 c.ID FROM CUSTOMER c WHERE NOT EXISTS (SELECT 1 FROM "
                       "INVOICE i WHERE i.CUSTOMER_ID = c.ID) ORDER BY c.ID DESC")
        keys = [r[0] for r in tx.cur.fetchall()]
        if not keys:
            return
        key = self.rng.choice(keys)
        tx.cur.execute("SELECT ID FROM CONTACT WHERE CUSTOMER_ID = ?", (key,))
        for (contact,) in tx.cur.fetchall():
            self._delete(tx, BY_NAME["CONTACT"], contact)
        if self._delete(tx, BY_NAME["CUSTOMER"], key) is not None and key in self._customers:
            self._customers.remove(key)

    def _contact(self, tx: _Tx) -> None:
        table = BY_NAME["CONTACT"]
        roll = self.rng.random()
        tag = self._tag()
        if roll < 0.35 or not self._contacts:
            values = {"CUSTOMER_ID": self.rng.choice(self._customers),
                      "NAME": (self.rng.choice(_WIN_NAMES) + tag.encode())[:60],
                      "PHONE": f"+33 {tag}".encode()[:16], "MAIN": self.rng.random() < 0.3}
            row = self._insert(tx, table, values)
            self._contacts.append(row[0])
            return
        key = self.rng.choice(self._contacts)
        if roll < 0.75:
            column = self.rng.choice(["NAME", "PHONE", "MAIN"])
            value = {"NAME": (self.rng.choice(_WIN_NAMES) + tag.encode())[:60],
                     "PHONE": f"+351 {tag}".encode()[:16],
                     "MAIN": self.rng.random() < 0.5}[column]
            self._update(tx, table, key, {column: value})
        elif roll < 0.9:  # renumbered: a primary-key update (a delete and an insert)
            reads = ", ".join(_read(c, "OLD.") for c in table.columns)
            row = self._statement(tx, "UPDATE CONTACT SET ID = NEXT VALUE FOR G_CONTACT "
                                      f"WHERE ID = ? RETURNING NEW.ID, {reads}", (key,))
            if row is None or row[0] is None:
                return
            old = {c.name: _value(c, v) for c, v in zip(table.columns, row[1:], strict=True)}
            self._add(tx, "CONTACT", key, DELETE, {}, old)
            self._add(tx, "CONTACT", row[0], INSERT, {**old, "ID": row[0]}, {})
            self._contacts[self._contacts.index(key)] = row[0]
        else:
            if self._delete(tx, table, key) is not None:
                self._contacts.remove(key)

    def _rev(self) -> str:
        return f"{self.site[:8]}.{self._tag()}"[:20]

    def _new_invoice(self, tx: _Tx) -> None:
        rev = self._rev()
        values = {"SITE": self.site.encode(UTF8), "CUSTOMER_ID": self.rng.choice(self._customers),
                  "ISSUED": self.rng.choice(_DATES[1:-1] + [date.today()]),
                  "MEMO": _memo(self.rng, rev, self.large_blobs), "REV": rev.encode(UTF8)}
        row = self._insert(tx, BY_NAME["INVOICE"], values, marker_rev=rev,
                           extra=("NUM", "TOTAL", "PAID"))
        key = row[0]
        tx.totals.setdefault(key, (row[2], row[3]))
        self._invoices.append(key)
        self._add_lines(tx, key, self.rng.randint(1, 4))
        if self.rng.random() < 0.3:
            self._pay(tx, key)

    def _lock_invoice(self, tx: _Tx, key: int) -> bool:
        """Take the invoice's row lock and note its totals before this transaction changes
        them (its lines' triggers will); False: not here (any more)."""
        if key in tx.totals:
            return True
        row = self._statement(tx, "SELECT TOTAL, PAID FROM INVOICE WHERE ID = ? WITH LOCK",
                              (key,))
        if row is None:
            return False
        tx.totals[key] = (row[0], row[1])
        return True

    def _edit_invoice(self, tx: _Tx) -> None:
        if not self._invoices:
            return
        key = self.rng.choice(self._invoices)
        if not self._lock_invoice(tx, key):
            return
        rev = self._rev()
        values: dict[str, object] = {"REV": rev.encode(UTF8)}
        for column in self.rng.sample(["ISSUED", "MEMO", "CUSTOMER_ID"], self.rng.randint(1, 2)):
            values[column] = {"ISSUED": lambda: self.rng.choice(_DATES[:-1]),
                              "MEMO": lambda: _memo(self.rng, rev, self.large_blobs),
                              "CUSTOMER_ID": lambda: self.rng.choice(self._customers)}[column]()
        self._update(tx, BY_NAME["INVOICE"], key, values, marker=f"{rev}:O")

    def _add_lines(self, tx: _Tx, invoice: int, n: int) -> None:
        if not self._lock_invoice(tx, invoice):
            return
        table = BY_NAME["INVOICE_LINE"]
        for _ in range(n):
            self._insert(tx, table, {
                "INVOICE_ID": invoice,
                "PRODUCT": (self.rng.choice(_PRODUCTS) + self._tag())[:20].encode(UTF8),
                "QTY": Decimal(self.rng.randint(1, 5000)).scaleb(-2),
                "PRICE": Decimal(self.rng.randint(0, 99999)).scaleb(-2),
                "DISCOUNT": self.rng.choice(_DOUBLES)})

    def _lines(self, tx: _Tx) -> None:
        if not self._invoices:
            return
        invoice = self.rng.choice(self._invoices)
        if not self._lock_invoice(tx, invoice):
            return
        roll = self.rng.random()
        if roll < 0.4:
            self._add_lines(tx, invoice, self.rng.randint(1, 3))
            return
        tx.cur.execute("SELECT ID FROM INVOICE_LINE WHERE INVOICE_ID = ?", (invoice,))
        lines = [r[0] for r in tx.cur.fetchall()]
        if not lines:
            return
        line = self.rng.choice(lines)
        table = BY_NAME["INVOICE_LINE"]
        if roll < 0.85:
            column = self.rng.choice(["QTY", "PRICE", "DISCOUNT", "PRODUCT"])
            value = {"QTY": Decimal(self.rng.randint(1, 5000)).scaleb(-2),
                     "PRICE": Decimal(self.rng.randint(0, 99999)).scaleb(-2),
                     "DISCOUNT": self.rng.choice(_DOUBLES),
                     "PRODUCT": (self.rng.choice(_PRODUCTS) + self._tag())[:20].encode(UTF8)
                     }[column]
            self._update(tx, table, line, {column: value})
        else:
            self._delete(tx, table, line)

    def _pay(self, tx: _Tx, invoice: int) -> None:
        self._insert(tx, BY_NAME["PAYMENT"], {
            "INVOICE_ID": invoice, "AMOUNT": Decimal(self.rng.randint(1, 99999)).scaleb(-2),
            "PAID_AT": _stamp(self.rng), "METHOD": self.rng.choice(_METHODS),
            "RECEIPT": _binary(self.rng, self.large_blobs)})

    def _payment(self, tx: _Tx) -> None:
        if not self._invoices:
            return
        invoice = self.rng.choice(self._invoices)
        if not self._lock_invoice(tx, invoice):
            return
        if self.rng.random() < 0.75:
            self._pay(tx, invoice)
            return
        tx.cur.execute("SELECT FIRST 1 ID FROM PAYMENT WHERE INVOICE_ID = ?", (invoice,))
        row = tx.cur.fetchone()
        if row is not None:
            self._delete(tx, BY_NAME["PAYMENT"], row[0])

    def _delete_invoice(self, tx: _Tx) -> None:
        """An invoice with its lines and payments (the cascade's rows read first: only this
        site writes them, so what it reads is what the cascade removes)."""
        if not self._invoices:
            return
        key = self.rng.choice(self._invoices)
        if not self._lock_invoice(tx, key):
            return
        for table in ("INVOICE_LINE", "PAYMENT"):
            tx.cur.execute(f"SELECT ID FROM {table} WHERE INVOICE_ID = ?", (key,))
            for (child,) in tx.cur.fetchall():
                self._delete(tx, BY_NAME[table], child)
        self._read_totals(tx, key)  # what deleting its lines did to the totals, first
        if self._delete(tx, BY_NAME["INVOICE"], key) is not None:
            self._invoices.remove(key)
            tx.totals.pop(key, None)

    def _read_totals(self, tx: _Tx, only: int | None = None) -> None:
        """What the totals triggers wrote: an update of TOTAL and PAID per invoice touched
        (``only``: that one), with the values they replaced (read under the row lock)."""
        for key, (total, paid) in sorted(tx.totals.items()):
            if only is not None and key != only:
                continue
            tx.cur.execute("SELECT TOTAL, PAID FROM INVOICE WHERE ID = ?", (key,))
            row = tx.cur.fetchone()
            if row is None:
                continue
            values = {n: v for n, v, was in (("TOTAL", row[0], total), ("PAID", row[1], paid))
                      if v != was}
            if values:
                self._add(tx, "INVOICE", key, UPDATE, values,
                          {"TOTAL": total, "PAID": paid} if len(values) == 2 else
                          {n: {"TOTAL": total, "PAID": paid}[n] for n in values})
            tx.totals[key] = (row[0], row[1])


# --- SQL pieces ------------------------------------------------------------------------------

def _param(col: Column) -> str:
    """A parameter marker assigning the value's bytes as they are (WIN1252 text: bytes no
    codec could carry, the undefined codes included)."""
    if col.charset == W1252 and not col.blob:
        size = int(col.sql.split("(")[1].split(")")[0]) * (4 if col.charset == UTF8 else 1)
        return f"CAST(? AS VARCHAR({size}) CHARACTER SET OCTETS)"
    return "?"


def _arg(col: Column, value: object) -> object:
    """The parameter for ``value`` (UTF8 text travels as str, the driver encodes it)."""
    if col.charset == UTF8 and isinstance(value, bytes):
        return value.decode(UTF8)
    if isinstance(value, tuple):
        return list(value)
    return value


def _args(table: Table, values: dict) -> tuple:
    return tuple(_arg(table.column(n), v) for n, v in values.items())


def _read(col: Column, prefix: str) -> str:
    """A column read back as the journal holds it (text: its stored bytes)."""
    if col.charset is not None and not col.blob:
        size = int(col.sql.split("(")[1].split(")")[0]) * (4 if col.charset == UTF8 else 1)
        return f"CAST({prefix}{col.name} AS VARCHAR({size}) CHARACTER SET OCTETS)"
    return f"{prefix}{col.name}"


def _value(col: Column, raw: object) -> object:
    if hasattr(raw, "read") and hasattr(raw, "close"):  # a BlobReader (over 64 KiB)
        reader = raw
        try:
            raw = reader.read()
        finally:
            reader.close()
    if isinstance(raw, list):
        return tuple(raw)
    return raw


def _read_first(col: Column) -> bool:
    """An ARRAY or a BLOB: read before a write, never through RETURNING OLD."""
    return col.blob or "[" in col.sql


def _text(value: object) -> str:
    return value.decode(UTF8) if isinstance(value, bytes) else str(value)


def _close(con) -> None:
    try:
        con.close()
    except DatabaseError:
        pass


def _first_lines(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " / ".join(lines[:3])[:300]


# --- the rows before install -----------------------------------------------------------------

def before_install(con, site: str, rng: random.Random, journal: Journal) -> None:
    """The rows the shop held before siege-sync was installed (``con``: SYSDBA, capture not
    installed yet): the same rows at every site (``rng`` is not used for them: the sites
    must hold identical rows), journaled once as ``before_install``."""
    del rng  # the rows are the same at every site
    fixed = random.Random("shop-before-install")
    writes: list[tuple[str, dict]] = []
    tm = con.transaction_manager()
    tm.begin()
    cur = tm.cursor()
    try:
        def insert(table: Table, values: dict) -> None:
            whole = {c: None for c in table.names}
            whole.update(values)
            cur.execute(f"INSERT INTO {table.name} ({', '.join(whole)}) VALUES "
                        f"({', '.join(_param(table.column(n)) for n in whole)})",
                        _args(table, whole))
            writes.append((table.name, whole))

        customer = BY_NAME["CUSTOMER"]
        for key in Shop.SHARED_CUSTOMERS:
            insert(customer, {
                "ID": key, "TAXID": f"OLD-{key:04d}".encode(),
                "NAME": _WIN_NAMES[key % len(_WIN_NAMES)] + f" {key}".encode(),
                "CITY": _CITIES[key % len(_CITIES)].encode(UTF8),
                "BALANCE": Decimal(fixed.randint(0, 99999)).scaleb(-2),
                "RATING": _DOUBLES[key % len(_DOUBLES)], "ACTIVE": True,
                "SINCE": _DATES[key % len(_DATES)], "SEEN": _stamp(fixed),
                "NOTE": _MEMOS[key % len(_MEMOS)], "PHOTO": fixed.randbytes(key * 10),
                "TAGS": _ARRAYS[key % len(_ARRAYS)]})
        for key in range(1, 9):
            insert(BY_NAME["CONTACT"], {
                "ID": key, "CUSTOMER_ID": key, "NAME": _WIN_NAMES[-key] + b" c",
                "PHONE": f"+33 0{key}".encode(), "MAIN": key % 2 == 0})
        # Old invoices of a till since replaced (nobody edits them); their lines' triggers
        # keep TOTAL, their history rows are written by the trigger.
        for key in range(1, 4):
            insert(BY_NAME["INVOICE"], {
                "ID": key, "SITE": b"legacy", "NUM": key, "CUSTOMER_ID": key,
                "ISSUED": date(2019, 1, key), "TOTAL": Decimal("0.00"),
                "PAID": Decimal("0.00"), "MEMO": _MEMOS[key], "REV": f"legacy.{key}".encode()})
            for n in range(2):
                insert(BY_NAME["INVOICE_LINE"], {
                    "ID": key * 10 + n, "INVOICE_ID": key, "PRODUCT": _PRODUCTS[n].encode(),
                    "QTY": Decimal("1.50"), "PRICE": Decimal(f"{key}0.10"),
                    "DISCOUNT": _DOUBLES[n]})
        # The history trigger stamped 'NOW': the same moment at every site.
        cur.execute("UPDATE HISTORY SET STAMPED = TIMESTAMP '2019-01-31 18:00:00'")
        cur.execute("SELECT ID, TOTAL, PAID FROM INVOICE")
        totals = {k: (t, p) for k, t, p in cur.fetchall()}
        cur.close()
        tm.commit()
    finally:
        tm.close()
    if not journal.claim_before_install():
        return
    number = journal.next_tx()
    out = []
    for table, values in writes:
        if table == "INVOICE":
            values = {**values, "TOTAL": totals[values["ID"]][0],
                      "PAID": totals[values["ID"]][1]}
        out.append(Write(site, table, values["ID"], INSERT, values, {}, 0.0, 0.0, 0.0, number,
                         before_install=True,
                         marker=f"{values['REV'].decode()}:N" if table == "INVOICE" else None))
    journal.record(out)
