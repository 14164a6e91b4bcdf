"""A resynced site's generators go on from where its old database had them.

A resync puts the siège's copy in place of the site's database, and the copy's generators
hold the siège's values. A generator the application numbers its own documents with —
invoices numbered per shop, ``UNIQUE (SITE, NUM)`` — then handed out again numbers the shop
had used: its next invoices were refused by the shop's own constraint (chaos seed 322), or,
without one, two invoices of the shop carried one number. So each generator of the copy is
raised to the old database's value when that is higher (``carry_over``); generators only ever
move forward, as ``[generators]`` ranges do at install (which still apply, after this).

Owns reading the application's generators (never the node's own ``SYNC$`` ones) and raising
them. Must never lower one.
"""

from __future__ import annotations

import logging

from firebird.driver import Connection

from ..db.database import quote, transaction

log = logging.getLogger(__name__)


def generator_values(con: Connection) -> dict[str, int]:
    """The application's generators and their current values (the node's own left out)."""
    with transaction(con) as tm:
        cur = tm.cursor()
        try:
            cur.execute("SELECT TRIM(RDB$GENERATOR_NAME) FROM RDB$GENERATORS "
                        "WHERE COALESCE(RDB$SYSTEM_FLAG, 0) = 0")
            names = [name for (name,) in cur.fetchall() if not name.startswith("SYNC$")]
            out = {}
            for name in names:
                cur.execute(f"SELECT GEN_ID({quote(name, con.sql_dialect)}, 0) "
                            "FROM RDB$DATABASE")
                out[name] = int(cur.fetchone()[0])
        finally:
            cur.close()
    return out


def carry_over(con: Connection, old: dict[str, int], site: str) -> list[str]:
    """Raise each generator of ``con`` that the old database held higher to the old value;
    returns what it did, for the resync's summary and log."""
    done = []
    for name, value in sorted(generator_values(con).items()):
        before = old.get(name)
        if before is None or before <= value:
            continue
        with transaction(con) as tm:
            cur = tm.cursor()
            cur.execute(f"ALTER SEQUENCE {quote(name, con.sql_dialect)} RESTART WITH "
                        f"{int(before)}")
            cur.close()
        done.append(f"{name} {value} -> {before}")
        log.info("[%s] resync: generator %s goes on from the old database's %d (the copy "
                 "held %d)", site, name, before, value)
    return done
