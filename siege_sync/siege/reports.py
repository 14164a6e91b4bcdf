"""Round reports kept in the coordinating node's database (``SYNC$REPORTS``), and their
text rendering.

Owns storing, listing and showing reports: one row per round with its outcome, the whole
report as a protobuf message, and every held transaction's facts as an operator reads them
(``held_lines``: the same lines in the text, HTML and PDF reports, the email and
``siege-ctl held``). Reports are what an operator reads to check that a sync really
happened (the legacy manual's first warning), so the text says plainly what did not.

Runs in the caller's hands: ``store``/``listing``/``get`` take the connection and use their
own short transactions.
"""

from __future__ import annotations

from datetime import datetime

from firebird.driver import Connection

from ..node import parking
from ..node.capture import REPORTS_TABLE
from ..node.database import READ_COMMITTED_RW, transaction
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


def render_text(report: coordinator_pb2.RoundReport) -> str:
    if report.trigger.startswith(("analyse", "adopt")):
        return _render_analysis(report)
    if report.trigger in (ELECTION, "join", "resync"):
        kind = {"join": "Join", "resync": "Resync"}.get(report.trigger, "Role change")
        return (f"{kind} {report.id}: {report.outcome.upper()}\n  at {report.started}"
                f"{', ended ' + report.ended if report.ended != report.started else ''}\n"
                f"  {report.note}")
    lines = [f"Sync round {report.id} ({report.trigger}): {report.outcome.upper()}",
             f"  started {report.started}, ended {report.ended}",
             f"  losing versions put on record at the siège: {report.new_conflicts}",
             f"  old event segments purged mesh-wide: {report.purged_segments}", ""]
    rows = [["site", "outcome", "in", "out", "held at siège", "time", "clock"]]
    for s in report.sites:
        rows.append([s.site, s.outcome, str(s.events_in), str(s.events_out), str(s.parked),
                     f"{s.duration_ms / 1000:.1f} s", f"{s.clock_offset_us / 1e6:+.2f} s"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    problems = [(s.site, e) for s in report.sites for e in s.errors]
    if problems:
        lines += ["", "Problems:"]
        lines += [f"  {site}: {error}" for site, error in problems]
    guards = [("the siège", g) for g in report.siege_lost_guards]
    guards += [(s.site, g) for s in report.sites for g in s.lost_guards]
    if guards:
        lines += ["", "Application triggers that fire again for applied changes (their guard "
                      "was lost, as a vendor's trigger upgrade does):"]
        lines += [f"  {site}: {line}" for site, line in guards]
    if report.held:
        lines += ["", HELD_TITLE]
        for held in report.held:
            lines += ["  " + line for line in held_lines(held)]
    if report.outcome != "complete":
        lines += ["", "This round did NOT complete for every site: the sites above that are "
                      "not 'complete' keep their changes for the next round."]
    return "\n".join(lines)


def _render_analysis(report: coordinator_pb2.RoundReport) -> str:
    lines = [f"Analysis {report.id} ({report.trigger}): {report.outcome.upper()}",
             f"  started {report.started}, ended {report.ended}", ""]
    rows = [["site", "table", "vs", "matched", "missing", "extra", "different", "repaired",
             "bytes", "held"]]
    for a in report.analysis:
        rows.append([a.site, a.table, a.reference, str(a.matched), str(a.missing),
                     str(a.extra), str(a.different), str(a.repaired), str(a.bytes_moved),
                     str(a.held)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    details = [(a.site, a.table, e) for a in report.analysis for e in a.examples]
    if details:
        lines += ["", "Differing rows (first ones):"]
        lines += [f"  {site} {table}: {e}" for site, table, e in details]
    held = [(a.site, a.table, k) for a in report.analysis for k in a.held_keys]
    if held:
        lines += ["", "Held, not differences (a held transaction touches these rows; never "
                      "repaired — siege-ctl held):"]
        lines += [f"  {site} {table}: {k}" for site, table, k in held]
    errors = [(a.site, a.table, a.error) for a in report.analysis if a.error]
    if errors:
        lines += ["", "Not compared:"]
        lines += [f"  {site} {table}: {e}" for site, table, e in errors]
    if report.outcome == "differences":
        lines += ["", "Differences were found and nothing was changed. To make every site hold "
                      "what one site holds: siege-ctl analyse --repair --prefer SITE"]
    if report.outcome == "held":
        lines += ["", "No differences, but rows that a held transaction touches differ until it "
                      "applies: see siege-ctl held."]
    if report.outcome == "adopted":
        lines += ["", "Every site holds the same rows in every replicated table: they are "
                      "adopted, and the rounds carry every change from here on."]
    if report.outcome == "repaired":
        lines += ["", "The repairs are written at the differing sites as ordinary changes; the "
                      "next round carries them. Overwritten values are on record "
                      "(siege-ctl conflicts)."]
    return "\n".join(lines)


HELD_TITLE = ("Held transactions (their origin's later changes wait behind them at that "
              "site; siege-ctl held):")


def held_events(t: coordinator_pb2.HeldTransaction) -> str:
    """``lyon#5..7 (incarnation 1)``: the events of a held transaction."""
    last = f"..{t.last_seq}" if t.last_seq > t.first_seq else ""
    return f"{t.origin}#{t.first_seq}{last} (incarnation {t.incarnation})"


def held_lines(t: coordinator_pb2.HeldTransaction) -> list[str]:
    """A held transaction's facts, one per line (parking.render)."""
    rows = [f"{r.op} {r.table} key {r.key}" + (f": {', '.join(r.values)}" if r.values else "")
            for r in t.rows]
    lines = parking.render(t.state, t.site, t.origin, held_events(t), t.since, t.attempts,
                           t.last_tried, t.past_limit, t.message, rows, t.rows_note, t.todo)
    if t.reported:
        lines.insert(1, f"  as {t.site} said at {t.reported} (it dials in: it is not asked)")
    if t.behind:
        lines.insert(-1, f"  behind it: {t.behind} later event(s) of {t.origin} wait at {t.site} "
                         "(they may depend on it; they apply once it does)")
    return lines
