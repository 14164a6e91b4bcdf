"""The package build compiles the operator's translations (siege_sync/i18n/locale/*/LC_MESSAGES/
*.po) into the ``.mo`` catalogs gettext reads, next to them — for a wheel and for the
editable install `make venv` makes alike. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithCatalogs(build_py):
    def run(self) -> None:
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for po in sorted(Path(__file__).parent.glob("siege_sync/i18n/locale/*/LC_MESSAGES/*.po")):
            with po.open("rb") as source:
                catalog = read_po(source, locale=po.parts[-3])
            with po.with_suffix(".mo").open("wb") as out:
                write_mo(out, catalog)  # (fuzzy entries are left out: English shows)
        super().run()


setup(cmdclass={"build_py": BuildWithCatalogs})
