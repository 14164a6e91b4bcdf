"""The exact value codec: what the firebird-driver returns or accepts <-> ``values_pb2.Value``.

Owns the translation of one column value between its Python form (as the driver returns it
for a column read with :func:`select_expr`, and as the driver accepts it as a parameter) and
its wire form, for every column type :mod:`.schema` describes; the SQL expression that reads
each column exactly; and a content-addressed spool that carries large BLOBs as files.

It must never:

* lose a bit: no float formatting, no rounding, no transcoding the column did not ask for.
  Every conversion is checked to be exact and raises instead of approximating;
* decode raw bytes: binary BLOBs, and CHAR/VARCHAR of every charset but UTF-8 (NONE,
  OCTETS, WIN1252 ...) stay ``bytes`` from the database to the wire and back (they are read
  through a CAST to OCTETS/BINARY because the driver would otherwise decode them as the
  connection's UTF-8 — failing for NONE, and turning bytes WIN1252 leaves undefined into
  NUL); see :func:`travels_as_bytes`;
* hold a large BLOB whole in memory: BLOBs of :data:`LARGE_BLOB` bytes or more travel as a
  ``BlobRef`` whose bytes are streamed in 64 KiB chunks into and out of a spool file;
* let malformed input through: :func:`decode` rejects a value whose kind, scale, range or
  shape does not fit the column with a ``ValueError`` naming the column type and the kind.

Driver facts this relies on (firebird-driver 2.1, Firebird 3.0.11; see tests/test_values.py):

* NUMERIC/DECIMAL stored as integers come back as ``decimal.Decimal``, also NUMERIC(p,0);
  dialect 1 NUMERIC(10..18,s) is stored as DOUBLE PRECISION and comes back as ``float``.
* Values are naive ``date``/``time``/``datetime`` (Firebird 3 has no time zone types), with
  100 µs resolution.
* The driver cannot write a TIMESTAMP before 1858-11-17 from a ``datetime`` (it packs the
  negative day number as unsigned); a string literal with 4 fraction digits is exact, so
  :func:`decode` returns such timestamps as text. ARRAY elements have no such way out.
* ``BlobReader.read()`` of a text BLOB decodes each chunk on its own, which breaks multi-byte
  characters at chunk edges: readers are switched to raw bytes (UTF-8, transliterated by the
  server to the connection charset) before they are streamed.
* Firebird 3 stores NaN (with its payload), ±inf, -0.0 and subnormals in DOUBLE and FLOAT.
* A NULL parameter for a CHAR/VARCHAR shorter than 4 characters fails in the driver: write
  such columns through :func:`param_expr`.
* ARRAYs: only numeric, BOOLEAN, TIME, DATE/TIMESTAMP from 1858-11-17 and UTF8 VARCHAR
  elements round-trip through the driver (CHAR, non-UTF8 and NONE elements fail in it, and
  it cuts text elements at the first NUL).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import io
import math
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

from siege_sync.proto import values_pb2

from .database import quote
from .schema import Column, ColumnType, Kind, UnsupportedType

Value = values_pb2.Value
BlobRef = values_pb2.BlobRef

# BLOB values at or above this many bytes travel as BlobRef. The driver returns a BlobReader
# above its stream_blob_threshold (64 KiB) and str/bytes below; the rule here does not depend
# on that setting.
LARGE_BLOB = 64 * 1024
CHUNK = 64 * 1024  # spool and stream granularity

_TICKS_PER_SECOND = 10_000  # Firebird's TIME/TIMESTAMP resolution is 100 µs
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
_MAX_DATE = _dt.date.max.toordinal()  # 9999-12-31, Firebird's last day too
_EPOCH = _dt.datetime(1, 1, 1)
# The driver writes TIMESTAMP days as an unsigned offset from this day (see module docstring).
_DRIVER_TS_MIN = _dt.datetime(1858, 11, 17)

_INT_RANGE = {  # storage type (RDB$FIELD_TYPE) -> inclusive range of the stored integer
    7: (-(2**15), 2**15 - 1),
    8: (-(2**31), 2**31 - 1),
    16: (-(2**63), 2**63 - 1),
}

# Our own decimal context: wide enough that every 64-bit unscaled value is exact whatever the
# calling thread did to its context; Inexact/Rounded trap as a last guard.
_DEC_CTX = decimal.Context(
    prec=60, traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation]
)

_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack
_pack_q = struct.Struct("<Q").pack
_unpack_q = struct.Struct("<Q").unpack
_pack_f = struct.Struct("<f").pack
_unpack_f = struct.Struct("<f").unpack
_pack_i = struct.Struct("<I").pack
_unpack_i = struct.Struct("<I").unpack


# --- BLOB transport ------------------------------------------------------------------------


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | str: ...


class BlobStream(Protocol):
    """What :meth:`BlobSource.open` returns: binary, readable in chunks, closable."""

    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


class BlobSink(Protocol):
    def put(self, stream: Readable, text: bool) -> values_pb2.BlobRef:
        """Consume ``stream`` in chunks until ``read`` returns empty; return its identity.

        ``text`` says the bytes are text in UTF-8 (str chunks are UTF-8 encoded)."""
        ...


class BlobSource(Protocol):
    def open(self, ref: values_pb2.BlobRef) -> BlobStream: ...


class MissingBlob(LookupError):
    """A BlobRef whose bytes are not (yet) in the spool."""


class SpoolBlobStore:
    """A content-addressed folder of BLOBs: implements both :class:`BlobSink` and
    :class:`BlobSource`.

    A file is named by the sha256 of its bytes (hex). It is written to a temporary file in the
    same folder, synced and renamed into place, so a name only ever holds complete bytes;
    storing the same bytes twice keeps one file. Bytes move in :data:`CHUNK` pieces.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, ref: values_pb2.BlobRef) -> Path:
        return self.root / _ref_hex(ref)

    def __contains__(self, ref: values_pb2.BlobRef) -> bool:
        return self.path(ref).is_file()

    def put(self, stream: Readable, text: bool = False) -> values_pb2.BlobRef:
        digest = hashlib.sha256()
        length = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    if isinstance(chunk, str):
                        if not text:
                            raise TypeError("a binary BLOB stream returned str")
                        chunk = chunk.encode("utf-8")
                    digest.update(chunk)
                    out.write(chunk)
                    length += len(chunk)
                out.flush()
                # The spool outlives the transaction that read the BLOB: make it durable
                # before its name says it is complete.
                os.fsync(out.fileno())
            ref = values_pb2.BlobRef(sha256=digest.digest(), length=length)
            os.replace(tmp, self.path(ref))
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return ref

    def open(self, ref: values_pb2.BlobRef) -> SpooledBlob:
        try:
            return SpooledBlob(self.path(ref).open("rb"), ref)
        except FileNotFoundError:
            raise MissingBlob(f"BLOB {_ref_hex(ref)} ({ref.length} bytes) is not in "
                              f"{self.root}") from None


class SpooledBlob:
    """A spooled BLOB being read: checks length and sha256 as it streams and closes itself at
    the end, so a corrupt spool file makes the write that reads it fail instead of storing
    wrong bytes (the driver reads until ``read`` returns empty and never closes the file)."""

    def __init__(self, file: io.BufferedReader, ref: values_pb2.BlobRef) -> None:
        self._file = file
        self._ref = ref
        self._digest = hashlib.sha256()
        self._length = 0

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._file.closed

    def read(self, size: int = -1, /) -> bytes:
        if self._file.closed:
            return b""
        data = self._file.read(size)
        if data:
            self._digest.update(data)
            self._length += len(data)
            if self._length > self._ref.length:
                self._corrupt()
        if not data or size < 0:
            self._check_end()
        return data

    def _check_end(self) -> None:
        self._file.close()
        if self._length != self._ref.length or self._digest.digest() != self._ref.sha256:
            self._corrupt()

    def _corrupt(self) -> None:
        self._file.close()
        raise ValueError(f"spooled BLOB {_ref_hex(self._ref)} is corrupt: its bytes do not "
                         f"match the sha256/length ({self._ref.length}) it is stored under")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ref_hex(ref: values_pb2.BlobRef) -> str:
    if len(ref.sha256) != 32:
        raise ValueError(f"BlobRef sha256 has {len(ref.sha256)} bytes, expected 32")
    return ref.sha256.hex()


# --- Reading columns -----------------------------------------------------------------------

_RAW_TEXT_KINDS = (Kind.CHAR, Kind.VARCHAR, Kind.BLOB_TEXT)


# Charsets whose text the driver hands over as Python str without losing a byte: the
# connection charset is UTF8 and these are UTF-8 too. Every other charset is transliterated
# to UTF-8 by the server on the way out, and bytes it leaves undefined (0x81, 0x8D, 0x8F,
# 0x90, 0x9D in WIN1252) come back as NUL: such text travels as its stored bytes instead.
_UTF8_CHARSETS = ("UTF8", "UNICODE_FSS")


# Firebird charset -> Python codec, for text that arrives as Unicode (events of older nodes)
# and for showing bytes to a person. Others are tried under their own lower-case name.
_PY_CODECS = {"NONE": "latin-1", "OCTETS": "latin-1", "ASCII": "ascii",
              **{f"WIN{n}": f"cp{n}" for n in range(1250, 1259)},
              **{f"ISO8859_{n}": f"iso8859_{n}" for n in range(1, 16)},
              **{f"DOS{n}": f"cp{n}" for n in (437, 737, 775, 850, 852, 857, 858, 860, 861,
                                               862, 863, 864, 865, 866, 869)},
              "KOI8R": "koi8_r", "KOI8U": "koi8_u"}


def python_codec(charset: str) -> str:
    """The Python codec of a Firebird charset (LookupError later if Python has none)."""
    return _PY_CODECS.get(charset, charset.lower())


def travels_as_bytes(ctype: ColumnType) -> bool:
    """Whether a column's values travel as their stored bytes (``octets``): binary BLOBs,
    text BLOBs of charset NONE/OCTETS, and CHAR/VARCHAR of every charset but UTF-8 (NONE,
    OCTETS, WIN1252, ISO8859_x ...). The column's own type says the charset at both ends.
    A text column without a recorded charset is charset NONE in Firebird."""
    kind = ctype.element_kind
    if kind is Kind.BLOB:
        return True
    charset = ctype.charset or "NONE"
    if kind is Kind.BLOB_TEXT:
        # Not other single-byte charsets: Firebird 3 has no way to read a text BLOB's stored
        # bytes through a UTF8 attachment (a CAST to BINARY hangs the driver, a CAST to an
        # OCTETS text BLOB shuts the connection down); they travel transliterated.
        return charset in ("NONE", "OCTETS")
    return kind in (Kind.CHAR, Kind.VARCHAR) and charset not in _UTF8_CHARSETS



def select_expr(column: Column, dialect: int, qualifier: str = "") -> str:
    """The SQL expression that reads ``column`` exactly (``qualifier`` e.g. ``"I."``).

    Text that travels as bytes (:func:`travels_as_bytes`) is read through a CAST to OCTETS /
    BINARY so the driver returns the stored bytes instead of text transliterated to the
    connection's UTF-8 (or failing to decode charset NONE). The CAST keeps the byte length;
    a CHAR keeps its stored padding. ARRAY columns are never wrapped: the driver looks their
    bounds up by the relation and field name of the output column.
    """
    ref = qualifier + quote(column.name, dialect)
    ctype = column.type
    if ctype.dimensions:
        return ref
    kind = ctype.element_kind
    charset = ctype.charset or "NONE"  # a text column without a charset id is NONE
    if kind is Kind.BLOB_TEXT and charset in ("NONE", "OCTETS"):
        # Only these: casting a text BLOB of a real charset to BINARY yields transliterated,
        # zero-padded bytes under a wrong length (the driver then loops forever reading it).
        return f"CAST({ref} AS BLOB SUB_TYPE BINARY)"
    if charset != "OCTETS" and kind is Kind.CHAR and travels_as_bytes(ctype):
        return f"CAST({ref} AS CHAR({ctype.length}) CHARACTER SET OCTETS)"
    if charset != "OCTETS" and kind is Kind.VARCHAR and travels_as_bytes(ctype):
        return f"CAST({ref} AS VARCHAR({ctype.length}) CHARACTER SET OCTETS)"
    # OCTETS CHAR/VARCHAR and binary BLOBs already come back as bytes, the rest as decoded
    # values of their own type.
    return ref


def bytes_as_column(ctype: ColumnType, operand: str) -> str:
    """An SQL operand of OCTETS (a hex literal, an OCTETS parameter) made a value of the
    column's own charset, byte for byte: assigned without transliteration and compared by
    the column's collation (a bare OCTETS operand compares bytes, so a case-insensitive key
    would not find its row). NONE and OCTETS columns take the operand as it is."""
    charset = ctype.charset or "NONE"
    if charset in ("NONE", "OCTETS") or ctype.element_kind not in (Kind.CHAR, Kind.VARCHAR):
        return operand
    return f"CAST({operand} AS VARCHAR({max(ctype.length, 1)}) CHARACTER SET {charset})"


def param_expr(column: Column) -> str:
    """The parameter marker that writes (or compares) ``column`` exactly: ``?`` for nearly
    every column.

    Text of a single-byte charset is passed as its bytes (:func:`travels_as_bytes`): the
    driver would send them as UTF-8 text ("Malformed string"), so the parameter is OCTETS,
    made the column's charset by :func:`bytes_as_column`.

    The driver describes a NULL text parameter as ``str(None)``, 4 characters long, and
    Firebird then refuses NULL for a CHAR/VARCHAR shorter than that ("string right
    truncation, expected length 1, actual 4"). Such columns take their parameter through a
    4-character VARCHAR of their own charset, which assigns and compares exactly like the
    column (padding included).
    """
    ctype = column.type
    if ctype.dimensions or ctype.element_kind not in (Kind.CHAR, Kind.VARCHAR):
        return "?"
    charset = ctype.charset or "NONE"
    if charset not in ("NONE", "OCTETS") and travels_as_bytes(ctype):
        octets = f"CAST(? AS VARCHAR({max(ctype.length, 4)}) CHARACTER SET OCTETS)"
        return bytes_as_column(ctype, octets)
    length = ctype.char_length if ctype.char_length is not None else ctype.length
    if length >= 4:
        return "?"
    return f"CAST(? AS VARCHAR(4) CHARACTER SET {charset})"


# --- Codecs, one per column type -----------------------------------------------------------

_Encoder = Callable[[Any, "BlobSink | None"], values_pb2.Value]
_Decoder = Callable[[Any, "BlobSource | None"], object]


@dataclass(frozen=True, slots=True)
class _Codec:
    ctype: ColumnType  # kept so the id() cache below can never match a recycled object
    encode: _Encoder  # for non-NULL values
    decoders: Mapping[str, _Decoder]  # by the Value oneof it accepts (NULL handled apart)
    what: str  # the column type in error messages

    def mismatch(self, which: str | None) -> ValueError:
        accepted = ", ".join(["null", *self.decoders])
        return ValueError(f"a Value of kind {which or '(unset)'!r} does not fit a column of "
                          f"type {self.what}; it accepts {accepted}")


def _describe(ctype: ColumnType) -> str:
    try:
        return f"{ctype.ddl()} ({ctype.kind.value})"
    except (UnsupportedType, KeyError):  # an odd type still gets a readable message
        return repr(ctype)


def _bad(ctype: ColumnType, problem: str) -> ValueError:
    return ValueError(f"{problem} for a column of type {_describe(ctype)}")


# Integers. NUMERIC(p,0)/DECIMAL(p,0) have Kind INTEGER/BIGINT/SMALLINT but the driver returns
# them as Decimal, and an ARRAY of them only accepts Decimal elements.


def _integer_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    lo, hi = _INT_RANGE[ctype.field_type]
    as_decimal = in_array and ctype.sub_type != 0

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not int:
            v = _exact_int(ctype, v)
        return Value(integer=v)

    def dec(n: int, blobs: BlobSource | None) -> object:
        if not lo <= n <= hi:
            raise _bad(ctype, f"integer {n} is out of range [{lo}, {hi}]")
        return decimal.Decimal(n) if as_decimal else n

    return _Codec(ctype, enc, {"integer": dec}, _describe(ctype))


def _exact_int(ctype: ColumnType, v: Any) -> int:
    if isinstance(v, decimal.Decimal) and v.is_finite():
        n = int(v)
        if n == v:
            return n
    raise _bad(ctype, f"{type(v).__name__} {v!r} is not an integer")


def _scaled_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    scale = -ctype.scale  # digits after the point
    lo, hi = _INT_RANGE[ctype.field_type]

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not decimal.Decimal:
            if type(v) is not int:  # a float would already be inexact
                raise _bad(ctype, f"{type(v).__name__} {v!r} is not a Decimal")
            v = decimal.Decimal(v)
        try:
            shifted = v.scaleb(scale, _DEC_CTX)
            n = int(shifted)
        except (decimal.DecimalException, ValueError, OverflowError):
            raise _bad(ctype, f"Decimal {v!r} cannot be scaled exactly") from None
        if n != shifted:
            raise _bad(ctype, f"Decimal {v!r} has more than {scale} decimals")
        return Value(scaled={"unscaled": n, "scale": scale})

    def dec(m: values_pb2.Scaled, blobs: BlobSource | None) -> object:
        # Fewer decimals (a site whose column has a smaller scale) are exact scaled up.
        if m.scale > scale:
            raise _bad(ctype, f"scaled value with scale {m.scale}, expected {scale}")
        unscaled = m.unscaled * 10 ** (scale - m.scale)
        if not lo <= unscaled <= hi:
            raise _bad(ctype, f"unscaled {unscaled} is out of range [{lo}, {hi}]")
        return decimal.Decimal(unscaled).scaleb(-scale, _DEC_CTX)

    return _Codec(ctype, enc, {"scaled": dec}, _describe(ctype))


def _double_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not float:  # struct would accept a Decimal and round it
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a float")
        return Value(double_bits=_unpack_q(_pack_d(v))[0])

    def dec(bits: int, blobs: BlobSource | None) -> object:
        return _unpack_d(_pack_q(bits))[0]

    return _Codec(ctype, enc, {"double_bits": dec}, _describe(ctype))


def _float_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not float:
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a float")
        try:
            packed = _pack_f(v)
        except OverflowError:
            raise _bad(ctype, f"{v!r} is not a single-precision value") from None
        # The driver hands FLOATs over widened to double: narrowing is exact unless the value
        # never was a single-precision float (NaN compares unequal; its payload is kept).
        if _unpack_f(packed)[0] != v and not math.isnan(v):
            raise _bad(ctype, f"{v!r} is not a single-precision value")
        return Value(float_bits=_unpack_i(packed)[0])

    def dec(bits: int, blobs: BlobSource | None) -> object:
        return _unpack_f(_pack_i(bits))[0]

    return _Codec(ctype, enc, {"float_bits": dec}, _describe(ctype))


def _boolean_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not bool:
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a bool")
        return Value(boolean=v)

    def dec(b: bool, blobs: BlobSource | None) -> object:
        return b

    return _Codec(ctype, enc, {"boolean": dec}, _describe(ctype))


def _date_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not _dt.date:  # a datetime is a date too, and would lose its time
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a date")
        return Value(date=v.toordinal())

    def dec(n: int, blobs: BlobSource | None) -> object:
        if not 1 <= n <= _MAX_DATE:
            raise _bad(ctype, f"date ordinal {n} is outside 0001-01-01..9999-12-31")
        return _dt.date.fromordinal(n)

    return _Codec(ctype, enc, {"date": dec}, _describe(ctype))


def _time_ticks(ctype: ColumnType, v: Any) -> int:
    if v.tzinfo is not None:
        # Firebird 3 has no zoned types; an aware value is not something it returned.
        raise _bad(ctype, f"time zone aware value {v!r}")
    us = v.microsecond
    if us % 100:
        raise _bad(ctype, f"{v!r} is finer than Firebird's 100 µs")
    return ((v.hour * 60 + v.minute) * 60 + v.second) * _TICKS_PER_SECOND + us // 100


def _time_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not _dt.time:
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a time")
        return Value(time=_time_ticks(ctype, v))

    def dec(ticks: int, blobs: BlobSource | None) -> object:
        if ticks >= _TICKS_PER_DAY:
            raise _bad(ctype, f"time of {ticks} ticks is past midnight")
        seconds, frac = divmod(ticks, _TICKS_PER_SECOND)
        minutes, second = divmod(seconds, 60)
        return _dt.time(minutes // 60, minutes % 60, second, frac * 100)

    return _Codec(ctype, enc, {"time": dec}, _describe(ctype))


def _timestamp_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    max_ticks = _MAX_DATE * _TICKS_PER_DAY

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not _dt.datetime:
            raise _bad(ctype, f"{type(v).__name__} {v!r} is not a datetime")
        return Value(timestamp=(v.toordinal() - 1) * _TICKS_PER_DAY + _time_ticks(ctype, v))

    def dec(ticks: int, blobs: BlobSource | None) -> object:
        if not 0 <= ticks < max_ticks:
            raise _bad(ctype, f"timestamp of {ticks} ticks is outside 0001..9999")
        value = _EPOCH + _dt.timedelta(microseconds=ticks * 100)  # integer arithmetic: exact
        if value < _DRIVER_TS_MIN and not in_array:
            return _timestamp_literal(value)
        return value

    return _Codec(ctype, enc, {"timestamp": dec}, _describe(ctype))


def _timestamp_literal(v: _dt.datetime) -> str:
    # Not strftime: %Y does not zero-pad years below 1000 on glibc.
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond // 100:04d}")


def _text_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    """CHAR/VARCHAR of a known charset: the driver's str (CHAR padded to its length)."""

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not str:
            raise _bad(ctype, f"{type(v).__name__} is not str")
        return Value(text=v)

    def dec(s: str, blobs: BlobSource | None) -> object:
        return s

    return _Codec(ctype, enc, {"text": dec}, _describe(ctype))


def _octets_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    """CHAR/VARCHAR whose values travel as bytes (read with select_expr): raw bytes.

    Events of nodes older than byte-exact text carry ``text`` for single-byte charsets: it is
    still accepted, encoded in the column's charset as the server would have."""

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        if type(v) is not bytes:
            raise _bad(ctype, f"{type(v).__name__} is not bytes (read it with select_expr)")
        return Value(octets=v)

    def dec(b: bytes, blobs: BlobSource | None) -> object:
        return b

    def dec_text(s: str, blobs: BlobSource | None) -> bytes:
        try:
            return s.encode(python_codec(ctype.charset or "NONE"))
        except (LookupError, UnicodeEncodeError) as exc:
            raise _bad(ctype, f"text not representable in the column's charset ({exc})") from exc

    decoders: dict[str, _Decoder] = {"octets": dec}
    if (ctype.charset or "NONE") not in ("NONE", "OCTETS"):
        decoders["text"] = dec_text
    return _Codec(ctype, enc, decoders, _describe(ctype))


def _blob_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    """BLOBs: small ones inline (text or octets), large ones as BlobRef through the spool."""
    text = not travels_as_bytes(ctype)  # a text BLOB of a known charset: str / UTF-8 bytes

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        tv = type(v)
        if tv is bytes:
            if text:
                raise _bad(ctype, "bytes for a text BLOB of a known charset")
            if len(v) >= LARGE_BLOB and blobs is not None:
                return Value(blob=blobs.put(io.BytesIO(v), False))
            return Value(octets=v)
        if tv is str:
            if not text:
                raise _bad(ctype, "str for a binary BLOB (read it with select_expr)")
            # UTF-8 takes at most 4 bytes a character: most values skip the encoding.
            if blobs is not None and len(v) * 4 >= LARGE_BLOB:
                data = v.encode("utf-8")
                if len(data) >= LARGE_BLOB:
                    return Value(blob=blobs.put(io.BytesIO(data), True))
            return Value(text=v)
        if hasattr(v, "read"):
            return _encode_stream(ctype, v, blobs, text)
        raise _bad(ctype, f"{tv.__name__} is not a BLOB value")

    def dec_inline(v: str | bytes, blobs: BlobSource | None) -> object:
        return v

    def dec_ref(ref: values_pb2.BlobRef, blobs: BlobSource | None) -> object:
        if blobs is None:
            raise _bad(ctype, "a BlobRef without a BlobSource to read it from")
        _ref_hex(ref)  # reject a malformed digest before opening anything
        return blobs.open(ref)

    decoders = {"text" if text else "octets": dec_inline, "blob": dec_ref}
    return _Codec(ctype, enc, decoders, _describe(ctype))


def _encode_stream(ctype: ColumnType, reader: Any, blobs: BlobSink | None,
                   text: bool) -> values_pb2.Value:
    """A driver BlobReader: only valid inside its transaction, so it is consumed (and closed)
    here. Its first chunk decides: shorter than LARGE_BLOB means the whole value is small."""
    try:
        if getattr(reader, "sub_type", 0) == 1:
            # read() would decode each chunk alone and split multi-byte characters: take the
            # raw bytes (UTF-8: the server transliterates text BLOBs to the connection charset).
            reader.sub_type = 0
        head = reader.read(LARGE_BLOB)
        if isinstance(head, str):
            head = head.encode("utf-8")
        if len(head) < LARGE_BLOB:
            return Value(text=head.decode("utf-8")) if text else Value(octets=head)
        if blobs is None:
            raise _bad(ctype, "a BLOB of at least LARGE_BLOB bytes needs a BlobSink")
        return Value(blob=blobs.put(_Chain(head, reader), text))
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


class _Chain:
    """``head`` followed by the rest of ``reader``, read in chunks."""

    def __init__(self, head: bytes, reader: Readable) -> None:
        self._head: bytes | None = head
        self._reader = reader

    def read(self, size: int = CHUNK, /) -> bytes | str:
        if self._head:
            if size < 0:
                size = CHUNK  # never the whole BLOB at once
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._reader.read(CHUNK if size < 0 else size)


def _array_codec(ctype: ColumnType, in_array: bool) -> _Codec:
    """ARRAY: the driver's nested lists <-> shape + row-major elements of the element type."""
    element = _build(replace(ctype, dimensions=()), in_array=True)
    shape = tuple(hi - lo + 1 for lo, hi in ctype.dimensions)
    count = 1
    for n in shape:
        count *= n
    el_encode, el_decoders = element.encode, element.decoders

    def enc(v: Any, blobs: BlobSink | None) -> values_pb2.Value:
        flat: list[Any] = []
        _flatten(ctype, v, shape, 0, flat)
        return Value(array=values_pb2.ArrayValue(
            shape=shape, elements=[el_encode(x, blobs) for x in flat]))

    def dec(av: values_pb2.ArrayValue, blobs: BlobSource | None) -> object:
        if tuple(av.shape) != shape or len(av.elements) != count:
            raise _bad(ctype, f"array of shape {list(av.shape)} with {len(av.elements)} "
                              f"elements, expected shape {list(shape)}")
        flat = []
        for el in av.elements:
            which = el.WhichOneof("kind")
            fn = el_decoders.get(which) if which else None
            if fn is None:  # no NULL elements in Firebird arrays
                raise element.mismatch(which)
            flat.append(fn(getattr(el, which), blobs))
        return _nest(flat, shape)

    return _Codec(ctype, enc, {"array": dec}, _describe(ctype))


def _flatten(ctype: ColumnType, v: Any, shape: tuple[int, ...], dim: int,
             out: list[Any]) -> None:
    if not isinstance(v, (list, tuple)) or len(v) != shape[dim]:
        raise _bad(ctype, f"array value {v!r:.80} does not have shape {list(shape)}")
    if dim == len(shape) - 1:
        out.extend(v)
    else:
        for sub in v:
            _flatten(ctype, sub, shape, dim + 1, out)


def _nest(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    for n in reversed(shape[1:]):
        flat = [flat[i:i + n] for i in range(0, len(flat), n)]
    return flat


_FACTORIES: dict[Kind, Callable[[ColumnType, bool], _Codec]] = {
    Kind.SMALLINT: _integer_codec,
    Kind.INTEGER: _integer_codec,
    Kind.BIGINT: _integer_codec,
    Kind.SCALED: _scaled_codec,
    Kind.FLOAT: _float_codec,
    Kind.DOUBLE: _double_codec,  # also dialect 1 NUMERIC stored as double: the driver's float
    Kind.BOOLEAN: _boolean_codec,
    Kind.DATE: _date_codec,
    Kind.TIME: _time_codec,
    Kind.TIMESTAMP: _timestamp_codec,
    Kind.CHAR: _text_codec,
    Kind.VARCHAR: _text_codec,
    Kind.BLOB_TEXT: _blob_codec,
    Kind.BLOB: _blob_codec,
    Kind.ARRAY: _array_codec,
}


def _build(ctype: ColumnType, in_array: bool = False) -> _Codec:
    kind = ctype.kind
    if kind in (Kind.CHAR, Kind.VARCHAR) and travels_as_bytes(ctype):
        return _octets_codec(ctype, in_array)
    return _FACTORIES[kind](ctype, in_array)


# Codecs by id() of the ColumnType: hashing a frozen dataclass costs more than a conversion.
# The codec holds its ColumnType, so a cached id is never reused by another object; the cache
# is dropped if schemas are re-read often enough to fill it.
_CODECS: dict[int, _Codec] = {}
_CODEC_CACHE_LIMIT = 4096


def _codec(ctype: ColumnType) -> _Codec:
    codec = _CODECS.get(id(ctype))
    if codec is None or codec.ctype is not ctype:
        codec = _build(ctype)
        if len(_CODECS) >= _CODEC_CACHE_LIMIT:
            _CODECS.clear()
        _CODECS[id(ctype)] = codec
    return codec


# --- Public API ----------------------------------------------------------------------------


def encode(ctype: ColumnType, value: object, blobs: BlobSink | None = None) -> values_pb2.Value:
    """A value as the driver returned it (column read with :func:`select_expr`) -> Value.

    Large BLOBs (a driver BlobReader, or bytes/text of :data:`LARGE_BLOB` bytes or more) go
    through ``blobs`` and become a BlobRef; call this inside the reading transaction. Without
    ``blobs`` small ones stay inline and a BlobReader of a large one raises ValueError.
    """
    if value is None:
        return Value(null=True)
    return _codec(ctype).encode(value, blobs)


def decode(ctype: ColumnType, msg: values_pb2.Value,
           blobs: BlobSource | None = None) -> object:
    """Value -> a parameter the driver writes exactly into a column of ``ctype``.

    A BlobRef becomes a readable binary stream from ``blobs`` (the driver streams it; it
    closes itself at the end and fails if the spooled bytes do not match the ref). TIMESTAMPs
    before 1858-11-17 become a string literal (see the module docstring). Raises ValueError
    for a Value whose kind, scale, range or shape does not fit the column.
    """
    which = msg.WhichOneof("kind")
    if which == "null":
        return None
    codec = _codec(ctype)
    fn = codec.decoders.get(which) if which else None
    if fn is None:
        raise codec.mismatch(which)
    return fn(getattr(msg, which), blobs)


def fits(ctype: ColumnType, value: values_pb2.Value) -> bool:
    """Whether a column of ``ctype`` holds ``value`` as it is. False for a string longer than
    the column, a number outside its storage range, or of another scale: a value a site
    whose column is wider wrote (DESIGN §3.8), kept in the registers until this column is
    widened too (catchup.py). A value of another kind is not a matter of width: ``decode``
    refuses it."""
    if ctype.dimensions:
        return True
    kind = ctype.element_kind
    which = value.WhichOneof("kind")
    if kind in (Kind.CHAR, Kind.VARCHAR) and which in ("text", "octets"):
        # CHAR pads with spaces: a wider CHAR's padding is not part of the value.
        if which == "text":
            text = value.text.rstrip(" ") if kind is Kind.CHAR else value.text
            limit = ctype.char_length if ctype.char_length is not None else ctype.length
            return len(text) <= limit
        data = value.octets.rstrip(b" ") if kind is Kind.CHAR else value.octets
        return len(data) <= ctype.length
    if kind in (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT) and which == "integer":
        lo, hi = _INT_RANGE[ctype.field_type]
        return lo <= value.integer <= hi
    if kind is Kind.SCALED and which == "scaled":
        # Fewer decimals than the column's are exact once scaled up (decode does it).
        lo, hi = _INT_RANGE[ctype.field_type]
        extra = -ctype.scale - value.scaled.scale
        return extra >= 0 and lo <= value.scaled.unscaled * 10 ** extra <= hi
    return True


DESCRIBE_TEXT = 60  # characters of a text shown; longer ones are cut, their length said
DESCRIBE_ARRAY = 8  # elements of an array shown


def describe(value: values_pb2.Value | None) -> str:
    """A value for a person to read, on one line, by its type: amounts exact, dates and times
    as such, text with its line breaks and control characters escaped and long text cut,
    bytes and BLOBs as their size, a sha256 prefix and a short preview. Not exact (records
    keep the exact value)."""
    if value is None:
        return "-"
    kind = value.WhichOneof("kind")
    if kind == "null":
        return "NULL"
    if kind == "scaled":
        return str(decimal.Decimal(value.scaled.unscaled).scaleb(-value.scaled.scale))
    if kind == "double_bits":
        return repr(struct.unpack("<d", struct.pack("<Q", value.double_bits))[0])
    if kind == "float_bits":
        return repr(struct.unpack("<f", struct.pack("<I", value.float_bits))[0])
    if kind == "boolean":
        return "TRUE" if value.boolean else "FALSE"
    if kind == "date":
        return _ordinal_text(value.date)
    if kind == "time":
        return _ticks_text(value.time)
    if kind == "timestamp":
        days, ticks = divmod(value.timestamp, 864_000_000)
        return f"{_ordinal_text(days + 1)} {_ticks_text(ticks)}"
    if kind == "text":
        return _text(value.text)
    if kind == "octets":
        data = value.octets
        if len(data) <= 16:
            return f"x'{data.hex()}'"
        return (f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}, "
                f"x'{data[:8].hex()}…'>")
    if kind == "blob":
        return f"<BLOB {value.blob.length} bytes, sha256 {value.blob.sha256.hex()[:12]}>"
    if kind == "array":
        items = value.array.elements
        shown = ", ".join(describe(e) for e in items[:DESCRIBE_ARRAY])
        more = f", … ({len(items)} elements)" if len(items) > DESCRIBE_ARRAY else ""
        return f"[{shown}{more}]"
    return str(getattr(value, kind)) if kind else "?"


def _ordinal_text(ordinal: int) -> str:
    try:
        return _dt.date.fromordinal(ordinal).isoformat()
    except (ValueError, OverflowError):
        return f"day {ordinal}"


def _ticks_text(ticks: int) -> str:
    """100-microsecond ticks since midnight: ``HH:MM:SS`` (``.ffff`` when not whole)."""
    seconds, frac = divmod(ticks, 10_000)
    hours, rest = divmod(seconds, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{text}.{frac:04d}" if frac else text


def _text(text: str) -> str:
    """One line: line breaks, tabs and other control characters escaped (\\n, \\t, \\x07),
    trailing blanks made visible by the quotes; long text cut, its length said."""
    escaped = "".join(_ESCAPES.get(c, c) if c < " " or c == "\x7f" else c for c in text)
    if len(escaped) > DESCRIBE_TEXT:
        return f"'{escaped[:DESCRIBE_TEXT]}…' ({len(text)} characters)"
    return f"'{escaped}'"


_ESCAPES = {**{chr(i): f"\\x{i:02x}" for i in range(32)}, "\x7f": "\\x7f", "\n": "\\n",
            "\r": "\\r", "\t": "\\t"}
