"""SQL literals that store exactly what a parameter would: the literal half of the value codec.

Owns :func:`literal`: for one column and one ``values_pb2.Value``, an SQL expression without
parameters that makes Firebird 3 store exactly the value :func:`.values.decode` would have
passed as a parameter (bit for bit: doubles, padding, bytes), or ``None`` when no such
expression exists and the caller must write that value with a parameter.

It must never:

* approximate: every form below was measured exact on Firebird 3.0.11 (tests/test_literal.py
  writes each value once by literal and once by parameter and compares what is read back);
  a value without an exact form gives ``None``, never a nearby literal;
* accept what :func:`.values.decode` refuses: a Value that does not fit the column (kind,
  scale, range) raises decode's own ``ValueError`` (the per-type fast paths check exactly
  what decode checks and hand everything else to it; the tests compare both paths);
* touch the database: it only builds text.

Forms and measured limits (Firebird 3.0.11, connection charset UTF8):

* Integers: decimal digits. Dialect 1 has no 64-bit integer literal (a literal beyond 32
  bits is a DOUBLE there) nor 64-bit integer columns: such values give ``None``.
* Scaled NUMERIC/DECIMAL: dialect 3 an exact numeric literal with ``scale`` decimals
  (``-922337203685477.5808`` included); dialect 1 a decimal literal is a DOUBLE, so the text
  is CAST to the column's own type (``CAST('-21474836.48' AS NUMERIC(9,2))``), exact.
* DOUBLE PRECISION, FLOAT and dialect-1 NUMERIC stored as DOUBLE: the engine reads a float
  literal by accumulating its digits in a double and then doing ONE multiplication or
  division by a power of ten from a table (``CVT_get_double``); it is not correctly rounded
  in general (41% of random doubles written as ``repr`` came back one ulp off) and refuses a
  literal whose decimal scale (digits after the point minus the exponent) passes ±308 (so
  no subnormal, nor 2.60464476415712e-297, can be written that way). Two exact forms:

  - ``<digits>e<exp>`` when the shortest repr has an integer significand below 2**53 and
    ``|exp| <= 22``: both the significand and 10**|exp| are exact doubles, so the one IEEE
    operation is correctly rounded and gives the same double as Python's repr parsing
    (Clinger's fast path). Covers "human" values (12.5, 0.1, 1999.99).
  - otherwise ``<m>*POWER(2e0,<e>)`` with ``x == m * 2**e`` and ``|m| < 2**53``: an integer
    literal, an exact power of two (``pow``), and an exact product — subnormals, the largest
    double and -0.0 included.

  NaN and ±infinity have no literal (the engine rejects arithmetic producing them): ``None``.
  A FLOAT is written as the double of the same value; the engine narrows it exactly.
* BOOLEAN ``TRUE``/``FALSE``; DATE/TIME/TIMESTAMP typed literals ``DATE 'yyyy-mm-dd'``,
  ``TIME 'hh:mm:ss.ffff'``, ``TIMESTAMP 'yyyy-mm-dd hh:mm:ss.ffff'`` with zero-padded 4-digit
  years (years 1..99 are not century-guessed when written with four digits) and 4 fraction
  digits (Firebird's 100 µs); the driver's 1858-11-17 limit does not apply to literals.
  Dialect 1 has no DATE/TIME literal; its DATE columns are TIMESTAMPs.
* Text of a real charset (CHAR/VARCHAR, text BLOB): a UTF-8 string literal with quotes
  doubled, transliterated by the server to the column's charset exactly as a UTF-8 parameter
  is. NUL and characters outside the BMP are fine. One literal holds at most 16,383
  characters (and 65,535 bytes): longer text is split into pieces joined with ``||`` (the
  first piece CAST to a UTF8 text BLOB for BLOB columns). Text above 32,765 UTF-8 bytes for a
  CHAR/VARCHAR gives ``None``. (Only single-byte charset columns hold more than 8,191
  characters, and their values travel as bytes; a ``text`` Value for one comes from a node
  older than byte-exact text and is written as bytes in the column's charset.)
* Bytes (binary BLOBs, charset NONE text BLOBs, CHAR/VARCHAR of every charset but UTF-8):
  a hex literal ``x'..'`` (charset OCTETS, assigned without transliteration); for a charset
  other than NONE/OCTETS it is CAST to a VARCHAR of that charset, still byte for byte, so a
  comparison follows the column's collation (a bare OCTETS operand compares bytes). One
  holds at most 65,535 bytes, which is exactly the largest inline BLOB
  (:data:`.values.LARGE_BLOB` - 1).
* ``NULL`` for every type (no typed NULL needed, unlike parameters of short CHAR columns).
* ARRAYs have no literal syntax, and a BLOB travelling as a BlobRef must be streamed: ``None``.

A whole statement may be at most :data:`MAX_STATEMENT_BYTES` long (measured).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from siege_sync.proto import values_pb2

from . import values
from .schema import Column, ColumnType, Kind

# Measured limits of Firebird 3.0.11.
MAX_STATEMENT_BYTES = 10 * 1024 * 1024  # "SQL statement is too long. Maximum size is 10485760"
MAX_TEXT_LITERAL_CHARS = 16_383  # "maximum length of 16383 characters for the UTF8 ..."
MAX_TEXT_LITERAL_BYTES = 65_535
MAX_HEX_LITERAL_BYTES = 65_535
MAX_STRING_BYTES = 32_765  # longest CHAR/VARCHAR value (also of a concatenation)

_TWO_53 = 1 << 53
_INT32 = (-(2**31), 2**31 - 1)


def literal(column: Column, value: values_pb2.Value, dialect: int) -> str | None:
    """An SQL expression storing exactly what ``values.decode(column.type, value)`` would as a
    parameter into ``column``, or ``None`` when only a parameter can (see the module
    docstring). Raises ``ValueError`` for a Value that does not fit the column."""
    ctype = column.type
    fast = _FAST.get((id(ctype), dialect))
    if fast is None or fast.ctype is not ctype:
        fast = _fast(ctype, dialect)
    if value.WhichOneof("kind") == fast.accepts:
        return fast.format(value)
    return general_literal(ctype, value, dialect)


def general_literal(ctype: ColumnType, value: values_pb2.Value, dialect: int) -> str | None:
    """:func:`literal` by way of :func:`.values.decode`: the reference the per-type fast
    paths must agree with (the tests check they do), and the path of every Value they do
    not take (NULL, a kind or range that does not fit — decode raises —, BlobRef, ARRAY)."""
    which = value.WhichOneof("kind")
    if which == "null":
        return "NULL"
    if which == "blob":  # a BlobRef: only a parameter can stream it
        if not ctype.is_blob or ctype.dimensions:
            raise ValueError(f"a BlobRef does not fit a column of type {ctype.ddl()}")
        return None
    decoded = values.decode(ctype, value)  # validates kind, range, scale, shape
    if ctype.dimensions:  # no ARRAY literal in Firebird
        return None
    kind = ctype.kind
    if kind in (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT):
        n = int(decoded)  # a Decimal only inside arrays, which never get here
        if dialect == 1 and not _INT32[0] <= n <= _INT32[1]:
            return None
        return str(n)
    if kind is Kind.SCALED:
        text = _scaled_text(value.scaled.unscaled, value.scaled.scale)
        if dialect == 1:
            return f"CAST('{text}' AS {ctype.ddl()})"
        return text
    if kind in (Kind.DOUBLE, Kind.FLOAT):
        return double_literal(decoded)
    if kind is Kind.BOOLEAN:
        return "TRUE" if decoded else "FALSE"
    if kind is Kind.DATE:
        d: _dt.date = decoded
        return f"DATE '{d.year:04d}-{d.month:02d}-{d.day:02d}'"
    if kind is Kind.TIME:
        t: _dt.time = decoded
        return (f"TIME '{t.hour:02d}:{t.minute:02d}:{t.second:02d}."
                f"{t.microsecond // 100:04d}'")
    if kind is Kind.TIMESTAMP:
        if isinstance(decoded, str):  # before 1858-11-17: decode already made the text
            return f"TIMESTAMP '{decoded}'"
        ts: _dt.datetime = decoded
        return (f"TIMESTAMP '{ts.year:04d}-{ts.month:02d}-{ts.day:02d} {ts.hour:02d}:"
                f"{ts.minute:02d}:{ts.second:02d}.{ts.microsecond // 100:04d}'")
    if kind in (Kind.CHAR, Kind.VARCHAR):
        if values.travels_as_bytes(ctype):
            return _column_hex(ctype, decoded)
        return _text(decoded, blob=False)
    if kind is Kind.BLOB_TEXT or kind is Kind.BLOB:
        if isinstance(decoded, bytes):
            return _hex(decoded)
        return _text(decoded, blob=True)
    raise ValueError(f"no literal form for kind {kind}")  # pragma: no cover - all kinds above


# --- per-type fast paths ---------------------------------------------------------------------
# Each takes a Value of the one kind its column type accepts and checks exactly what decode
# checks (range, scale); anything else goes to general_literal, which raises like decode.


@dataclass(frozen=True, slots=True)
class _Fast:
    ctype: ColumnType  # kept so an id() in the cache is never a recycled object's
    accepts: str | None  # the Value oneof the fast path takes
    format: Callable[[values_pb2.Value], str | None]


_FAST: dict[tuple[int, int], _Fast] = {}
_FAST_CACHE_LIMIT = 4096
_TICKS_PER_SECOND = 10_000
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
_MAX_DATE = _dt.date.max.toordinal()
_INT_RANGE = {7: (-(2**15), 2**15 - 1), 8: (-(2**31), 2**31 - 1), 16: (-(2**63), 2**63 - 1)}
_unpack_d = struct.Struct("<d").unpack
_pack_q = struct.Struct("<Q").pack
_unpack_f = struct.Struct("<f").unpack
_pack_i = struct.Struct("<I").pack


def _fast(ctype: ColumnType, dialect: int) -> _Fast:
    def slow(v: values_pb2.Value) -> str | None:
        return general_literal(ctype, v, dialect)

    accepts, fmt = _fast_format(ctype, dialect, slow)
    fast = _Fast(ctype, accepts, fmt)
    if len(_FAST) >= _FAST_CACHE_LIMIT:
        _FAST.clear()
    _FAST[(id(ctype), dialect)] = fast
    return fast


def _fast_format(ctype: ColumnType, dialect: int, slow: Callable[[values_pb2.Value], str | None]
                 ) -> tuple[str | None, Callable[[values_pb2.Value], str | None]]:
    if ctype.dimensions:
        return None, slow
    kind = ctype.kind
    if kind in (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT):
        lo, hi = _INT_RANGE[ctype.field_type]
        if dialect == 1:
            lo, hi = max(lo, _INT32[0]), min(hi, _INT32[1])

        def integer(v: values_pb2.Value) -> str | None:
            n = v.integer
            return str(n) if lo <= n <= hi else slow(v)
        return "integer", integer
    if kind is Kind.SCALED:
        lo, hi = _INT_RANGE[ctype.field_type]
        scale = -ctype.scale
        cast = f" AS {ctype.ddl()})" if dialect == 1 else ""

        def scaled(v: values_pb2.Value) -> str | None:
            m = v.scaled
            if m.scale != scale or not lo <= m.unscaled <= hi:
                return slow(v)
            text = _scaled_text(m.unscaled, scale)
            return f"CAST('{text}'{cast}" if cast else text
        return "scaled", scaled
    if kind is Kind.DOUBLE:
        return "double_bits", lambda v: double_literal(_unpack_d(_pack_q(v.double_bits))[0])
    if kind is Kind.FLOAT:
        return "float_bits", lambda v: double_literal(_unpack_f(_pack_i(v.float_bits))[0])
    if kind is Kind.BOOLEAN:
        return "boolean", lambda v: "TRUE" if v.boolean else "FALSE"
    if kind is Kind.DATE:
        def date(v: values_pb2.Value) -> str | None:
            if not 1 <= v.date <= _MAX_DATE:
                return slow(v)
            d = _dt.date.fromordinal(v.date)
            return f"DATE '{d.year:04d}-{d.month:02d}-{d.day:02d}'"
        return "date", date
    if kind is Kind.TIME:
        def time(v: values_pb2.Value) -> str | None:
            if v.time >= _TICKS_PER_DAY:
                return slow(v)
            return f"TIME '{_time_text(v.time)}'"
        return "time", time
    if kind is Kind.TIMESTAMP:
        def timestamp(v: values_pb2.Value) -> str | None:
            days, ticks = divmod(v.timestamp, _TICKS_PER_DAY)
            if not 0 <= days < _MAX_DATE:
                return slow(v)
            d = _dt.date.fromordinal(days + 1)
            return f"TIMESTAMP '{d.year:04d}-{d.month:02d}-{d.day:02d} {_time_text(ticks)}'"
        return "timestamp", timestamp
    blob = ctype.is_blob
    if values.travels_as_bytes(ctype):
        if blob:
            return "octets", lambda v: _hex(v.octets)
        return "octets", lambda v: _column_hex(ctype, v.octets)
    return "text", lambda v: _text(v.text, blob)


def _time_text(ticks: int) -> str:
    seconds, frac = divmod(ticks, _TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:{second:02d}.{frac:04d}"


def double_literal(x: float) -> str | None:
    """An exact DOUBLE PRECISION expression for ``x`` (see the module docstring); ``None``
    for NaN and infinities."""
    if not math.isfinite(x):
        return None
    minus = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return f"{minus}0e0"
    _, digits, exp = decimal.Decimal(repr(x)).as_tuple()
    exp = int(exp)
    significand = 0
    for digit in digits:
        significand = significand * 10 + digit
    while significand % 10 == 0:  # "100.0" -> 1e2
        significand //= 10
        exp += 1
    if significand < _TWO_53 and -22 <= exp <= 22:
        return f"{minus}{significand}e{exp}"
    mantissa, exponent = math.frexp(abs(x))  # 0.5 <= mantissa < 1
    m = int(mantissa * _TWO_53)  # exact: 53 bits
    e = exponent - 53
    if e < -1074:  # a subnormal: its significand has fewer bits
        m >>= -1074 - e
        e = -1074
    while not m & 1:  # shortest text, smaller exponent
        m >>= 1
        e += 1
    return f"{minus}{m}*POWER(2e0,{e})"


def _scaled_text(unscaled: int, scale: int) -> str:
    digits = str(abs(unscaled)).rjust(scale + 1, "0")
    sign = "-" if unscaled < 0 else ""
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _hex(data: bytes) -> str | None:
    if len(data) > MAX_HEX_LITERAL_BYTES:
        return None
    return f"x'{data.hex()}'"


def _column_hex(ctype: ColumnType, data: bytes) -> str | None:
    """Bytes of a CHAR/VARCHAR as a value of the column's own charset (see
    :func:`.values.bytes_as_column`: byte for byte, compared by the column's collation)."""
    hexed = _hex(data)
    return None if hexed is None else values.bytes_as_column(ctype, hexed)


def _text(text: str, blob: bool) -> str | None:
    if len(text) <= MAX_TEXT_LITERAL_CHARS:
        # 16,383 characters are at most 65,532 UTF-8 bytes: within the byte limit too.
        return "'" + text.replace("'", "''") + "'"
    if not blob and len(text.encode("utf-8")) > MAX_STRING_BYTES:
        return None
    pieces = ["'" + text[i:i + MAX_TEXT_LITERAL_CHARS].replace("'", "''") + "'"
              for i in range(0, len(text), MAX_TEXT_LITERAL_CHARS)]
    if blob:  # a BLOB operand makes || yield a BLOB: no string length limit
        pieces[0] = f"CAST({pieces[0]} AS BLOB SUB_TYPE TEXT CHARACTER SET UTF8)"
    return " || ".join(pieces)
