"""``make demo``: a local mesh of three sites on embedded Firebird, syncing over mTLS.

Creates a mesh CA, a certificate bundle per site and an admin certificate (``siege-certs``'
library), three databases with a small business schema (customers, products, invoices and
their lines, payments, accounting entries with a composite key, NUMERIC money, BLOB notes),
installs capture, starts the three nodes on loopback (the siège coordinates and relays), then
drives it as an operator would with ``siege-ctl``: ``test``, ``manual`` rounds with progress
and their reports, while the sites' users work — sales everywhere, one customer and one
invoice edited at two sites at once, an invoice deleted at one site while another records a
payment for it, a transaction held open across a round. Ends with what each site holds
(digests) and the changes set aside on record.

Everything lives in a temporary folder (``--keep DIR`` keeps it). No network beyond
127.0.0.1. It speaks the shell's language (``LANG=fr_FR.UTF-8 make demo``: French), and so
do the siège's reports (its ``[operator] language``) and ``siege-ctl``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
os.environ.setdefault("FIREBIRD_LOCK", str(Path(tempfile.gettempdir()) / "siege-sync-fblock"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siege_sync.i18n import _, use_for_command_line  # noqa: E402
from siege_sync.node.db.database import READ_COMMITTED_RW, transaction  # noqa: E402
from siege_sync.node.db.schema import introspect  # noqa: E402
from siege_sync.node.journal import conflicts
from siege_sync.node.journal.digest import table_digest  # noqa: E402
from siege_sync.siege.reports import word  # noqa: E402
from tools.localmesh import LocalMesh  # noqa: E402

SCHEMA = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, NAME VARCHAR(60) NOT NULL, "
    "PHONE VARCHAR(20), CITY VARCHAR(40), BALANCE NUMERIC(15,2) DEFAULT 0, "
    "NOTE BLOB SUB_TYPE TEXT)",
    "CREATE TABLE PRODUCT (CODE VARCHAR(20) NOT NULL PRIMARY KEY, LABEL VARCHAR(60), "
    "PRICE NUMERIC(15,2), VAT_RATE NUMERIC(5,2))",
    "CREATE TABLE INVOICE (ID INTEGER NOT NULL PRIMARY KEY, NUMBER VARCHAR(20) NOT NULL, "
    "CUSTOMER_ID INTEGER NOT NULL REFERENCES CUSTOMER (ID), ISSUED TIMESTAMP, "
    "TOTAL NUMERIC(15,2), NOTE BLOB SUB_TYPE TEXT, CONSTRAINT INVOICE_NUMBER UNIQUE (NUMBER))",
    "CREATE TABLE INVOICE_LINE (ID INTEGER NOT NULL PRIMARY KEY, "
    "INVOICE_ID INTEGER NOT NULL REFERENCES INVOICE (ID), PRODUCT VARCHAR(20) "
    "REFERENCES PRODUCT (CODE), QTY INTEGER, PRICE NUMERIC(15,2), CHECK (QTY > 0))",
    "CREATE TABLE PAYMENT (ID INTEGER NOT NULL PRIMARY KEY, INVOICE_ID INTEGER NOT NULL "
    "REFERENCES INVOICE (ID), PAID_ON DATE, AMOUNT NUMERIC(15,2), METHOD VARCHAR(10))",
    # Accounting entries: a composite key (journal, entry, line), debit and credit exact.
    "CREATE TABLE ACCOUNT_ENTRY (JOURNAL CHAR(3) NOT NULL, ENTRY_NO INTEGER NOT NULL, "
    "LINE_NO SMALLINT NOT NULL, ACCOUNT VARCHAR(10) NOT NULL, DEBIT NUMERIC(15,2), "
    "CREDIT NUMERIC(15,2), LABEL VARCHAR(60), PRIMARY KEY (JOURNAL, ENTRY_NO, LINE_NO))",
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


def ctl(folder: Path, *args: str) -> int:
    """Run siege-ctl as an operator would, against the siège's node of this demo."""
    print(f"$ siege-ctl {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                           str(folder / "siege-ctl.toml"), *args], text=True)
    print(flush=True)
    return done.returncode


def dashboard(folder: Path, port: int) -> None:
    """``siege-ctl dashboard`` on the demo mesh until Ctrl-C (or SIGTERM). Ctrl-C stops the
    dashboard, never the mesh under it: the embedded Firebird engine's own SIGINT handler
    would shut this process's connections, so ours replaces it meanwhile."""
    print("$ siege-ctl dashboard", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "siege_sync.siege.ctl", "--config",
                             str(folder / "siege-ctl.toml"), "dashboard", "--port", str(port)])

    def stop(signum: int, frame: object) -> None:
        proc.terminate()

    before = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc.wait()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def sell(con, site: str, n: int) -> None:
    """A sale at ``site``: an invoice with a line, its payment and its accounting entry."""
    base = {"siege": 0, "lyon": 1000, "nice": 2000}[site] + n
    total = 10 + n
    sql(con,
        ("INSERT INTO INVOICE (ID, NUMBER, CUSTOMER_ID, ISSUED, TOTAL, NOTE) VALUES "
         "(?, ?, ?, CURRENT_TIMESTAMP, ?, ?)",
         (base, f"{site[0].upper()}-{n:04d}", 1 + n % 2, total, f"ticket {n} — {site}")),
        ("INSERT INTO INVOICE_LINE (ID, INVOICE_ID, PRODUCT, QTY, PRICE) VALUES "
         "(?, ?, 'PAIN', 1, ?)", (base, base, total)),
        ("INSERT INTO PAYMENT (ID, INVOICE_ID, PAID_ON, AMOUNT, METHOD) VALUES "
         "(?, ?, CURRENT_DATE, ?, 'CB')", (base, base, total)),
        ("INSERT INTO ACCOUNT_ENTRY (JOURNAL, ENTRY_NO, LINE_NO, ACCOUNT, DEBIT, CREDIT, "
         "LABEL) VALUES ('VTE', ?, 1, '411000', ?, 0, ?)", (base, total, f"facture {base}")),
        ("INSERT INTO ACCOUNT_ENTRY (JOURNAL, ENTRY_NO, LINE_NO, ACCOUNT, DEBIT, CREDIT, "
         "LABEL) VALUES ('VTE', ?, 2, '706000', 0, ?, ?)", (base, total, f"facture {base}")))


def main() -> int:
    language = use_for_command_line()
    parser = argparse.ArgumentParser(description=_(
        "make demo: a local mesh of three sites on embedded Firebird, syncing over mTLS."))
    parser.add_argument("--keep", type=Path, help=_("keep the mesh's files in this folder"))
    parser.add_argument("--dashboard", nargs="?", type=int, const=8470, metavar="PORT", help=_(
        "after the demo, keep the mesh running and serve the head office's screen "
        "(siege-ctl dashboard) until Ctrl-C"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="siege-demo-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    print(_("demo mesh in {folder}: sites {sites} (the siège relays), mTLS on loopback").format(
        folder=folder, sites=", ".join(SITES)))
    started = time.monotonic()
    mesh = LocalMesh(folder, SITES, SCHEMA, language=language)
    mesh.pki.admin("ops")
    (folder / "siege-ctl.toml").write_text(
        f'address = "127.0.0.1:{mesh.ports["siege"]}"\nsiege = "siege"\n'
        'bundle = "bundles/ops"\n')
    try:
        cons = mesh.cons
        sql(cons["siege"],
            ("INSERT INTO CUSTOMER (ID, NAME, PHONE, CITY) VALUES (1, 'Boulangerie Martin', "
             "'0472000001', 'Lyon')", ()),
            ("INSERT INTO CUSTOMER (ID, NAME, PHONE, CITY) VALUES (2, 'Garage Roux', "
             "'0493000002', 'Nice')", ()),
            ("INSERT INTO PRODUCT (CODE, LABEL, PRICE, VAT_RATE) VALUES "
             "('PAIN', 'Pain de campagne', 3.20, 5.50)", ()))
        sell(cons["siege"], "siege", 1)
        ctl(folder, "test")
        ctl(folder, "manual")

        print(_("... a day of work: sales everywhere, two sites editing the same customer and "
                "invoice, an invoice deleted while another site pays it, a transaction left "
                "open at lyon") + "\n")
        for n in range(1, 41):
            sell(cons[("lyon", "nice")[n % 2]], ("lyon", "nice")[n % 2], n)
        sql(cons["lyon"], ("UPDATE CUSTOMER SET PHONE = '0472999999' WHERE ID = 1", ()))
        sql(cons["nice"], ("UPDATE CUSTOMER SET CITY = 'Villeurbanne' WHERE ID = 1", ()))
        sql(cons["lyon"], ("UPDATE INVOICE SET TOTAL = 13.00 WHERE ID = 1", ()))
        time.sleep(0.01)
        sql(cons["nice"], ("UPDATE INVOICE SET TOTAL = 15.00 WHERE ID = 1", ()))
        sql(cons["nice"], ("DELETE FROM INVOICE_LINE WHERE INVOICE_ID = 1", ()),
            ("DELETE FROM PAYMENT WHERE INVOICE_ID = 1", ()),
            ("DELETE FROM INVOICE WHERE ID = 1", ()))
        sql(cons["lyon"], ("INSERT INTO PAYMENT (ID, INVOICE_ID, PAID_ON, AMOUNT, METHOD) "
                           "VALUES (9, 1, CURRENT_DATE, 15.00, 'CHQ')", ()))
        held = cons["lyon"].transaction_manager()
        held.begin()
        cur = held.cursor()
        cur.execute("INSERT INTO CUSTOMER (ID, NAME, CITY) VALUES (3, 'Fleurs Dubois', 'Lyon')")
        ctl(folder, "manual")
        print(_("... lyon's open transaction commits now; the next sync carries it") + "\n")
        cur.close()
        held.commit()
        held.close()
        ctl(folder, "manual")
        ctl(folder, "report", "list")
        ctl(folder, "status")
        ctl(folder, "report", "show", "2", "--pdf", str(folder / _("sync-2.pdf")))

        tables = ("CUSTOMER", "PRODUCT", "INVOICE", "INVOICE_LINE", "PAYMENT",
                  "ACCOUNT_ENTRY")
        header = f"{_('site'):<14}" + "".join(f"{t.lower():>15}" for t in tables) + "  " + _(
            "digest")
        print(header)
        print("-" * len(header))
        digests = set()
        for site, con in cons.items():
            schema = introspect(con).tables
            digest = "".join(table_digest(con, schema[t]).digest[:4] for t in tables)
            digests.add(digest)
            print(f"{site:<14}" + "".join(f"{count(con, t):>15}" for t in tables)
                  + f"  {digest}")
        print()
        print(_("changes set aside, on record at the siège (whose change gave way to whose):"))
        for c in conflicts.listing(cons["siege"]):
            what = c.column or _("whole row")
            print(f"  {c.short_id}  {c.table:<13} {word(c.kind):<18} {what:<12} "
                  + _("{loser} gave way to {winner}").format(loser=c.loser, winner=c.winner))
        same = len(digests) == 1
        print()
        print(_("every site holds the same data") if same else _("SITES DIFFER"))
        print(_("demo done in {seconds} s").format(seconds=round(time.monotonic() - started)))
        if args.dashboard is not None:
            dashboard(folder, args.dashboard)
        else:
            print(_("the head office's screen on this mesh: python tools/demo.py --dashboard "
                    "(siege-ctl dashboard: a web page on 127.0.0.1, until Ctrl-C)"))
        return 0 if same else 1
    finally:
        mesh.close()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
