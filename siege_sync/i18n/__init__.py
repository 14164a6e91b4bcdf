"""The operator's language: English (the texts as written in the code) and French.

Owns choosing the language and speaking it: the gettext catalogs under ``locale/`` (the
French one is ``locale/fr/LC_MESSAGES/siege_sync.po``; its compiled ``.mo`` is built by the
package build, setup.py, never written by hand), the language a piece of work speaks, and the
locale's way of writing dates and numbers (Babel).

* ``language_from_env()``: ``siege-ctl``, ``siege-node`` and ``siege-certs`` speak the
  shell's ``LANGUAGE`` / ``LC_ALL`` / ``LC_MESSAGES`` / ``LANG`` (English when none names a
  language we have); the siège's reports and emails speak ``[operator] language`` from its
  config (siege/settings.py).
* ``speaking(language)``: a context manager; the work inside it (this thread, this context)
  speaks that language. ``use(language)`` for a whole command-line run.
* ``_(text)`` translates now; ``N_(text)`` only marks a text for the catalog (a constant
  translated where it is shown); ``ngettext(one, many, n)``.
* ``LANGUAGE_KEY``: the gRPC metadata by which ``siege-ctl`` asks the siège's service for
  its texts in its own language.
* ``when(iso_or_datetime)``, ``number(n)``, ``signed(n)``: a date and time, a number (with
  its sign), as the language writes them.

Texts use ``str.format`` placeholders (``{site}``), never positional ones, so a translation
may reorder them; tests/test_i18n.py fails when a marked text has no French translation or
a translation's placeholders differ.
Must never import anything else of siege_sync: every layer speaks through it.
"""

from __future__ import annotations

import contextlib
import functools
import gettext as _gettext
import os
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.numbers import format_decimal

DOMAIN = "siege_sync"
LANGUAGE_KEY = "accept-language"  # gRPC metadata: the language a caller reads
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "fr")  # English first: the texts in the code, and the default
_BABEL_LOCALE = {"en": "en_GB", "fr": "fr_FR"}  # (en_GB: 24-hour clock, day first)

_speaking: ContextVar[str] = ContextVar("siege_sync_language", default="en")


class LanguageError(ValueError):
    pass


def check_language(value: str, where: str) -> str:
    """``value`` as one of ``LANGUAGES``, or a LanguageError saying what is accepted."""
    code = value.strip().lower().replace("-", "_").split("_")[0]
    if code not in LANGUAGES:
        raise LanguageError(f"{where}: language {value!r} is not one siege-sync speaks "
                            f"({', '.join(LANGUAGES)})")
    return code


def language_from_env(env: dict[str, str] | None = None) -> str:
    """The shell's language as gettext reads it: ``LANGUAGE`` (a list), then ``LC_ALL``,
    ``LC_MESSAGES``, ``LANG``; the first we speak, else English. ``C`` / ``POSIX`` is
    English."""
    env = os.environ if env is None else env
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if not value:
            continue
        for entry in value.split(":"):
            code = entry.split(".")[0].split("@")[0].split("_")[0].lower()
            if code in LANGUAGES:
                return code
        if name != "LANGUAGE":
            return "en"  # a locale is set, in a language we do not speak
    return "en"


def use(language: str) -> None:
    """The current context (a command-line run's main thread) speaks ``language``."""
    _speaking.set(language if language in LANGUAGES else "en")


def use_for_command_line(env: dict[str, str] | None = None) -> str:
    """A command-line program's start: it speaks the shell's language (``language_from_env``),
    argparse's own words (``usage:``, ``options``, its errors) included — they are in our
    catalog, under gettext's default domain, which argparse reads. The language chosen."""
    language = language_from_env(env)
    use(language)
    if has_catalog(language) and language != "en":
        _gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
        _gettext.textdomain(DOMAIN)
        # argparse asks gettext, which reads the environment's language: the same choice.
    return language


@contextlib.contextmanager
def speaking(language: str) -> Iterator[None]:
    token = _speaking.set(language if language in LANGUAGES else "en")
    try:
        yield
    finally:
        _speaking.reset(token)


def current() -> str:
    return _speaking.get()


@functools.cache  # (read once per process: the files do not change under it)
def _catalog(language: str) -> _gettext.NullTranslations:
    return _gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


def _(text: str) -> str:
    return _catalog(_speaking.get()).gettext(text)


def N_(text: str) -> str:  # noqa: N802 - the name xgettext and Babel know
    return text


def ngettext(one: str, many: str, n: int) -> str:
    return _catalog(_speaking.get()).ngettext(one, many, n)


def has_catalog(language: str) -> bool:
    """Whether the compiled catalog of ``language`` is installed (English needs none)."""
    return language == "en" or (LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.mo").is_file()


def when(value: str | datetime, seconds: bool = True) -> str:
    """A date and time as the language writes them (``07/12/2026 21:05:03`` in French);
    an ISO text that does not parse is shown as it is. A time that says its offset (a
    change's, from another site) is shown in this machine's local time."""
    if isinstance(value, str):
        if not value:
            return ""
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone()
    pattern = "dd/MM/yyyy HH:mm:ss" if seconds else "dd/MM/yyyy HH:mm"
    if _speaking.get() == "en":
        pattern = "yyyy-MM-dd HH:mm:ss" if seconds else "yyyy-MM-dd HH:mm"
    return format_datetime(value, pattern, locale=_locale())


def number(value: float, digits: int = 0) -> str:
    """A number with the language's separators (``1 234,5`` in French)."""
    fmt = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, fmt, locale=_locale())


def signed(value: float, digits: int = 0) -> str:
    """``number`` with its sign always written (``+0,25``, ``-1,50``): a clock offset."""
    return ("-" if value < 0 else "+") + number(abs(value), digits)


def _locale() -> Locale:
    return Locale.parse(_BABEL_LOCALE[_speaking.get()])
