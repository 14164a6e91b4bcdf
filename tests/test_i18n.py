"""French and English (issue 23): every operator-facing text has its French translation, with
the same placeholders; the compiled catalog is the one the package build makes from the
``.po``; and the texts reach the operator in the language asked for — ``siege-ctl`` from the
shell's ``LANG``, a report (text, HTML, the PDF read back) and an email from the siège's
``[operator] language``, dates and numbers as the language writes them.
"""

from __future__ import annotations

import html
import io
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo

from siege_sync import i18n
from siege_sync.i18n import _, speaking
from siege_sync.proto import coordinator_pb2
from siege_sync.siege.alerts import Alerter
from siege_sync.siege.printout import render_html, write_pdf
from siege_sync.siege.reports import render_text
from siege_sync.siege.settings import parse
from tests.test_alerts import smtp  # noqa: F401 - the fixture: a real SMTP server
from tools import catalog

ROOT = Path(__file__).resolve().parent.parent


def _fields(text: str) -> set[str]:
    """The placeholders of a text: ``{name}`` fields and ``%s`` / ``%(name)s`` ones."""
    braces = set()
    try:
        braces = {f"{{{name}}}" for _lit, name, _spec, _conv in string.Formatter().parse(text)
                  if name is not None}
    except ValueError:
        pass
    return braces | set(re.findall(r"%\(\w+\)[sr]|%s", text))


def test_every_operator_text_has_its_french_translation():
    untranslated = catalog.missing(catalog.extract(), catalog.french())
    assert not untranslated, (f"{len(untranslated)} text(s) without French (run `make "
                              f"catalog`, translate in {catalog.FRENCH.name}): {untranslated}")


def test_a_translation_keeps_the_placeholders_of_its_original():
    wrong = []
    for message in catalog.french():
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for translated in strings:
            if translated and _fields(translated) != _fields(ids[-1]) \
                    and _fields(translated) != _fields(ids[0]):
                wrong.append((ids[0], translated))
    assert not wrong, wrong


def test_the_installed_catalog_is_the_one_built_from_the_po():
    built = io.BytesIO()
    write_mo(built, catalog.french())
    installed = i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / f"{i18n.DOMAIN}.mo"
    assert installed.is_file() and installed.read_bytes() == built.getvalue(), (
        "the compiled French catalog is stale: `make venv` (the package build) compiles it")


def test_the_shells_language_is_read_as_gettext_reads_it():
    assert i18n.language_from_env({}) == "en"
    assert i18n.language_from_env({"LANG": "fr_FR.UTF-8"}) == "fr"
    assert i18n.language_from_env({"LANG": "fr_FR.UTF-8", "LC_ALL": "C"}) == "en"
    assert i18n.language_from_env({"LANGUAGE": "de:fr", "LANG": "en_US.UTF-8"}) == "fr"
    assert i18n.language_from_env({"LANG": "de_DE.UTF-8"}) == "en"
    with pytest.raises(i18n.LanguageError, match="en, fr"):
        i18n.check_language("klingon", "siege.toml [operator]")


def _ctl(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "SIEGE_CTL_CONFIG")}
    return subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", *args],
                          capture_output=True, text=True, env={**clean, **env}, cwd=cwd,
                          timeout=60)


def test_siege_ctl_speaks_the_shells_language(tmp_path: Path):
    english = _ctl({}, "--help", cwd=tmp_path)
    french = _ctl({"LANG": "fr_FR.UTF-8"}, "--help", cwd=tmp_path)
    assert english.returncode == french.returncode == 0
    with speaking("fr"):
        said = _("connection test of every site")
    assert "connection test of every site" in english.stdout and "usage:" in english.stdout
    assert said != "connection test of every site" and said in french.stdout
    assert "utilisation" in french.stdout and "usage:" not in french.stdout

    # A mistake: no siege-ctl.toml here. Said in French, with what to do, exit 2.
    wrong = _ctl({"LANG": "fr_FR.UTF-8"}, "status", cwd=tmp_path)
    with speaking("fr"):
        expected = _("missing {names}: give --{first} or write a siege-ctl.toml "
                     "(address, siege, bundle)").format(names="address, siege, bundle",
                                                       first="address")
    assert wrong.returncode == 2 and expected in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert "missing address" in _ctl({}, "status", cwd=tmp_path).stderr


def test_the_sieges_service_answers_in_the_callers_language(tmp_path: Path):
    """An English siège: ``siege-ctl status`` from a French shell reads the siège's own
    words (its role) in French, from an English one in English."""
    from tests.test_siege import mesh_with

    mesh = mesh_with(tmp_path)
    try:
        french = _ctl({"LANG": "fr_FR.UTF-8"}, "--config", str(tmp_path / "siege-ctl.toml"),
                      "status", cwd=tmp_path)
        english = _ctl({}, "--config", str(tmp_path / "siege-ctl.toml"), "status",
                       cwd=tmp_path)
    finally:
        mesh.close()
    with speaking("fr"):
        role, reachable = _("the configured siège"), _("reachable")
    assert french.returncode == 0 and role in french.stdout and reachable in french.stdout
    assert english.returncode == 0 and "the configured siège" in english.stdout


def _report() -> coordinator_pb2.RoundReport:
    report = coordinator_pb2.RoundReport(id=12, trigger="schedule", outcome="partial",
                                         started="2026-12-07T09:30:05",
                                         ended="2026-12-07T09:31:10", new_conflicts=2)
    report.sites.add(site="lyon", outcome="complete", events_in=1234, events_out=56,
                     duration_ms=2500, clock_offset_us=-1_250_000)
    report.sites.add(site="nice", outcome="failed", unreachable=True,
                     errors=["UNAVAILABLE: connection refused"])
    return report


def test_a_report_in_french_text_html_and_the_pdf_read_back(tmp_path: Path):
    import pypdfium2

    with speaking("fr"):
        text = render_text(_report())
        page = render_html(_report())
        write_pdf(_report(), tmp_path / "r.pdf")
        title = _("Sync {id} ({trigger}): {outcome}").format(
            id=12, trigger=_("schedule"), outcome=_("partial").upper())
        incomplete = _("This sync did NOT complete for every site: the sites that are not "
                       "'complete' keep their changes for the next sync.")
    english = render_text(_report())
    assert "Sync 12 (schedule): PARTIAL" in english and "2026-12-07 09:30:05" in english
    assert title in text and title != "Sync 12 (schedule): PARTIAL"
    assert "07/12/2026 09:30:05" in text  # the French way
    assert re.search(r"1\s234", text) and "2,5 s" in text and "-1,25 s" in text
    assert '<html lang="fr">' in page and html.escape(incomplete) in page
    pdf = pypdfium2.PdfDocument(str(tmp_path / "r.pdf"))
    read = " ".join(pdf[0].get_textpage().get_text_range().split())
    assert "07/12/2026 09:30:05" in read and "lyon" in read
    assert " ".join(incomplete.split()) in read
    assert _("Problems") == "Problems"  # outside ``speaking``: English again


def test_an_email_from_a_french_siege(smtp):  # noqa: F811 - the fixture
    inbox, alerts = smtp
    alerter = Alerter(parse({"alerts": alerts}).alerts, "siege", language="fr")
    alerter.after_round(_report())
    assert inbox.messages, "no alert sent"
    msg = inbox.messages[0]
    with speaking("fr"):
        subject = _("sync {id} {outcome}").format(id=12, outcome=_("partial").upper())
        problems = _("Problems:")
    from email.header import decode_header, make_header

    assert subject in str(make_header(decode_header(msg["Subject"])))
    assert msg["Content-Language"] == "fr"
    body = msg.get_payload(decode=True).decode("utf-8")
    assert problems in body and "07/12/2026 09:30:05" in body and "nice" in body
