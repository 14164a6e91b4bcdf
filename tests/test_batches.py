"""What a peer lacks of many origins travels in few messages (issue 22: the scale run).

In a quiet round every site lacks every other site's heartbeat: one message per origin made
the receiving site run one whole apply call per origin, and a round's cost grew with the
square of the sites (`tools/bench_scale.py`: 41.7 s for a quiet round of 50 sites, 18.8 s
once they travel together). Real embedded databases and pipelines (``Replica``); checked by
reading the receiving site's table.
"""

from __future__ import annotations

from siege_sync.proto import events_pb2
from tests.test_restore_republish import Mesh, run_sql, select

SITES = ("siege", "lyon", "nice", "brest", "vannes")


def test_a_little_of_many_origins_comes_in_one_message_and_a_lot_in_several(make_db, tmp_path):
    mesh = Mesh(make_db, tmp_path, SITES)
    writers = SITES[1:4]  # vannes writes nothing and has not met the siège yet
    for n, site in enumerate(writers, start=1):
        run_sql(mesh.cons[site], "INSERT INTO T (ID, A, B) VALUES (?, ?, ?)",
                (n, f"caf\u00e9 de {site}", n))
    for site in writers:
        mesh.exchange(site, "siege")  # the siège gathers

    siege, vannes = mesh.replicas["siege"], mesh.replicas["vannes"]
    messages = [m for m in siege.outgoing(vannes.vector()) if m.events]
    origins = {events_pb2.Event.FromString(b).origin.site for m in messages for b in m.events}
    assert origins == {"lyon", "nice", "brest"}
    assert len(messages) == 1, [len(m.events) for m in messages]

    # More than a message holds, of one origin: still cut, whole transactions each.
    for n in range(30):
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, B) VALUES (?, 'lot', ?)",
                (200 + n, n))
    mesh.exchange("lyon", "siege")
    messages = [m for m in siege.outgoing(vannes.vector(), max_events=10) if m.events]
    assert len(messages) >= 3 and all(len(m.events) <= 10 for m in messages)

    mesh.exchange("vannes", "siege")
    assert len(select(mesh.cons["vannes"], "SELECT ID FROM T")) == 3 + 30
