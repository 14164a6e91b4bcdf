"""Table digests: order-independent, and sensitive to the last bit of any value."""

from __future__ import annotations

from siege_sync.node.db.database import transaction
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal.digest import table_digest

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, X DOUBLE PRECISION, "
       "N NUMERIC(18,4), R VARCHAR(5) CHARACTER SET NONE, B BLOB SUB_TYPE BINARY)"]
ROWS = [(1, 0.1, "1.0001", b"\x00\xff", b"x" * 100_000), (2, -0.0, "-5", b"", None),
        (3, 1e308, "0", None, b"")]


def fill(con, rows) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.executemany("INSERT INTO T (ID, X, N, R, B) VALUES (?, ?, ?, ?, ?)", rows)
        cur.close()


def digest(con):
    return table_digest(con, introspect(con).tables["T"])


def test_digest_ignores_order_and_sees_the_last_bit(make_db):
    a, b, c = (make_db(n, ddl=DDL) for n in ("a", "b", "c"))
    fill(a, ROWS)
    fill(b, list(reversed(ROWS)))
    assert digest(a) == digest(b) and digest(a).rows == 3
    changed = list(ROWS)
    changed[0] = (1, 0.1 + 2**-56 * 2, "1.0001", b"\x00\xff", b"x" * 100_000)  # last bit
    assert changed[0][1] != 0.1
    fill(c, changed)
    assert digest(c) != digest(a)
