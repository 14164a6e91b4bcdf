"""An edit replaces knowingly only what its user could see (issue 17, item 3; DESIGN §3.3).

Two real embedded sites whose NOTE column differs in width (the siège widened it, the shop
has not upgraded yet). The siège writes a note the shop's column cannot hold: the shop's
registers keep it, its row keeps the old note. A shop user then edits that note. That edit
did not knowingly replace the long note (nobody at the shop ever saw it): the two are
concurrent, the later stamp wins everywhere, and the long note is on record at both sites —
never silently overwritten.
"""

from __future__ import annotations

from siege_sync.node.db.database import READ_COMMITTED_RW, transaction
from siege_sync.node.journal import capture, conflicts
from siege_sync.node.pipeline.apply import Applier
from tests.test_apply import all_events

LONG = "a note the shop's column is too narrow for"


def _table(width: int) -> list[str]:
    return [f"CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, NOTE VARCHAR({width}))"]


def _run(con, sql: str, params: tuple = ()) -> None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        tm.cursor().execute(sql, params)


def _note(con) -> str | None:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT NOTE FROM T WHERE ID = 1")
        row = cur.fetchone()
        cur.close()
    return row[0] if row else None


def _send(appliers: dict, cons: dict, src: str, dst: str) -> None:
    appliers[src].apply([])  # publish first, as a node does before serving
    result = appliers[dst].apply(all_events(cons[src]))
    assert not result.refused, result.refused


def test_an_edit_of_a_value_its_site_could_not_show_is_concurrent_and_on_record(make_db):
    cons = {"siege": make_db("siege", ddl=_table(60)), "shop": make_db("shop", ddl=_table(10))}
    for con in cons.values():
        capture.install(con)
    appliers = {name: Applier(con, name) for name, con in cons.items()}

    _run(cons["siege"], "INSERT INTO T (ID, NOTE) VALUES (1, 'first')")
    _send(appliers, cons, "siege", "shop")
    assert _note(cons["shop"]) == "first"

    _run(cons["siege"], "UPDATE T SET NOTE = ? WHERE ID = 1", (LONG,))
    _send(appliers, cons, "siege", "shop")
    assert _note(cons["shop"]) == "first", "the shop's column cannot hold it: kept aside"

    _run(cons["shop"], "UPDATE T SET NOTE = 'shop edit' WHERE ID = 1")
    _send(appliers, cons, "shop", "siege")
    _send(appliers, cons, "siege", "shop")

    # The shop's edit is the later one: it wins at both sites.
    assert _note(cons["siege"]) == "shop edit"
    assert _note(cons["shop"]) == "shop edit"
    # ... and the note nobody at the shop saw is on record at both, not silently gone.
    for site, con in cons.items():
        lost = [c for c in conflicts.listing(con) if c.column == "NOTE"]
        assert len(lost) == 1, f"{site}: {lost}"
        assert lost[0].value is not None and lost[0].value.text == LONG, f"{site}: {lost[0]}"
        assert lost[0].loser.startswith("siege"), f"{site}: {lost[0]}"
