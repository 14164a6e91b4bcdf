"""The operator's texts as a gettext catalog: extract them from the code, bring the French
catalog up to date (``make catalog``), and say what still lacks a translation.

``python tools/catalog.py`` extracts every text marked ``_()``, ``N_()`` or ``ngettext()``
in ``siege_sync/`` (the dashboard's templates included) and ``tools/demo.py`` with Babel,
merges it into ``siege_sync/i18n/locale/fr/LC_MESSAGES/siege_sync.po`` (new texts come in
untranslated, texts gone from the code are dropped, translations kept), and prints the texts
without a French translation. argparse's own words (``usage:``, ``options``...) are kept in the same
catalog: it asks gettext's default domain, which the command-line programs bind to ours.
tests/test_i18n.py uses ``extract()`` to fail on a text without its translation. The package
build (setup.py) compiles the ``.po``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
FRENCH = ROOT / "siege_sync" / "i18n" / "locale" / "fr" / "LC_MESSAGES" / "siege_sync.po"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
# argparse's words an operator reads (Python 3.11's argparse.py): not in our code, asked
# for under gettext's default domain.
ARGPARSE = ("usage: ", "positional arguments", "options", "show this help message and exit",
            "the following arguments are required: %s", "unrecognized arguments: %s",
            "invalid choice: %(value)r (choose from %(choices)s)",
            "argument %(argument_name)s: %(message)s", "%(prog)s: error: %(message)s\n",
            "expected one argument", "invalid %(type)s value: %(value)r")


def extract() -> Catalog:
    """Every marked text of the package and the demo, with argparse's."""
    template = Catalog(project="siege-sync", charset="utf-8")
    # The dashboard's pages too (Jinja2 templates, Jinja2's own Babel extractor).
    found = list(extract_from_dir(ROOT / "siege_sync", method_map=[
        ("**.py", "python"), ("**/templates/**.html", "jinja2")],
        keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)))
    for lineno, message, comments, context in extract_from_file(
            "python", ROOT / "tools" / "demo.py", keywords=KEYWORDS):
        found.append(("../tools/demo.py", lineno, message, comments, context))
    for filename, lineno, message, comments, context in found:
        template.add(message, None, [(f"siege_sync/{filename}", lineno)],
                     auto_comments=comments, context=context,
                     flags=("python-brace-format",) if "{" in str(message) else ())
    for message in ARGPARSE:
        template.add(message, None, [("argparse", 0)])
    return template


def french() -> Catalog:
    with FRENCH.open("rb") as source:
        return read_po(source, locale="fr")


def missing(template: Catalog, catalog: Catalog) -> list[str]:
    """The texts of ``template`` without a translation (or a fuzzy one) in ``catalog``."""
    out = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id)
        strings = found.string if found is not None else None
        if found is None or found.fuzzy or not strings or (
                isinstance(strings, tuple) and not all(strings)):
            out.append(message.id if isinstance(message.id, str) else message.id[0])
    return out


def update() -> list[str]:
    """Merge the code's texts into the French catalog; the ones still untranslated."""
    template = extract()
    catalog = french()
    catalog.update(template, no_fuzzy_matching=True)
    with FRENCH.open("wb") as out:
        write_po(out, catalog, width=100, omit_header=False, ignore_obsolete=True,
                 sort_by_file=False)
    return missing(template, catalog)


def main() -> int:
    untranslated = update()
    for text in untranslated:
        print(f"untranslated: {text!r}")
    print(f"{FRENCH.relative_to(ROOT)}: {len(untranslated)} text(s) without a French "
          "translation", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
