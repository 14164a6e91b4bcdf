"""A round's report as something a person files: HTML and PDF (``siege-ctl report show``),
in the language of the work in progress (i18n).

Owns the printable layouts: a title with the outcome, when, the per-site table (events in and
out, held at the siège, duration, clock), the problems, every held transaction's facts
(``reports.held_lines``), and — when the round did not complete — the sentence that says
so. The PDF uses the PDF core fonts (no font files to install, on Windows too): text outside
Latin-1 is written with the nearest Latin-1 characters.
"""

from __future__ import annotations

import html
from pathlib import Path

from fpdf import FPDF

from ..i18n import N_, _, current, number, signed, when
from ..proto import coordinator_pb2
from .reports import (
    ELECTION,
    PER_TABLE,
    analysis_verdict,
    held_lines,
    held_title,
    kind_of,
    per_table,
    word,
)

_HEADERS = (N_("Site"), N_("Outcome"), N_("Changes in"), N_("Changes out"), N_("Held"),
            N_("Duration"), N_("Clock"))
_WIDTHS = (34, 26, 24, 24, 18, 24, 24)
# An analysis (siege-ctl analyse) is stored as a report too, with its own table.
_ANALYSIS_HEADERS = (N_("Site"), N_("Table"), N_("Matched"), N_("Missing"), N_("Extra"),
                     N_("Different"), N_("Repaired"))
_ANALYSIS_WIDTHS = (30, 36, 24, 20, 18, 22, 24)
_LATIN1 = str.maketrans({"—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"',
                         "…": "...", "→": "->", "•": "*", "\u202f": " ", "\xa0": " "})


def _is_analysis(report: coordinator_pb2.RoundReport) -> bool:
    return report.trigger.startswith(("analyse", "adopt"))


def _title(report: coordinator_pb2.RoundReport) -> str:
    return f"{kind_of(report).capitalize()} {report.id}"


def _headers(report: coordinator_pb2.RoundReport) -> tuple[str, ...]:
    return tuple(_(h) for h in (_ANALYSIS_HEADERS if _is_analysis(report) else _HEADERS))


def _rows(report: coordinator_pb2.RoundReport) -> list[tuple[str, ...]]:
    if _is_analysis(report):
        return [(a.site, a.table, number(a.matched), number(a.missing), number(a.extra),
                 number(a.different), number(a.repaired)) for a in report.analysis]
    return [(s.site, word(s.outcome), number(s.events_in), number(s.events_out),
             number(s.parked), _("{seconds} s").format(seconds=number(s.duration_ms / 1000, 1)),
             _("{seconds} s").format(seconds=signed(s.clock_offset_us / 1e6, 2)))
            for s in report.sites]


def _problems(report: coordinator_pb2.RoundReport) -> list[str]:
    if _is_analysis(report):
        return ([f"{a.site} {a.table}: {x}" for a in report.analysis for x in a.examples]
                + [f"{a.site} {a.table}: " + _("not compared: {error}").format(error=a.error)
                   for a in report.analysis if a.error])
    return ([f"{s.site}: {e}" for s in report.sites for e in s.errors]
            + list(report.alert_problems))


def _verdict(report: coordinator_pb2.RoundReport) -> str | None:
    if report.trigger in (ELECTION, "join", "resync"):
        return report.note
    if _is_analysis(report):
        return analysis_verdict(report.outcome)
    if report.outcome == "complete":
        return None
    return _("This sync did NOT complete for every site: the sites that are not 'complete' "
             "keep their changes for the next sync.")


def _facts(report: coordinator_pb2.RoundReport) -> list[str]:
    return [_("Trigger: {trigger}").format(trigger=word(report.trigger)),
            _("Started {started}, ended {ended}").format(started=when(report.started),
                                                        ended=when(report.ended)),
            _("Changes set aside (on record at the siège): {count}").format(
                count=report.new_conflicts)]


def render_html(report: coordinator_pb2.RoundReport) -> str:
    e = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                     for row in _rows(report))
    problems = "".join(f"<li>{e(p)}</li>" for p in _problems(report))
    verdict = _verdict(report)
    facts = "<br>\n".join(e(f) for f in _facts(report))
    return f"""<!DOCTYPE html>
<html lang="{current()}"><head><meta charset="utf-8">
<title>{e(_title(report))}: {e(word(report.outcome))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 0.3em 0.8em; text-align: left; }}
.outcome-complete {{ color: #060; }} .outcome-partial, .outcome-stopped {{ color: #a60; }}
.outcome-failed {{ color: #a00; }}
</style></head><body>
<h1>{e(_title(report))} <span class="outcome-{e(report.outcome)}">
{e(word(report.outcome).upper())}</span></h1>
<p>{facts}</p>
<table><tr>{"".join(f"<th>{e(h)}</th>" for h in _headers(report))}</tr>
{rows}
</table>
{_per_table_html(report)}
{f"<h2>{e(_('Problems'))}</h2><ul>{problems}</ul>" if problems else ""}
{_held_html(report)}
{f"<p><strong>{e(verdict)}</strong></p>" if verdict else ""}
</body></html>
"""


def write_pdf(report: coordinator_pb2.RoundReport, path: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(_title(report)))
    pdf.set_lang(current())
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, _latin1(f"{_title(report)}: {word(report.outcome).upper()}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for line in _facts(report):
        pdf.cell(0, 7, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = _ANALYSIS_WIDTHS if _is_analysis(report) else _WIDTHS
    pdf.set_font("Helvetica", "B", 10)
    for header, width in zip(_headers(report), widths, strict=True):
        pdf.cell(width, 8, _latin1(header), border=1)
    pdf.ln()
    pdf.set_font("Helvetica", size=10)
    for row in _rows(report):
        for cell, width in zip(row, widths, strict=True):
            pdf.cell(width, 7, _latin1(cell), border=1)
        pdf.ln()
    counted = [] if _is_analysis(report) else per_table(report)[:PER_TABLE]
    if counted:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 10)
        for header, width in zip((_("Table"), _("Changes in"), _("Changes out")),
                                 (60, 30, 30), strict=True):
            pdf.cell(width, 7, _latin1(header), border=1)
        pdf.ln()
        pdf.set_font("Helvetica", size=10)
        for table, got, sent in counted:
            for cell, width in zip((table, number(got), number(sent)), (60, 30, 30),
                                   strict=True):
                pdf.cell(width, 6, _latin1(cell), border=1)
            pdf.ln()
    problems = _problems(report)
    if problems:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, _latin1(_("Problems")), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        for problem in problems:
            pdf.multi_cell(0, 6, _latin1(f"- {problem}"), new_x="LMARGIN", new_y="NEXT")
    if report.held:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 12)
        pdf.multi_cell(0, 6, _latin1(held_title()), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        for held in report.held:
            for line in held_lines(held):
                pdf.multi_cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    verdict = _verdict(report)
    if verdict:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 11)
        pdf.multi_cell(0, 6, _latin1(verdict), new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def _per_table_html(report: coordinator_pb2.RoundReport) -> str:
    counted = [] if _is_analysis(report) else per_table(report)[:PER_TABLE]
    if not counted:
        return ""
    e = html.escape
    rows = "".join(f"<tr><td>{e(t)}</td><td>{e(number(i))}</td><td>{e(number(o))}</td></tr>"
                   for t, i, o in counted)
    return (f"<h2>{e(_('Per table:').rstrip(' :'))}</h2><table><tr><th>{e(_('Table'))}</th>"
            f"<th>{e(_('Changes in'))}</th><th>{e(_('Changes out'))}</th></tr>{rows}</table>")


def _held_html(report: coordinator_pb2.RoundReport) -> str:
    if not report.held:
        return ""
    e = html.escape
    items = "".join("<li><pre>" + e("\n".join(held_lines(held))) + "</pre></li>"
                    for held in report.held)
    return f"<h2>{e(held_title())}</h2><ul>{items}</ul>"


def _latin1(text: str) -> str:
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
