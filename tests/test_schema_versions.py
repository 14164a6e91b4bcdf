"""Sites on different schema versions keep syncing what they share (DESIGN §3.8): one site
upgrades (a column added, one dropped, a table added, a VARCHAR widened) while the others
have not; the new column's values are kept by the others and written once they upgrade; the
new table's events wait at the others and are applied once they have it; every site
upgrades in turn and all converge, nothing lost."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

from firebird.driver import DatabaseError

from siege_sync.node.db.database import DatabaseSpec, connection, open_connection
from siege_sync.node.db.schema import introspect
from siege_sync.node.journal import capture
from siege_sync.node.journal.digest import table_digest
from siege_sync.node.mesh.daemon import Node
from siege_sync.node.operations.upgrade import upgrade
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
    with connection(node.cfg.database) as con:
        # Regression: the new columns' fill was captured as this site's own writes.
        assert capture.pending_entries(con) == 0, "the catch-up's writes were captured"
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
    from siege_sync.node.journal import capture
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


WIDE_DDL = ["CREATE TABLE T (ID INTEGER NOT NULL PRIMARY KEY, A VARCHAR(10), "
            "N NUMERIC(9, 2), B INTEGER)"]
WIDEN = """ALTER TABLE T ALTER A TYPE VARCHAR(40);
ALTER TABLE T ALTER N TYPE NUMERIC(18, 2);
ALTER TABLE T ALTER B TYPE BIGINT;
COMMIT;
"""


def test_values_too_wide_for_a_site_wait_in_its_registers_until_its_columns_widen(tmp_path):
    """lyon widened T.A (VARCHAR 10 -> 40), T.N (NUMERIC 9 -> 18 digits) and T.B (INTEGER ->
    BIGINT) and writes values only the wider columns hold; siege and nice have not upgraded:
    the rest of each row and of lyon's work applies, the values are kept in the registers
    (neither truncated nor parking lyon), every exchange says so, and the upgrade writes
    them."""
    script = tmp_path / "widen.sql"
    script.write_text(WIDEN)
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False}, WIDE_DDL)
    try:
        run_sql(mesh.cons["siege"], "INSERT INTO T VALUES (1, 'one', 1.5, 1)")
        assert not sync(mesh)
        upgrade_site(mesh, "lyon", script)
        long = "a value only v2 holds"
        run_sql(mesh.cons["lyon"], f"UPDATE T SET A = '{long}', B = 7 WHERE ID = 1")
        run_sql(mesh.cons["lyon"], f"INSERT INTO T VALUES (5, '{long}!', 12345678901.25, "
                                   f"{2**40})")
        run_sql(mesh.cons["lyon"], "INSERT INTO T VALUES (6, 'short', 2.5, 9)")
        problems = sync(mesh)
        assert not [p for p in problems if "differs" not in p and "fit" not in p], problems
        for column, ctype in (("T.A", "VARCHAR(10)"), ("T.N", "NUMERIC(9,2)"),
                              ("T.B", "INTEGER")):
            assert any(f"of {column} by sites where that column is wider do not fit {ctype}"
                       in p for p in problems), (column, problems)
        for site in ("siege", "nice"):
            # The rows' other columns and the rest of lyon's work arrived; what did not
            # fit is not written (row 1 keeps its A, row 5 has none yet).
            assert rows(mesh.cons[site], "SELECT ID, A, B FROM T") == \
                [(1, "one", 7), (5, None, None), (6, "short", 9)], site
        run_sql(mesh.cons["nice"], "UPDATE T SET N = 3.5 WHERE ID = 6")  # still syncs
        assert not [p for p in sync(mesh) if "differs" not in p and "fit" not in p]

        upgrade_site(mesh, "nice", script)
        expected = [(1, long, Decimal("1.50"), 7), (5, long + "!", Decimal("12345678901.25"),
                                                      2**40), (6, "short", Decimal("3.50"), 9)]
        assert rows(mesh.cons["nice"], "SELECT ID, A, N, B FROM T") == expected
        upgrade_site(mesh, "siege", script)
        assert not sync(mesh), "every site on the same schema: no problem left"
        digests = {table_digest(con, introspect(con).tables["T"]).digest
                   for con in mesh.cons.values()}
        assert len(digests) == 1
        assert rows(mesh.cons["siege"], "SELECT ID, A, N, B FROM T") == expected
    finally:
        mesh.close()


class Workload:
    """An application at one site, writing all the time: its own rows (ID from ``base``),
    and rows every site edits. Its journal is the last committed value of each own row."""

    def __init__(self, mesh: LocalMesh, site: str, base: int, seed: int) -> None:
        self.site, self.base = site, base
        self.dsn = mesh.nodes[site].cfg.database.dsn
        self.rng = random.Random(seed)
        self.journal: dict[int, tuple[str, int | None]] = {}  # own ID -> (A, C)
        self.v2 = False
        self.commits = 0
        self._next = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        con = open_connection(DatabaseSpec(self.dsn))
        try:
            while not self._stop.is_set():
                self._step(con)
                time.sleep(0.1)  # an application, not a load test
        finally:
            con.close()

    def _step(self, con) -> None:
        rng = self.rng
        # v2 values are longer than v1's VARCHAR(10) half the time, and set the new column.
        text = f"{self.site}{rng.randrange(10**6)}" + ("x" * rng.randrange(0, 25)
                                                        if self.v2 else "")
        c = rng.randrange(1000) if self.v2 else None
        choice = rng.random()
        mine = sorted(self.journal)
        with con.transaction_manager() as tm:
            tm.begin()
            cur = tm.cursor()
            try:
                if choice < 0.4 or not mine:
                    key = self.base + self._next
                    self._next += 1
                    if self.v2:
                        cur.execute("INSERT INTO T (ID, A, C) VALUES (?, ?, ?)", (key, text, c))
                    else:
                        cur.execute("INSERT INTO T (ID, A, OLD_COL) VALUES (?, ?, ?)",
                                    (key, text[:10], 1))
                        text = text[:10]
                    written = {key: (text, c)}
                elif choice < 0.8:
                    key = rng.choice(mine)
                    if self.v2:
                        cur.execute("UPDATE T SET A = ?, C = ? WHERE ID = ?", (text, c, key))
                        written = {key: (text, c)}
                    else:
                        cur.execute("UPDATE T SET A = ? WHERE ID = ?", (text[:10], key))
                        written = {key: (text[:10], self.journal[key][1])}
                else:  # a row every site edits
                    cur.execute("UPDATE T SET A = ? WHERE ID = ?",
                                (text if self.v2 else text[:10], rng.randrange(1, 6)))
                    written = {}
                tm.commit()
            except DatabaseError as exc:  # a lock conflict with the node's apply
                tm.rollback()
                if "lock conflict" not in str(exc) and "update conflict" not in str(exc):
                    self.errors.append(str(exc))
                return
            finally:
                cur.close()
        self.journal.update(written)
        self.commits += 1


def test_mixed_versions_under_continuous_workloads_converge_nothing_lost(tmp_path):
    """Every site's application writes all the time; the sites upgrade one by one (each
    closing its application for its own upgrade only) while rounds run; new-column values,
    values only the widened column holds, and everything shared converge; no committed
    write of a site's own rows is lost."""
    script = tmp_path / "upgrade.sql"
    script.write_text(SCRIPT)
    mesh = LocalMesh(tmp_path, {"siege": True, "lyon": False, "nice": False}, DDL)
    loads = {site: Workload(mesh, site, base, seed) for site, base, seed in
             (("siege", 1000, 1), ("lyon", 200_000, 2), ("nice", 300_000, 3))}
    try:
        for key in range(1, 6):
            run_sql(mesh.cons["siege"], f"INSERT INTO T VALUES ({key}, 'shared', 0)")
        assert not sync(mesh)
        for load in loads.values():
            load.start()

        def rounds(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for site in ("lyon", "nice"):
                    mesh.exchange("siege", site)

        rounds(2)
        for site in ("lyon", "nice", "siege"):
            loads[site].stop()
            upgrade_site(mesh, site, script)
            loads[site].v2 = True
            loads[site].start()
            rounds(2)
        for load in loads.values():
            load.stop()
            assert not load.errors, load.errors
            assert load.commits > 20, (load.site, load.commits)
        problems = []
        for _ in range(3):
            problems = sync(mesh)
        assert not problems, problems
        digests = {table_digest(con, introspect(con).tables["T"]).digest
                   for con in mesh.cons.values()}
        assert len(digests) == 1, "the sites diverge"
        for load in loads.values():
            for site, con in mesh.cons.items():
                found = dict((k, (a, c)) for k, a, c in
                             rows(con, f"SELECT ID, A, C FROM T WHERE ID >= {load.base} "
                                       f"AND ID < {load.base + 100_000}"))
                assert found == load.journal, f"{load.site}'s rows at {site}"
    finally:
        for load in loads.values():
            if load._thread is not None and load._thread.is_alive():
                load.stop()
        mesh.close()
