"""Two sites without generator ranges both create invoice 1 with their own lines (issue 16
item 8, DESIGN §3.5): the later insert wins the key, the other header is on record as a lost
life — and the losing site's lines, which now hang under the winner's invoice, are on record
with it (``reparented``, naming the lost life), identically at both sites, so the operator
sees the whole collision. The rows themselves stay (their parent key exists) and are equal
everywhere. Real embedded databases, rows and records read independently at each site.
"""

from __future__ import annotations

import time

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import all_events, run_sql
from tests.test_tx_order import table

DDL = [
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, CUSTOMER VARCHAR(20))",
    "CREATE TABLE INVOICE_LINE (ID INTEGER NOT NULL PRIMARY KEY, "
    "INVOICE_ID INTEGER NOT NULL REFERENCES INVOICE (ID), AMOUNT INTEGER)",
]
SITES = ("lyon", "nice")


def records(con) -> set[tuple]:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT IDENT, TBL_NO, KIND, GEN, LOSER, COL, WINNER FROM SYNC$CONFLICTS")
        out = {tuple(v.strip() if isinstance(v, str) else v for v in r)
               for r in cur.fetchall()}
        cur.close()
    return out


def exchange(cons: dict, appliers: dict, src: str, dst: str) -> int:
    appliers[src].apply([])
    result = appliers[dst].apply(all_events(cons[src]))
    assert not result.refused and not result.pending, result
    return result.applied_events


def both_ways(cons: dict, appliers: dict) -> None:
    exchange(cons, appliers, "lyon", "nice")
    exchange(cons, appliers, "nice", "lyon")


def new_invoice(con, customer: str, lines: dict[int, int]) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        cur.execute("INSERT INTO INVOICE (ID, CUSTOMER) VALUES (1, ?)", (customer,))
        for ident, amount in lines.items():
            cur.execute("INSERT INTO INVOICE_LINE (ID, INVOICE_ID, AMOUNT) VALUES (?, 1, ?)",
                        (ident, amount))
        cur.close()


def same_at_both(cons: dict) -> tuple[dict, list[conflicts.Conflict]]:
    seen = [{t: table(con, t) for t in ("INVOICE", "INVOICE_LINE")} for con in cons.values()]
    assert seen[0] == seen[1], seen
    on_record = [records(con) for con in cons.values()]
    assert on_record[0] == on_record[1], on_record
    listed = conflicts.listing(cons["lyon"])
    assert len(listed) == len(on_record[0])
    return seen[0], listed


def test_the_losing_sites_lines_go_on_record_with_its_invoice(make_db):
    cons = {name: make_db(name, ddl=DDL) for name in SITES}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}
    new_invoice(cons["lyon"], "Dupont", {11: 100, 12: 200})
    # Capture times have millisecond resolution and each site's engine clock is mapped to UTC
    # on its own: 20 ms apart, nice's insert is surely the later one.
    time.sleep(0.02)
    new_invoice(cons["nice"], "Martin", {21: 5, 22: 7})  # stamped later: it wins the key
    both_ways(cons, appliers)

    content, listed = same_at_both(cons)
    assert content["INVOICE"] == {1: ("Martin",)}
    assert content["INVOICE_LINE"] == {11: (1, 100), 12: (1, 200), 21: (1, 5), 22: (1, 7)}, \
        "the lines stay: hidden, they would belong to an invoice that is nowhere"
    header = [c for c in listed if c.kind == "generation"]
    assert len(header) == 1 and header[0].table == "INVOICE"
    assert header[0].loser.startswith("lyon/") and header[0].winner.startswith("nice/")
    lines = sorted((c for c in listed if c.kind == "reparented"),
                   key=lambda c: c.key[0].integer)
    assert [c.key[0].integer for c in lines] == [11, 12], listed
    for line in lines:
        assert line.table == "INVOICE_LINE" and line.column == "INVOICE_ID"
        assert line.generation == header[0].loser, "names the lost life"
        assert line.winner == header[0].winner and line.loser.startswith("lyon/")
    assert {c.kind for c in listed} == {"generation", "reparented"}

    # A line added knowingly to the winner's invoice is no loss; a losing line deleted
    # (the operator tidies up) leaves the record, at both sites.
    run_sql(cons["lyon"], "INSERT INTO INVOICE_LINE (ID, INVOICE_ID, AMOUNT) VALUES (13, 1, 9)")
    run_sql(cons["nice"], "DELETE FROM INVOICE_LINE WHERE ID = 11")
    both_ways(cons, appliers)
    both_ways(cons, appliers)
    content, listed = same_at_both(cons)
    assert set(content["INVOICE_LINE"]) == {12, 13, 21, 22}
    assert sorted(c.key[0].integer for c in listed if c.kind == "reparented") == [12]
    assert exchange(cons, appliers, "lyon", "nice") == 0
    assert exchange(cons, appliers, "nice", "lyon") == 0
