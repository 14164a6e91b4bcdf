"""ERP-shaped Firebird 3 schemas for tests and benchmarks (issue 18), the workload an ERP
puts on them, an independent digest of their tables, and the N-table run (``make erp``).

Owns:
* ``build(shape, tables=N, seed=S) -> ErpSchema``: a seeded, deterministic schema of the kind
  accounting and ERP packages ship — domains (defaults, NOT NULL, CHECK), generators with
  BEFORE INSERT id triggers, audit triggers writing history tables, AFTER INSERT triggers
  inserting child rows, foreign-key chains ON DELETE CASCADE / SET NULL / NO ACTION, a foreign
  key to a UNIQUE key (``REFERENCES VEHICLE (CODE)``) and one to a table the node is told to
  leave out, a ledger (a chart of accounts keyed by a case-insensitive text code that
  references itself, two-column keys), CHECKs over one and two columns, NUMERIC(15,2)/(18,4),
  DOUBLE, DATE/TIMESTAMP, WIN1252 text under a case-insensitive collation, UTF8 under
  UNICODE_CI_AI, text and binary BLOBs (some past 64 KiB), tables without a primary key,
  global temporary tables, stored procedures (one hands out keys) and an ON CONNECT database
  trigger. Shapes: ``erp-mini`` (~50 tables, every feature), ``erp250``, ``erp600`` (the same
  areas repeated: 600 tables, 700+ triggers, 430 foreign keys), ``flat`` (independent
  tables, no triggers between them). ``ErpSchema.ddl`` runs statement by statement (each
  committed), as ``tests/fbdb.create_db(path, ddl=...)`` does; rows that predate the install
  are part of it (identical at every site, written before the triggers exist).
* ``Workload``: seeded application transactions at one site, written as the application
  writes them — its own id triggers and key procedure allocate keys (each site's generators
  get their own range, ``ErpSchema.ranges`` / ``config_toml``), parents before children,
  amounts and text edited, whole rows re-saved, rows deleted with their cascades, rows of the
  keyless and temporary tables written too. Sites pay and correct any invoice (``race_totals``,
  see ``Workload``), so payments race recomputed totals under their CHECK.
* ``digest``: every replicated application table read with this module's own SQL in one
  snapshot (text as its stored bytes through a CAST to OCTETS, text BLOBs as text with their
  stored length and the engine's hash, binary BLOBs as bytes, DOUBLE by its bits), so sites
  are compared without the node's own digest code; ``differences`` says what differs.
* ``SiegeRounds`` and ``MeshRounds``: the siège's round between embedded sites — through each
  site's ``Replica`` (the node's pipeline without the wire), or through real nodes over mTLS
  gRPC on loopback: every site publishes, the siège gathers, then redistributes.
* ``main``: ``python -m tools.erpschema --shape erp600 --sites 3`` (``make erp``): install,
  workload, rounds and the independent convergence check, with timings; exit 1 when the
  sites differ or hold transactions, 2 on a wrong argument.

Must never: read the application tables through ``siege_sync.node.journal.digest`` or ``ranges``
(the digest here is the independent check), change the node's objects, or depend on the
order the sites are synced in for its verdict.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import struct
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))

from firebird.driver import Connection, DatabaseError, Isolation, tpb  # noqa: E402

from siege_sync.node.model.config import GeneratorRange  # noqa: E402

SHAPES = ("erp-mini", "erp250", "erp600", "flat")
DEFAULT_TABLES = {"erp-mini": 48, "erp250": 250, "erp600": 600, "flat": 600}
# Each site's generators hand out numbers in their own block (config [generators]).
RANGE_SIZE = 100_000_000
# Keys below this were written before install (identical at every site).
FIRST_FREE_KEY = 1000

# --- column kinds: SQL type, stored bytes for the OCTETS cast (None: not text) -------------

DOMAINS = [
    "CREATE DOMAIN D_ID AS BIGINT NOT NULL",
    "CREATE DOMAIN D_MONEY AS NUMERIC(15,2) DEFAULT 0 NOT NULL",
    "CREATE DOMAIN D_QTY AS NUMERIC(18,4) DEFAULT 1 NOT NULL CHECK (VALUE <> 0)",
    "CREATE DOMAIN D_NAME AS VARCHAR(60) CHARACTER SET WIN1252 COLLATE WIN_PTBR",
    "CREATE DOMAIN D_FLAG AS SMALLINT DEFAULT 1 NOT NULL CHECK (VALUE IN (0, 1))",
    "CREATE DOMAIN D_STATUS AS CHAR(1) CHARACTER SET WIN1252 DEFAULT 'N' NOT NULL "
    "CHECK (VALUE IN ('N', 'O', 'P', 'X'))",
    "CREATE DOMAIN D_MEMO AS BLOB SUB_TYPE TEXT CHARACTER SET WIN1252",
]

KINDS: dict[str, tuple[str, int | None]] = {
    "id": ("D_ID", None),
    "ref": ("BIGINT", None),
    "int": ("INTEGER", None),
    "money": ("D_MONEY", None),
    "qty": ("D_QTY", None),
    "amount": ("NUMERIC(15,2)", None),
    "rate": ("NUMERIC(18,4)", None),
    "double": ("DOUBLE PRECISION", None),
    "date": ("DATE", None),
    "ts": ("TIMESTAMP", None),
    "name": ("D_NAME", 60),
    "city": ("VARCHAR(40) CHARACTER SET UTF8 COLLATE UNICODE_CI_AI", 160),
    "code": ("VARCHAR(16) CHARACTER SET WIN1252", 16),
    "label": ("CHAR(12) CHARACTER SET WIN1252 COLLATE WIN_PTBR", 12),
    "ccy": ("CHAR(3) CHARACTER SET WIN1252", 3),
    "status": ("D_STATUS", 1),
    "app": ("VARCHAR(20) CHARACTER SET UTF8", 80),
    # A natural text key the engine compares case- and accent-insensitively.
    "account": ("VARCHAR(12) CHARACTER SET WIN1252 COLLATE WIN_PTBR", 12),
    "small": ("SMALLINT", None),
    "kind": ("CHAR(1) CHARACTER SET WIN1252", 1),
    "memo": ("D_MEMO", None),
    "blob": ("BLOB SUB_TYPE 0", None),
    "flag": ("D_FLAG", None),
}

# Text as users type it: accents, WIN1252's own signs, case variants, trailing blanks.
NAMES = ["José Gonçalves", "Hélène Dupré  ", "ÉLODIE MARTIN", "élodie martin", "Müller & Söhne",
         "Œuvres d'Ørsted", "Café “Le Zinc” €", "Ana Lúcia ", "  Zoë", "PEÑA ‰ 50", "x", ""]
CITIES = ["Besançon", "SÃO PAULO", "São Paulo", "Zürich ", "Łódź", "東京", "Reykjavík", "a"]
LABELS = ["Prêt", "PRET", "prêt  ", "Ça va", "€ 10", "", "ÿ"]
MEMOS = ["Livraison prévue lundi.\nAttention: fragile — « haut »", "Obs.: pagamento à vista ",
         "", "ligne 1\r\nligne 2\tTab", "Æble, øl & ål"]


def _text_memo(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.15:
        return None
    if roll < 0.2:  # past the driver's stream threshold (64 KiB): read as a stream
        return ("Relevé détaillé " * 4400)[: 70_000]
    return rng.choice(MEMOS) + (" " * rng.randint(0, 2))


def _binary(rng: random.Random) -> bytes | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.23:
        return rng.randbytes(70_000)
    return rng.randbytes(rng.randint(0, 600))


# --- the schema description --------------------------------------------------------------

@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str
    not_null: bool = False
    default: str | None = None

    def ddl(self) -> str:
        # Firebird's order: type, DEFAULT, NOT NULL, then COLLATE.
        sql_type, _, collate = KINDS[self.kind][0].partition(" COLLATE ")
        sql = f"{self.name} {sql_type}"
        if self.default is not None:
            sql += f" DEFAULT {self.default}"
        if self.not_null:
            sql += " NOT NULL"
        return sql + (f" COLLATE {collate}" if collate else "")


@dataclass(frozen=True)
class ForeignKey:
    name: str
    column: str
    parent: str
    parent_column: str  # the parent's key, or a UNIQUE column of it
    on_delete: str  # CASCADE, SET NULL, NO ACTION


@dataclass
class TableSpec:
    name: str
    columns: list[ColumnSpec]
    key: tuple[str, ...] = ("ID",)
    # table: replicated; keyless: no primary key (the node refuses it); gtt: global
    # temporary; local: left out by [tables] exclude (each site its own rows).
    kind: str = "table"
    generator: str | None = None  # fed by a BEFORE INSERT id trigger
    unique: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    role: str = "plain"  # what the workload does with it (see Workload)
    cluster: int | None = None

    @property
    def replicated(self) -> bool:
        return self.kind == "table"

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)


@dataclass
class Cluster:
    """One document area of the ERP: a catalogue, documents, their lines, their history."""

    number: int
    cat: str
    doc: str
    line: str
    hist: str | None
    doc_customer_action: str
    line_action: str
    cat_by_code: bool  # documents reference the catalogue by its UNIQUE code
    auto_line: bool  # an AFTER INSERT trigger on the document inserts its first line
    extras: dict[str, list[str]] = field(default_factory=dict)  # table -> extra columns


@dataclass
class ErpSchema:
    shape: str
    seed: int
    ddl: list[str]
    tables: dict[str, TableSpec]
    generators: list[str]
    clusters: list[Cluster]
    exclude: tuple[str, ...]  # for TableSelection(exclude=...)
    key_procedure: str  # SELECT ID FROM it: the next invoice number
    features: dict[str, int] = field(default_factory=dict)  # what the schema holds, counted

    @property
    def replicated(self) -> list[str]:
        return sorted(n for n, t in self.tables.items() if t.replicated)

    @property
    def keyless(self) -> list[str]:
        return sorted(n for n, t in self.tables.items() if t.kind == "keyless")

    @property
    def temporary(self) -> list[str]:
        return sorted(n for n, t in self.tables.items() if t.kind == "gtt")

    def config_toml(self, site: str, site_no: int, dsn: str) -> str:
        """A node config for this schema at site number ``site_no`` (``siege-node tables
        --config ...`` on a generated database): the excluded table and the site's ranges."""
        lines = [f'site = "{site}"', "[database]", f'dsn = "{dsn}"', "[tables]",
                 "exclude = [" + ", ".join(f'"{t}"' for t in self.exclude) + "]"]
        for r in self.ranges(site_no):
            lines += [f"[generators.{r.name}]", f"start = {r.start}", f"end = {r.end}"]
        return "\n".join(lines) + "\n"

    def ranges(self, site_no: int) -> list[GeneratorRange]:
        """Site number ``site_no`` (0, 1, 2 ...)'s block of every generator."""
        start = (site_no + 1) * RANGE_SIZE + 1
        return [GeneratorRange(g, start, start + RANGE_SIZE - 2) for g in self.generators]


# --- building ------------------------------------------------------------------------------

def build(shape: str = "erp-mini", tables: int | None = None, seed: int = 1) -> ErpSchema:
    """The schema of ``shape`` with about ``tables`` tables (the shape's default when None)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    want = tables or DEFAULT_TABLES[shape]
    rng = random.Random(f"{shape}:{seed}")
    b = _Builder(rng)
    if shape == "flat":
        b.flat(want)
    else:
        b.core()
        k = 0
        while len(b.tables) < want:
            b.cluster(k)
            k += 1
    return b.finish(shape, seed)


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tables: dict[str, TableSpec] = {}
        self.generators: list[str] = []
        self.clusters: list[Cluster] = []
        self.triggers: list[str] = []  # CREATE TRIGGER statements, after the data
        self.procedures: list[str] = []
        self.fill: list[str] = []  # rows that predate install
        self.flat_only = False

    def add(self, table: TableSpec, id_trigger: bool = True) -> TableSpec:
        self.tables[table.name] = table
        if table.key == ("ID",) and id_trigger and table.kind == "table":
            gen = f"G_{table.name}"
            table.generator = gen
            self.generators.append(gen)
            self.triggers.append(
                f"CREATE TRIGGER {table.name}_BI FOR {table.name} ACTIVE BEFORE INSERT "
                f"POSITION 0 AS\nBEGIN\n  IF (NEW.ID IS NULL) THEN NEW.ID = GEN_ID({gen}, 1);\n"
                "END")
        return table

    def audit(self, table: str, hist: str, key: str, amount: str | None) -> None:
        """AFTER INSERT OR UPDATE OR DELETE writing a history row (the ON CONNECT trigger's
        context variable names the application)."""
        value = "NULL" if amount is None else (
            f"IIF(DELETING, OLD.{amount}, NEW.{amount})")
        self.triggers.append(
            f"CREATE TRIGGER {table}_AUD FOR {table} ACTIVE AFTER INSERT OR UPDATE OR DELETE "
            f"POSITION 10 AS\nDECLARE VARIABLE OP CHAR(1);\nBEGIN\n"
            "  OP = IIF(INSERTING, 'N', IIF(UPDATING, 'O', 'X'));\n"
            f"  INSERT INTO {hist} (DOC_ID, OP, STAMPED, AMOUNT, APP)\n"
            f"  VALUES (IIF(DELETING, OLD.{key}, NEW.{key}), :OP, CAST('NOW' AS TIMESTAMP), "
            f"{value}, RDB$GET_CONTEXT('USER_SESSION', 'ERP_APP'));\nEND")

    def hist_table(self, name: str, cluster: int | None = None) -> TableSpec:
        return self.add(TableSpec(name, [
            ColumnSpec("ID", "id"), ColumnSpec("DOC_ID", "ref"),
            ColumnSpec("OP", "status", default="'N'"), ColumnSpec("STAMPED", "ts"),
            ColumnSpec("AMOUNT", "amount"), ColumnSpec("APP", "app")],
            role="history", cluster=cluster))

    def core(self) -> None:
        add = self.add
        add(TableSpec("LOCAL_PARAMS", [ColumnSpec("ID", "id"), ColumnSpec("SHOP", "name"),
                                       ColumnSpec("TAX_RATE", "rate")], kind="local"),
            id_trigger=False)
        add(TableSpec("CURRENCY", [ColumnSpec("CODE", "ccy", not_null=True),
                                   ColumnSpec("NAME", "name"), ColumnSpec("RATE", "rate")],
                      key=("CODE",), role="currency"))
        add(TableSpec("CUSTOMER", [
            ColumnSpec("ID", "id"), ColumnSpec("CODE", "city", not_null=True),
            ColumnSpec("NAME", "name", not_null=True), ColumnSpec("CITY", "city"),
            ColumnSpec("CURRENCY", "ccy"), ColumnSpec("CREDIT", "money"),
            ColumnSpec("DISCOUNT", "double"), ColumnSpec("BORN", "date"),
            ColumnSpec("CREATED", "ts"), ColumnSpec("NOTES", "memo"),
            ColumnSpec("LOGO", "blob"), ColumnSpec("ACTIVE", "flag")],
            unique=("CODE",), checks=("CREDIT >= 0",), role="customer",
            foreign_keys=[ForeignKey("FK_CUSTOMER_CCY", "CURRENCY", "CURRENCY", "CODE",
                                     "NO ACTION")]))
        self.hist_table("CUSTOMER_HIST")
        self.audit("CUSTOMER", "CUSTOMER_HIST", "ID", "CREDIT")
        add(TableSpec("VEHICLE", [
            ColumnSpec("ID", "id"), ColumnSpec("CODE", "code", not_null=True),
            ColumnSpec("CUSTOMER_ID", "ref"), ColumnSpec("MODEL", "name"),
            ColumnSpec("KM", "int", default="0")],
            unique=("CODE",), checks=("KM >= 0",), role="vehicle",
            foreign_keys=[ForeignKey("FK_VEHICLE_CUSTOMER", "CUSTOMER_ID", "CUSTOMER", "ID",
                                     "SET NULL")]))
        add(TableSpec("PRODUCT", [
            ColumnSpec("ID", "id"), ColumnSpec("SKU", "code", not_null=True),
            ColumnSpec("DESCR", "name"), ColumnSpec("PRICE", "money"),
            ColumnSpec("WEIGHT", "double"), ColumnSpec("PHOTO", "blob"),
            ColumnSpec("ACTIVE", "flag")], unique=("SKU",), checks=("PRICE >= 0",),
            role="product"))
        add(TableSpec("INVOICE", [
            ColumnSpec("ID", "id"), ColumnSpec("CUSTOMER_ID", "ref", not_null=True),
            ColumnSpec("PARAMS_ID", "ref"), ColumnSpec("ISSUED", "date"),
            ColumnSpec("STATUS", "status"), ColumnSpec("TOTAL", "money"),
            ColumnSpec("PAID", "money"), ColumnSpec("TAX", "rate"),
            ColumnSpec("MEMO", "memo")],
            checks=("PAID <= TOTAL",), role="invoice",
            foreign_keys=[
                ForeignKey("FK_INVOICE_CUSTOMER", "CUSTOMER_ID", "CUSTOMER", "ID", "CASCADE"),
                ForeignKey("FK_INVOICE_PARAMS", "PARAMS_ID", "LOCAL_PARAMS", "ID",
                           "NO ACTION")]))
        add(TableSpec("INVOICE_STATUS", [
            ColumnSpec("ID", "id"), ColumnSpec("INVOICE_ID", "ref", not_null=True),
            ColumnSpec("STATUS", "status"), ColumnSpec("STAMPED", "ts")], role="auto",
            foreign_keys=[ForeignKey("FK_INVOICE_STATUS_INV", "INVOICE_ID", "INVOICE", "ID",
                                     "CASCADE")]))
        add(TableSpec("INVOICE_LINE", [
            ColumnSpec("ID", "id"), ColumnSpec("INVOICE_ID", "ref", not_null=True),
            ColumnSpec("PRODUCT_ID", "ref", not_null=True), ColumnSpec("QTY", "qty"),
            ColumnSpec("PRICE", "money"), ColumnSpec("AMOUNT", "amount"),
            ColumnSpec("LABEL", "label")], role="invoice_line",
            foreign_keys=[
                ForeignKey("FK_INVOICE_LINE_INV", "INVOICE_ID", "INVOICE", "ID", "CASCADE"),
                ForeignKey("FK_INVOICE_LINE_PRODUCT", "PRODUCT_ID", "PRODUCT", "ID",
                           "NO ACTION")]))
        add(TableSpec("PAYMENT", [
            ColumnSpec("ID", "id"), ColumnSpec("INVOICE_ID", "ref"),
            ColumnSpec("AMOUNT", "money"), ColumnSpec("PAID_AT", "ts"),
            ColumnSpec("METHOD", "label")], checks=("AMOUNT > 0",), role="payment",
            foreign_keys=[ForeignKey("FK_PAYMENT_INVOICE", "INVOICE_ID", "INVOICE", "ID",
                                     "SET NULL")]))
        add(TableSpec("SERVICE_ORDER", [
            ColumnSpec("ID", "id"), ColumnSpec("VEHICLE_CODE", "code"),
            ColumnSpec("CUSTOMER_ID", "ref", not_null=True), ColumnSpec("OPENED", "ts"),
            ColumnSpec("HOURS", "rate"), ColumnSpec("REMARK", "memo")], role="service",
            foreign_keys=[
                # ERPs reference the plate, a UNIQUE key, not the vehicle's id.
                ForeignKey("FK_SERVICE_VEHICLE", "VEHICLE_CODE", "VEHICLE", "CODE",
                           "NO ACTION"),
                ForeignKey("FK_SERVICE_CUSTOMER", "CUSTOMER_ID", "CUSTOMER", "ID",
                           "CASCADE")]))
        self.ledger()
        self.hist_table("DOC_HIST")
        self.audit("INVOICE", "DOC_HIST", "ID", "TOTAL")
        add(TableSpec("STOCK_MOVE", [ColumnSpec("PRODUCT_ID", "ref"), ColumnSpec("QTY", "rate"),
                                     ColumnSpec("STAMPED", "ts")], key=(), kind="keyless"))
        add(TableSpec("CASH_JOURNAL", [ColumnSpec("LINE_NO", "int"),
                                       ColumnSpec("AMOUNT", "amount"),
                                       ColumnSpec("LABEL", "label")], key=(), kind="keyless"))
        add(TableSpec("TMP_INVOICE_CALC", [ColumnSpec("INVOICE_ID", "ref"),
                                           ColumnSpec("AMOUNT", "amount")],
                      key=(), kind="gtt"))
        add(TableSpec("TMP_SESSION", [ColumnSpec("NAME", "app"), ColumnSpec("VAL", "name")],
                      key=(), kind="gtt"))
        # An AFTER INSERT trigger inserting a child row (its own id trigger numbers it).
        self.triggers.append(
            "CREATE TRIGGER INVOICE_AI FOR INVOICE ACTIVE AFTER INSERT POSITION 5 AS\n"
            "BEGIN\n  INSERT INTO INVOICE_STATUS (INVOICE_ID, STATUS, STAMPED)\n"
            "  VALUES (NEW.ID, 'N', CAST('NOW' AS TIMESTAMP));\nEND")
        self.procedures += [
            # The application asks for the next invoice number this way.
            "CREATE PROCEDURE NEW_INVOICE_ID RETURNS (ID BIGINT) AS\nBEGIN\n"
            "  ID = GEN_ID(G_INVOICE, 1);\n  SUSPEND;\nEND",
            # Totals recomputed through a temporary table, as reporting code does.
            "CREATE PROCEDURE INVOICE_RECALC (INV BIGINT) AS\nDECLARE VARIABLE T "
            "NUMERIC(15,2);\nBEGIN\n  DELETE FROM TMP_INVOICE_CALC;\n"
            "  INSERT INTO TMP_INVOICE_CALC (INVOICE_ID, AMOUNT)\n"
            "    SELECT INVOICE_ID, SUM(AMOUNT) FROM INVOICE_LINE WHERE INVOICE_ID = :INV\n"
            "    GROUP BY INVOICE_ID;\n"
            "  SELECT COALESCE(SUM(AMOUNT), 0) FROM TMP_INVOICE_CALC INTO :T;\n"
            "  UPDATE INVOICE SET TOTAL = :T, PAID = MINVALUE(PAID, :T) WHERE ID = :INV;\n"
            "END",
        ]
        # Rows every site held before install (years of data, kept equal by the old tool).
        self.fill += [
            "INSERT INTO LOCAL_PARAMS (ID, SHOP, TAX_RATE) VALUES (1, 'Boutique', 0.2)",
            "INSERT INTO CURRENCY (CODE, NAME, RATE) VALUES ('EUR', 'Euro €', 1)",
            "INSERT INTO CURRENCY (CODE, NAME, RATE) VALUES ('BRL', 'Real brasileiro', 5.4321)",
            "INSERT INTO CURRENCY (CODE, NAME, RATE) VALUES ('CHF', 'Franc suisse ', 0.9512)",
        ]
        for i in range(1, 9):
            self.fill.append(
                f"INSERT INTO PRODUCT (ID, SKU, DESCR, PRICE, WEIGHT, ACTIVE) VALUES ({i}, "
                f"'SKU-{i:03d}', 'Pièce nº {i} ', {i * 7}.{i:02d}, {i / 3!r}, 1)")
        for i in range(1, 5):
            self.fill.append(
                f"INSERT INTO CUSTOMER (ID, CODE, NAME, CITY, CURRENCY, CREDIT, DISCOUNT, BORN, "
                f"CREATED, ACTIVE) VALUES ({i}, 'C{i:04d}', 'Client Ancien {i} ', 'Évora', "
                f"'EUR', {i * 100}, 0.05, DATE '1970-01-0{i}', TIMESTAMP "
                f"'2020-01-0{i} 10:00:00.1234', 1)")
            self.fill.append(
                f"INSERT INTO VEHICLE (ID, CODE, CUSTOMER_ID, MODEL, KM) VALUES ({i}, "
                f"'AB-{i:03d}-CD', {i}, 'Peugeot 208 ', {i * 10000})")

    def ledger(self) -> None:
        """The accounting side: a chart of accounts keyed by its code (a text key under a
        case-insensitive collation, referencing itself), fiscal periods with a two-column
        key, journals, and journal lines keyed by (journal, line number)."""
        self.add(TableSpec("ACCOUNT", [
            ColumnSpec("CODE", "account", not_null=True), ColumnSpec("NAME", "name"),
            ColumnSpec("PARENT_CODE", "account"), ColumnSpec("KIND", "kind"),
            ColumnSpec("BALANCE", "rate")], key=("CODE",), role="account",
            checks=("KIND IN ('A', 'L', 'E', 'R', 'Q')",),
            foreign_keys=[ForeignKey("FK_ACCOUNT_PARENT", "PARENT_CODE", "ACCOUNT", "CODE",
                                     "NO ACTION")]))
        self.add(TableSpec("FISCAL_PERIOD", [
            ColumnSpec("FYEAR", "small", not_null=True), ColumnSpec("FMONTH", "small",
                                                                    not_null=True),
            ColumnSpec("CLOSED", "flag"), ColumnSpec("CLOSED_AT", "ts")],
            key=("FYEAR", "FMONTH"), checks=("FMONTH BETWEEN 1 AND 12",), role="period"))
        self.add(TableSpec("JOURNAL", [
            ColumnSpec("ID", "id"), ColumnSpec("FYEAR", "small", not_null=True),
            ColumnSpec("FMONTH", "small", not_null=True), ColumnSpec("DATED", "date"),
            ColumnSpec("LABEL", "name"), ColumnSpec("STATUS", "status")], role="journal",
            foreign_keys=[ForeignKey("FK_JOURNAL_PERIOD", "FYEAR, FMONTH", "FISCAL_PERIOD",
                                     "FYEAR, FMONTH", "NO ACTION")]))
        self.add(TableSpec("JOURNAL_LINE", [
            ColumnSpec("JOURNAL_ID", "ref", not_null=True),
            ColumnSpec("LINE_NO", "small", not_null=True),
            ColumnSpec("ACCOUNT_CODE", "account", not_null=True),
            ColumnSpec("DEBIT", "rate", default="0", not_null=True),
            ColumnSpec("CREDIT", "rate", default="0", not_null=True),
            ColumnSpec("MEMO", "memo")], key=("JOURNAL_ID", "LINE_NO"), role="journal_line",
            checks=("DEBIT >= 0 AND CREDIT >= 0 AND (DEBIT = 0 OR CREDIT = 0)",),
            foreign_keys=[
                ForeignKey("FK_JLINE_JOURNAL", "JOURNAL_ID", "JOURNAL", "ID", "CASCADE"),
                ForeignKey("FK_JLINE_ACCOUNT", "ACCOUNT_CODE", "ACCOUNT", "CODE",
                           "NO ACTION")]))
        for code, name, parent, kind in (
                ("1", "Actif", None, "A"), ("10", "Caisse", "1", "A"),
                ("11", "Banque Crédit Agricole ", "1", "A"), ("4", "Passif", None, "L"),
                ("40", "Fournisseurs", "4", "L"), ("7", "Produits", None, "R"),
                ("70", "Ventes de marchandises", "7", "R"), ("6", "Charges", None, "E"),
                ("60", "Achats", "6", "E")):
            self.fill.append(
                "INSERT INTO ACCOUNT (CODE, NAME, PARENT_CODE, KIND, BALANCE) VALUES "
                f"('{code}', '{name}', {repr(parent) if parent else 'NULL'}, '{kind}', 0)")
        for year in (2025, 2026):
            for month in range(1, 13):
                self.fill.append("INSERT INTO FISCAL_PERIOD (FYEAR, FMONTH, CLOSED) VALUES "
                                 f"({year}, {month}, 0)")

    def cluster(self, k: int) -> None:
        rng = self.rng
        variant = k % 6
        c = Cluster(
            number=k, cat=f"CAT_{k:03d}", doc=f"DOC_{k:03d}", line=f"DOC_{k:03d}_L",
            hist=f"DOC_{k:03d}_H" if variant != 5 else None,
            doc_customer_action=("CASCADE", "SET NULL", "NO ACTION")[k % 3],
            line_action="CASCADE" if k % 2 == 0 else "NO ACTION",
            cat_by_code=variant == 1, auto_line=variant in (0, 3))
        self.clusters.append(c)
        optional = ["double", "date", "label", "memo", "blob", "city", "qty", "rate", "ts"]
        extras = {t: rng.sample(optional, rng.randint(0, 3)) for t in (c.cat, c.doc, c.line)}
        c.extras = {t: [f"X_{kind.upper()}" for kind in kinds] for t, kinds in extras.items()}

        def extra_columns(table: str) -> list[ColumnSpec]:
            return [ColumnSpec(f"X_{kind.upper()}", kind) for kind in extras[table]]

        self.add(TableSpec(c.cat, [
            ColumnSpec("ID", "id"), ColumnSpec("CODE", "code", not_null=c.cat_by_code),
            ColumnSpec("LABEL", "name"), ColumnSpec("RATE", "rate"), ColumnSpec("ACTIVE", "flag"),
            *extra_columns(c.cat)], unique=("CODE",) if c.cat_by_code else (), role="cat",
            cluster=k))
        fks = [ForeignKey(f"FK_{c.doc}_CUST", "CUSTOMER_ID", "CUSTOMER", "ID",
                          c.doc_customer_action)]
        if c.cat_by_code:
            fks.append(ForeignKey(f"FK_{c.doc}_CAT", "CAT_CODE", c.cat, "CODE", "SET NULL"))
        else:
            fks.append(ForeignKey(f"FK_{c.doc}_CAT", "CAT_ID", c.cat, "ID", "SET NULL"))
        self.add(TableSpec(c.doc, [
            ColumnSpec("ID", "id"),
            ColumnSpec("CUSTOMER_ID", "ref", not_null=c.doc_customer_action == "CASCADE"),
            ColumnSpec("CAT_CODE", "code") if c.cat_by_code else ColumnSpec("CAT_ID", "ref"),
            ColumnSpec("DATED", "date"), ColumnSpec("AMOUNT", "money"),
            ColumnSpec("NOTE", "memo"), ColumnSpec("STATUS", "status"),
            *extra_columns(c.doc)], checks=("AMOUNT >= 0",), role="doc", cluster=k,
            foreign_keys=fks))
        self.add(TableSpec(c.line, [
            ColumnSpec("ID", "id"), ColumnSpec("DOC_ID", "ref", not_null=True),
            ColumnSpec("QTY", "qty"), ColumnSpec("PRICE", "money"),
            ColumnSpec("AMOUNT", "amount"), *extra_columns(c.line)],
            checks=("PRICE >= 0",), role="line", cluster=k,
            foreign_keys=[ForeignKey(f"FK_{c.line}_DOC", "DOC_ID", c.doc, "ID",
                                     c.line_action)]))
        if c.hist:
            self.hist_table(c.hist, cluster=k)
            self.audit(c.doc, c.hist, "ID", "AMOUNT")
        if c.auto_line:
            self.triggers.append(
                f"CREATE TRIGGER {c.doc}_AI FOR {c.doc} ACTIVE AFTER INSERT POSITION 5 AS\n"
                f"BEGIN\n  INSERT INTO {c.line} (DOC_ID, QTY, PRICE, AMOUNT)\n"
                "  VALUES (NEW.ID, 1, NEW.AMOUNT, NEW.AMOUNT);\nEND")
        if k % 5 == 4:
            self.add(TableSpec(f"LOG_{k:03d}", [ColumnSpec("DOC_ID", "ref"),
                                               ColumnSpec("STAMPED", "ts"),
                                               ColumnSpec("TXT", "name")],
                               key=(), kind="keyless", cluster=k))
        if k % 7 == 6:
            self.add(TableSpec(f"TMP_{k:03d}", [ColumnSpec("DOC_ID", "ref"),
                                               ColumnSpec("AMOUNT", "amount")],
                               key=(), kind="gtt", cluster=k))
        for i in range(1, 3):  # a catalogue every site starts with
            code = f"'K{k}-{i}'"
            self.fill.append(f"INSERT INTO {c.cat} (ID, CODE, LABEL, RATE, ACTIVE) VALUES "
                             f"({i}, {code}, 'Catégorie {i} ', {i}.5, 1)")

    def flat(self, want: int) -> None:
        """Many independent tables, no triggers or keys between them (a baseline)."""
        self.flat_only = True
        for i in range(want):
            self.add(TableSpec(f"FLAT_{i:03d}", [
                ColumnSpec("ID", "id"), ColumnSpec("NAME", "name"), ColumnSpec("AMOUNT", "money"),
                ColumnSpec("NOTE", "memo")], role="flat"))

    def finish(self, shape: str, seed: int) -> ErpSchema:
        ddl = list(DOMAINS)
        ddl += [f"CREATE SEQUENCE {g}" for g in self.generators]
        for t in self.tables.values():
            cols = [c.ddl() for c in t.columns]
            if t.key:
                cols.append(f"CONSTRAINT PK_{t.name} PRIMARY KEY ({', '.join(t.key)})")
            cols += [f"CONSTRAINT UQ_{t.name}_{u} UNIQUE ({u})" for u in t.unique]
            cols += [f"CONSTRAINT CK_{t.name}_{i} CHECK ({chk})"
                     for i, chk in enumerate(t.checks, 1)]
            body = ", ".join(cols)
            if t.kind == "gtt":
                ddl.append(f"CREATE GLOBAL TEMPORARY TABLE {t.name} ({body}) "
                           + ("ON COMMIT DELETE ROWS" if t.name != "TMP_SESSION"
                              else "ON COMMIT PRESERVE ROWS"))
            else:
                ddl.append(f"CREATE TABLE {t.name} ({body})")
        for t in self.tables.values():
            for fk in t.foreign_keys:
                ddl.append(f"ALTER TABLE {t.name} ADD CONSTRAINT {fk.name} FOREIGN KEY "
                           f"({fk.column}) REFERENCES {fk.parent} ({fk.parent_column}) "
                           f"ON DELETE {fk.on_delete}")
        ddl += self.fill
        ddl += [f"ALTER SEQUENCE {g} RESTART WITH {FIRST_FREE_KEY}" for g in self.generators]
        ddl += self.procedures
        ddl += self.triggers
        if not self.flat_only:
            ddl.append(
                "CREATE TRIGGER ERP_ON_CONNECT ACTIVE ON CONNECT POSITION 0 AS\n"
                "DECLARE VARIABLE I INTEGER;\nBEGIN\n"
                "  I = RDB$SET_CONTEXT('USER_SESSION', 'ERP_APP', 'erp 7.2');\nEND")
        fks = [fk for t in self.tables.values() for fk in t.foreign_keys]
        features = {
            "tables": len(self.tables),
            "replicated": sum(t.replicated for t in self.tables.values()),
            "keyless": sum(t.kind == "keyless" for t in self.tables.values()),
            "temporary": sum(t.kind == "gtt" for t in self.tables.values()),
            "triggers": len(self.triggers) + (0 if self.flat_only else 1),
            "foreign_keys": len(fks),
            "cascade": sum(fk.on_delete == "CASCADE" for fk in fks),
            "set_null": sum(fk.on_delete == "SET NULL" for fk in fks),
            "to_unique_key": sum(
                tuple(c.strip() for c in fk.parent_column.split(","))
                != self.tables[fk.parent].key for fk in fks),
            "composite_keys": sum(len(t.key) > 1 for t in self.tables.values()),
            "text_keys": sum(t.key == ("CODE",) for t in self.tables.values()),
            "checks": sum(len(t.checks) for t in self.tables.values()),
            "generators": len(self.generators),
            "procedures": len(self.procedures),
        }
        return ErpSchema(shape, seed, ddl, self.tables, self.generators, self.clusters,
                         exclude=tuple(n for n, t in self.tables.items() if t.kind == "local"),
                         key_procedure="NEW_INVOICE_ID", features=features)


# --- the workload --------------------------------------------------------------------------

@dataclass
class WorkloadStats:
    transactions: int = 0
    committed: int = 0
    rolled_back: int = 0  # the user cancelled
    # The application's own errors (a CHECK, a foreign key, a row gone), by message: the
    # application shows them to its user and the transaction is rolled back. A capture
    # failure would show here too (it must never happen: DESIGN §3.1).
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    operations: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: WorkloadStats) -> None:
        self.transactions += other.transactions
        self.committed += other.committed
        self.rolled_back += other.rolled_back
        for k, v in other.errors.items():
            self.errors[k] += v
        for k, v in other.operations.items():
            self.operations[k] += v


class _Cancel(Exception):
    """The user cancels the business operation: the transaction is rolled back."""


class Workload:
    """Seeded application transactions at one site (``site_no``: its place among the sites,
    which names its codes). Writes as the ERP does: no key is ever chosen by the workload —
    id triggers and ``NEW_INVOICE_ID`` hand them out from the site's generator ranges —,
    unique codes carry the site's tag, parents are written before their children, and a
    delete the schema's NO ACTION keys would refuse removes the dependent rows first."""

    def __init__(self, erp: ErpSchema, site: str, site_no: int, seed: int = 1,
                 race_totals: bool = True, delete_old_code_parents: bool = True) -> None:
        """``race_totals``: any site pays any invoice and edits any invoice's lines, so a
        payment (PAID) races another site's recomputed TOTAL under CHECK (PAID <= TOTAL):
        merged, the two can break the CHECK, and the row falls back to its latest write's
        whole row (constraints.py; held before H1's finding F2 was fixed). Off, a site pays
        and recomputes only the invoices it issued (a shop settles its own).

        ``delete_old_code_parents``: rows that predate install and are referenced through a
        UNIQUE key (vehicles by plate, catalogues by code) may be deleted (off: only rows
        made since; such deletes stopped a stream before issue 18 item 3 was fixed)."""
        self.erp = erp
        self.delete_old_code_parents = delete_old_code_parents
        self.site = site
        self.race_totals = race_totals
        self.own = ((site_no + 1) * RANGE_SIZE, (site_no + 2) * RANGE_SIZE)
        self.tag = f"{site[:3].upper()}{site_no}"
        self.rng = random.Random(f"{seed}:{site}:{erp.shape}")
        self.counter = 0
        core = "CUSTOMER" in erp.tables
        ops: list[tuple[str, float]] = []
        if core:
            ops += [("new_customer", 3), ("new_vehicle", 2), ("new_invoice", 5),
                    ("payment", 3), ("service_order", 2), ("edit_customer", 4),
                    ("edit_invoice", 3), ("edit_line", 2), ("edit_product", 2),
                    ("resave", 1), ("delete_customer", 0.6), ("delete_vehicle", 0.5),
                    ("delete_invoice", 1), ("delete_line", 1), ("delete_payment", 0.5),
                    ("keyless", 1), ("session", 0.5), ("post_journal", 3),
                    ("journal_edit", 1.5), ("journal_delete", 0.7), ("account_new", 0.7),
                    ("account_edit", 1), ("account_delete", 0.4), ("period_close", 0.6)]
        if erp.clusters:
            ops += [("doc_new", 6), ("doc_edit", 4), ("line_edit", 2), ("doc_delete", 1.5),
                    ("cat_new", 1), ("cat_edit", 1), ("cat_delete", 0.4), ("cluster_log", 0.5)]
        if not core and not erp.clusters:
            ops += [("flat_insert", 3), ("flat_update", 3), ("flat_delete", 1)]
        self.ops = [name for name, _ in ops]
        self.weights = [w for _, w in ops]

    # -- values as users type them --

    def code(self) -> str:
        self.counter += 1
        return f"{self.tag}-{self.counter:05d}"

    def value(self, kind: str):
        rng = self.rng
        if kind in ("money", "amount"):
            return Decimal(rng.randint(0, 500_000)).scaleb(-2)
        if kind in ("rate", "qty"):
            return Decimal(rng.randint(1, 9_999_999)).scaleb(-4)
        if kind == "double":
            return rng.choice([rng.random() * 1e4, 0.1, -0.0, 1e-300, 123456789.125])
        if kind == "int":
            return rng.randint(0, 1_000_000)
        if kind == "date":
            return date(1990, 1, 1) + timedelta(days=rng.randint(0, 15_000))
        if kind == "ts":
            return (datetime(2024, 1, 1) + timedelta(seconds=rng.randint(0, 10**8),
                                                     microseconds=rng.randint(0, 9999) * 100))
        if kind == "name":
            return rng.choice(NAMES) + (" " * rng.randint(0, 1))
        if kind == "city":
            return rng.choice(CITIES)
        if kind == "label":
            return rng.choice(LABELS)
        if kind == "code":
            return self.code()
        if kind == "memo":
            return _text_memo(rng)
        if kind == "blob":
            return _binary(rng)
        if kind == "flag":
            return rng.randint(0, 1)
        if kind == "status":
            return rng.choice("NOPX")
        if kind == "ccy":
            return rng.choice(["EUR", "BRL", "CHF"])
        raise ValueError(kind)

    # -- running --

    def run(self, con: Connection, transactions: int) -> WorkloadStats:
        stats = WorkloadStats()
        for _ in range(transactions):
            op = self.rng.choices(self.ops, self.weights)[0]
            stats.transactions += 1
            stats.operations[op] += 1
            tm = con.transaction_manager()
            tm.begin()
            cur = tm.cursor()
            try:
                getattr(self, f"_{op}")(cur)
                cur.close()
                tm.commit()
                stats.committed += 1
            except _Cancel:
                cur.close()
                tm.rollback()
                stats.rolled_back += 1
            except DatabaseError as exc:
                cur.close()
                tm.rollback()
                stats.errors[_first_line(exc)] += 1
            finally:
                tm.close()
        return stats

    def _ids(self, cur, table: str, where: str = "", params: tuple = ()) -> list:
        key = self.erp.tables[table].key[0]
        cur.execute(f"SELECT {key} FROM {table} {where}", params)
        return [r[0] for r in cur.fetchall()]

    def _pick(self, cur, table: str, where: str = "", params: tuple = ()):
        ids = self._ids(cur, table, where, params)
        if not ids:
            raise _Cancel()
        return self.rng.choice(ids)

    def _insert(self, cur, table: str, values: dict) -> int | None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        returning = " RETURNING ID" if self.erp.tables[table].key == ("ID",) else ""
        cur.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}){returning}",
                    tuple(values.values()))
        return cur.fetchone()[0] if returning else None

    def _update(self, cur, table: str, key, values: dict) -> None:
        sets = ", ".join(f"{c} = ?" for c in values)
        cur.execute(f"UPDATE {table} SET {sets} WHERE {self.erp.tables[table].key[0]} = ?",
                    (*values.values(), key))

    def _some(self, table: str, columns: list[str]) -> dict:
        """New values for one to three of ``columns``."""
        spec = self.erp.tables[table]
        chosen = self.rng.sample(columns, self.rng.randint(1, min(3, len(columns))))
        return {c: self.value(spec.column(c).kind) for c in chosen}

    # -- the ERP's own screens (core) --

    def _new_customer(self, cur) -> None:
        ident = self._insert(cur, "CUSTOMER", {
            "CODE": self.code(), "NAME": self.value("name") or "?", "CITY": self.value("city"),
            "CURRENCY": self.value("ccy"), "CREDIT": self.value("money"),
            "DISCOUNT": self.value("double"), "BORN": self.value("date"),
            "CREATED": self.value("ts"), "NOTES": self.value("memo"),
            "LOGO": self.value("blob"), "ACTIVE": 1})
        for _ in range(self.rng.randint(0, 2)):
            self._insert(cur, "VEHICLE", {"CODE": self.code(), "CUSTOMER_ID": ident,
                                          "MODEL": self.value("name"), "KM": 0})
        if self.rng.random() < 0.05:
            raise _Cancel()

    def _new_vehicle(self, cur) -> None:
        self._insert(cur, "VEHICLE", {"CODE": self.code(),
                                      "CUSTOMER_ID": self._pick(cur, "CUSTOMER"),
                                      "MODEL": self.value("name"), "KM": self.value("int")})

    def _new_invoice(self, cur) -> None:
        customer = self._pick(cur, "CUSTOMER")
        cur.execute(f"SELECT ID FROM {self.erp.key_procedure}")
        (ident,) = cur.fetchone()
        self._insert(cur, "INVOICE", {
            "ID": ident, "CUSTOMER_ID": customer, "PARAMS_ID": 1, "ISSUED": self.value("date"),
            "STATUS": "N", "TAX": self.value("rate"), "MEMO": self.value("memo")})
        products = self._ids(cur, "PRODUCT")
        for _ in range(self.rng.randint(1, 4)):
            product = self.rng.choice(products)
            qty = Decimal(self.rng.randint(1, 40_000)).scaleb(-4)
            cur.execute("SELECT PRICE FROM PRODUCT WHERE ID = ?", (product,))
            (price,) = cur.fetchone()
            self._insert(cur, "INVOICE_LINE", {
                "INVOICE_ID": ident, "PRODUCT_ID": product, "QTY": qty, "PRICE": price,
                "AMOUNT": (qty * price).quantize(Decimal("0.01")), "LABEL": self.value("label")})
            self._insert(cur, "STOCK_MOVE", {"PRODUCT_ID": product, "QTY": -qty,
                                             "STAMPED": self.value("ts")})
        cur.callproc("INVOICE_RECALC", (ident,))

    def _invoices(self) -> tuple[str, tuple]:
        """Which invoices this site may pay or recompute (see ``race_totals``)."""
        if self.race_totals:
            return "", ()
        return "ID > ? AND ID < ?", self.own

    def _payment(self, cur) -> None:
        mine, params = self._invoices()
        invoice = self._pick(cur, "INVOICE", "WHERE PAID < TOTAL" + (
            f" AND {mine}" if mine else ""), params)
        cur.execute("SELECT TOTAL - PAID FROM INVOICE WHERE ID = ?", (invoice,))
        (due,) = cur.fetchone()
        amount = max(Decimal("0.01"), (due * Decimal(self.rng.choice([1, 1, 0.5]))).quantize(
            Decimal("0.01")))
        self._insert(cur, "PAYMENT", {"INVOICE_ID": invoice, "AMOUNT": amount,
                                      "PAID_AT": self.value("ts"), "METHOD": self.value("label")})
        cur.execute("UPDATE INVOICE SET PAID = MINVALUE(PAID + ?, TOTAL), "
                    "STATUS = IIF(PAID + ? >= TOTAL, 'P', STATUS) WHERE ID = ?",
                    (amount, amount, invoice))

    def _service_order(self, cur) -> None:
        cur.execute("SELECT CODE, CUSTOMER_ID FROM VEHICLE WHERE CUSTOMER_ID IS NOT NULL")
        rows = cur.fetchall()
        if not rows:
            raise _Cancel()
        code, customer = self.rng.choice(rows)
        self._insert(cur, "SERVICE_ORDER", {"VEHICLE_CODE": code, "CUSTOMER_ID": customer,
                                            "OPENED": self.value("ts"),
                                            "HOURS": self.value("rate"),
                                            "REMARK": self.value("memo")})

    def _edit_customer(self, cur) -> None:
        changes = self._some("CUSTOMER", ["NAME", "CITY", "CREDIT", "DISCOUNT", "NOTES",
                                          "LOGO", "BORN", "ACTIVE", "CURRENCY"])
        if changes.get("NAME") is None and "NAME" in changes:
            changes["NAME"] = "Sans nom"
        self._update(cur, "CUSTOMER", self._pick(cur, "CUSTOMER"), changes)

    def _edit_invoice(self, cur) -> None:
        self._update(cur, "INVOICE", self._pick(cur, "INVOICE"),
                     self._some("INVOICE", ["STATUS", "TAX", "MEMO", "ISSUED"]))

    def _edit_line(self, cur) -> None:
        mine, params = self._invoices()
        line = self._pick(cur, "INVOICE_LINE", "WHERE INVOICE_ID > ? AND INVOICE_ID < ?"
                          if mine else "", params)
        qty = Decimal(self.rng.randint(1, 40_000)).scaleb(-4)
        cur.execute("UPDATE INVOICE_LINE SET QTY = ?, AMOUNT = CAST(? * PRICE AS NUMERIC(15,2)), "
                    "LABEL = ? WHERE ID = ? RETURNING INVOICE_ID", (qty, qty,
                                                                    self.value("label"), line))
        (invoice,) = cur.fetchone()
        cur.callproc("INVOICE_RECALC", (invoice,))

    def _edit_product(self, cur) -> None:
        self._update(cur, "PRODUCT", self._pick(cur, "PRODUCT"),
                     self._some("PRODUCT", ["DESCR", "PRICE", "WEIGHT", "PHOTO"]))

    def _resave(self, cur) -> None:
        """The application saves the whole row back, nothing changed."""
        table = self.rng.choice(["CUSTOMER", "PRODUCT", "INVOICE"])
        spec = self.erp.tables[table]
        sets = ", ".join(f"{c.name} = {c.name}" for c in spec.columns if c.name != "ID")
        cur.execute(f"UPDATE {table} SET {sets} WHERE ID = ?", (self._pick(cur, table),))

    def _delete_customer(self, cur) -> None:
        """Deletes the customer and what the NO ACTION keys would refuse; CASCADE and SET NULL
        do the rest (invoices, lines, statuses, service orders; vehicles, payments kept)."""
        ids = self._ids(cur, "CUSTOMER")
        if len(ids) < 6:
            raise _Cancel()
        customer = self.rng.choice(ids)
        for c in self.erp.clusters:
            if c.doc_customer_action == "NO ACTION":
                if c.line_action == "NO ACTION":
                    cur.execute(f"DELETE FROM {c.line} WHERE DOC_ID IN (SELECT ID FROM {c.doc} "
                                "WHERE CUSTOMER_ID = ?)", (customer,))
                cur.execute(f"DELETE FROM {c.doc} WHERE CUSTOMER_ID = ?", (customer,))
            elif c.doc_customer_action == "CASCADE" and c.line_action == "NO ACTION":
                cur.execute(f"DELETE FROM {c.line} WHERE DOC_ID IN (SELECT ID FROM {c.doc} "
                            "WHERE CUSTOMER_ID = ?)", (customer,))
        cur.execute("DELETE FROM CUSTOMER WHERE ID = ?", (customer,))

    def _delete_vehicle(self, cur) -> None:
        cur.execute("SELECT ID, CODE FROM VEHICLE")
        rows = cur.fetchall()
        if len(rows) < 6:
            raise _Cancel()
        if not self.delete_old_code_parents:
            rows = [r for r in rows if r[0] >= FIRST_FREE_KEY]
            if not rows:
                raise _Cancel()
        ident, code = self.rng.choice(rows)
        if self.rng.random() < 0.5:  # "delete with its history"
            cur.execute("DELETE FROM SERVICE_ORDER WHERE VEHICLE_CODE = ?", (code,))
        # Otherwise the NO ACTION key refuses a vehicle with orders: the user is told.
        cur.execute("DELETE FROM VEHICLE WHERE ID = ?", (ident,))

    def _delete_invoice(self, cur) -> None:
        ids = self._ids(cur, "INVOICE")
        if len(ids) < 4:
            raise _Cancel()
        cur.execute("DELETE FROM INVOICE WHERE ID = ?", (self.rng.choice(ids),))

    def _delete_line(self, cur) -> None:
        mine, params = self._invoices()
        line = self._pick(cur, "INVOICE_LINE", "WHERE INVOICE_ID > ? AND INVOICE_ID < ?"
                          if mine else "", params)
        cur.execute("DELETE FROM INVOICE_LINE WHERE ID = ? RETURNING INVOICE_ID", (line,))
        (invoice,) = cur.fetchone()
        cur.callproc("INVOICE_RECALC", (invoice,))

    # -- the ledger --

    def _accounts(self, cur) -> list[str]:
        cur.execute("SELECT CODE FROM ACCOUNT")
        return [r[0] for r in cur.fetchall()]

    def _post_journal(self, cur) -> None:
        """A balanced entry: one debit line, one or more credit lines."""
        cur.execute("SELECT FYEAR, FMONTH FROM FISCAL_PERIOD WHERE CLOSED = 0")
        periods = cur.fetchall()
        if not periods:
            raise _Cancel()
        year, month = self.rng.choice(periods)
        journal = self._insert(cur, "JOURNAL", {
            "FYEAR": year, "FMONTH": month, "DATED": date(year, month, 1),
            "LABEL": self.value("name"), "STATUS": "N"})
        accounts = self._accounts(cur)
        credits = [Decimal(self.rng.randint(1, 10**7)).scaleb(-4)
                   for _ in range(self.rng.randint(1, 3))]
        lines = [(self.rng.choice(accounts), sum(credits), Decimal(0))]
        lines += [(self.rng.choice(accounts), Decimal(0), c) for c in credits]
        for no, (account, debit, credit) in enumerate(lines, 1):
            self._insert(cur, "JOURNAL_LINE", {
                "JOURNAL_ID": journal, "LINE_NO": no, "ACCOUNT_CODE": account,
                "DEBIT": debit, "CREDIT": credit, "MEMO": self.value("memo")})
            cur.execute("UPDATE ACCOUNT SET BALANCE = BALANCE + ? - ? WHERE CODE = ?",
                        (debit, credit, account))

    def _own_journal(self, cur):
        """Entries are corrected by the site that posted them (as payments, see
        ``race_totals``: a line's DEBIT and CREDIT under one two-column CHECK)."""
        mine, params = self._invoices()
        return self._pick(cur, "JOURNAL", f"WHERE {mine}" if mine else "", params)

    def _journal_edit(self, cur) -> None:
        journal = self._own_journal(cur)
        if self.rng.random() < 0.5:
            self._update(cur, "JOURNAL", journal, self._some("JOURNAL", ["LABEL", "STATUS",
                                                                        "DATED"]))
            return
        amount = Decimal(self.rng.randint(1, 10**7)).scaleb(-4)
        # Both sides of the entry change together: it stays balanced.
        cur.execute("UPDATE JOURNAL_LINE SET DEBIT = IIF(DEBIT > 0, ?, 0), "
                    "CREDIT = IIF(CREDIT > 0, ?, 0) WHERE JOURNAL_ID = ? "
                    "AND LINE_NO IN (1, 2)", (amount, amount, journal))
        cur.execute("DELETE FROM JOURNAL_LINE WHERE JOURNAL_ID = ? AND LINE_NO > 2",
                    (journal,))

    def _journal_delete(self, cur) -> None:
        cur.execute("DELETE FROM JOURNAL WHERE ID = ?", (self._own_journal(cur),))

    def _account_new(self, cur) -> None:
        parent = self.rng.choice(self._accounts(cur))
        self._insert(cur, "ACCOUNT", {"CODE": f"{parent[:2]}{self.tag}{self.counter:03d}",
                                      "NAME": self.value("name"), "PARENT_CODE": parent,
                                      "KIND": self.rng.choice("ALERQ"), "BALANCE": 0})
        self.counter += 1

    def _account_edit(self, cur) -> None:
        self._update(cur, "ACCOUNT", self.rng.choice(self._accounts(cur)),
                     {"NAME": self.value("name")})

    def _account_delete(self, cur) -> None:
        """A leaf account nothing was posted to (the NO ACTION keys refuse the others)."""
        accounts = [a for a in self._accounts(cur) if len(a) > 2]
        if not accounts:
            raise _Cancel()
        cur.execute("DELETE FROM ACCOUNT WHERE CODE = ?", (self.rng.choice(accounts),))

    def _period_close(self, cur) -> None:
        cur.execute("SELECT FYEAR, FMONTH, CLOSED FROM FISCAL_PERIOD")
        year, month, closed = self.rng.choice(cur.fetchall())
        cur.execute("UPDATE FISCAL_PERIOD SET CLOSED = ?, CLOSED_AT = ? "
                    "WHERE FYEAR = ? AND FMONTH = ?",
                    (1 - closed, self.value("ts") if not closed else None, year, month))

    def _delete_payment(self, cur) -> None:
        cur.execute("DELETE FROM PAYMENT WHERE ID = ?", (self._pick(cur, "PAYMENT"),))

    def _keyless(self, cur) -> None:
        self._insert(cur, "CASH_JOURNAL", {"LINE_NO": self.value("int"),
                                           "AMOUNT": self.value("amount"),
                                           "LABEL": self.value("label")})

    def _session(self, cur) -> None:
        self._insert(cur, "TMP_SESSION", {"NAME": "last_screen", "VAL": self.value("name")})
        cur.execute("SELECT COUNT(*) FROM TMP_SESSION")
        cur.fetchone()

    # -- the document areas (clusters) --

    def _cluster(self) -> Cluster:
        return self.rng.choice(self.erp.clusters)

    def _extras(self, table: str) -> dict:
        spec = self.erp.tables[table]
        return {c.name: self.value(spec.column(c.name).kind)
                for c in spec.columns if c.name.startswith("X_")
                and self.rng.random() < 0.7}

    def _doc_new(self, cur) -> None:
        c = self._cluster()
        values = {"CUSTOMER_ID": self._pick(cur, "CUSTOMER"), "DATED": self.value("date"),
                  "AMOUNT": self.value("money"), "NOTE": self.value("memo"),
                  "STATUS": self.value("status"), **self._extras(c.doc)}
        if c.cat_by_code:
            cur.execute(f"SELECT CODE FROM {c.cat}")
            codes = [r[0] for r in cur.fetchall()]
            values["CAT_CODE"] = self.rng.choice(codes) if codes else None
        else:
            ids = self._ids(cur, c.cat)
            values["CAT_ID"] = self.rng.choice(ids) if ids else None
        doc = self._insert(cur, c.doc, values)
        for _ in range(self.rng.randint(0, 3)):
            self._insert(cur, c.line, {"DOC_ID": doc, "QTY": self.value("qty"),
                                       "PRICE": self.value("money"),
                                       "AMOUNT": self.value("amount"), **self._extras(c.line)})
        if c.number % 5 == 4 and self.rng.random() < 0.5:
            self._insert(cur, f"LOG_{c.number:03d}", {"DOC_ID": doc, "STAMPED": self.value("ts"),
                                                      "TXT": "créé"})

    def _doc_edit(self, cur) -> None:
        c = self._cluster()
        columns = ["DATED", "AMOUNT", "NOTE", "STATUS", *c.extras.get(c.doc, [])]
        self._update(cur, c.doc, self._pick(cur, c.doc), self._some(c.doc, columns))

    def _line_edit(self, cur) -> None:
        c = self._cluster()
        columns = ["QTY", "PRICE", "AMOUNT", *c.extras.get(c.line, [])]
        self._update(cur, c.line, self._pick(cur, c.line), self._some(c.line, columns))

    def _doc_delete(self, cur) -> None:
        c = self._cluster()
        doc = self._pick(cur, c.doc)
        if c.line_action == "NO ACTION":
            cur.execute(f"DELETE FROM {c.line} WHERE DOC_ID = ?", (doc,))
        cur.execute(f"DELETE FROM {c.doc} WHERE ID = ?", (doc,))

    def _cat_new(self, cur) -> None:
        c = self._cluster()
        self._insert(cur, c.cat, {"CODE": self.code(), "LABEL": self.value("name"),
                                  "RATE": self.value("rate"), "ACTIVE": 1,
                                  **self._extras(c.cat)})

    def _cat_edit(self, cur) -> None:
        c = self._cluster()
        columns = ["LABEL", "RATE", "ACTIVE", *c.extras.get(c.cat, [])]
        self._update(cur, c.cat, self._pick(cur, c.cat), self._some(c.cat, columns))

    def _cat_delete(self, cur) -> None:
        c = self._cluster()
        ids = self._ids(cur, c.cat)
        if len(ids) < 3:
            raise _Cancel()
        if c.cat_by_code and not self.delete_old_code_parents:
            ids = [i for i in ids if i >= FIRST_FREE_KEY]
            if not ids:
                raise _Cancel()
        cur.execute(f"DELETE FROM {c.cat} WHERE ID = ?", (self.rng.choice(ids),))

    def _cluster_log(self, cur) -> None:
        logs = [n for n, t in self.erp.tables.items() if t.kind == "keyless"
                and n.startswith("LOG_")]
        if not logs:
            raise _Cancel()
        self._insert(cur, self.rng.choice(logs), {"STAMPED": self.value("ts"),
                                                   "TXT": self.value("name")})

    # -- flat --

    def _flat_table(self) -> str:
        return self.rng.choice(self.erp.replicated)

    def _flat_insert(self, cur) -> None:
        self._insert(cur, self._flat_table(), {"NAME": self.value("name"),
                                               "AMOUNT": self.value("money"),
                                               "NOTE": self.value("memo")})

    def _flat_update(self, cur) -> None:
        table = self._flat_table()
        self._update(cur, table, self._pick(cur, table),
                     self._some(table, ["NAME", "AMOUNT", "NOTE"]))

    def _flat_delete(self, cur) -> None:
        table = self._flat_table()
        cur.execute(f"DELETE FROM {table} WHERE ID = ?", (self._pick(cur, table),))


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # Firebird's first line is generic ("violation of FOREIGN KEY constraint ..."): keep the
    # constraint or the trigger that said it.
    return " / ".join(lines[:2])[:200]


# --- the independent digest ------------------------------------------------------------------

@dataclass
class TableDigest:
    rows: int
    sha256: str
    content: dict | None = None  # key -> row, when kept (to show differences)


def _read_expr(col: ColumnSpec) -> str:
    nbytes = KINDS[col.kind][1]
    if nbytes is not None:  # the stored bytes, whatever the charset and the collation
        return f"CAST({col.name} AS VARCHAR({nbytes}) CHARACTER SET OCTETS)"
    if col.kind == "memo":
        # Read as text (transliterated by the engine), with its stored length and the
        # engine's hash of its stored bytes. (A CAST to a binary BLOB would give the bytes,
        # but the driver never finishes reading such a cast BLOB past 64 KiB.)
        return f"{col.name}, OCTET_LENGTH({col.name}), HASH({col.name})"
    return col.name


def _plain(value) -> object:
    if hasattr(value, "read") and hasattr(value, "close"):  # a BlobReader (over 64 KiB)
        reader = value
        try:
            value = reader.read()
        finally:
            reader.close()
    if isinstance(value, float):
        return "d:" + struct.pack(">d", value).hex()  # its bits, -0.0 included
    if isinstance(value, Decimal):
        return "n:" + str(value)
    if isinstance(value, (date, datetime)):
        return "t:" + value.isoformat()
    if isinstance(value, str):  # never: text is read as OCTETS
        return "s:" + value
    return value


def digest(con: Connection, erp: ErpSchema, keep: bool = False) -> dict[str, TableDigest]:
    """Every replicated application table, read with this module's own SQL in one snapshot:
    row count and a hash of the rows in key order (``keep``: the rows too)."""
    out: dict[str, TableDigest] = {}
    tm = con.transaction_manager(tpb(Isolation.SNAPSHOT))  # every table at one moment
    tm.begin()
    cur = tm.cursor()
    try:
        for name in erp.replicated:
            spec = erp.tables[name]
            cur.execute(f"SELECT {', '.join(_read_expr(c) for c in spec.columns)} FROM {name}")
            # The key's places in the row (a memo column reads as three values).
            places = [0]
            for c in spec.columns:
                places.append(places[-1] + (3 if c.kind == "memo" else 1))
            positions = [places[i] for i, c in enumerate(spec.columns) if c.name in spec.key]
            rows = {}
            for raw in cur:
                row = tuple(_plain(v) for v in raw)
                rows[tuple(row[i] for i in positions)] = row
            h = hashlib.sha256()
            for key in sorted(rows, key=repr):
                h.update(repr(rows[key]).encode())
            out[name] = TableDigest(len(rows), h.hexdigest(), rows if keep else None)
    finally:
        cur.close()
        tm.commit()
        tm.close()
    return out


def differences(digests: dict[str, dict[str, TableDigest]], limit: int = 5) -> list[str]:
    """What differs between the sites' digests, in words (empty: converged)."""
    sites = list(digests)
    first = digests[sites[0]]
    out = []
    for table in sorted(first):
        seen = {s: digests[s][table] for s in sites}
        if len({d.sha256 for d in seen.values()}) == 1:
            continue
        counts = ", ".join(f"{s}: {d.rows} rows" for s, d in seen.items())
        out.append(f"{table} differs ({counts})")
        contents = {s: d.content for s, d in seen.items() if d.content is not None}
        if len(contents) < 2:
            continue
        keys = sorted(set().union(*contents.values()), key=repr)
        shown = 0
        for key in keys:
            versions = {s: c.get(key) for s, c in contents.items()}
            if len({repr(v) for v in versions.values()}) > 1 and shown < limit:
                shown += 1
                out.append(f"  key {key!r}: " + "; ".join(
                    f"{s}={_short(v)}" for s, v in versions.items()))
    return out


def _short(row) -> str:
    text = repr(row)
    return text if len(text) < 300 else text[:300] + "…"


# --- the sync: the siège's rounds through the real publish and apply ------------------------

@dataclass
class RoundReport:
    moved: int = 0  # events applied somewhere
    publish_s: dict[str, float] = field(default_factory=dict)
    apply_s: dict[str, float] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # per site: why an origin stopped
    waiting: list[str] = field(default_factory=list)
    pending: int = 0  # events a site received but could not apply yet


class SiegeRounds:
    """Embedded sites synced as the coordinator's round does, through each site's
    ``Replica`` (the node's one pipeline: publish before serving, batches with their large
    BLOBs as chunks, a receiver applying them) — what ``exchange.py`` does over gRPC, without
    the wire: every site publishes, each other site exchanges with the siège (the siège
    gathers), then each again (the others get what they lack)."""

    def __init__(self, cons: dict[str, Connection], erp: ErpSchema,
                 paths: dict[str, Path], siege: str = "siege") -> None:
        # The node's parts, imported here: the generator and the digest need none of them.
        from siege_sync.node.db.database import DatabaseSpec
        from siege_sync.node.db.schema import TableSelection
        from siege_sync.node.mesh.replica import Replica
        from siege_sync.node.model.config import NodeConfig

        self.cons = cons
        self.siege = siege
        self.replicas = {
            s: Replica(NodeConfig(site=s, database=DatabaseSpec(str(paths[s])),
                                  tables=TableSelection(exclude=erp.exclude),
                                  generators=tuple(erp.ranges(no))), con)
            for no, (s, con) in enumerate(cons.items())}

    def replica(self, site: str):
        return self.replicas[site]

    def close(self) -> None:
        """Nothing runs: the connections are the caller's."""

    def _hello(self, site: str, peer: str) -> None:
        """Hello both ways: each confirms the other's chain (nothing is published before)."""
        mine, theirs = self.replicas[site], self.replicas[peer]
        theirs.meet(site, mine.identity().epoch, mine.vector(publish=False))
        mine.meet(peer, theirs.identity().epoch, theirs.vector(publish=False),
                  *theirs.proof_for(site, mine.vector(publish=False)))  # (a reply)

    def _exchange(self, report: RoundReport, site: str, peer: str) -> None:
        """What exchange.py does: hello, pull, then push."""
        self._hello(site, peer)
        mine, theirs = self.replicas[site], self.replicas[peer]
        for src, dst, name in ((theirs, mine, site), (mine, theirs, peer)):
            receiver = dst.receiver()
            started = time.perf_counter()
            try:
                for batch in src.outgoing(dst.vector()):
                    result = receiver.take(batch)
                    if result is not None:
                        report.pending = len(result.pending)
                report.moved += receiver.applied_events
                report.refused += [f"{name}: {r}" for r in receiver.refused]
                report.waiting += [f"{name}: {w}" for w in receiver.waiting_for]
                report.waiting += [f"{name}: {w}" for w in receiver.busy.values()]
            finally:
                receiver.close()
            report.apply_s[name] = report.apply_s.get(name, 0.0) + (
                time.perf_counter() - started)

    def round(self) -> RoundReport:
        report = RoundReport()
        others = [s for s in self.replicas if s != self.siege]
        for site in others:
            self._hello(site, self.siege)
        for site, replica in self.replicas.items():
            own = (site, replica.identity().incarnation)
            before = replica.vector(publish=False).seq(own)
            started = time.perf_counter()
            after = replica.vector().seq(own)  # publishes what is committed
            report.publish_s[site] = time.perf_counter() - started
            report.published[site] = after - before
        for _ in range(2):  # gather at the siège, then redistribute
            for site in others:
                self._exchange(report, site, self.siege)
        return report

    def until_quiet(self, max_rounds: int = 6) -> list[RoundReport]:
        """Rounds until one moves nothing (the last report is that quiet round)."""
        reports = []
        for _ in range(max_rounds):
            reports.append(self.round())
            if not reports[-1].moved and not any(reports[-1].published.values()):
                break
        return reports

    def held(self) -> dict[str, list[str]]:
        """Per site, the transactions held there (``siege-node held``'s record)."""
        from siege_sync.node.journal import parking

        return {s: [f"{p.origin}#{p.seq}: {p.reason}" for p in parking.listing(con)]
                for s, con in self.cons.items() if parking.listing(con)}


class MeshRounds:
    """The same rounds over the real mesh: each site a ``Node`` (its own connection, mTLS
    gRPC on loopback, certificates from a mesh CA made in ``folder``), the siège dialling
    every site twice (gather, then redistribute) with ``Node.exchange``. Same interface as
    ``SiegeRounds``; ``close`` stops the nodes."""

    def __init__(self, cons: dict[str, Connection], erp: ErpSchema, paths: dict[str, Path],
                 folder: Path, siege: str = "siege") -> None:
        from siege_sync.node.mesh.daemon import Node
        from siege_sync.node.model import config
        from tools.localmesh import Pki, free_port

        self.cons = cons
        self.siege = siege
        pki = Pki(folder / "pki")
        ports = {s: free_port() for s in cons}
        self.nodes: dict[str, Node] = {}
        try:
            for no, site in enumerate(cons):
                raw = {"site": site, "database": {"dsn": str(paths[site])},
                       "node": {"listen": f"127.0.0.1:{ports[site]}",
                                "bundle": str(pki.site(site, relay=site == siege)),
                                "siege": siege},
                       "peers": {p: {"address": f"127.0.0.1:{port}"}
                                 for p, port in ports.items() if p != site},
                       "tables": {"exclude": list(erp.exclude)},
                       "generators": {r.name: {"start": r.start, "end": r.end}
                                      for r in erp.ranges(no)}}
                self.nodes[site] = Node(config.parse(raw, folder / f"{site}.toml"))
                self.nodes[site].start()
        except BaseException:
            self.close()
            raise

    def round(self) -> RoundReport:
        report = RoundReport()
        for _ in range(2):  # gather at the siège, then redistribute
            for site in self.nodes:
                if site == self.siege:
                    continue
                started = time.perf_counter()
                reply = self.nodes[self.siege].exchange(site)
                report.apply_s[site] = report.apply_s.get(site, 0.0) + (
                    time.perf_counter() - started)
                report.moved += reply.pulled_events + reply.pushed_events
                report.refused += [f"{site}: {p}" for p in reply.problems]
        return report

    def until_quiet(self, max_rounds: int = 6) -> list[RoundReport]:
        reports = []
        for _ in range(max_rounds):
            reports.append(self.round())
            if not reports[-1].moved:
                break
        return reports

    def held(self) -> dict[str, list[str]]:
        from siege_sync.node.journal import parking

        return {s: [f"{p.origin}#{p.seq}: {p.reason}" for p in parking.listing(con)]
                for s, con in self.cons.items() if parking.listing(con)}

    def replica(self, site: str):
        return self.nodes[site].replica

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(grace=1)
        self.nodes = {}


# --- install, and the N-table run ------------------------------------------------------------

def install(con: Connection, erp: ErpSchema, site_no: int):
    """``siege-node install`` as this site's config says: the site-local table left out
    (``[tables] exclude``), every generator given the site's own range (``[generators]``)."""
    from siege_sync.node.db.schema import TableSelection
    from siege_sync.node.journal import capture

    return capture.install(con, TableSelection(exclude=erp.exclude),
                           generators=erp.ranges(site_no))


def refusals(report) -> dict[str, str]:
    """Table -> why the node will not replicate it, from an install report."""
    return {r.table: r.reason for r in report.schema.refused}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.erpschema",
        description="Install siege-sync on ERP-shaped schemas at several embedded sites, run "
                    "a workload, sync them through the siège and check convergence with an "
                    "independent digest of every application table.")
    parser.add_argument("--shape", default="erp600", help=f"one of {', '.join(SHAPES)}")
    parser.add_argument("--tables", type=int, default=None, help="about this many tables")
    parser.add_argument("--sites", type=int, default=3, help="sites, the siège included")
    parser.add_argument("--rounds", type=int, default=2, help="workload + sync rounds")
    parser.add_argument("--transactions", type=int, default=60,
                        help="application transactions per site per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--own-totals", dest="race_totals", action="store_false",
                        help="sites pay and correct only their own invoices (no payment "
                             "races another site's recomputed total)")
    parser.add_argument("--keep-old-code-parents", action="store_true",
                        help="never delete rows from before install that are named through a "
                             "UNIQUE key")
    parser.add_argument("--mesh", action="store_true",
                        help="sync through real nodes over mTLS gRPC on loopback (default: "
                             "the nodes' pipeline called directly, no wire)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the databases go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.shape not in SHAPES:
        print(f"unknown shape {args.shape!r}: one of {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    if args.sites < 2 or args.rounds < 1 or args.transactions < 0:
        print("--sites must be at least 2, --rounds at least 1, --transactions not negative",
              file=sys.stderr)
        return 2
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
        if any(args.folder.glob("*.fdb")):
            print(f"{args.folder} already holds databases: give an empty folder",
                  file=sys.stderr)
            return 2
        return _run(args, args.folder)
    with tempfile.TemporaryDirectory(prefix="erpschema-") as folder:
        return _run(args, Path(folder))


def _run(args: argparse.Namespace, folder: Path) -> int:
    import json

    from siege_sync.node.db.database import DatabaseSpec, open_connection
    from tests.fbdb import create_db

    erp = build(args.shape, args.tables, args.seed)
    print(f"shape {erp.shape}: " + ", ".join(f"{k} {v}" for k, v in erp.features.items()),
          flush=True)
    names = ["siege"] + [f"site{i}" for i in range(1, args.sites)]
    cons: dict[str, Connection] = {}
    rounds: SiegeRounds | MeshRounds | None = None
    numbers: dict = {"shape": erp.shape, "tables": erp.features["tables"],
                     "sites": args.sites, "create_seconds": {}, "install_seconds": {}}
    try:
        for no, site in enumerate(names):
            started = time.perf_counter()
            cons[site] = create_db(folder / f"{site}.fdb", ddl=erp.ddl)
            numbers["create_seconds"][site] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            report = install(cons[site], erp, no)
            took = time.perf_counter() - started
            # The application connects once the schema exists: its ON CONNECT trigger runs.
            cons[site].close()
            cons[site] = open_connection(DatabaseSpec(str(folder / f"{site}.fdb")))
            numbers["install_seconds"][site] = round(took, 2)
            refused = refusals(report)
            print(f"{site}: schema created in {numbers['create_seconds'][site]:.1f} s, "
                  f"installed in {took:.1f} s: {len(report.schema.tables)} tables replicated, "
                  f"{len(refused)} refused, {len(report.guarded)} triggers guarded", flush=True)
            wrong = (set(refused) ^ set(erp.keyless + erp.temporary)) | (
                set(report.schema.tables) ^ set(erp.replicated))
            if wrong:
                print(f"  the node's view differs from the schema's on: {sorted(wrong)}")
        paths = {s: folder / f"{s}.fdb" for s in names}
        rounds = (MeshRounds(cons, erp, paths, folder) if args.mesh
                  else SiegeRounds(cons, erp, paths))
        workloads = {s: Workload(erp, s, no, args.seed, race_totals=args.race_totals,
                                 delete_old_code_parents=not args.keep_old_code_parents)
                     for no, s in enumerate(names)}
        publish_s: list[float] = []
        apply_s: list[float] = []
        problems: list[str] = []
        for r in range(1, args.rounds + 1):
            stats = WorkloadStats()
            started = time.perf_counter()
            for site, workload in workloads.items():
                stats.add(workload.run(cons[site], args.transactions))
            took = time.perf_counter() - started
            print(f"round {r}: {stats.committed} transactions committed, "
                  f"{sum(stats.errors.values())} refused by the application's own rules, "
                  f"{stats.rolled_back} cancelled ({took:.1f} s)", flush=True)
            for sync_no, rep in enumerate(rounds.until_quiet(), 1):
                publish_s += rep.publish_s.values()
                apply_s += rep.apply_s.values()
                problems += rep.refused
                print(f"  sync {sync_no}: published {sum(rep.published.values())} events "
                      f"(max {max(rep.publish_s.values(), default=0):.2f} s a site), "
                      f"applied {rep.moved} "
                      f"(siège {rep.apply_s.get('siege', 0):.2f} s, slowest other "
                      f"{max([v for k, v in rep.apply_s.items() if k != 'siege'] or [0]):.2f} "
                      f"s), refused {len(rep.refused)}, waiting {len(rep.waiting)}",
                      flush=True)
                for line in rep.refused + rep.waiting:
                    print(f"    {line[:300]}")
        # What the table count costs every publish: a quiet one, then one with a single
        # captured change (embedded, the node's own publish step).
        started = time.perf_counter()
        rounds.replica("siege").vector()  # publishes
        numbers["publish_quiet_seconds"] = round(time.perf_counter() - started, 3)
        tm = cons["siege"].transaction_manager()
        tm.begin()
        cur = tm.cursor()
        cur.execute("UPDATE CUSTOMER SET CREDIT = CREDIT + 1 ROWS 1"
                    if "CUSTOMER" in erp.tables else
                    f"UPDATE {erp.replicated[0]} SET AMOUNT = AMOUNT + 1 ROWS 1")
        cur.close()
        tm.commit()
        tm.close()
        started = time.perf_counter()
        rounds.replica("siege").vector()
        numbers["publish_one_change_seconds"] = round(time.perf_counter() - started, 3)
        rounds.until_quiet()
        digests = {s: digest(con, erp, keep=True) for s, con in cons.items()}
        diff = differences(digests)
        held = rounds.held()
        numbers.update(
            publish_seconds_max=round(max(publish_s, default=0), 3),
            publish_seconds_total=round(sum(publish_s), 2),
            apply_seconds_max=round(max(apply_s, default=0), 3),
            apply_seconds_total=round(sum(apply_s), 2),
            rows=sum(d.rows for d in digests["siege"].values()),
            converged=not diff, held=sum(len(v) for v in held.values()),
            refused=len(problems))
        for line in diff[:40]:
            print(line)
        for site, lines in held.items():
            for line in lines:
                print(f"held at {site}: {line[:300]}")
        print("converged: every replicated table equal at every site" if not diff else
              f"NOT converged: {sum(not ln.startswith(' ') for ln in diff)} tables differ")
        print(json.dumps(numbers))
        return 0 if not diff and not held else 1
    finally:
        if rounds is not None:
            rounds.close()
        for con in cons.values():
            if not con.is_closed():
                con.close()


if __name__ == "__main__":
    sys.exit(main())
