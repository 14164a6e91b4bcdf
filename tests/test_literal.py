"""literal() stores exactly what a parameter stores, for every column type.

Each value is written twice into a real embedded Firebird 3 table: once by its literal (in
EXECUTE BLOCKs of INSERTs, as the row writer does) and once by parameter (``values.decode`` +
``values.param_expr``, as apply did); both rows are read back with ``values.select_expr`` and
``values.encode`` and their Values must be identical (doubles by bits, CHAR with padding,
bytes). Values come from a seeded random generator plus the edge cases of each type.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from firebird.driver import Connection

from siege_sync.node.db import values
from siege_sync.node.db.database import quote
from siege_sync.node.db.literal import (
    MAX_HEX_LITERAL_BYTES,
    MAX_TEXT_LITERAL_CHARS,
    double_literal,
    general_literal,
    literal,
)
from siege_sync.node.db.schema import Column, ColumnType, Kind, Table, introspect
from siege_sync.proto import values_pb2

Value = values_pb2.Value

SCALARS = """
    SI SMALLINT, II INTEGER, BI BIGINT,
    N4_2 NUMERIC(4,2), D4_2 DECIMAL(4,2), N9_3 NUMERIC(9,3), N18_4 NUMERIC(18,4),
    N18_0 NUMERIC(18,0), D9_0 DECIMAL(9,0), N18_18 NUMERIC(18,18),
    FL FLOAT, DP DOUBLE PRECISION, BO BOOLEAN, DT DATE, TM TIME, TS TIMESTAMP,
    CU CHAR(5) CHARACTER SET UTF8, C1 CHAR(1) CHARACTER SET UTF8,
    VU VARCHAR(8191) CHARACTER SET UTF8, V1 VARCHAR(1) CHARACTER SET UTF8,
    CW CHAR(3) CHARACTER SET WIN1252, VW VARCHAR(20) CHARACTER SET WIN1252,
    VWL VARCHAR(30000) CHARACTER SET WIN1252, VL VARCHAR(20) CHARACTER SET ISO8859_1,
    CN CHAR(6) CHARACTER SET NONE, VN VARCHAR(20) CHARACTER SET NONE,
    C2N CHAR(2) CHARACTER SET NONE,
    CO CHAR(4) CHARACTER SET OCTETS, VO VARCHAR(10) CHARACTER SET OCTETS,
    BT BLOB SUB_TYPE TEXT CHARACTER SET UTF8, BW BLOB SUB_TYPE TEXT CHARACTER SET WIN1252,
    BN BLOB SUB_TYPE TEXT CHARACTER SET NONE, BB BLOB SUB_TYPE BINARY,
    "Mixed Case Col" VARCHAR(10) CHARACTER SET UTF8
"""

DIALECT1 = """
    DT DATE, N9 NUMERIC(9,2), N4 NUMERIC(4,1), N18 NUMERIC(18,3), DP DOUBLE PRECISION,
    FL FLOAT, I INTEGER, SI SMALLINT, BO BOOLEAN, CN CHAR(4) CHARACTER SET NONE,
    VU VARCHAR(10) CHARACTER SET UTF8, BN BLOB SUB_TYPE TEXT CHARACTER SET NONE,
    BT BLOB SUB_TYPE TEXT CHARACTER SET UTF8, BB BLOB SUB_TYPE BINARY
"""

DOUBLES = ", ".join([f"D{i} DOUBLE PRECISION" for i in range(8)] + ["F0 FLOAT", "F1 FLOAT"])


def make_table(make_db: Callable[..., Connection], columns: str, dialect: int = 3,
               charset: str = "UTF8") -> tuple[Connection, Table]:
    con = make_db(f"lit{dialect}{charset}", dialect=dialect, charset=charset,
                  ddl=[f"CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, {columns})"])
    return con, introspect(con).tables["T"]


def write_both(con: Connection, table: Table, rows: Sequence[dict[str, Value]]
               ) -> list[tuple[dict[str, Value], dict[str, Value]]]:
    """Row i goes in as ID 2i by literals and 2i+1 by parameters; returns the pairs of rows
    read back (column name -> encoded Value). Rolls back at the end."""
    d = con.sql_dialect
    cols = [c for c in table.columns if c.name != "ID"]
    idc = table.column("ID")
    names = ", ".join(quote(c.name, d) for c in [idc, *cols])
    insert = f"INSERT INTO T ({names}) VALUES "
    cur = con.cursor()
    try:
        block: list[str] = []
        size = 0
        for i, row in enumerate(rows):
            lits = [literal(c, row.get(c.name, Value(null=True)), d) for c in cols]
            assert None not in lits, [c.name for c, lit in zip(cols, lits, strict=True)
                                      if lit is None]
            stmt = f"{insert}({2 * i}, {', '.join(lits)});"  # type: ignore[arg-type]
            if block and (len(block) == 200 or size + len(stmt) > 2_000_000):
                cur.execute("EXECUTE BLOCK AS BEGIN\n" + "\n".join(block) + "\nEND")
                block, size = [], 0
            block.append(stmt)
            size += len(stmt)
        if block:
            cur.execute("EXECUTE BLOCK AS BEGIN\n" + "\n".join(block) + "\nEND")
        marks = ", ".join(values.param_expr(c) for c in [idc, *cols])
        cur.executemany(insert + f"({marks})", [
            [2 * i + 1, *(values.decode(c.type, row.get(c.name, Value(null=True)))
                          for c in cols)] for i, row in enumerate(rows)])
        exprs = ", ".join(values.select_expr(c, d) for c in cols)
        cur.execute(f"SELECT ID, {exprs} FROM T ORDER BY ID")
        read = {}
        for rid, *vals in cur:
            read[rid] = {c.name: values.encode(c.type, v) for c, v in zip(cols, vals, strict=True)}
        assert len(read) == 2 * len(rows)
        return [(read[2 * i], read[2 * i + 1]) for i in range(len(rows))]
    finally:
        cur.close()
        con.rollback()


def assert_same(pairs: list[tuple[dict[str, Value], dict[str, Value]]]) -> None:
    for i, (by_literal, by_param) in enumerate(pairs):
        for name, got in by_literal.items():
            want = by_param[name]
            assert got == want, f"row {i} column {name}: literal {got} != parameter {want}"


# --- value generators --------------------------------------------------------------------------

_BITS = {7: 16, 8: 32, 16: 64}
TEXT = ["", "a", "'", "''", "O'Brien", "é", "😀", "a\x00b", "€", "line\nbreak", " lead", "x "]


def _f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def random_double(rnd: random.Random) -> float:
    pick = rnd.random()
    if pick < 0.4:
        x = _f64(rnd.getrandbits(64))
    elif pick < 0.5:
        x = _f64(rnd.getrandbits(52) | rnd.getrandbits(1) << 63)  # subnormal
    elif pick < 0.7:
        x = round(rnd.uniform(-1e7, 1e7), rnd.randint(0, 8))  # "human" decimals
    elif pick < 0.8:
        x = float(rnd.randint(-(2**60), 2**60))
    elif pick < 0.9:
        x = rnd.choice([1.0, -1.0]) * 10.0 ** rnd.randint(-320, 308)
    else:
        x = rnd.choice([1.0, -1.0]) * 2.0 ** rnd.randint(-1074, 1023)
    return x if math.isfinite(x) else 0.5


def random_float32(rnd: random.Random) -> float:
    while True:
        x = _f32(rnd.getrandbits(32))
        if math.isfinite(x):
            return x


EDGE_DOUBLES = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
                1.7976931348623157e308, -1.7976931348623157e308, 0.1, 1e22, 1e23, 1e-22, 1e-23,
                9007199254740993.0, 9007199254740992.0, 123456789012345.67, 1 / 3]
EDGE_FLOATS = [0.0, -0.0, _f32(1), _f32(0x007FFFFF), _f32(0x00800000), _f32(0x7F7FFFFF),
               -_f32(0x7F7FFFFF), _f32(0x3DCCCCCD)]


def random_value(ctype: ColumnType, rnd: random.Random) -> Any:
    kind = ctype.kind
    if kind in (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT, Kind.SCALED):
        bits = _BITS[ctype.field_type]
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        n = rnd.choice([lo, hi, 0, -1, 1, rnd.randint(lo, hi), rnd.randint(-999, 999)])
        if kind is Kind.SCALED:
            return Decimal(n).scaleb(ctype.scale)
        return Decimal(n) if ctype.sub_type else n
    if kind is Kind.DOUBLE:
        if ctype.scale:  # dialect 1 NUMERIC stored as double: usually cents
            return rnd.choice([random_double(rnd), rnd.randint(-10**12, 10**12) / 100])
        return random_double(rnd)
    if kind is Kind.FLOAT:
        return random_float32(rnd)
    if kind is Kind.BOOLEAN:
        return rnd.random() < 0.5
    if kind is Kind.DATE:
        return dt.date.fromordinal(rnd.randint(1, dt.date.max.toordinal()))
    if kind is Kind.TIME:
        return dt.time(rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
                       rnd.randint(0, 9999) * 100)
    if kind is Kind.TIMESTAMP:
        day = dt.datetime.fromordinal(rnd.randint(1, dt.date.max.toordinal()))
        return day + dt.timedelta(microseconds=rnd.randint(0, 864_000_000 - 1) * 100)
    return random_text(ctype, rnd)


def random_text(ctype: ColumnType, rnd: random.Random) -> Any:
    kind = ctype.kind
    charset = ctype.charset or "NONE"
    length = ctype.char_length or ctype.length or 300
    if kind in (Kind.BLOB, Kind.BLOB_TEXT):
        length = rnd.choice([0, 1, 300, 2000])
    raw = values.travels_as_bytes(ctype)  # single-byte charsets too: every byte value
    n = rnd.randint(0, min(length, 40))
    if raw:
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        if kind is Kind.CHAR:  # read back padded: the canonical form
            data = data.ljust(ctype.length, b"\0" if charset == "OCTETS" else b" ")
        return data
    if charset == "UTF8":
        alphabet = [chr(c) for c in range(32, 127)] + list("éü€😀𝄞\x00\n'") + ["ß", "中"]
    elif charset == "WIN1252":
        alphabet = [chr(c) for c in range(32, 127)] + list("éü€'\n")
    else:
        alphabet = [chr(c) for c in range(32, 127)] + list("éü'\n\x00")
    text = "".join(rnd.choice(alphabet) for _ in range(n))
    if kind is Kind.CHAR:
        text = text.ljust(length)
    return text


def random_rows(table: Table, n: int, seed: int) -> list[dict[str, Value]]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row = {}
        for c in table.columns:
            if c.name == "ID":
                continue
            v = None if rnd.random() < 0.05 else random_value(c.type, rnd)
            row[c.name] = values.encode(c.type, v)
        rows.append(row)
    return rows


# --- tests ------------------------------------------------------------------------------------


def assert_fast_paths_agree(table: Table, rows: list[dict[str, Value]], dialect: int) -> None:
    for row in rows:
        for name, v in row.items():
            col = table.column(name)
            assert literal(col, v, dialect) == general_literal(col.type, v, dialect), name


def test_every_type_dialect3(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, SCALARS)
    rows = random_rows(table, 300, seed=3)
    assert_fast_paths_agree(table, rows, 3)
    assert_same(write_both(con, table, rows))


@pytest.mark.parametrize("ddl, bad", [
    ("SMALLINT", Value(integer=2**15)), ("INTEGER", Value(integer=-(2**31) - 1)),
    ("BIGINT", Value(text="1")), ("NUMERIC(9,2)", Value(scaled={"unscaled": 1, "scale": 3})),
    ("NUMERIC(4,2)", Value(scaled={"unscaled": 2**15, "scale": 2})),
    ("DATE", Value(date=0)), ("DATE", Value(date=dt.date.max.toordinal() + 1)),
    ("TIME", Value(time=864_000_000)), ("TIMESTAMP", Value(timestamp=-1)),
    ("TIMESTAMP", Value(timestamp=dt.date.max.toordinal() * 864_000_000)),
    ("VARCHAR(5) CHARACTER SET NONE", Value(text="x")),
    ("VARCHAR(5) CHARACTER SET UTF8", Value(octets=b"x")),
    ("BLOB SUB_TYPE BINARY", Value(text="x")), ("DOUBLE PRECISION", Value(float_bits=1)),
    ("BOOLEAN", Value(integer=1)), ("INTEGER", Value()),
])
def test_fast_paths_reject_like_decode(make_db: Callable[..., Connection], ddl: str,
                                       bad: Value) -> None:
    con, table = make_table(make_db, f"X {ddl}")
    col = table.column("X")
    with pytest.raises(ValueError):
        values.decode(col.type, bad)
    with pytest.raises(ValueError):
        literal(col, bad, 3)


def test_nulls_for_every_type(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, SCALARS)
    row = {c.name: Value(null=True) for c in table.columns if c.name != "ID"}
    pairs = write_both(con, table, [row])
    assert_same(pairs)
    assert all(v == Value(null=True) for v in pairs[0][0].values())
    assert all(literal(c, Value(null=True), 3) == "NULL" for c in table.columns)


def test_extremes_dialect3(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, SCALARS)
    t = table.columns
    enc = {c.name: (lambda v, c=c: values.encode(c.type, v)) for c in t}
    rows = [
        {"SI": enc["SI"](-(2**15)), "II": enc["II"](-(2**31)), "BI": enc["BI"](-(2**63)),
         "N18_4": enc["N18_4"](Decimal(-(2**63)).scaleb(-4)),
         "N18_18": enc["N18_18"](Decimal(-(2**63)).scaleb(-18)),
         "N18_0": enc["N18_0"](Decimal(-(2**63))), "D4_2": enc["D4_2"](Decimal("-327.68")),
         "DT": enc["DT"](dt.date(1, 1, 1)), "TS": enc["TS"](dt.datetime(1, 1, 1)),
         "TM": enc["TM"](dt.time(0, 0)), "BO": enc["BO"](False),
         "CU": enc["CU"]("😀😀😀😀😀"), "C1": enc["C1"]("'"), "V1": enc["V1"](""),
         "VU": enc["VU"]("😀" * 8191), "CW": enc["CW"]("€'é".encode("cp1252")),
         "VL": enc["VL"](b"\xff" * 20),
         "CN": enc["CN"](b"\x00\xff'\\ \x80"), "C2N": enc["C2N"](b"  "),
         "CO": enc["CO"](b"\x00\x00\x00\x00"), "VO": enc["VO"](b""),
         "BB": enc["BB"](b""), "BT": enc["BT"](""), "BN": enc["BN"](b""),
         "Mixed Case Col": enc["Mixed Case Col"]("x")},
        {"SI": enc["SI"](2**15 - 1), "II": enc["II"](2**31 - 1), "BI": enc["BI"](2**63 - 1),
         "N18_4": enc["N18_4"](Decimal(2**63 - 1).scaleb(-4)),
         "N18_18": enc["N18_18"](Decimal(2**63 - 1).scaleb(-18)),
         "DT": enc["DT"](dt.date(9999, 12, 31)),
         "TS": enc["TS"](dt.datetime(9999, 12, 31, 23, 59, 59, 999900)),
         "TM": enc["TM"](dt.time(23, 59, 59, 999900)), "BO": enc["BO"](True),
         # years below 100 are not century-guessed; before 1858-11-17 the driver needs text
         # single-byte text travels as bytes: a parameter holds the whole column
         "VWL": enc["VWL"](b"a'b\x80\xe9\x81" * 5000),
         "VU": enc["VU"]("'" * 8191)},
        {"TS": enc["TS"](dt.datetime(50, 6, 7, 8, 9, 10, 100)), "DT": enc["DT"](dt.date(99, 1, 2)),
         "TM": enc["TM"](dt.time(0, 0, 0, 100)), "BO": enc["BO"](True)},
    ]
    assert_same(write_both(con, table, rows))


def test_text_longer_than_one_literal(make_db: Callable[..., Connection]) -> None:
    """A single-byte charset column holds more characters than a UTF-8 literal (16,383) or a
    parameter (8,191: the driver describes it as UTF8): pieces joined by || write it. (The
    driver cannot read such a value either — same limit — so it is read here as bytes.)"""
    con, table = make_table(make_db, "VWL VARCHAR(30000) CHARACTER SET WIN1252, "
                                     "CWL CHAR(20000) CHARACTER SET ISO8859_1")
    vwl, cwl = table.column("VWL"), table.column("CWL")
    text = ("ab'c" * 8000)[:30000]
    padded = ("x" * 16383 + "'" + "é" * 100).ljust(20000)
    cur = con.cursor()
    try:
        cur.execute(f"INSERT INTO T (ID, VWL, CWL) VALUES (1, {literal(vwl, Value(text=text), 3)}, "
                    f"{literal(cwl, Value(text=padded), 3)})")
        cur.execute("SELECT CAST(VWL AS VARCHAR(30000) CHARACTER SET OCTETS), "
                    "CAST(CWL AS CHAR(20000) CHARACTER SET OCTETS) FROM T")
        assert cur.fetchone() == (text.encode("cp1252"), padded.encode("latin-1"))
    finally:
        cur.close()
        con.rollback()


def test_doubles_bit_exact(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, DOUBLES)
    rnd = random.Random(7)
    doubles = EDGE_DOUBLES + [random_double(rnd) for _ in range(16_000)]
    floats = EDGE_FLOATS + [random_float32(rnd) for _ in range(4_000)]
    cols = {c.name: c for c in table.columns}
    rows = []
    for i in range(0, len(doubles), 8):
        row = {f"D{j}": values.encode(cols[f"D{j}"].type, x)
               for j, x in enumerate(doubles[i:i + 8])}
        for j in range(2):
            row[f"F{j}"] = values.encode(cols[f"F{j}"].type, floats[(i // 8 * 2 + j) % len(floats)])
        rows.append(row)
    pairs = write_both(con, table, rows)
    assert_same(pairs)
    for row, (by_literal, _) in zip(rows, pairs, strict=True):
        assert {k: by_literal[k] for k in row} == row  # the value meant, bit for bit


def test_double_literal_forms() -> None:
    assert double_literal(12.5) == "125e-1"
    assert double_literal(-0.0) == "-0e0"
    assert double_literal(0.1) == "1e-1"
    assert double_literal(1999.99) == "199999e-2"
    assert double_literal(5e-324) == "1*POWER(2e0,-1074)"
    assert double_literal(1.7976931348623157e308) == "9007199254740991*POWER(2e0,971)"
    assert double_literal(1e23) is not None and "POWER" in double_literal(1e23)  # type: ignore
    for x in (math.nan, math.inf, -math.inf):
        assert double_literal(x) is None


def test_dialect1(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, DIALECT1, dialect=1)
    assert table.column("N18").type.kind is Kind.DOUBLE
    rows = random_rows(table, 400, seed=1)
    enc = {c.name: (lambda v, c=c: values.encode(c.type, v)) for c in table.columns}
    rows.append({"N9": enc["N9"](Decimal("-21474836.48")), "I": enc["I"](-(2**31)),
                 "SI": enc["SI"](-(2**15)), "N4": enc["N4"](Decimal("-3276.8")),
                 "DT": enc["DT"](dt.datetime(1, 1, 1, 0, 0, 0, 100)),
                 "DP": enc["DP"](5e-324), "N18": enc["N18"](-0.0), "FL": enc["FL"](-0.0)})
    rows.append({"N9": enc["N9"](Decimal("21474836.47")), "I": enc["I"](2**31 - 1),
                 "DT": enc["DT"](dt.datetime(9999, 12, 31, 23, 59, 59, 999900)),
                 "DP": enc["DP"](-1.7976931348623157e308), "N18": enc["N18"](0.1)})
    assert_fast_paths_agree(table, rows, 1)
    assert_same(write_both(con, table, rows))
    # dialect 1 has no 64-bit integer literal: a parameter has to do
    wide = Column("W", ColumnType(field_type=16))
    assert literal(wide, Value(integer=2**40), 1) is None
    assert literal(wide, Value(integer=2**40), 3) == str(2**40)


def test_charset_none_database(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, "C CHAR(5), V VARCHAR(50), B BLOB SUB_TYPE TEXT, "
                            "U VARCHAR(10) CHARACTER SET UTF8", charset="NONE")
    assert table.column("V").type.charset in (None, "NONE")
    rows = random_rows(table, 200, seed=5)
    enc = {c.name: (lambda v, c=c: values.encode(c.type, v)) for c in table.columns}
    rows.append({"C": enc["C"](b"\xff\x00'  "), "V": enc["V"](bytes(range(50))),
                 "B": enc["B"](bytes(range(256)) * 100), "U": enc["U"]("😀'x")})
    assert_same(write_both(con, table, rows))


def test_blobs_near_the_literal_limits(make_db: Callable[..., Connection]) -> None:
    con, table = make_table(make_db, "BB BLOB SUB_TYPE BINARY, BT BLOB SUB_TYPE TEXT CHARACTER "
                            "SET UTF8, BW BLOB SUB_TYPE TEXT CHARACTER SET WIN1252, "
                            "BN BLOB SUB_TYPE TEXT CHARACTER SET NONE")
    cols = {c.name: c for c in table.columns}
    rnd = random.Random(11)
    biggest = bytes(rnd.getrandbits(8) for _ in range(MAX_HEX_LITERAL_BYTES))
    n = MAX_TEXT_LITERAL_CHARS
    rows = [
        {"BB": Value(octets=biggest), "BN": Value(octets=biggest[::-1]),
         "BT": Value(text="😀" * n), "BW": Value(text="é'" * (n // 2) + "€")},
        {"BB": Value(octets=biggest[:-1]), "BT": Value(text="'" * (n + 1)),
         "BW": Value(text="a€" * 13000)},  # 26,000 characters, 52,000 UTF-8 bytes
        {"BT": Value(text=("x😀'" * 10000)[:30001]), "BW": Value(text="z" * (n * 3))},
    ]
    for row in rows:  # all inline Values: below LARGE_BLOB bytes
        assert all(len(v.octets or v.text.encode()) < values.LARGE_BLOB for v in row.values())
    assert_same(write_both(con, table, rows))
    # one more byte than a hex literal holds: only a parameter can write it
    assert literal(cols["BB"], Value(octets=biggest + b"x"), 3) is None


def test_what_has_no_literal() -> None:
    dbl = Column("D", ColumnType(field_type=27))
    flt = Column("F", ColumnType(field_type=10))
    for x in (math.nan, math.inf, -math.inf):
        assert literal(dbl, values.encode(dbl.type, x), 3) is None
        assert literal(flt, values.encode(flt.type, x), 3) is None
    arr = Column("A", ColumnType(field_type=8, dimensions=((1, 2),)))
    assert literal(arr, values.encode(arr.type, [1, 2]), 3) is None
    blob = Column("B", ColumnType(field_type=261, sub_type=0))
    ref = Value(blob=values_pb2.BlobRef(sha256=b"\0" * 32, length=70_000))
    assert literal(blob, ref, 3) is None
    with pytest.raises(ValueError):
        literal(dbl, ref, 3)
    text = Column("V", ColumnType(field_type=37, length=32764, char_length=8191,
                                  charset="UTF8"))
    assert literal(text, Value(text="é" * 20000), 3) is None  # 40,000 UTF-8 bytes
    assert literal(text, Value(text="e" * 20000), 3) is not None  # two pieces joined by ||


def test_rejects_what_decode_rejects() -> None:
    small = Column("S", ColumnType(field_type=7))
    with pytest.raises(ValueError):
        literal(small, Value(integer=2**15), 3)
    with pytest.raises(ValueError):
        literal(small, Value(text="1"), 3)
    num = Column("N", ColumnType(field_type=8, scale=-2, precision=9))
    with pytest.raises(ValueError):
        literal(num, Value(scaled={"unscaled": 1, "scale": 3}), 3)
    assert literal(num, Value(scaled={"unscaled": -5, "scale": 2}), 3) == "-0.05"
    assert literal(num, Value(scaled={"unscaled": -5, "scale": 2}), 1) == \
        "CAST('-0.05' AS NUMERIC(9,2))"
