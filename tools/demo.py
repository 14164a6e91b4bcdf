"""``make demo``: a local mesh of three sites on embedded Firebird, syncing over mTLS.

Creates a mesh CA and a certificate bundle per site (``siege-certs``' library), three
databases with a small invoicing schema, installs capture, starts the three nodes on
loopback (the siège with the relay role), has each site's users work — new customers and
invoices, the same customer edited at two sites at once, an invoice deleted at one site while
another adds a line to it — then runs sync rounds through the siège (gather from every
site, redistribute to every site) and prints what each site holds, what lost and why.

Everything lives in a temporary folder (``--keep DIR`` keeps it). No network beyond
127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siege_sync.node import conflicts  # noqa: E402
from siege_sync.node.database import READ_COMMITTED_RW, transaction  # noqa: E402
from siege_sync.node.digest import table_digest  # noqa: E402
from siege_sync.node.schema import introspect  # noqa: E402
from tools.localmesh import LocalMesh  # noqa: E402

SCHEMA = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(60) NOT NULL, "
    "PHONE VARCHAR(20), CITY VARCHAR(40), BALANCE NUMERIC(15,2) DEFAULT 0)",
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, NUMBER VARCHAR(20) NOT NULL, "
    "CUSTOMER_ID INTEGER NOT NULL REFERENCES CUSTOMER (ID), ISSUED TIMESTAMP, "
    "TOTAL NUMERIC(15,2), NOTE BLOB SUB_TYPE TEXT, CONSTRAINT INVOICE_NUMBER UNIQUE (NUMBER))",
    "CREATE TABLE INVOICE_LINE (ID INTEGER NOT NULL PRIMARY KEY, "
    "INVOICE_ID INTEGER NOT NULL REFERENCES INVOICE (ID), ITEM VARCHAR(40), "
    "QTY INTEGER, PRICE NUMERIC(15,2), CHECK (QTY > 0))",
]
SITES = {"siege": True, "lyon": False, "nice": False}


def sql(con, *statements: tuple[str, tuple]) -> None:
    with transaction(con) as tm:
        cur = tm.cursor()
        for text, params in statements:
            cur.execute(text, params)
        cur.close()


def count(con, table: str) -> int:
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        n = cur.fetchone()[0]
        cur.close()
    return n


def round_(mesh: LocalMesh, label: str) -> None:
    started = time.monotonic()
    moved = 0
    # Gather from every site, then redistribute (each exchange goes both ways: the second
    # pass brings each site what the siège gathered after it).
    for _pass in range(2):
        for site in ("lyon", "nice"):
            reply = mesh.exchange("siege", site)
            moved += reply.pulled_events + reply.pushed_events
            for problem in reply.problems:
                print(f"  ! {site}: {problem}")
    print(f"{label}: {moved} events applied across the mesh in "
          f"{time.monotonic() - started:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the mesh's files in this folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="siege-demo-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    print(f"demo mesh in {folder}: sites {', '.join(SITES)} (siège relays), mTLS on loopback")
    mesh = LocalMesh(folder, SITES, SCHEMA)
    try:
        cons = mesh.cons
        sql(cons["siege"],
            ("INSERT INTO CUSTOMER (ID, NAME, PHONE, CITY) VALUES (1, 'Boulangerie Martin', "
             "'0472000001', 'Lyon')", ()),
            ("INSERT INTO CUSTOMER (ID, NAME, PHONE, CITY) VALUES (2, 'Garage Roux', "
             "'0493000002', 'Nice')", ()),
            ("INSERT INTO INVOICE (ID, NUMBER, CUSTOMER_ID, ISSUED, TOTAL) VALUES "
             "(1, 'S-0001', 2, CURRENT_TIMESTAMP, 120.50)", ()),
            ("INSERT INTO INVOICE_LINE (ID, INVOICE_ID, ITEM, QTY, PRICE) VALUES "
             "(1, 1, 'Vidange', 1, 120.50)", ()))
        round_(mesh, "round 1 (the siège's customers reach every site)")

        for i in range(50):
            site = ("lyon", "nice")[i % 2]
            base = 1000 if site == "lyon" else 2000
            sql(cons[site],
                ("INSERT INTO INVOICE (ID, NUMBER, CUSTOMER_ID, ISSUED, TOTAL, NOTE) VALUES "
                 "(?, ?, ?, CURRENT_TIMESTAMP, ?, ?)",
                 (base + i, f"{site[0].upper()}-{i:04d}", 1 + i % 2, 10 + i,
                  f"ticket de caisse {i} — {site}")),
                ("INSERT INTO INVOICE_LINE (ID, INVOICE_ID, ITEM, QTY, PRICE) VALUES "
                 "(?, ?, 'Article', ?, ?)", (base + i, base + i, 1 + i % 3, 10 + i)))
        # The same customer edited at two sites at once: different columns both survive.
        sql(cons["lyon"], ("UPDATE CUSTOMER SET PHONE = '0472999999' WHERE ID = 1", ()))
        sql(cons["nice"], ("UPDATE CUSTOMER SET CITY = 'Villeurbanne' WHERE ID = 1", ()))
        # The same column at two sites: the later write wins, the other is on record.
        sql(cons["lyon"], ("UPDATE CUSTOMER SET BALANCE = 10 WHERE ID = 2", ()))
        time.sleep(0.01)
        sql(cons["nice"], ("UPDATE CUSTOMER SET BALANCE = 25 WHERE ID = 2", ()))
        # Nice deletes invoice S-0001 while Lyon adds a line to it: the invoice comes back.
        sql(cons["nice"], ("DELETE FROM INVOICE_LINE WHERE INVOICE_ID = 1", ()),
            ("DELETE FROM INVOICE WHERE ID = 1", ()))
        sql(cons["lyon"], ("INSERT INTO INVOICE_LINE (ID, INVOICE_ID, ITEM, QTY, PRICE) "
                           "VALUES (3, 1, 'Pneu', 2, 80)", ()))
        round_(mesh, "round 2 (a day of work at lyon and nice)")
        round_(mesh, "round 3 (quiet: nothing left to move)")

        print()
        header = f"{'site':<7}{'customers':>10}{'invoices':>10}{'lines':>8}  digest (all tables)"
        print(header)
        print("-" * len(header))
        digests = set()
        for site, con in cons.items():
            tables = introspect(con).tables
            digest = "".join(table_digest(con, tables[t]).digest[:6]
                             for t in ("CUSTOMER", "INVOICE", "INVOICE_LINE"))
            digests.add(digest)
            print(f"{site:<7}{count(con, 'CUSTOMER'):>10}{count(con, 'INVOICE'):>10}"
                  f"{count(con, 'INVOICE_LINE'):>8}  {digest}")
        print()
        print("versions on record at the siège (who lost to whom):")
        for c in conflicts.listing(cons["siege"]):
            what = c.column or "whole row"
            print(f"  {c.short_id}  {c.table:<13} {c.kind:<18} {what:<10} "
                  f"{c.loser} lost to {c.winner}")
        same = len(digests) == 1
        print()
        print("every site holds the same data" if same else "SITES DIFFER")
        return 0 if same else 1
    finally:
        mesh.close()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
