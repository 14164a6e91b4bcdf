"""Shared fixtures: real embedded Firebird databases in temporary folders."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Embedded Firebird as a non-root user needs a private lock folder; every process opening a
# file must use the same one, so it is fixed before the client library loads.
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# The programs speak the shell's language (siege_sync/i18n): the tests read English unless
# one asks for another (tests/test_i18n.py), whatever the machine's LANG.
for _name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
    os.environ.pop(_name, None)

from firebird.driver import Connection  # noqa: E402

from tests.fbdb import TEST_DATABASES_ENV, create_db  # noqa: E402
from tools.fbserver import FirebirdServer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def test_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Databases made by ``tests/fbdb.py`` in this session are test databases: forced writes
    off, embedded ones copied from a template in this folder (see that module for why that
    proves the same). Subprocesses started by tests inherit it."""
    if os.environ.get(TEST_DATABASES_ENV):  # set by an outer run: share its templates
        yield Path(os.environ[TEST_DATABASES_ENV])
        return
    folder = tmp_path_factory.mktemp("databases")
    os.environ[TEST_DATABASES_ENV] = str(folder)
    try:
        yield folder
    finally:
        del os.environ[TEST_DATABASES_ENV]


@pytest.fixture(scope="session")
def fb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirebirdServer]:
    """A private Firebird 3 server on 127.0.0.1 (free port) shared by the whole session.

    Tests sharing it use their own database names; a test that stops or breaks the server
    uses its own ``FirebirdServer(tmp_path)``.
    """
    with FirebirdServer(tmp_path_factory.mktemp("fbserver")) as srv:
        yield srv


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[Callable[..., Connection]]:
    """Create embedded databases: ``make_db(name, dialect=3, ddl=[...])`` -> open connection."""
    opened: list[Connection] = []

    def factory(name: str = "site", dialect: int = 3, ddl: list[str] | None = None,
                charset: str = "UTF8") -> Connection:
        con = create_db(tmp_path / f"{name}.fdb", dialect=dialect, ddl=ddl or [], charset=charset)
        opened.append(con)
        return con

    yield factory
    for con in opened:
        if not con.is_closed():
            con.close()
