"""A round's report as something a person files: HTML and PDF (``siege-ctl report show``).

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

from ..proto import coordinator_pb2
from .reports import ELECTION, HELD_TITLE, held_lines

_HEADERS = ("Site", "Outcome", "Events in", "Events out", "Held", "Duration", "Clock")
_WIDTHS = (34, 26, 24, 24, 18, 24, 24)
# An analysis (siege-ctl analyse) is stored as a report too, with its own table.
_ANALYSIS_HEADERS = ("Site", "Table", "Matched", "Missing", "Extra", "Different", "Repaired")
_ANALYSIS_WIDTHS = (30, 36, 24, 20, 18, 22, 24)
_LATIN1 = str.maketrans({"—": "-", "–": "-", "’": "'", "‘": "'", "“": '"', "”": '"',
                         "…": "...", "→": "->", "•": "*"})


def _is_analysis(report: coordinator_pb2.RoundReport) -> bool:
    return report.trigger.startswith(("analyse", "adopt"))


def _title(report: coordinator_pb2.RoundReport) -> str:
    kind = ("Analysis" if _is_analysis(report) else "Role change"
            if report.trigger == ELECTION else "Sync round")
    return f"{kind} {report.id}"


def _headers(report: coordinator_pb2.RoundReport) -> tuple[str, ...]:
    return _ANALYSIS_HEADERS if _is_analysis(report) else _HEADERS


def _rows(report: coordinator_pb2.RoundReport) -> list[tuple[str, ...]]:
    if _is_analysis(report):
        return [(a.site, a.table, str(a.matched), str(a.missing), str(a.extra),
                 str(a.different), str(a.repaired)) for a in report.analysis]
    return [(s.site, s.outcome, str(s.events_in), str(s.events_out), str(s.parked),
             f"{s.duration_ms / 1000:.1f} s", f"{s.clock_offset_us / 1e6:+.2f} s")
            for s in report.sites]


def _problems(report: coordinator_pb2.RoundReport) -> list[str]:
    if _is_analysis(report):
        return ([f"{a.site} {a.table}: {x}" for a in report.analysis for x in a.examples]
                + [f"{a.site} {a.table}: not compared: {a.error}" for a in report.analysis
                   if a.error])
    return [f"{s.site}: {e}" for s in report.sites for e in s.errors]


def _verdict(report: coordinator_pb2.RoundReport) -> str | None:
    if report.trigger in (ELECTION, "join", "resync"):
        return report.note
    if _is_analysis(report):
        return {"differences": "Differences were found and nothing was changed.",
                "repaired": "The repairs were written at the differing sites; the next round "
                            "carries them. Overwritten values are on record.",
                "failed": "Some tables could not be compared (see above).",
                "adopted": "Every site holds the same rows: adopted, the rounds carry every "
                           "change from here on."
                }.get(report.outcome)
    if report.outcome == "complete":
        return None
    return ("This round did NOT complete for every site: the sites that are not 'complete' "
            "keep their changes for the next round.")


def render_html(report: coordinator_pb2.RoundReport) -> str:
    e = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                     for row in _rows(report))
    problems = "".join(f"<li>{e(p)}</li>" for p in _problems(report))
    verdict = _verdict(report)
    return f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<title>{_title(report)}: {e(report.outcome)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 0.3em 0.8em; text-align: left; }}
.outcome-complete {{ color: #060; }} .outcome-partial, .outcome-stopped {{ color: #a60; }}
.outcome-failed {{ color: #a00; }}
</style></head><body>
<h1>{_title(report)} <span class="outcome-{e(report.outcome)}">
{e(report.outcome.upper())}</span></h1>
<p>Trigger: {e(report.trigger)}. Started {e(_when(report.started))}, ended
{e(_when(report.ended))}.
Losing versions put on record at the siège: {report.new_conflicts}.</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in _headers(report))}</tr>
{rows}
</table>
{f"<h2>Problems</h2><ul>{problems}</ul>" if problems else ""}
{_held_html(report)}
{f"<p><strong>{e(verdict)}</strong></p>" if verdict else ""}
</body></html>
"""


def write_pdf(report: coordinator_pb2.RoundReport, path: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_title(_title(report))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, _latin1(f"{_title(report)}: {report.outcome.upper()}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for line in (f"Trigger: {report.trigger}",
                 f"Started {_when(report.started)}, ended {_when(report.ended)}",
                 f"Losing versions put on record at the siège: {report.new_conflicts}"):
        pdf.cell(0, 7, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = _ANALYSIS_WIDTHS if _is_analysis(report) else _WIDTHS
    pdf.set_font("Helvetica", "B", 10)
    for header, width in zip(_headers(report), widths, strict=True):
        pdf.cell(width, 8, header, border=1)
    pdf.ln()
    pdf.set_font("Helvetica", size=10)
    for row in _rows(report):
        for cell, width in zip(row, widths, strict=True):
            pdf.cell(width, 7, _latin1(cell), border=1)
        pdf.ln()
    problems = _problems(report)
    if problems:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, "Problems", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        for problem in problems:
            pdf.multi_cell(0, 6, _latin1(f"- {problem}"), new_x="LMARGIN", new_y="NEXT")
    if report.held:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 12)
        pdf.multi_cell(0, 6, _latin1(HELD_TITLE), new_x="LMARGIN", new_y="NEXT")
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


def _held_html(report: coordinator_pb2.RoundReport) -> str:
    if not report.held:
        return ""
    e = html.escape
    items = "".join("<li><pre>" + e("\n".join(held_lines(held))) + "</pre></li>"
                    for held in report.held)
    return f"<h2>{e(HELD_TITLE)}</h2><ul>{items}</ul>"


def _when(iso: str) -> str:
    return iso.replace("T", " ")


def _latin1(text: str) -> str:
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
