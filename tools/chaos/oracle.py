"""The chaos run's verdict on the data (issue 19 item 4), from the shop's own journal and the
sites' tables read directly — it owes nothing to the node.

Owns ``check(journal, read, sites, losers) -> Findings``. The tables are read with
``tools.erpschema.digest`` (text as its stored bytes, DOUBLE by its bits, BLOBs whole), the
record of losing versions with ``losers(site, table)`` (the node's ``conflicts.listing``:
the one thing of the node it reads, because "lost, on record" is the product's promise).

The rules, and why each is certain (DESIGN §3.3/§3.5):

* **diverged**: a row the sites do not hold byte for byte alike (the independent digest's
  rows compared site by site); a row nobody inserted; a column value nobody wrote to that
  row (the journal holds every committed write — in-doubt commits count as written), unless
  a ``reparented`` record of that column says the reference points at the winner of a
  UNIQUE clash; a HISTORY row whose marker no committed invoice write made.
* **lost** / **unrecorded**: every committed value either stands in the final row, or was
  replaced *knowingly* — some committed write read it as the value it replaced (``RETURNING
  OLD``, or a delete's image of the whole row; or read a reference nobody wrote there — the
  merge re-pointed it — after the value was written) — or is on record as a loser: a conflict
  record on that row whose loser is an event of the writing site, for that column or for the
  whole row (a lost life, an update of a dead row, a whole-row fall-back) — or of any site
  for a row hidden by a unique clash and for a reference re-pointed after one (``reparented``,
  for that column): those records are the row's, not one write's (``_Record.names``); or, in
  a table of a CHECK over several columns, a column record of the same value under the site
  that saved it again while the row showed a whole-row fall-back (``resaved``).
  Reported as **lost** when only one site ever wrote the row (nothing could beat it), else
  **unrecorded**. A delete is lost when its row stands at the end while no insert of the key
  followed it and no record names the deleting site's loss on that row (an orphan child
  restores its parent: that delete is on record). A row that was inserted, never deleted
  and is gone everywhere without a record on it is lost. History: each committed invoice
  write's marker (``REV:op``) must be held at every site, exactly once (**duplicated** when
  more than once: the application trigger fired again where the node applied the write).
* **wrong_winner**: last-writer-wins by HLC stamp, predicted only where the journal's
  ordering facts make it certain. A write's stamp is at least its capture time in UTC as its
  node sees it (a clock marker written before the capture converts it): ``began + skew``
  with skew the lowest the site's node had up to the commit (0 included); and at most
  ``committed + P``, P the highest skew any node had up to the commit (0 included) — the
  node's last stamp and the row's stamps (which a node publishes its committed writes
  before it merges others') can push a stamp up, never past a clock that ran ahead
  somewhere before. Skews come from the journal (each commit notes its site's, a fault that
  jumps a clock should note it at once: ``Journal.note_skew``; else a 2 s lag is allowed).
  So when another write of the same column has a lower bound above the upper bound of every
  write of the value that stands (0.25 s margin for millisecond capture times and clock
  markers), the wrong write won. Checked only on rows whose outcome is pure
  column LWW: no delete, at most one insert, no in-doubt write, no whole-row record at any
  site, and the columns of a CHECK over several columns (``shop.CHECK_SPANS``) written by
  one site only — a CHECK fall-back takes the latest write's whole row, older columns
  included, and its losses may be on record as column losses.

Deliberately not checked (legitimately ambiguous): which write wins when the margins
overlap; values of columns whose writes repeat a value (ABA: BOOLEAN, DOUBLE edges, totals)
beyond "somebody wrote it"; a whole-row record's values (a lost life, an update of a dead
row, a fall-back: matched by row and losing site; a unique clash: by row; a column record is matched
by its value too when its value can be read); whether every site (rather than some site)
holds a record — a joined or resynced site starts from a snapshot; writes the journal marks
in doubt (a commit cut by a dead connection, a site replaced by an older copy) are allowed to
be there or not.

Must never: ask the node for its digest, vectors or status, or write to any database.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from tools import erpschema
from tools.chaos import shop

MARGIN_S = 0.25  # capture times have ms resolution; clock markers convert them
NOTE_LAG_S = 2.0  # a clock jump is in the journal within this (the next commit notes it)
SHOWN = 5  # differing rows described per table


@dataclass
class Findings:
    lost: int = 0
    duplicated: int = 0
    diverged: int = 0
    unrecorded: int = 0
    wrong_winner: int = 0
    problems: list[str] = field(default_factory=list)  # one line each
    checked: Counter = field(default_factory=Counter)  # what was looked at, counted

    def add(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.problems.append(f"{kind}: {text}")

    @property
    def total(self) -> int:
        return self.lost + self.duplicated + self.diverged + self.unrecorded + self.wrong_winner


_UNKNOWN = object()  # a record's value this module cannot read (a BLOB by reference ...)


# References to CUSTOMER, whose UNIQUE TAXID two sites may register at once: the merge
# re-points them from the row that loses the clash to the one that wins (DESIGN §3.5).
_REPOINTABLE = frozenset({"CUSTOMER_ID"})


@dataclass(frozen=True)
class _Record:
    loser_site: str
    column: str | None
    kind: str
    form: object = _UNKNOWN  # the losing value as the digest reads it

    def names(self, site: str, column: str | None, form: object) -> bool:
        """Whether this record is the loss of ``site``'s write of ``form`` to ``column``
        (None: of the row): a column record names its value when it can be read, a record
        of a whole row (a life, an update of a dead row, a fall-back) names every write of
        that site to the row. Two records are about the row, not one site's write: a
        ``unique-clash`` (the row is hidden with all it holds; its loser names the row's
        insert) names every site's write to the row, and a ``reparented`` record (the
        reference moved; its loser names the referencing row's insert) every site's write
        of that reference (found by chaos seed 4: updates of a hidden customer by three
        sites, a reference re-pointed after another site wrote it)."""
        if self.kind == "unique-clash":
            return True  # the whole row hidden: every site's writes to it (see below)
        if self.kind == "reparented":
            # The row's reference (its foreign key's columns) moved to a clash's winner,
            # whichever site wrote the value it held (see below).
            return column is None or column in (self.column or "").split(", ")
        if self.loser_site != site:
            return False
        if column is None or self.kind != "column" or self.column is None:
            return True
        return self.column == column and (self.form is _UNKNOWN or form is _UNKNOWN
                                          or self.form == form)


def resaved(table: str, records: set[_Record], column: str | None, form: object) -> bool:
    """Whether ``form`` in ``column`` is on record under another site's write that saved it
    again: a local edit of a row showing a CHECK's whole-row fall-back also writes the values
    it shows in the other columns (``publish.py``: its user saved the row as shown), as that
    site's write — so such a value, lost later, is on record under the saving site (chaos
    seeds 313 and 321: a customer's city, written at the siège and shown at lyon through a
    fall-back, on record as lyon's loss). Only in the tables of a CHECK over several columns
    (``shop.CHECK_SPANS``), and only by a readable value."""
    return (table in shop.CHECK_SPANS and column is not None and form is not _UNKNOWN
            and any(r.kind == "column" and r.column == column and r.form == form
                    for r in records))


def loser_site(loser: str) -> str:
    """The site a record's loser names: ``lyon/1#5`` (an event), or what a resync or an
    analyse put on record: ``lyon#117 (not synced before the resync)``, ``lyon (drifted)``
    (site ids hold no space)."""
    return re.split(r"[/# ]", loser, maxsplit=1)[0]


def check(journal: shop.Journal, read: Callable[[str], object], sites: list[str],
          losers: Callable[[str, str], list]) -> Findings:
    """Every check of the module docstring. ``read(site)``: a new SYSDBA connection (closed
    here); ``losers(site, table)``: that site's conflict records of the table."""
    out = Findings()
    erp = shop.digest_schema()
    held: dict[str, dict[str, dict[int, dict[str, object]]]] = {}
    for site in sites:
        con = read(site)
        try:
            digests = erpschema.digest(con, erp, keep=True)
        finally:
            con.close()
        held[site] = {t: _rows(t, d.content or {}) for t, d in digests.items()}
    records: dict[tuple[str, int], set[_Record]] = defaultdict(set)
    on_record: set[tuple[str, str]] = set()  # HISTORY markers a record holds (site, marker)
    for site in sites:
        for table in shop.TABLES:
            for c in losers(site, table):
                if table == "HISTORY" and c.column == "MARKER" and c.value is not None \
                        and c.value.WhichOneof("kind") == "text":
                    on_record.add((loser_site(c.loser), c.value.text))
                key = _key_of(c)
                if key is not None:
                    records[(c.table, key)].add(_Record(
                        loser_site(c.loser), c.column, c.kind,
                        _record_form(c.table, c.column, c.value)))
    writes = [_effective(w) for w in _unique(journal.writes())]
    doubts = journal.doubts()
    sure = {id(w): w.certain and not any(
        d.site == w.site and d.since <= w.committed <= d.until for d in doubts)
        for w in writes}
    by_row: dict[tuple[str, int], list[shop.Write]] = defaultdict(list)
    for w in writes:
        by_row[(w.table, w.key)].append(w)
    reference = "siege" if "siege" in sites else sites[0]
    bounds = _Bounds(journal.skews())
    for table in shop.TABLES:
        keys = set().union(*(held[s][table] for s in sites))
        differing = sorted(k for k in keys if len({repr(held[s][table].get(k))
                                                   for s in sites}) > 1)
        for n, key in enumerate(differing):
            out.add("diverged", f"{table} {key} differs between sites"
                    + (": " + "; ".join(f"{s}={_short(held[s][table].get(key))}"
                                        for s in sites) if n < SHOWN else ""))
        if table == "HISTORY":
            continue
        for key in sorted(keys | {k for t, k in by_row if t == table}):
            if key in differing:
                continue
            out.checked["rows"] += 1
            _check_row(out, table, key, by_row.get((table, key), []),
                       held[reference][table].get(key), records.get((table, key), set()),
                       sure, bounds)
    _check_history(out, writes, sure, {s: held[s]["HISTORY"] for s in sites}, on_record)
    return out


def _check_row(out: Findings, table: str, key: int, writes: list[shop.Write],
               final: dict | None, records: set[_Record], sure: dict[int, bool],
               bounds: _Bounds) -> None:
    where = f"{table} {key}"
    inserts = [w for w in writes if w.op == shop.INSERT]
    deletes = [w for w in writes if w.op == shop.DELETE]
    writers = {w.site for w in writes if not w.before_install}
    single = len(writers) <= 1

    def recorded(site: str, column: str | None, form: object = _UNKNOWN) -> bool:
        return any(r.names(site, column, form) for r in records) or resaved(
            table, records, column, form)

    if final is not None and not inserts:
        out.add("diverged", f"{where} exists but nobody inserted it: {_short(final)}")
        return
    if final is not None:
        for column, value in final.items():
            written = {_hashable(_form(w.values[column])) for w in writes if column in w.values}
            if _hashable(value) not in written and not any(
                    # (a reference re-pointed to the row that won a UNIQUE clash against the
                    # one it names: a value nobody wrote, on record as such — DESIGN §3.5)
                    r.kind == "reparented" and r.column == column for r in records):
                out.add("diverged", f"{where}.{column} holds {_short(value)}, which nobody "
                                    "wrote there")
        for d in deletes:
            if not sure[id(d)]:
                continue
            if any(i.committed > d.began for i in inserts) or recorded(d.site, None):
                continue
            out.add("lost" if single else "unrecorded",
                    f"{where}: {d.site}'s delete (tx {d.tx}) is undone, no record of it")
    elif any(sure[id(i)] for i in inserts) and not deletes and not any(
            r for r in records):
        out.add("lost" if single else "unrecorded",
                f"{where} is gone everywhere: nobody deleted it, no record of it")
        return
    replaced = {(column, _hashable(_form(v))) for w in writes for column, v in w.old.items()}
    # A write that read, as the value it replaced, one nobody wrote to the row: a reference
    # re-pointed to the winner of a UNIQUE clash (on record as ``reparented`` while the row
    # held it; the record goes with the row). It replaced knowingly what stood before the
    # re-pointing: the column's writes committed before it began (chaos seed 4: invoices of
    # a hidden customer, re-pointed, then deleted by the shop).
    written = {(column, _hashable(_form(v))) for w in writes for column, v in w.values.items()}
    repointed = [(column, w.began) for w in writes for column, v in w.old.items()
                 if column in _REPOINTABLE and (column, _hashable(_form(v))) not in written]
    for w in writes:
        if w.op == shop.DELETE or not sure[id(w)]:
            continue
        for column, v in w.values.items():
            if column == "ID":
                continue
            out.checked["values"] += 1
            form = _hashable(_form(v))
            if final is not None and _hashable(final.get(column)) == form:
                continue
            if (column, form) in replaced or recorded(w.site, column, form) or any(
                    c == column and w.committed <= t for c, t in repointed):
                continue
            out.add("lost" if single else "unrecorded",
                    f"{where}.{column} = {_short(form)} written by {w.site} (tx {w.tx}, "
                    f"{w.op}) neither stands, nor was replaced knowingly, nor is on record")
    if final is None or deletes or len(inserts) > 1 or any(r.kind == "whole-row"
                                                           for r in records):
        return
    spans = set(shop.CHECK_SPANS.get(table, ()))
    if len({w.site for w in writes if spans & set(w.values) and not w.before_install}) > 1:
        return  # a fall-back may have made any write the winner of any column
    if not all(sure[id(w)] for w in writes):
        return
    for column, value in final.items():
        ws = [w for w in writes if column in w.values and column != "ID"]
        if len({w.site for w in ws}) < 2:
            continue
        standing = [w for w in ws if _hashable(_form(w.values[column])) == _hashable(value)]
        if not standing:
            continue
        out.checked["predicted columns"] += 1
        top = max(bounds.high(w) for w in standing)
        for w in ws:
            if _hashable(_form(w.values[column])) != _hashable(value) and bounds.low(w) > top:
                out.add("wrong_winner",
                        f"{where}.{column}: {_short(value)} stands, but {w.site}'s "
                        f"{_short(_form(w.values[column]))} (tx {w.tx}) was certainly later "
                        f"(its stamp >= {bounds.low(w):.3f}, the standing one's <= {top:.3f})")


def _check_history(out: Findings, writes: list[shop.Write], sure: dict[int, bool],
                   held: dict[str, dict[int, dict]], on_record: set[tuple[str, str]]) -> None:
    """Each committed invoice write's HISTORY row, exactly once at every site — or, nowhere,
    on record at its site (what a resync found unsynced is put on record, not applied)."""
    expected = {w.marker: w for w in writes if w.marker and sure[id(w)]
                and (w.site, w.marker) not in on_record}
    maybe = {w.marker for w in writes if w.marker}
    missing: dict[str, list[str]] = defaultdict(list)
    twice: dict[str, list[str]] = defaultdict(list)
    unknown: set[str] = set()
    for site, rows in held.items():
        counts = Counter(_text(r["MARKER"]) for r in rows.values())
        for marker, n in counts.items():
            if n > 1:
                twice[marker].append(f"{site}×{n}")
            if marker not in maybe:
                unknown.add(marker)
        for marker in expected:
            if not counts.get(marker):
                missing[marker].append(site)
    out.checked["history markers"] += len(expected)
    for marker, where in sorted(twice.items()):
        out.add("duplicated", f"HISTORY marker {marker!r} more than once ({', '.join(where)})")
    for marker in sorted(unknown):
        out.add("diverged", f"HISTORY marker {marker!r}: no committed invoice write made it")
    for marker, at in sorted(missing.items()):
        w = expected[marker]
        out.add("lost", f"HISTORY of {w.site}'s invoice write {marker!r} (tx {w.tx}) missing "
                        f"at {', '.join(at)}")


class _Bounds:
    """A write's HLC stamp bounds in seconds (module docstring, wrong_winner), from the skews
    noted in the journal up to its commit (plus ``NOTE_LAG_S``: a jump is noted at the next
    commit after it, unless whoever makes it notes it at once)."""

    def __init__(self, skews: dict[str, list[tuple[float, float]]]) -> None:
        self._skews = {s: sorted(v) for s, v in skews.items()}
        self._all = sorted((t, k) for v in skews.values() for t, k in v)

    def low(self, w: shop.Write) -> float:
        if w.before_install:
            return 0.0
        until = w.committed + NOTE_LAG_S
        lowest = min([0.0, *(k for t, k in self._skews.get(w.site, ()) if t <= until)])
        return w.began + lowest - MARGIN_S

    def high(self, w: shop.Write) -> float:
        if w.before_install:
            return 0.0
        until = w.committed + NOTE_LAG_S
        ahead = max([0.0, *(k for t, k in self._all if t <= until)])
        return w.committed + ahead + MARGIN_S


# --- reading -------------------------------------------------------------------------------

def _rows(table: str, content: dict) -> dict[int, dict[str, object]]:
    """The digest's rows of ``table`` as column -> value (a text BLOB: its text)."""
    spec = shop.BY_NAME[table]
    places, at = [], 0
    for c in spec.columns:
        places.append(at)
        at += 3 if c.kind == "memo" else 1
    out = {}
    for key, row in content.items():
        values = {c.name: _hashable(row[p]) for c, p in zip(spec.columns, places, strict=True)}
        out[int(key[0])] = values
    return out


def _key_of(conflict) -> int | None:
    try:
        value = conflict.key[0]
    except (IndexError, TypeError):
        return None
    return value.integer if value.WhichOneof("kind") == "integer" else None


def _record_form(table: str, column: str | None, value) -> object:
    """A record's losing value as the digest reads the column (``_UNKNOWN`` when it cannot
    say: no value, a BLOB by reference, text this module would have to guess the bytes of)."""
    if column is None or value is None or table not in shop.BY_NAME:
        return _UNKNOWN
    try:
        spec = shop.BY_NAME[table].column(column)
    except StopIteration:
        return _UNKNOWN
    kind = value.WhichOneof("kind")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value.integer)
    if kind == "boolean":
        return bool(value.boolean)
    if kind == "scaled":
        return "n:" + str(Decimal(value.scaled.unscaled).scaleb(-value.scaled.scale))
    if kind == "double_bits":
        return "d:" + struct.pack(">Q", value.double_bits).hex()
    if kind == "date":
        return "t:" + date.fromordinal(value.date).isoformat()
    if kind == "timestamp":
        return "t:" + (datetime(1, 1, 1) + timedelta(microseconds=value.timestamp * 100)
                       ).isoformat()
    if kind == "array":
        elements = value.array.elements
        if all(e.WhichOneof("kind") in ("integer", "null") for e in elements):
            return tuple(None if e.WhichOneof("kind") == "null" else int(e.integer)
                         for e in elements)
        return _UNKNOWN
    if kind == "octets" and spec.charset is not None and not spec.blob:
        return bytes(value.octets)
    if kind == "octets" and spec.kind == "blob":
        return bytes(value.octets)
    if kind == "text" and spec.kind == "memo":
        return "s:" + value.text
    if kind == "text" and spec.charset is not None and not spec.blob:
        try:
            return value.text.encode(spec.charset)
        except UnicodeEncodeError:
            return _UNKNOWN
    return _UNKNOWN


def _effective(w: shop.Write) -> shop.Write:
    """The write as the capture sees it: an update's columns that it set to the value they
    held are no change (not logged, not merged: DESIGN §3.1)."""
    if w.op != shop.UPDATE:
        return w
    same = {c for c, v in w.values.items() if c in w.old
            and _hashable(_form(w.old[c])) == _hashable(_form(v))}
    if not same:
        return w
    return dataclasses.replace(w, values={c: v for c, v in w.values.items() if c not in same},
                               old={c: v for c, v in w.old.items() if c not in same})


def _unique(writes: list[shop.Write]) -> list[shop.Write]:
    """Journal order, rows before install once (every site journals the same ones)."""
    seen, out = set(), []
    for w in writes:
        if w.before_install:
            if (w.table, w.key) in seen:
                continue
            seen.add((w.table, w.key))
        out.append(w)
    return out


def _form(value: object) -> object:
    """A journaled value as ``erpschema.digest`` reads it back."""
    if isinstance(value, float):
        return "d:" + struct.pack(">d", value).hex()
    if isinstance(value, Decimal):
        return "n:" + str(value)
    if isinstance(value, (date, datetime)):
        return "t:" + value.isoformat()
    if isinstance(value, str):  # a text BLOB (other text is journaled as its bytes)
        return "s:" + value
    return value


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(value)
    return value


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 160 else text[:160] + "…"
