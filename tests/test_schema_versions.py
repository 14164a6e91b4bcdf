"""Sites on different schema versions keep syncing what they share (DESIGN §3.8): one site
upgrades (a column added, one dropped, a table added, a VARCHAR widened) while the others
have not; the new column's values are kept by the others and written once they upgrade; the
new table's events wait at the others and are applied once they have it; every site
upgrades in turn and all converge, nothing lost."""

from __future__ import annotations

from siege_sync.node.daemon import Node
from siege_sync.node.database import DatabaseSpec, open_connection
from siege_sync.node.digest import table_digest
from siege_sync.node.schema import introspect
from siege_sync.node.upgrade import upgrade
from tests.test_apply import run_sql
from tools.localmesh import LocalMesh

DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10), OLD_COL INTEGER)"]
SCRIPT = """ALTER TABLE T ADD C INTEGER;
ALTER TABLE T DROP OLD_COL;
ALTER TABLE T ALTER A TYPE VARCHAR(40);
CREATE TABLE U (ID INTEGER NOT NULL PRIMARY KEY, V VARCHAR(10));
COMMIT;
"""


def rows(con, sql: str) -> list[tuple]:
    with con.transaction_manager() as tm:
        tm.begin()
        cur = tm.cursor()
        cur.execute(sql)
        found = sorted(cur.fetchall())
        tm.commit()
    return found


def upgrade_site(mesh: LocalMesh, site: str, script) -> None:
    """As an operator does it: the node stopped, the application closed, then
    `siege-node upgrade --script`, then the node started again."""
    node = mesh.nodes[site]
    node.stop(grace=1)
    mesh.cons[site].close()
    outcome = upgrade(node.cfg, script)
    assert outcome.failure is None, outcome.failure
    mesh.nodes[site] = Node(node.cfg)
    mesh.nodes[site].start()
    mesh.cons[site] = open_connection(DatabaseSpec(node.cfg.database.dsn))


def sync(mesh: LocalMesh) -> list[str]:
    problems = []
    for _ in range(2):
        for site in ("lyon", "nice"):
            problems += list(mesh.exchange("siege", site).problems)
    return problems


def test_mixed_schema_versions_keep_syncing_and_converge(tmp_path):
    script = tmp_path / "upgrade.sql"
    script.write_text(SCRIPT)
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False}, DDL)
    try:
        run_sql(mesh.cons["siege"], "INSERT INTO T VALUES (1, 'one', 1)")
        assert not [p for p in sync(mesh) if "differs" not in p]

        upgrade_site(mesh, "lyon", script)
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, C) VALUES (2, 'two', 22)")
        run_sql(mesh.cons["lyon"], "INSERT INTO U (ID, V) VALUES (1, 'only new')")
        run_sql(mesh.cons["lyon"], "UPDATE T SET C = 11 WHERE ID = 1")
        run_sql(mesh.cons["lyon"], "INSERT INTO T (ID, A, C) VALUES (3, 'three', 33)")
        run_sql(mesh.cons["nice"], "INSERT INTO T (ID, A, OLD_COL) VALUES (4, 'four', 4)")
        run_sql(mesh.cons["siege"], "UPDATE T SET A = 'uno' WHERE ID = 1")
        problems = sync(mesh)
        assert all("schema differs" in p for p in problems), problems
        # What they share went everywhere; lyon's later events were not held up by U.
        for site in ("siege", "nice"):
            assert rows(mesh.cons[site], "SELECT ID, A FROM T") == \
                [(1, "uno"), (2, "two"), (3, "three"), (4, "four")]
        assert rows(mesh.cons["lyon"], "SELECT ID, A, C FROM T") == \
            [(1, "uno", 11), (2, "two", 22), (3, "three", 33), (4, "four", None)]

        upgrade_site(mesh, "nice", script)  # the kept values and the kept table arrive
        assert rows(mesh.cons["nice"], "SELECT ID, C FROM T") == \
            [(1, 11), (2, 22), (3, 33), (4, None)]
        assert rows(mesh.cons["nice"], "SELECT ID, V FROM U") == [(1, "only new")]
        run_sql(mesh.cons["nice"], "UPDATE T SET C = 44, A = 'a value only v2 holds' "
                                   "WHERE ID = 4")
        upgrade_site(mesh, "siege", script)
        assert not [p for p in sync(mesh) if "differs" not in p]
        assert not sync(mesh), "every site on the same schema: no problem left"
        for table in ("T", "U"):
            digests = {table_digest(con, introspect(con).tables[table]).digest
                       for con in mesh.cons.values()}
            assert len(digests) == 1, table
        assert rows(mesh.cons["siege"], "SELECT ID, A, C FROM T") == \
            [(1, "uno", 11), (2, "two", 22), (3, "three", 33), (4, "a value only v2 holds", 44)]
    finally:
        mesh.close()


def test_a_schema_changed_behind_the_node_is_reported_every_round(tmp_path):
    """A vendor script run without `siege-node upgrade` (an added column and table still
    work with capture in place): every exchange says what is not captured and what to do,
    and so does the node's Status; an install ends it."""
    from siege_sync.node import capture
    from siege_sync.proto import sync_pb2
    from tests.test_mesh import stub_as

    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False}, DDL)
    try:
        lyon = mesh.cons["lyon"]
        for stmt in ("ALTER TABLE T ADD NOTE VARCHAR(20)",
                     "CREATE TABLE W (ID INTEGER NOT NULL PRIMARY KEY)"):
            lyon.execute_immediate(stmt)
            lyon.commit()
        problems = list(mesh.exchange("siege", "lyon").problems)
        assert any("T.NOTE is new and not captured" in p and "table W is new" in p
                   and "siege-node upgrade" in p for p in problems), problems
        ch, stub = stub_as(mesh, "siege", "lyon")
        with ch:
            status = stub.Status(sync_pb2.StatusRequest(), timeout=30)
        assert "column T.NOTE is new and not captured" in status.schema_changes
        capture.install(lyon)
        assert not [p for p in mesh.exchange("siege", "lyon").problems
                    if "not captured" in p]
    finally:
        mesh.close()
