"""What hands out the values of each replicated key: generators (directly, or through stored
procedures, functions and packages), identity columns, and ``MAX()+1``.

Owns finding them in a live database — identity columns, ``RDB$DEPENDENCIES``, and the PSQL
sources of triggers, procedures, functions and package bodies (``GEN_ID``, ``NEXT VALUE
FOR``, calls, ``MAX(key) ... FROM table``) — and judging each against the site's ranges
(``[generators.NAME] start/end``, applied by ``install``): a generator without a range hands
out the same numbers at every site, so two sites create the same key (DESIGN §3.1) and the
losing site's child rows end up under the winning site's parent. Every such source is said
in one line an operator can act on (``warnings``), for ``install``, ``tables`` and the node's
Hello/Status replies (``siege-ctl test`` and ``status``). Read-only: never changes the
database.

Found from the database alone, so: a generator the application takes in its own SQL is
invisible — a generator nothing in the database uses is reported as possibly that; a
procedure no trigger calls is taken as the application's (it hands keys out to it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from firebird.driver import Connection

from ..db.database import READ_COMMITTED_RW, quote, transaction
from ..db.schema import SYNC_PREFIX, AppTrigger, Schema
from .config import GeneratorRange

# RDB$DEPENDENCIES object types of Firebird 3.
_T_RELATION, _T_TRIGGER, _T_PROCEDURE, _T_GENERATOR = 0, 2, 5, 14
_T_FUNCTION, _T_PACKAGE, _T_PACKAGE_BODY = 15, 18, 19
_ROUTINE_TYPES = (_T_TRIGGER, _T_PROCEDURE, _T_FUNCTION, _T_PACKAGE, _T_PACKAGE_BODY)

_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_NAME = r'(?:"((?:[^"]|"")+)"|([A-Za-z][\w$]*))'
# String literals are kept: a GEN_ID inside EXECUTE STATEMENT '...' still hands out numbers.
_GEN_CALL = re.compile(r"\bGEN_ID\s*\(\s*" + _NAME + r"|\bNEXT\s+VALUE\s+FOR\s+" + _NAME,
                       re.I)
_WORD = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z][\w$]*)')
_MAX = re.compile(r"\bMAX\s*\(\s*(?:DISTINCT\s+)?(?:" + _NAME + r"\s*\.\s*)?" + _NAME + r"\s*\)",
                  re.I)
_FROM = re.compile(r"\bFROM\s+" + _NAME, re.I)

log = logging.getLogger(__name__)

# How often a running node reads its key sources again for its Hello/Status replies: a hello
# must stay cheap, the ranges come from the config read at start, and triggers change only
# with a vendor upgrade.
CHECK_EVERY_S = 600.0

Routine = tuple[str, str]  # (kind, name): ("trigger", "INV_BI"), ("procedure", "NEW_ID"), ...


@dataclass
class GeneratorUse:
    """One generator and everything that hands its numbers to replicated rows."""

    generator: str
    feeds: list[str] = field(default_factory=list)  # "INVOICE.ID (trigger INV_BI → ...)"
    unused: bool = False  # nothing in the database uses it (the application may)


@dataclass(frozen=True)
class MaxKey:
    """A replicated key read as ``MAX(column)`` — a key taken as ``MAX()+1``."""

    table: str
    column: str
    where: str  # "trigger LINE_BI", "procedure NEXT_LINE"


@dataclass
class KeySources:
    generators: dict[str, GeneratorUse] = field(default_factory=dict)
    max_keys: list[MaxKey] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """How one key source stands at this site: ``text`` for a listing, ``warning`` (None when
    the site's range covers it) for an operator."""

    subject: str
    text: str
    warning: str | None


def _rows(con: Connection, sql: str) -> list[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(sql)
            out = []
            for row in cur:
                out.append(tuple(_text(v) for v in row))
            return out
        finally:
            cur.close()


def _text(value: object) -> object:
    if hasattr(value, "read") and hasattr(value, "close"):  # a BlobReader (a long source)
        try:
            value = value.read()
        finally:
            value.close()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.strip() if isinstance(value, str) else value


def _name(quoted: str | None, bare: str | None) -> str:
    """An identifier as the system tables store it: unquoted ones are upper case."""
    return quoted.replace('""', '"') if quoted is not None else (bare or "").upper()


def _routine(kind_code: int, name: str, package: str | None) -> Routine | None:
    if package:
        return ("package", package)
    return {_T_TRIGGER: ("trigger", name), _T_PROCEDURE: ("procedure", name),
            _T_FUNCTION: ("function", name), _T_PACKAGE: ("package", name),
            _T_PACKAGE_BODY: ("package", name)}.get(kind_code)


def _label(routine: Routine) -> str:
    return f"{routine[0]} {routine[1]}"


def find(con: Connection, schema: Schema) -> KeySources:
    """Every generator that hands numbers to replicated rows, and every replicated key read
    as ``MAX()``, in the live database behind ``con`` (``schema`` says what is replicated)."""
    generators = {
        name for name, flag in _rows(
            con, "SELECT RDB$GENERATOR_NAME, COALESCE(RDB$SYSTEM_FLAG, 0) FROM RDB$GENERATORS "
                 "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) IN (0, 6)")
        if not name.startswith(SYNC_PREFIX) and flag == 0
    }
    identities: dict[str, list[str]] = defaultdict(list)  # identity generator -> "T.C"
    for table in schema.tables.values():
        for col in table.key_columns:
            if col.identity_generator:
                identities[col.identity_generator].append(f"{table.name}.{col.name}")

    # Routine -> what it calls / the generators it takes, and its source (comments removed).
    calls: dict[Routine, set[Routine]] = defaultdict(set)
    takes: dict[Routine, set[str]] = defaultdict(set)
    fields: dict[Routine, set[tuple[str, str]]] = defaultdict(set)  # (table, column) used
    for dep, dep_type, on, on_type, fld, pkg in _rows(
        con,
        "SELECT RDB$DEPENDENT_NAME, RDB$DEPENDENT_TYPE, RDB$DEPENDED_ON_NAME, "
        "RDB$DEPENDED_ON_TYPE, RDB$FIELD_NAME, RDB$PACKAGE_NAME FROM RDB$DEPENDENCIES "
        f"WHERE RDB$DEPENDENT_TYPE IN ({', '.join(map(str, _ROUTINE_TYPES))})",
    ):
        src = _routine(dep_type, dep, None)
        if src is None:
            continue
        if on_type == _T_GENERATOR:
            takes[src].add(on)
        elif on_type == _T_RELATION and fld:
            fields[src].add((on, fld))
        elif on_type in _ROUTINE_TYPES:
            target = _routine(on_type, on, pkg)
            if target is not None and target != src:
                calls[src].add(target)

    triggers: dict[str, tuple[str | None, int]] = {}  # name -> (table, type code)
    sources: dict[Routine, str] = {}
    for name, rel, ttype, source in _rows(
        con, "SELECT RDB$TRIGGER_NAME, RDB$RELATION_NAME, RDB$TRIGGER_TYPE, "
             "RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0"):
        if name.startswith(SYNC_PREFIX):
            continue
        triggers[name] = (rel, ttype or 0)
        sources[("trigger", name)] = source or ""
    for sql, kind in (
        ("SELECT RDB$PROCEDURE_NAME, RDB$PACKAGE_NAME, RDB$PROCEDURE_SOURCE FROM "
         "RDB$PROCEDURES WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0", "procedure"),
        ("SELECT RDB$FUNCTION_NAME, RDB$PACKAGE_NAME, RDB$FUNCTION_SOURCE FROM "
         "RDB$FUNCTIONS WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0", "function"),
        ("SELECT RDB$PACKAGE_NAME, NULL, RDB$PACKAGE_BODY_SOURCE FROM RDB$PACKAGES "
         "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0", "package"),
    ):
        for name, pkg, source in _rows(con, sql):
            if name.startswith(SYNC_PREFIX):
                continue
            routine = ("package", pkg) if pkg else (kind, name)
            sources[routine] = (sources.get(routine, "") + "\n" + (source or "")).strip()
    routines_by_name = {name: r for r in sources for name in (r[1],) if r[0] != "trigger"}
    for routine, source in list(sources.items()):
        text = _COMMENTS.sub(" ", source)
        sources[routine] = text
        # What the dependencies cannot show: names inside EXECUTE STATEMENT, stripped
        # dependencies. Only known generators and routines count.
        for m in _GEN_CALL.finditer(text):
            gen = _name(m.group(1), m.group(2)) if m.group(1) or m.group(2) else \
                _name(m.group(3), m.group(4))
            if gen in generators or gen in identities:
                takes[routine].add(gen)
        for m in _WORD.finditer(text):
            target = routines_by_name.get(_name(m.group(1), m.group(2)))
            if target is not None and target != routine:
                calls[routine].add(target)

    out = KeySources()

    def use(gen: str) -> GeneratorUse:
        return out.generators.setdefault(gen, GeneratorUse(gen))

    for gen, keys in sorted(identities.items()):
        for key in keys:
            use(gen).feeds.append(f"{key} (identity column)")

    reached: set[Routine] = set()  # routines some trigger reaches, on any table
    for name, (rel, ttype) in sorted(triggers.items()):
        start = ("trigger", name)
        paths = _reach(start, calls)
        reached.update(paths)
        table = schema.tables.get(rel) if rel else None
        if table is None:
            continue  # a trigger of a table not replicated (or of the database) feeds no key
        trig = AppTrigger(name, rel, ttype, 0, True, None)
        touched = [c for c in table.primary_key
                   if (rel, c) in fields[start] or re.search(
                       r"\bNEW\s*\.\s*(?:\"" + re.escape(c) + r"\"|" + re.escape(c) + r"\b)",
                       sources.get(start, ""), re.I)]
        for routine, path in sorted(paths.items()):
            for gen in sorted(takes.get(routine, ())):
                via = " → ".join(_label(r) for r in path)
                if trig.before and "INSERT" in trig.actions and touched:
                    what = ", ".join(f"{rel}.{c}" for c in touched)
                else:
                    what = f"rows of {rel}"
                use(gen).feeds.append(f"{what} ({via}, {trig.description})")

    # A routine no trigger reaches hands its numbers to whoever calls it: the application.
    # Those nothing calls first, so a path starts where the application calls in.
    called = {target for targets in calls.values() for target in targets}
    covered: set[Routine] = set()
    for routine in sorted((r for r in sources if r[0] != "trigger" and r not in reached),
                          key=lambda r: (r in called, r)):
        if routine in covered:
            continue
        paths = _reach(routine, calls)
        covered.update(paths)
        for target, path in sorted(paths.items()):
            for gen in sorted(takes.get(target, ())):
                via = " → ".join(_label(r) for r in path)
                use(gen).feeds.append(f"the application through {via} (no trigger calls "
                                      f"{_label(routine)})")

    taken_anywhere = {g for gens in takes.values() for g in gens}
    for gen in sorted(generators - taken_anywhere - set(out.generators)):
        out.generators[gen] = GeneratorUse(gen, unused=True)
    # Generators only triggers of tables not replicated take are no one's business here.
    out.generators = {g: u for g, u in sorted(out.generators.items()) if u.feeds or u.unused}

    for routine, text in sorted(sources.items()):
        out.max_keys.extend(_max_keys(text, _label(routine), schema))
    out.max_keys = sorted(set(out.max_keys), key=lambda m: (m.table, m.column, m.where))
    return out


def _reach(start: Routine, calls: Mapping[Routine, set[Routine]]
           ) -> dict[Routine, list[Routine]]:
    """Every routine ``start`` reaches (itself included) -> the call path to it."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop(0)
        for target in sorted(calls.get(here, ())):
            if target not in paths:
                paths[target] = [*paths[here], target]
                todo.append(target)
    return paths


def _max_keys(text: str, where: str, schema: Schema) -> Iterable[MaxKey]:
    for m in _MAX.finditer(text):
        column = _name(m.group(3), m.group(4))
        statement_end = text.find(";", m.end())
        rest = text[m.end(): statement_end if statement_end >= 0 else len(text)]
        source = _FROM.search(rest)
        if source is None:
            continue
        table = schema.tables.get(_name(source.group(1), source.group(2)))
        if table is not None and column in table.primary_key:
            yield MaxKey(table.name, column, where)


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'


def assess(con: Connection, sources: KeySources,
           ranges: Iterable[GeneratorRange]) -> list[Finding]:
    """Each key source against this site's ranges (as configured, and as applied: a range
    only takes effect when ``install`` moves the generator into it)."""
    by_name = {r.name: r for r in ranges}
    found = []
    for gen, use in sources.generators.items():
        rng = by_name.get(gen)
        what = ("nothing in the database uses it" if use.unused
                else "feeds " + "; ".join(use.feeds))
        add = (f"Add [generators.{_toml_key(gen)}] start = ..., end = ... (a different range "
               "at each site) to this node's config, then run siege-node install")
        if rng is None:
            if use.unused:
                warning = (f"generator {gen} has no range for this site and nothing in the "
                           "database uses it: if the application takes keys of replicated "
                           "tables from it in its own SQL, every site hands out the same "
                           f"numbers and rows collide. {add} (harmless if it is unused)")
            else:
                warning = (f"generator {gen} has no range for this site and {what}: every "
                           "site hands out the same numbers, so rows created at two sites "
                           "collide and the losing site's child rows end up under the other "
                           f"site's parent. {add}")
            found.append(Finding(gen, f"{gen} (NO site range: the same numbers at every "
                                      f"site): {what}", warning))
            continue
        span = f"{rng.start}..{rng.end if rng.end is not None else ''}"
        current = _current(con, gen)
        if current is not None and current < rng.start - 1:
            found.append(Finding(gen, f"{gen} (site range {span} NOT APPLIED yet: run "
                                      f"siege-node install): {what}",
                                 f"generator {gen} ({what}) is at {current}, below its "
                                 f"configured range {span} for this site: the range is not "
                                 "applied yet, so every site still hands out the same "
                                 "numbers. Run siege-node install"))
        elif current is not None and rng.end is not None and current >= rng.end:
            found.append(Finding(gen, f"{gen} (site range {span} EXHAUSTED at {current}): "
                                      f"{what}",
                                 f"generator {gen} ({what}) is at {current}, PAST its range "
                                 f"end {rng.end} for this site: its numbers now run into "
                                 f"another site's range. Give it a new range "
                                 f"([generators.{_toml_key(gen)}] start/end) and run "
                                 "siege-node install"))
        else:
            found.append(Finding(gen, f"{gen} (site range {span}): {what}", None))
    for mk in sources.max_keys:
        found.append(Finding(
            f"{mk.table}.{mk.column}",
            f"{mk.table}.{mk.column} (MAX()+1: the same next number at every site): taken in "
            f"{mk.where}",
            f"key {mk.table}.{mk.column} is taken as MAX()+1 in {mk.where}: every site takes "
            "the same next number and no range can change that, so rows created at two sites "
            "collide. Take it from a generator instead and give that generator a range at "
            "each site ([generators.NAME] start/end), or exclude the table"))
    return found


def _current(con: Connection, gen: str) -> int | None:
    try:
        return int(_rows(con, f"SELECT GEN_ID({quote(gen, con.sql_dialect)}, 0) "
                              "FROM RDB$DATABASE")[0][0])
    except Exception:  # a generator dropped meanwhile: said by install, not here
        return None


def warnings(con: Connection, schema: Schema, ranges: Iterable[GeneratorRange]) -> list[str]:
    """One line per key source that hands out the same values at every site, with what to
    do; empty when every one has an applied range."""
    return [f.warning for f in assess(con, find(con, schema), ranges) if f.warning]


class Periodic:
    """``read()`` (the warnings of a running node) again at most every ``every`` seconds; a
    failed read is logged and says nothing (a diagnosis never fails a hello)."""

    def __init__(self, read: Callable[[], list[str]], every: float = CHECK_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._at: float | None = None

    def __call__(self) -> list[str]:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self._every:
                self._at = now
                try:
                    self._lines = self._read()
                except Exception as exc:  # the database is down: the hello says so anyway
                    log.warning("could not check what hands out key values: %s",
                                " ".join(str(exc).split()))
                    self._at = None
                    self._lines = []
            return list(self._lines)
