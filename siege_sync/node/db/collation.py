"""Which key values the engine calls equal: a text key value's identity under its column's
collation (DESIGN §3.1).

Owns :func:`identity_value`: one key value (as it travels, ``values_pb2.Value``) -> the value
that stands for every value the engine calls equal to it in that column, so that
``registers.key_identity`` gives engine-equal keys one row. The key bytes themselves still travel
and are written exactly; only the row's identity is normalized.

Rules, measured on Firebird 3.0.11 (tests/test_key_identity.py compares them with the
engine's own ``=`` over generated pairs):

* every CHAR/VARCHAR collation of Firebird 3 is PAD SPACE unless created NO PAD: trailing
  blanks do not count ('abc' = 'abc  '). The blank is U+0020, and 0x00 for charset OCTETS;
  NONE and OCTETS compare bytes otherwise.
* a charset's default collation, UCS_BASIC and the legacy single-byte collations without
  the case- or accent-insensitive attribute (PXW_INTL, ...) compare bytes: nothing else.
* ICU collations (UNICODE, UNICODE_CI, UNICODE_CI_AI and collations created from a
  ``*UNICODE*`` one) compare like ICU at tertiary, secondary (case-insensitive) or primary
  (also accent-insensitive) strength: canonically equivalent forms are equal, control and
  format characters are ignored; CI also ignores compatibility variants (fullwidth,
  ligatures, superscripts) and case, but 'ß' ≠ 'ss'; CI_AI also ignores accents and
  'ß' = 'ss', 'æ' = 'ae', 'ø' = 'o', 'đ' = 'd', 'ł' = 'l'. Modelled with Python's
  ``unicodedata`` (NFD/NFKD, casefold) and a short table; where ICU's tables say otherwise
  (rare letters: 'ǳ' = 'ʣ', strings made only of ignorable characters), two engine-equal
  keys may still be two rows — never the other way round for the characters tested.
* WIN_PTBR (WIN1252, case- and accent-insensitive) is a fixed byte table in Firebird
  ('ß' = 's', 'Æ' = 'a', '²' = '2', '°' = 'o'): copied here as measured.
* any other collation with the case- or accent-insensitive attribute (a vendor's or
  another charset's: ES_ES_CI_AI, PT_BR, a CREATE COLLATION with LOCALE=...) gets the ICU
  rules of its attributes: best effort, not measured; such keys may still differ from the
  engine's view on letters those collations treat specially.

Values of text columns arrive as ``text`` or, for a single-byte charset, ``octets``: bytes
are decoded with the column's charset to be normalized; bytes the charset leaves undefined
are kept as they are. The result is the same Value object when nothing changes it, so keys
whose normalization is the identity (integers, binary collations without trailing blanks)
keep the identity they had before collations were taken into account. Must never depend on
anything but the value and the column type: every site must compute the same identity.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import lru_cache

from siege_sync.proto import values_pb2

from .schema import Collation, ColumnType, Kind

Value = values_pb2.Value

# Firebird charset -> Python codec, for the charsets whose text can be decoded exactly.
_CODECS = {
    "UTF8": "utf-8", "UNICODE_FSS": "utf-8", "ASCII": "ascii",
    **{f"WIN{n}": f"cp{n}" for n in range(1250, 1259)},
    **{f"ISO8859_{n}": f"iso8859_{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15)},
    **{f"DOS{n}": f"cp{n}" for n in (437, 737, 775, 850, 852, 857, 858, 860, 861, 862, 863,
                                     864, 865, 866, 869)},
    "KOI8R": "koi8_r", "KOI8U": "koi8_u", "CYRL": "cp1251",
}

# Control characters ICU does not ignore (whitespace); every other one is ignorable.
_KEPT_CONTROLS = frozenset("\t\n\x0b\x0c\r\x85")


def _ignorable(ch: str) -> bool:
    """Completely ignorable for ICU: control and format characters, the combining grapheme
    joiner, variation selectors."""
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return ch not in _KEPT_CONTROLS
    return (cat == "Cf" or ch == "\u034f" or "\ufe00" <= ch <= "\ufe0f"
            or "\U000e0100" <= ch <= "\U000e01ef")


def _compat(text: str) -> str:
    """NFKD, except spacing diacritics ('´', '¨', '˚': NFKD makes them a space and a mark),
    which ICU weighs as symbols of their own."""
    out = []
    for ch in text:
        decomposed = unicodedata.normalize("NFKD", ch)
        out.append(ch if decomposed[:1] == " " and ch != " " else decomposed)
    return "".join(out)


def _tertiary(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not _ignorable(c))


# Case folding that ICU's secondary strength does not do: 'ß' stays (ß ≠ ss), and so does
# the long s ('ſ' ≠ 's'), which NFKD would also turn into 's'.
_KEEP_CASE = frozenset("ßſ")


def _secondary(text: str) -> str:
    text = text.replace("ẞ", "ß")
    text = "".join(c if c in _KEEP_CASE else _compat(c) for c in text)
    text = "".join(c if c in _KEEP_CASE else c.casefold() for c in text)
    return "".join(c for c in _compat(text) if not _ignorable(c))


# Letters ICU's primary strength takes as a base letter with a diacritic, which Unicode does
# not decompose; the middle dot of 'ŀ' is only a diacritic there.
_PRIMARY = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ð": "d",
                          "ħ": "h", "·": None})


def _primary(text: str) -> str:
    text = _compat(_compat(text).casefold())
    return "".join(c for c in text
                   if not unicodedata.combining(c) and not _ignorable(c)).translate(_PRIMARY)


def _win_ptbr_table() -> bytes:
    """WIN_PTBR's equal bytes as Firebird 3 compares them (measured over all 255 bytes): each
    class maps to its first byte."""
    table = bytearray(range(256))
    for upper in range(ord("A"), ord("Z") + 1):
        table[upper + 32] = upper
    classes = {"1": "¹¼½", "2": "²", "3": "³¾", "A": "ªÀÁÂÃÄÅÆàáâãäåæ", "C": "Çç",
               "D": "Ðð", "E": "ÈÉÊËèéêë", "I": "ÌÍÎÏìíîï", "N": "Ññ",
               "O": "°ºÒÓÔÕÖØòóôõöø", "S": "ß", "T": "Þþ", "U": "ÙÚÛÜùúûü", "Y": "Ýýÿ"}
    for first, others in classes.items():
        for byte in others.encode("cp1252"):
            table[byte] = ord(first)
    return bytes(table)


_WIN_PTBR = _win_ptbr_table()

_Rule = Callable[[str], str]


def _icu(collation: Collation) -> bool:
    return "UNICODE" in collation.name.upper() or "UNICODE" in (collation.base or "").upper()


@lru_cache(maxsize=256)
def _rule(collation: Collation | None) -> _Rule | None:
    """How text of that collation is normalized beyond trailing blanks (None: bytes)."""
    if collation is None:
        return None
    if collation.accent_insensitive:
        return _primary
    if collation.case_insensitive:
        return _secondary
    if _icu(collation):
        return _tertiary
    return None  # UCS_BASIC, legacy collations: bytes


def _byte_table(collation: Collation | None, charset: str) -> bytes | None:
    if collation is not None and charset == "WIN1252" and "WIN_PTBR" in (
            collation.name.upper(), (collation.base or "").upper()):
        return _WIN_PTBR
    return None


def identity_value(ctype: ColumnType, value: Value) -> Value:
    """The value standing for every key value the engine calls equal to ``value`` in a column
    of type ``ctype``; ``value`` itself when normalization changes nothing."""
    if ctype.dimensions or ctype.element_kind not in (Kind.CHAR, Kind.VARCHAR):
        return value
    which = value.WhichOneof("kind")
    if which not in ("text", "octets"):
        return value
    collation = ctype.collation
    pad_space = collation is None or collation.pad_space
    charset = (ctype.charset or "NONE").upper()
    if charset in ("NONE", "OCTETS"):
        # Bytes of no known encoding: only the pad counts, a space for NONE, NUL for OCTETS.
        pad = b"\0" if charset == "OCTETS" else b" "
        if which == "text":
            return Value(text=value.text.rstrip(" ")) if pad_space and pad == b" " \
                and value.text.endswith(" ") else value
        if pad_space and value.octets.endswith(pad):
            return Value(octets=value.octets.rstrip(pad))
        return value
    codec = _CODECS.get(charset)
    if which == "octets":
        if codec is None:
            data = value.octets.rstrip(b" ") if pad_space else value.octets
            return value if data == value.octets else Value(octets=data)
        text = value.octets.decode(codec, "surrogateescape")
    else:
        text = value.text
    table = _byte_table(collation, charset)
    if table is not None:
        try:
            text = text.encode("cp1252", "surrogateescape").translate(table).decode(
                "cp1252", "surrogateescape")
        except UnicodeError:
            pass  # not WIN1252 text after all: compared as it is
    if pad_space:
        text = text.rstrip(" ")
    rule = _rule(collation) if table is None else None
    if rule is not None:
        text = rule(text)
    if which == "text" and text == value.text:
        return value
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Undefined bytes (kept as surrogates by the decoding) cannot be text: bytes again.
        return Value(octets=text.encode(codec or "utf-8", "surrogateescape"))
    return Value(text=text)  # one form for text that arrived as text or as bytes
