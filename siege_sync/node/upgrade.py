"""Vendor upgrades run through the node (``siege-node upgrade``), and what changed in a schema.

The management software's vendor ships upgrade scripts a few times a year. Firebird refuses
``DROP COLUMN`` (and some type changes) on a column a trigger uses, and every capture trigger
uses every column of its table, so a vendor script would fail on our triggers. The node runs
the upgrade itself:

1. refuses while other connections are attached (an application writing while capture is off
   would lose its changes for the other sites): it names them;
2. publishes what is captured, so no change waits in the old schema's shape;
3. drops the capture triggers (the log, the registers and everything else stay);
4. runs the script (through ``isql-fb``) or the vendor's own upgrader command;
5. reinstalls capture for the schema as it now is — also after a failing script, which is
   then said plainly — re-guards application triggers the script replaced, and catches up
   with what other sites already wrote in the new tables and columns (catchup.py);
6. says what changed: tables and columns added, dropped, retyped.

Must never leave the database without capture: step 5 runs whatever happened in step 4.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from firebird.driver import Connection

from . import capture
from .apply import catch_up
from .config import NodeConfig
from .database import READ_COMMITTED_RW, connection, transaction
from .publish import Publisher
from .schema import Schema, TableSelection, introspect

ISQL = "isql-fb"
DSN_ENV = "SIEGE_SYNC_DSN"  # given to an upgrader command, with ISC_USER / ISC_PASSWORD


class UpgradeError(Exception):
    """The upgrade did not start (nothing was changed); the message says what to do."""


@dataclass
class SchemaChange:
    added_tables: list[str] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)  # TABLE.COLUMN
    dropped_columns: list[str] = field(default_factory=list)
    retyped_columns: list[str] = field(default_factory=list)  # TABLE.COLUMN: old -> new

    def lines(self) -> list[str]:
        out = []
        for title, items in (("table added", self.added_tables),
                             ("table dropped", self.dropped_tables),
                             ("column added", self.added_columns),
                             ("column dropped", self.dropped_columns),
                             ("column retyped", self.retyped_columns)):
            out += [f"{title}: {item}" for item in items]
        return out


def compare(before: Schema, after: Schema) -> SchemaChange:
    change = SchemaChange()
    change.added_tables = sorted(set(after.tables) - set(before.tables))
    change.dropped_tables = sorted(set(before.tables) - set(after.tables))
    for name in sorted(set(before.tables) & set(after.tables)):
        old = {c.name: c.type.ddl() for c in before.tables[name].columns}
        new = {c.name: c.type.ddl() for c in after.tables[name].columns}
        change.added_columns += [f"{name}.{c}" for c in new if c not in old]
        change.dropped_columns += [f"{name}.{c}" for c in old if c not in new]
        change.retyped_columns += [f"{name}.{c}: {old[c]} -> {new[c]}"
                                   for c in new if c in old and old[c] != new[c]]
    return change


def drift(con: Connection, selection: TableSelection = TableSelection()) -> list[str]:
    """What changed in the replicated schema since capture was installed — changes that do
    not travel until `upgrade` (or `install`) — each said with what to do."""
    live = introspect(con, selection)
    registry = {name: no for no, (name, _k) in capture.table_registry(con).items()
                if name != capture.HEARTBEAT_TABLE}
    out = [f"table {name} is new and not captured" for name in sorted(live.tables)
           if name not in registry]
    for name, number in sorted(registry.items()):
        recorded = capture.get_state(con, f"{capture.CAPTURED_STATE}{number}")
        table = live.tables.get(name)
        if table is None:
            out.append(f"table {name} was dropped")
            continue
        if recorded is None or recorded == capture.captured_shape(table):
            continue
        names = recorded.split("|", 1)[0].split(",")
        now = [c.name for c in table.columns]
        out += [f"column {name}.{c} is new and not captured" for c in now if c not in names]
        out += [f"column {name}.{c} was dropped" for c in names if c not in now]
        if set(names) == set(now):
            out.append(f"columns of {name} changed type")
    return out


@dataclass
class UpgradeOutcome:
    change: SchemaChange
    published: int
    failure: str | None  # the script's or command's failure, with its output
    fingerprint: str
    caught_up: list[str]  # other sites' values and events the new schema could now take


def others_attached(con: Connection) -> list[str]:
    """Other user connections to this database, described for an operator."""
    with transaction(con, READ_COMMITTED_RW) as tm:
        cur = tm.cursor()
        cur.execute("SELECT TRIM(MON$USER), MON$REMOTE_ADDRESS, MON$REMOTE_PROCESS "
                    "FROM MON$ATTACHMENTS WHERE MON$ATTACHMENT_ID <> CURRENT_CONNECTION "
                    "AND MON$SYSTEM_FLAG = 0")
        rows = cur.fetchall()
        cur.close()
    return [" ".join(p for p in (f"user {user}", f"from {address}" if address else "",
                                 f"program {process}" if process else "") if p)
            for user, address, process in rows]


def upgrade(cfg: NodeConfig, script: Path | None = None,
            command: Sequence[str] = ()) -> UpgradeOutcome:
    if (script is None) == (not command):
        raise UpgradeError("give either --script FILE or -- COMMAND ...")
    if script is not None and not script.is_file():
        raise UpgradeError(f"{script}: no such script")
    if script is not None and shutil.which(ISQL) is None:
        raise UpgradeError(f"{ISQL} is not installed (Debian: apt-get install "
                           "firebird3.0-utils); or run the vendor's upgrader with -- COMMAND")
    with connection(cfg.database) as con:
        if not capture.is_installed(con):
            raise UpgradeError(f"capture is not installed in {cfg.database.dsn}: nothing to "
                               "step aside for; run the script directly, then siege-node "
                               "install")
        others = others_attached(con)
        if others:
            raise UpgradeError(
                "other connections are attached: " + "; ".join(others) + ". Close the "
                "application everywhere and stop `siege-node run` first: a change made "
                "while capture steps aside would never reach the other sites. Nothing "
                "was changed")
        published = Publisher(con, cfg.site, policies=cfg.policies).publish().events
        waiting = capture.pending_entries(con)
        if waiting:
            raise UpgradeError(f"{waiting} captured changes could not be published (see "
                               "siege-node status); fix that first. Nothing was changed")
        before = introspect(con, cfg.tables)
        capture.drop_capture_triggers(con)
    failure: str | None = None
    try:
        failure = _run(cfg, script, command)
    finally:
        # Whatever happened: capture back on, for the schema as it now is.
        try:
            with connection(cfg.database) as con:
                report = capture.install(con, cfg.tables, cfg.fire_triggers, cfg.generators)
                assert report.schema is not None
                after = report.schema
                caught_up = catch_up(con, cfg.site, cfg.policies)
        except Exception as exc:  # said loudly: the database is without capture
            raise UpgradeError(
                f"capture could NOT be reinstalled after the upgrade ({exc}): changes made "
                "now are not captured. Run `siege-node install` before anyone works. The "
                f"upgrade itself {'failed: ' + failure if failure else 'ran'}") from exc
    return UpgradeOutcome(compare(before, after), published, failure, after.fingerprint(),
                          caught_up)


def _run(cfg: NodeConfig, script: Path | None, command: Sequence[str]) -> str | None:
    spec = cfg.database
    env = {**os.environ, DSN_ENV: spec.dsn, "ISC_USER": spec.user}
    if spec.password:
        env["ISC_PASSWORD"] = spec.password
    if script is not None:
        # -bail: stop at the first error (exit code 1); -q: no banner.
        argv = [ISQL, "-q", "-bail", "-i", str(script), spec.dsn]
    else:
        argv = list(command)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
    except OSError as exc:
        return f"{argv[0]} could not be started: {exc}"
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        return f"{' '.join(argv[:1])} exited with {done.returncode}: {output[-2000:]}"
    if script is not None and ("Statement failed" in output or "SQLSTATE" in output):
        return f"the script reported errors: {output[-2000:]}"
    return None
