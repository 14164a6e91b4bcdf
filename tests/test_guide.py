"""The README's deployment guide, run as written (issue 24 item 6): so it cannot rot.

Two fresh machines (tests/deployment/machine.py: network and mount namespaces, each with its
own /etc, /opt, /srv, /tmp and Firebird server on its loopback), `siege.example.net` holding
the shop's database with the business's data, `lyon.example.net` with nothing. Every ``sh``
block of README.md's *Deploying* section runs, in order, on the machines its
``<!-- guide: … -->`` comment names, as root with ``bash -eux``: the wheel built from a copy
of this repository, installed into a venv under /opt from a local wheelhouse (pip's
``PIP_NO_INDEX``/``PIP_FIND_LINKS``: tests never reach the network; `make wheelhouse`
downloads it beforehand), the user, the CA and bundles, the configs, `siege-node install`,
the systemd units (through the ``systemctl`` stand-in, which verifies them with the real
``systemd-analyze``), `siege-ctl join lyon`, `test`, `manual`, `status`. Then the test reads
both shops' tables itself — never through the node — and sells at lyon to see the sale
reach the siège.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.deployment.guide import blocks
from tests.deployment.machine import Machine
from tools.netns import Lan

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"

# The business's data at the siège before siege-sync: WIN1252 text with accents and trailing
# blanks under a case-insensitive collation, NUMERIC amounts, dates, a text BLOB, sale
# numbers from a generator its trigger takes.
SHOP_DDL = [
    "CREATE TABLE CUSTOMER (ID INTEGER NOT NULL PRIMARY KEY, "
    "NAME VARCHAR(60) CHARACTER SET WIN1252 COLLATE WIN_PTBR, CITY VARCHAR(40))",
    "CREATE TABLE SALE (ID BIGINT NOT NULL PRIMARY KEY, CUSTOMER_ID INTEGER NOT NULL "
    "REFERENCES CUSTOMER (ID), AMOUNT NUMERIC(12,2) NOT NULL, SOLD_ON DATE NOT NULL, "
    "NOTE BLOB SUB_TYPE TEXT CHARACTER SET UTF8)",
    "CREATE GENERATOR GEN_SALE_ID",
    "CREATE TRIGGER SALE_ID FOR SALE BEFORE INSERT AS BEGIN "
    "IF (NEW.ID IS NULL) THEN NEW.ID = NEXT VALUE FOR GEN_SALE_ID; END",
]
SHOP_ROWS = [
    "INSERT INTO CUSTOMER VALUES (1, 'Hélène Dupré ', 'Besançon')",
    "INSERT INTO CUSTOMER VALUES (2, 'Œuvres d''Été', 'Saint-Étienne')",
    "INSERT INTO SALE (CUSTOMER_ID, AMOUNT, SOLD_ON, NOTE) "
    "VALUES (1, 1234.56, DATE '2026-01-31', 'première vente\nligne 2')",
    "INSERT INTO SALE (CUSTOMER_ID, AMOUNT, SOLD_ON, NOTE) "
    "VALUES (2, -0.01, DATE '1999-12-31', NULL)",
]
DSN = "localhost:/srv/shop/shop.fdb"


def sql(machine: Machine, statements: list[str]) -> None:
    """Run statements as the shop's application would, through the machine's server."""
    machine.python(
        "from firebird.driver import connect\n"
        f"con = connect({DSN!r}, user='SYSDBA', password={machine.sysdba_password()!r}, "
        "charset='UTF8')\n"
        f"for s in {statements!r}:\n    con.execute_immediate(s)\n"
        "con.commit()\ncon.close()\n")


def create_shop(machine: Machine) -> None:
    shop = machine.path("/srv/shop")
    shop.mkdir()
    shutil.chown(shop, "firebird", "firebird")
    machine.python(
        "from firebird.driver import create_database\n"
        f"con = create_database({DSN!r}, user='SYSDBA', "
        f"password={machine.sysdba_password()!r}, charset='UTF8')\n"
        f"for s in {SHOP_DDL!r}:\n    con.execute_immediate(s)\n    con.commit()\n"
        "con.close()\n")
    sql(machine, SHOP_ROWS)


def read_shop(machine: Machine) -> dict[str, list]:
    """Every row of the application's tables, read with plain SQL (not the node's digest)."""
    out = machine.python(
        "import json\nfrom firebird.driver import connect\n"
        f"con = connect({DSN!r}, user='SYSDBA', password={machine.sysdba_password()!r}, "
        "charset='UTF8')\ncur = con.cursor()\nrows = {}\n"
        "for t in ('CUSTOMER', 'SALE'):\n"
        "    cur.execute(f'SELECT * FROM {t} ORDER BY ID')\n"
        "    rows[t] = [[v.read() if hasattr(v, 'read') else str(v) for v in r] "
        "for r in cur.fetchall()]\n"
        "print('ROWS' + json.dumps(rows))\ncon.close()\n")
    return json.loads(out.split("ROWS", 1)[1].splitlines()[0])


def repository_copy(into: Path) -> Path:
    """The files of this repository as a clone would have them (with uncommitted edits)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name)
    return into


def test_the_deployment_guide_installs_a_siege_and_a_shop_that_then_sync():
    assert WHEELHOUSE.is_dir(), ("no wheelhouse for the offline pip installs: run "
                                 "`make wheelhouse` (make test does)")
    guide = blocks(README)
    assert [b.machines for b in guide][:2] == [("build",), ("siege", "lyon")], guide
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    base = Path(tempfile.mkdtemp(prefix="siege-guide-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        with Lan(subnet="10.79.0.0/24") as lan:
            machines = {name: Machine(lan, name, base) for name in ("siege", "lyon")}
            names = {f"{n}.example.net": m.address for n, m in machines.items()}
            for machine in machines.values():
                machine.know(names)
                machine.start_firebird()
            create_shop(machines["siege"])
            before = read_shop(machines["siege"])
            assert len(before["SALE"]) == 2 and before["CUSTOMER"][0][1] == "Hélène Dupré "

            source = repository_copy(base / "source")
            for block in guide:
                for name in block.machines:
                    if name == "build":
                        env = {**machines["siege"].environment(), **offline}
                        done = subprocess.run(["bash", "-euxo", "pipefail", "-c", block.script],
                                              cwd=source, env={**_host_env(), **env},
                                              capture_output=True, text=True, timeout=900)
                        output = done.stdout + done.stderr
                    else:
                        done = machines[name].sh(block.script, env=offline)
                        output = done.stdout
                    print(f"=== README.md line {block.line}, on {name}:\n{output}")
                    assert done.returncode == 0, (
                        f"README.md line {block.line}, on {name}: exit {done.returncode}\n"
                        f"{output[-6000:]}\n--- siege's node:\n"
                        f"{machines['siege'].journal('siege-node@run.service')[-3000:]}\n"
                        f"--- lyon's node:\n"
                        f"{machines['lyon'].journal('siege-node@join.service')[-3000:]}")
                    if "siege-ctl join lyon" in block.script:
                        assert "JOINED" in output, output[-3000:]
                    if "siege-ctl manual" in block.script:
                        assert "complete" in output.lower(), output[-3000:]

            for machine in machines.values():
                assert machine.sh("systemctl is-active siege-node@run").returncode == 0, (
                    machine.journal("siege-node@run.service")[-3000:])
            # What lyon holds is the siège's data, read back independently.
            assert read_shop(machines["lyon"]) == before
            # The shop's application sells at lyon: its own numbers, at the siège after a round.
            sql(machines["lyon"], ["INSERT INTO SALE (CUSTOMER_ID, AMOUNT, SOLD_ON, NOTE) "
                                   "VALUES (2, 99.90, DATE '2026-12-07', 'vendu à Lyon')"])
            after = read_shop(machines["lyon"])
            assert [r[0] for r in after["SALE"]][-1] == "1000000", after
            manual = machines["siege"].sh("cd /etc/siege && /opt/siege-sync/bin/siege-ctl manual")
            assert manual.returncode == 0, manual.stdout[-3000:]
            assert read_shop(machines["siege"]) == after
            for machine in machines.values():
                machine.stop_units()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _host_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    return env

