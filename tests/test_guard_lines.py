"""Guarding an application trigger must not move the lines of its own statements: the
application's error messages ("At trigger 'X' line: N, col: M") point into its vendor's source,
and support desks read them (issue 18, item 6). A guard used to take a line of its own after the
body's BEGIN, so every line number the application reported moved by one once guarded."""

from __future__ import annotations

import re

import pytest
from firebird.driver import DatabaseError

from siege_sync.node.db import guard
from siege_sync.node.journal import capture

# The vendor's trigger fails on its fourth line (counted from the AS of its source) with an
# arithmetic error, as a pricing trigger dividing by a zero quantity does.
APP_DDL = [
    "CREATE TABLE LIGNE (ID INTEGER NOT NULL PRIMARY KEY, QTE INTEGER, MONTANT NUMERIC(15,2), "
    "PRIX_UNIT NUMERIC(15,2), LIBELLE VARCHAR(40) CHARACTER SET WIN1252)",
    "CREATE TRIGGER LIGNE_BI FOR LIGNE BEFORE INSERT AS\n"
    "BEGIN\n"
    "  NEW.LIBELLE = TRIM(NEW.LIBELLE) || ' ';\n"
    "  NEW.PRIX_UNIT = NEW.MONTANT / NEW.QTE;\n"
    "END",
]


def _error_position(con) -> tuple[int, int]:
    with pytest.raises(DatabaseError) as caught:
        con.execute_immediate("INSERT INTO LIGNE (ID, QTE, MONTANT, LIBELLE) "
                              "VALUES (1, 0, 12.50, 'Crème brûlée  ')")
    con.rollback()
    found = re.search(r"At trigger 'LIGNE_BI' line: (\d+), col: (\d+)", str(caught.value))
    assert found, str(caught.value)
    return int(found.group(1)), int(found.group(2))


def _source(con) -> str:
    cur = con.cursor()
    cur.execute("SELECT RDB$TRIGGER_SOURCE FROM RDB$TRIGGERS WHERE RDB$TRIGGER_NAME = 'LIGNE_BI'")
    (source,) = cur.fetchone()
    cur.close()
    con.commit()
    return source if isinstance(source, str) else source.read()


def test_a_guarded_trigger_reports_its_errors_at_the_vendors_line_numbers(make_db):
    con = make_db(ddl=APP_DDL)
    before = _error_position(con)
    assert before[0] == 4
    capture.install(con)
    assert guard.is_guarded(_source(con))
    assert _error_position(con) == before


def test_install_moves_a_guard_of_an_earlier_version_onto_the_begin_line(make_db):
    con = make_db(ddl=APP_DDL)
    before = _error_position(con)
    source = _source(con)
    at = source.index("BEGIN") + len("BEGIN")
    # How earlier versions placed it: a line of its own, shifting every line below by one.
    con.execute_immediate(f"ALTER TRIGGER LIGNE_BI {source[:at]}\n  {guard.GUARD}{source[at:]}")
    con.commit()
    assert _error_position(con)[0] == before[0] + 1
    capture.install(con)
    assert _error_position(con) == before
    assert guard.remove_guard(_source(con)) == source
