"""Rows that reference each other, deleted at one site while another site adds a row
referencing one of them (DESIGN §3.5): the row brings its parent back, the parent brings its
partner back, and the partner references the parent — a cycle. Every site restores the pair
(one row first without its nullable reference, then the other, then the reference put
back), the deletes are on record as kept by a reference, and no site's stream stops. A cycle
whose references cannot be NULL cannot be restored one row at a time: the transaction is
held with a message that says which rows and what to do.

Real embedded databases, three sites; convergence is checked by reading the application
tables of every site independently.
"""

from __future__ import annotations

import pytest

from siege_sync.node.journal import status
from tests.test_apply import all_events, run_sql
from tests.test_tx_order import make_mesh, send, spread, table

PAIR_DDL = [
    "CREATE TABLE A (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20), PARTNER INTEGER)",
    "CREATE TABLE B (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20), "
    "PARTNER INTEGER REFERENCES A (ID) ON DELETE CASCADE)",
    "ALTER TABLE A ADD CONSTRAINT A_PARTNER FOREIGN KEY (PARTNER) REFERENCES B (ID) "
    "ON DELETE CASCADE",
    "CREATE TABLE NOTE_A (ID INTEGER NOT NULL PRIMARY KEY, "
    "A_ID INTEGER NOT NULL REFERENCES A (ID), TXT VARCHAR(20))",
    "CREATE TABLE NOTE_B (ID INTEGER NOT NULL PRIMARY KEY, "
    "B_ID INTEGER NOT NULL REFERENCES B (ID), TXT VARCHAR(20))",
]
TABLES = ("A", "B", "NOTE_A", "NOTE_B")


def records(con) -> set[tuple[str, str, str, str]]:
    """What is on record (kind, table number, loser, winner), read independently."""
    from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT KIND, TBL_NO, LOSER, WINNER FROM SYNC$CONFLICTS")
        out = {(k.strip(), str(n), loser.strip(), (w or "").strip())
               for k, n, loser, w in cur.fetchall()}
        cur.close()
    return out


def same_everywhere(cons: dict) -> dict[str, dict[int, tuple]]:
    seen = {site: {t: table(con, t) for t in TABLES} for site, con in cons.items()}
    first = next(iter(seen.values()))
    for site, content in seen.items():
        assert content == first, f"{site} differs: {content} != {first}"
    on_record = {site: records(con) for site, con in cons.items()}
    assert len({frozenset(r) for r in on_record.values()}) == 1, on_record
    return first


def settled(cons: dict, appliers: dict) -> None:
    """The streams are not stuck: a further exchange both ways moves nothing, and no site
    shows a parked (held or waiting) origin."""
    for src in cons:
        for dst in cons:
            if src != dst:
                appliers[src].apply([])
                result = appliers[dst].apply(all_events(cons[src]))
                assert not result.refused and not result.pending, (src, dst, result)
                assert result.applied_events == 0, (src, dst, result.applied_events)
    for site, con in cons.items():
        assert status.capture_status(con).parked == [], (site, status.capture_status(con))


@pytest.mark.parametrize(("note", "first", "b_partner"), [
    ("NOTE_A", "lyon", "nullable"), ("NOTE_A", "nice", "nullable"),
    ("NOTE_B", "nice", "nullable"), ("NOTE_A", "nice", "not null"),
    ("NOTE_B", "lyon", "not null"),
])
def test_a_pair_deleted_while_a_row_references_one_of_them_comes_back_whole(make_db, note,
                                                                            first, b_partner):
    # With B.PARTNER NOT NULL, the row closing the cycle from NOTE_A (B) cannot go first
    # without its reference: A, the cycle's first row, goes first without its own.
    ddl = list(PAIR_DDL)
    if b_partner == "not null":
        ddl[1] = ddl[1].replace("PARTNER INTEGER", "PARTNER INTEGER NOT NULL")
    cons, appliers = make_mesh(make_db, ddl)
    run_sql(cons["nice"], "INSERT INTO A (ID, NAME) VALUES (1, 'Acme')")
    run_sql(cons["nice"], "INSERT INTO B (ID, NAME, PARTNER) VALUES (1, 'Acme SA', 1)")
    run_sql(cons["nice"], "UPDATE A SET PARTNER = 1 WHERE ID = 1")
    spread(cons, appliers, "nice")
    assert table(cons["lyon"], "A") == {1: ("Acme", 1)}

    # lyon deletes the pair in one transaction (A, and B by the cascade) while nice adds a
    # row referencing one of them.
    run_sql(cons["lyon"], "DELETE FROM A WHERE ID = 1")
    column = "A_ID" if note == "NOTE_A" else "B_ID"
    run_sql(cons["nice"], f"INSERT INTO {note} (ID, {column}, TXT) VALUES (10, 1, 'call')")
    second = "nice" if first == "lyon" else "lyon"
    send(cons, appliers, first, "siege")
    send(cons, appliers, second, "siege")
    send(cons, appliers, "siege", "lyon")
    send(cons, appliers, "siege", "nice")

    content = same_everywhere(cons)
    assert content["A"] == {1: ("Acme", 1)} and content["B"] == {1: ("Acme SA", 1)}, content
    assert content[note] == {10: (1, "call")}
    kinds = sorted((k, loser.split("#")[0]) for k, _n, loser, _w in records(cons["siege"]))
    assert kinds == [("kept-by-reference", "lyon/1"), ("kept-by-reference", "lyon/1")], kinds
    settled(cons, appliers)


COUPLE_DDL = [
    # Partners that cannot be NULL: a row first points at itself, then at its partner.
    "CREATE TABLE PERSON (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(20), "
    "PARTNER INTEGER NOT NULL REFERENCES PERSON (ID) ON DELETE CASCADE)",
    "CREATE TABLE NOTE_P (ID INTEGER NOT NULL PRIMARY KEY, "
    "P_ID INTEGER NOT NULL REFERENCES PERSON (ID), TXT VARCHAR(20))",
]


def test_a_cycle_without_a_nullable_reference_is_held_saying_which_rows(make_db):
    cons, appliers = make_mesh(make_db, COUPLE_DDL)
    run_sql(cons["nice"], "INSERT INTO PERSON (ID, NAME, PARTNER) VALUES (1, 'Anne', 1)")
    run_sql(cons["nice"], "INSERT INTO PERSON (ID, NAME, PARTNER) VALUES (2, 'Paul', 1)")
    run_sql(cons["nice"], "UPDATE PERSON SET PARTNER = 2 WHERE ID = 1")
    spread(cons, appliers, "nice")
    run_sql(cons["lyon"], "DELETE FROM PERSON WHERE ID = 1")  # 2 by the cascade
    run_sql(cons["nice"], "INSERT INTO NOTE_P (ID, P_ID, TXT) VALUES (10, 1, 'call')")
    # At lyon, which deleted the pair, nice's note needs both rows back.
    appliers["nice"].apply([])
    result = appliers["lyon"].apply(all_events(cons["nice"]))
    assert result.applied_events == 0 and len(result.refused) == 1, result
    message = result.refused[0]
    assert "PERSON (1) -> PERSON (2) -> back to the first" in message, message
    assert "cannot be NULL" in message and "operator" in message, message
    held = [p for p in status.capture_status(cons["lyon"]).parked if p.origin == "nice"]
    assert len(held) == 1 and "PERSON (2)" in held[0].reason, held
    assert table(cons["lyon"], "PERSON") == {} and table(cons["lyon"], "NOTE_P") == {}
