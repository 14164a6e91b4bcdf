"""Round reports kept in the coordinating node's database (``SYNC$REPORTS``), and their
text rendering.

Owns storing, listing and showing reports: one row per round with its outcome, the whole
report as a protobuf message, and every held transaction's facts as an operator reads them
(``held_lines``: the same lines in the text, HTML and PDF reports, the email and
``siege-ctl held``), the changes per table, the alert emails not sent. Reports are what an
operator reads to check that a sync really happened (the legacy manual's first warning), so
the text says plainly what did not. A report stores its words (outcome, trigger) as data:
``word`` and ``kind_of`` say them in the language of the work in progress (i18n), as every
rendering here does.

Runs in the caller's hands: ``store``/``listing``/``get`` take the connection and use their
own short transactions.
"""

from __future__ import annotations

from datetime import datetime

from firebird.driver import Connection

from ..i18n import N_, _, ngettext, number, signed, when
from ..node.db.database import READ_COMMITTED_RW, transaction
from ..node.journal import parking
from ..node.journal.capture import REPORTS_TABLE
from ..proto import coordinator_pb2

DEFAULT_LIST = 10


def next_id(con: Connection) -> int:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT COALESCE(MAX(ID), 0) + 1 FROM {REPORTS_TABLE}")
        found = int(cur.fetchone()[0])
        cur.close()
    return found


def store(con: Connection, report: coordinator_pb2.RoundReport) -> int:
    """Store under ``report.id`` (taken with ``next_id`` when the round began), or under the
    next free id when another report (an analysis running alongside) took it meanwhile —
    ``report.id`` then says which."""
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT 1 FROM {REPORTS_TABLE} WHERE ID = ?", (report.id,))
        if report.id == 0 or cur.fetchone() is not None:
            cur.execute(f"SELECT COALESCE(MAX(ID), 0) + 1 FROM {REPORTS_TABLE}")
            report.id = int(cur.fetchone()[0])
        cur.execute(f"INSERT INTO {REPORTS_TABLE} (ID, STARTED, ENDED, OUTCOME, BODY) VALUES "
                    "(?, ?, ?, ?, ?)", (report.id, _ts(report.started), _ts(report.ended),
                                        report.outcome, report.SerializeToString()))
        cur.close()
    return report.id


def _ts(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def listing(con: Connection, limit: int = DEFAULT_LIST) -> list[coordinator_pb2.RoundReport]:
    """Newest first; ``limit`` 0 for all."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        first = f"FIRST {int(limit)} " if limit else ""
        cur.execute(f"SELECT {first}BODY FROM {REPORTS_TABLE} ORDER BY ID DESC")
        out = [coordinator_pb2.RoundReport.FromString(_bytes(b)) for (b,) in cur.fetchall()]
        cur.close()
    return out


def get(con: Connection, report_id: int) -> coordinator_pb2.RoundReport | None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT BODY FROM {REPORTS_TABLE} WHERE ID = ?", (report_id,))
        row = cur.fetchone()
        cur.close()
    return coordinator_pb2.RoundReport.FromString(_bytes(row[0])) if row else None


def _bytes(value: object) -> bytes:
    if hasattr(value, "read"):
        data = value.read()
        value.close()
        return data
    return bytes(value)  # type: ignore[arg-type]


ELECTION = "election"  # the trigger of a role change's report (election.py)
DIALS_IN = "dials in"  # a site's outcome when it cannot be dialled and exchanges by itself

# The words a report stores (outcomes, triggers, states, phases: stable values, also read by
# scripts) as an operator reads them; ``word`` translates them when shown, others pass as
# they are.
_WORDS = frozenset((
    N_("complete"), N_("partial"), N_("failed"), N_("stopped"), N_("skipped"),
    N_("running"), N_("done"), N_("dials in"), N_("equal"), N_("differences"),
    N_("repaired"), N_("adopted"), N_("held"), N_("joined"), N_("resynced"),
    N_("schedule"), N_("manual"), N_("news"), N_("election"), N_("join"), N_("resync"),
    N_("analyse"), N_("adopt"), N_("gather"), N_("redistribute"), N_("transfer"),
    N_("comparing"), N_("waiting"), N_("refused"), N_("new"), N_("reapplied"),
    N_("column"), N_("row"), N_("delete"), N_("insert"), N_("update"), N_("snapshot"),
    N_("restore"), N_("backup"), N_("check"), N_("unique"), N_("kept"),
    # Conflict kinds (merge.LossKind) and states (siege-ctl conflicts).
    N_("update-of-dead-row"), N_("generation"), N_("kept-by-reference"), N_("unique-clash"),
    N_("reparented"), N_("whole-row"), N_("re-applied"), N_("awaiting a decision"),
    N_("took the role"), N_("stood by"),
    # Where a site's address came from (discovery.py).
    N_("configured"), N_("announced"), N_("zeroconf"), N_("last"), N_("this node")))


def word(value: str) -> str:
    """A stored word (``complete``, ``schedule``...) in the operator's language."""
    return _(value) if value in _WORDS else value


def kind_of(report: coordinator_pb2.RoundReport) -> str:
    """What a stored report is about: a sync, an analysis, a join, a role change."""
    if report.trigger.startswith(("analyse", "adopt")):
        return _("analysis")
    return {ELECTION: _("role change"), "join": _("join"),
            "resync": _("resync")}.get(report.trigger, _("sync"))


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def render_text(report: coordinator_pb2.RoundReport) -> str:
    """The report as an operator reads it, in the language of the work in progress
    (siege-ctl: the shell's; an email: the siège's ``[operator] language``)."""
    if report.trigger.startswith(("analyse", "adopt")):
        return _render_analysis(report)
    if report.trigger in (ELECTION, "join", "resync"):
        ended = (", " + _("ended {when}").format(when=when(report.ended))
                 if report.ended != report.started else "")
        return (_("{kind} {id}: {outcome}").format(kind=kind_of(report).capitalize(),
                                                   id=report.id,
                                                   outcome=word(report.outcome).upper())
                + "\n  " + _("at {when}").format(when=when(report.started)) + ended
                + f"\n  {report.note}")
    lines = [_("Sync {id} ({trigger}): {outcome}").format(
                 id=report.id, trigger=word(report.trigger),
                 outcome=word(report.outcome).upper()),
             "  " + _("started {started}, ended {ended}").format(started=when(report.started),
                                                                ended=when(report.ended)),
             "  " + _("changes set aside (on record at the siège): {count}").format(
                 count=report.new_conflicts),
             "  " + _("old changes purged everywhere: {count} segment(s)").format(
                 count=report.purged_segments), ""]
    rows = [[_("site"), _("outcome"), _("in"), _("out"), _("held at siège"), _("time"),
             _("clock")]]
    for s in report.sites:
        rows.append([s.site, word(s.outcome), number(s.events_in), number(s.events_out),
                     number(s.parked), _("{seconds} s").format(
                         seconds=number(s.duration_ms / 1000, 1)),
                     _("{seconds} s").format(seconds=signed(s.clock_offset_us / 1e6, 2))])
    lines += _columns(rows)
    lines += _per_table(report)
    problems = [(s.site, e) for s in report.sites for e in s.errors]
    if problems:
        lines += ["", _("Problems:")]
        lines += [f"  {site}: {error}" for site, error in problems]
    guards = [(_("the siège"), g) for g in report.siege_lost_guards]
    guards += [(s.site, g) for s in report.sites for g in s.lost_guards]
    if guards:
        lines += ["", _("Application triggers that fire again for applied changes (their "
                        "guard was lost, as a vendor's trigger upgrade does):")]
        lines += [f"  {site}: {line}" for site, line in guards]
    if report.held:
        lines += ["", held_title()]
        for held in report.held:
            lines += ["  " + line for line in held_lines(held)]
    if report.alert_problems:
        lines += ["", _("Alert emails:")]
        lines += [f"  {line}" for line in report.alert_problems]
    if report.outcome != "complete":
        lines += ["", _("This sync did NOT complete for every site: the sites above that are "
                        "not 'complete' keep their changes for the next sync.")]
    return "\n".join(lines)


PER_TABLE = 20  # tables listed in a report's per-table counts (the busiest first)


def per_table(report: coordinator_pb2.RoundReport) -> list[tuple[str, int, int]]:
    """(table, changes gathered from the sites, changes sent to them), busiest first."""
    tables: dict[str, list[int]] = {}
    for s in report.sites:
        for table, count in s.tables_in.items():
            tables.setdefault(table, [0, 0])[0] += count
        for table, count in s.tables_out.items():
            tables.setdefault(table, [0, 0])[1] += count
    return sorted(((t, i, o) for t, (i, o) in tables.items()),
                  key=lambda row: (-(row[1] + row[2]), row[0]))


def _per_table(report: coordinator_pb2.RoundReport) -> list[str]:
    rows = per_table(report)
    if not rows:
        return []
    lines = ["", _("Per table:")]
    lines += _columns([[_("table"), _("in"), _("out")]]
                      + [[t, number(i), number(o)] for t, i, o in rows[:PER_TABLE]])
    if len(rows) > PER_TABLE:
        lines.append("  " + _("… and {count} more tables").format(count=len(rows) - PER_TABLE))
    return lines


def _render_analysis(report: coordinator_pb2.RoundReport) -> str:
    lines = [_("Analysis {id} ({trigger}): {outcome}").format(
                 id=report.id, trigger=word(report.trigger),
                 outcome=word(report.outcome).upper()),
             "  " + _("started {started}, ended {ended}").format(started=when(report.started),
                                                                ended=when(report.ended)),
             ""]
    rows = [[_("site"), _("table"), _("vs"), _("matched"), _("missing"), _("extra"),
             _("different"), _("repaired"), _("bytes"), _("held")]]
    for a in report.analysis:
        rows.append([a.site, a.table, a.reference, number(a.matched), number(a.missing),
                     number(a.extra), number(a.different), number(a.repaired),
                     number(a.bytes_moved), number(a.held)])
    lines += _columns(rows)
    details = [(a.site, a.table, e) for a in report.analysis for e in a.examples]
    if details:
        lines += ["", _("Differing rows (first ones):")]
        lines += [f"  {site} {table}: {e}" for site, table, e in details]
    held = [(a.site, a.table, k) for a in report.analysis for k in a.held_keys]
    if held:
        lines += ["", _("Held, not differences (a held transaction touches these rows; never "
                        "repaired — siege-ctl held):")]
        lines += [f"  {site} {table}: {k}" for site, table, k in held]
    errors = [(a.site, a.table, a.error) for a in report.analysis if a.error]
    if errors:
        lines += ["", _("Not compared:")]
        lines += [f"  {site} {table}: {e}" for site, table, e in errors]
    verdict = analysis_verdict(report.outcome, long=True)
    if verdict:
        lines += ["", verdict]
    return "\n".join(lines)


def analysis_verdict(outcome: str, long: bool = False) -> str | None:
    """What an analysis's outcome means for the operator (``long``: with what to do)."""
    if outcome == "differences":
        return _("Differences were found and nothing was changed.") + (
            " " + _("To make every site hold what one site holds: siege-ctl analyse --repair "
                    "--prefer SITE") if long else "")
    if outcome == "held":
        return _("No differences, but rows that a held transaction touches differ until it "
                 "applies: see siege-ctl held.")
    if outcome == "adopted":
        return _("Every site holds the same rows in every replicated table: they are "
                 "adopted, and the syncs carry every change from here on.")
    if outcome == "repaired":
        return _("The repairs are written at the differing sites as ordinary changes; the "
                 "next sync carries them. Overwritten values are on record "
                 "(siege-ctl conflicts).")
    if outcome == "failed":
        return _("Some tables could not be compared (see above).")
    return None


def held_title() -> str:
    return _("Held transactions (their origin's later changes wait behind them at that "
             "site; siege-ctl held):")


def held_events(t: coordinator_pb2.HeldTransaction) -> str:
    """``lyon#5..7 (incarnation 1)``: the events of a held transaction (a detail)."""
    last = f"..{t.last_seq}" if t.last_seq > t.first_seq else ""
    return f"{t.origin}#{t.first_seq}{last} (incarnation {t.incarnation})"


def held_lines(t: coordinator_pb2.HeldTransaction) -> list[str]:
    """A held transaction's facts, one per line (parking.render)."""
    rows = [f"{word(r.op)} {r.table} " + _("key {key}").format(key=r.key)
            + (f": {', '.join(r.values)}" if r.values else "") for r in t.rows]
    lines = parking.render(t.state, t.site, t.origin, held_events(t), t.since, t.attempts,
                           t.last_tried, t.past_limit, t.message, rows, t.rows_note, t.todo)
    if t.reported:
        lines.insert(1, "  " + _("as {site} said at {when} (it dials in: it is not asked)"
                                 ).format(site=t.site, when=when(t.reported)))
    if t.behind:
        lines.insert(-1, "  " + ngettext(
            "behind it: {count} later change of {origin} waits at {site} (it may depend on "
            "it; it applies once it does)",
            "behind it: {count} later changes of {origin} wait at {site} (they may depend on "
            "it; they apply once it does)", t.behind).format(count=t.behind, origin=t.origin,
                                                             site=t.site))
    return lines
