"""Creating real Firebird databases for tests (embedded, or a path a server will open)."""

from __future__ import annotations

import threading
from pathlib import Path

from firebird.driver import Connection, create_database, driver_config

from siege_sync.node.database import DatabaseSpec, open_connection

_LOCK = threading.Lock()


def create_db(path: Path, dialect: int = 3, ddl: list[str] | None = None,
              charset: str = "UTF8", dsn: str | None = None, user: str = "SYSDBA",
              password: str | None = None) -> Connection:
    """Create the database, run ``ddl`` (each statement committed), return a connection
    opened the way the node opens it."""
    target = dsn or str(path)
    with _LOCK:
        d = driver_config.db_defaults
        saved = (d.page_size.value, d.db_charset.value, d.db_sql_dialect.value, d.sql_dialect.value)
        d.page_size.value, d.db_charset.value = 8192, charset
        d.db_sql_dialect.value = d.sql_dialect.value = dialect
        try:
            con = create_database(target, user=user, password=password, charset="UTF8")
        finally:
            (d.page_size.value, d.db_charset.value, d.db_sql_dialect.value,
             d.sql_dialect.value) = saved
    con.close()
    con = open_connection(DatabaseSpec(target, user=user, password=password))
    for stmt in ddl or []:
        con.execute_immediate(stmt)
        con.commit()
    return con
