"""Creating real Firebird databases for tests (embedded, or a path a server will open).

Under pytest (``tests/conftest.py`` sets ``TEST_DATABASES_ENV`` to a folder of the session),
two things make the ~1,000 databases of ``make test`` cheap, measured on the 2-core CI machine:

* every database is created with forced writes off (asynchronous writes). A commit still hands
  the pages it changed to the operating system before it returns, so a killed node, a killed
  Firebird server or a copied file sees every committed transaction, as with forced writes;
  only an operating-system crash or a power cut could lose more, which no test makes. With
  forced writes each of the ~80 commits of ``capture.install`` waited for the disk: 0.6 s
  per database, 0.1 s without.
* an embedded database owned by SYSDBA is a file copy of an empty template (one per dialect
  and character set, created once by the session and closed: Firebird allows a file copy of a
  closed database), not a CREATE DATABASE each time (0.13 s, a copy 0.01 s). A copy is the
  same empty database: page size, ODS, dialect, character set, owner. It keeps the
  template's creation date (``MON$CREATION_DATE``); the code compares a database's creation
  date only with its own earlier one (a gbak restore), never across sites.

Outside pytest (the benchmarks, ``make chaos``, the demo) the variable is unset: databases are
created with CREATE DATABASE and the engine's defaults (forced writes on), as a site's are.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from firebird.driver import Connection, create_database, driver_config

from siege_sync.node.db.database import DatabaseSpec, open_connection

# The folder of the session's templates; set (by tests/conftest.py) means "a test database".
TEST_DATABASES_ENV = "SIEGE_TEST_DATABASES"

_LOCK = threading.Lock()  # the driver's creation defaults are process-wide


def create_db(path: Path, dialect: int = 3, ddl: list[str] | None = None,
              charset: str = "UTF8", dsn: str | None = None, user: str = "SYSDBA",
              password: str | None = None) -> Connection:
    """Create the database, run ``ddl`` (each statement committed), return a connection
    opened the way the node opens it."""
    target = dsn or str(path)
    templates = os.environ.get(TEST_DATABASES_ENV)
    if (templates and dsn is None and user.upper() == "SYSDBA"
            and not Path(path).exists()):  # an existing file: the engine's own refusal
        # shutil.copy keeps the file mode the engine gave the template (0660), as a
        # CREATE DATABASE would.
        shutil.copy(_template(Path(templates), dialect, charset), path)
    else:
        with _LOCK:
            _create(target, dialect, charset, user, password,
                    forced_writes=False if templates else None)
    con = open_connection(DatabaseSpec(target, user=user, password=password))
    for stmt in ddl or []:
        con.execute_immediate(stmt)
        con.commit()
    return con


def _create(target: str, dialect: int, charset: str, user: str, password: str | None,
            forced_writes: bool | None) -> None:
    d = driver_config.db_defaults
    saved = (d.page_size.value, d.db_charset.value, d.db_sql_dialect.value,
             d.sql_dialect.value, d.forced_writes.value)
    d.page_size.value, d.db_charset.value = 8192, charset
    d.db_sql_dialect.value = d.sql_dialect.value = dialect
    d.forced_writes.value = forced_writes
    try:
        create_database(target, user=user, password=password, charset="UTF8").close()
    finally:
        (d.page_size.value, d.db_charset.value, d.db_sql_dialect.value,
         d.sql_dialect.value, d.forced_writes.value) = saved


def _template(folder: Path, dialect: int, charset: str) -> Path:
    """The session's closed, empty template for this dialect and charset (made on first use;
    written under another name and renamed, so no process ever copies a half-made one)."""
    template = folder / f"empty-dialect{dialect}-{charset.lower()}.fdb"
    with _LOCK:
        if not template.exists():
            folder.mkdir(parents=True, exist_ok=True)
            making = folder / f"making-{os.getpid()}-{template.name}"
            making.unlink(missing_ok=True)
            _create(str(making), dialect, charset, "SYSDBA", None, forced_writes=False)
            os.replace(making, template)
    return template
