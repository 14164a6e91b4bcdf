"""Vendor upgrades run through the node (``siege-node upgrade``), and what changed in a schema.

The management software's vendor ships upgrade scripts a few times a year. Firebird refuses
``DROP COLUMN`` (and some type changes) on a column a trigger uses, and every capture trigger
uses every column of its table, so a vendor script would fail on our triggers. The node runs
the upgrade itself:

1. refuses while other connections are attached (an application writing while capture is off
   would lose its changes for the other sites): it names them;
2. shuts the database down to its owner (``gfix -shut multi``): from there until capture
   is back, only SYSDBA or the owner can connect — the application's users cannot start
   writing while capture steps aside (an application connecting as SYSDBA still can: such
   connections are named afterwards, with the advice to run ``analyse``);
3. publishes what is captured, so no change waits in the old schema's shape;
4. backs the database up (``gbak``): isql commits DDL as it goes, and vendor scripts commit
   along the way, so a script failing halfway would otherwise leave half an upgrade;
5. drops the capture triggers (the log, the registers and everything else stay);
6. runs the script (through ``isql-fb``) or the vendor's own upgrader command;
7. on failure, restores the backup: the database is as it was before the upgrade — schema,
   rows and capture — and that is said plainly;
8. reinstalls capture for the schema as it now is, re-guards application triggers the
   script replaced, and catches up with what other sites already wrote in the new or
   widened columns and the new tables (catchup.py) — then brings the database online;
9. says what changed: tables and columns added, dropped, retyped.

Must never let anyone but the owner in while capture is off: when capture cannot be put
back (or the backup cannot be restored), the database stays shut down and the error says
what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from firebird.driver import Connection

from ..db.database import READ_COMMITTED_RW, SNAPSHOT_RW, connection, transaction
from ..db.schema import Schema, TableSelection, introspect
from ..journal import capture, guardwatch
from ..journal.schemacache import SchemaCache
from ..journal.seal import sealer_for
from ..model.config import NodeConfig
from ..pipeline.apply import catch_up
from ..pipeline.publish import Publisher

ISQL = "isql-fb"
GFIX = "gfix"
GBAK = "gbak"
TOOL_TIMEOUT_S = 6 * 3600  # a backup or restore of a large database
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


def drift(con: Connection, selection: TableSelection = TableSelection(),
          schemas: SchemaCache | None = None) -> list[str]:
    """What changed in the replicated schema since capture was installed — changes that do
    not travel until `upgrade` (or `install`) — each said with what to do. ``schemas``: a
    running node's schema cache (every hello asks this; reading 600 tables' schema takes a
    second)."""
    if schemas is not None:
        schemas.check()
        live = schemas.selected(selection)
    else:
        live = introspect(con, selection)
    live_tables = live.tables
    registry = {name: no for no, (name, _k) in capture.table_registry(con).items()
                if name != capture.HEARTBEAT_TABLE}
    out = [f"table {name} is new and not captured" for name in sorted(live_tables)
           if name not in registry]
    shapes = _captured_shapes(con)
    for name, number in sorted(registry.items()):
        recorded = shapes.get(number)
        table = live_tables.get(name)
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
    recorded_fingerprint = capture.get_state(con, "schema_fingerprint") or ""
    if (not out and recorded_fingerprint
            and live.fingerprint_like(recorded_fingerprint) != recorded_fingerprint):
        # Same tables, columns and types: what changed is a rule the fingerprint covers.
        out.append("a NOT NULL, default, CHECK, UNIQUE key or foreign key (or its ON DELETE / "
                   "ON UPDATE rule) of a replicated table changed since install: make the same "
                   "change at every site (siege-node upgrade), then siege-node install here")
    return out


def _captured_shapes(con: Connection) -> dict[int, str]:
    """Every table's recorded captured shape (capture.captured_shape), in one read: a
    shape kept in parts (hundreds of columns) is read whole."""
    prefix = capture.CAPTURED_STATE
    with transaction(con, SNAPSHOT_RW) as tm:
        cur = tm.cursor()
        try:
            cur.execute(f"SELECT NAME, VAL FROM {capture.STATE_TABLE} WHERE NAME STARTING "
                        "WITH ?", (prefix,))
            rows = {str(n): str(v) for n, v in cur.fetchall()}
        finally:
            cur.close()
    out = {}
    for name, value in rows.items():
        number = name[len(prefix):]
        if not number.isdigit():
            continue  # a part (NAME#k) of a long one
        if value.startswith("parts:"):
            value = capture.get_long_state(con, name) or ""
        out[int(number)] = value
    return out


@dataclass
class UpgradeOutcome:
    change: SchemaChange
    published: int
    failure: str | None  # the script's or command's failure, with its output
    fingerprint: str
    caught_up: list[str]  # other sites' values and events the new schema could now take
    restored: bool = False  # the script failed and the backup from before it is back
    warnings: list[str] = field(default_factory=list)


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
            command: Sequence[str] = (), backup_dir: Path | None = None) -> UpgradeOutcome:
    if (script is None) == (not command):
        raise UpgradeError("give either --script FILE or -- COMMAND ...")
    if script is not None and not script.is_file():
        raise UpgradeError(f"{script}: no such script")
    missing = [tool for tool in (ISQL, GFIX, GBAK) if shutil.which(tool) is None]
    if missing:
        raise UpgradeError(f"{', '.join(missing)} not installed (Debian: apt-get install "
                           "firebird3.0-utils): the node needs them to upgrade safely")
    with connection(cfg.database) as con:
        if not capture.is_installed(con):
            raise UpgradeError(f"capture is not installed in {cfg.database.dsn}: nothing to "
                               "step aside for; run the script directly, then siege-node "
                               "install")
        _refuse_if_others(con)
    # Our own connection is closed: the shutdown waits for no attachment (-attach 0), so an
    # application that connected meanwhile makes it fail rather than lose its work.
    failed = _tool(cfg, [GFIX, "-shut", "multi", "-attach", "0", cfg.database.dsn])
    if failed:
        raise UpgradeError(f"the database could not be reserved for the upgrade ({failed}). "
                           "Is the application still connected? Close it everywhere and "
                           "stop `siege-node run`; nothing was changed")
    folder = Path(tempfile.mkdtemp(prefix="siege-upgrade-", dir=backup_dir))
    backup = folder / "before-upgrade.fbk"
    failure: str | None = None
    restored = False
    may_open = True  # from the trigger drop on: online again only once capture is back
    try:
        with connection(cfg.database) as con:
            _refuse_if_others(con)  # SYSDBA or the owner may still have come in
            published = Publisher(con, cfg.site, policies=cfg.policies, sealer=sealer_for(
                cfg.service.bundle if cfg.service else None)).publish().events
            waiting = capture.pending_entries(con)
            if waiting:
                raise UpgradeError(f"{waiting} captured changes could not be published (see "
                                   "siege-node status); fix that first. Nothing was changed")
            before = introspect(con, cfg.tables)
        failed = _tool(cfg, [GBAK, "-b", "-g", cfg.database.dsn, str(backup)])
        if failed:
            raise UpgradeError(f"the backup before the upgrade failed ({failed}); is there "
                               f"room in {folder.parent}? (--backup-dir) Nothing was changed")
        may_open = False
        with connection(cfg.database) as con:
            capture.drop_capture_triggers(con)
        failure = _run(cfg, script, command)
        if failure:
            # Back to exactly before the upgrade (capture included): nobody else could
            # write meanwhile. gbak brings the restored database online.
            failed = _tool(cfg, [GBAK, "-rep", str(backup), cfg.database.dsn])
            if failed:
                raise UpgradeError(
                    f"the upgrade failed ({failure}) and restoring the backup taken before it "
                    f"failed too ({failed}). The backup is kept at {backup}; the database "
                    "stays shut down to its owner. Restore it as SYSDBA (gbak -rep BACKUP "
                    "DATABASE) before anyone works, then siege-node install")
            restored = True
        intruders = _others(cfg)
        after, caught_up = _reinstall(cfg, failure)  # still shut down to the owner
        may_open = True
    finally:
        if may_open:
            _online(cfg)
            shutil.rmtree(folder, ignore_errors=True)
    warnings = [f"connected during the upgrade as the database's owner or SYSDBA: {who}. "
                "What it changed while capture stepped aside did not travel: run "
                "siege-ctl analyse" for who in intruders]
    return UpgradeOutcome(compare(before, after), published, failure, after.fingerprint(),
                          caught_up, restored, warnings)


def _others(cfg: NodeConfig) -> list[str]:
    with connection(cfg.database) as con:
        return others_attached(con)


def _refuse_if_others(con: Connection) -> None:
    others = others_attached(con)
    if others:
        raise UpgradeError(
            "other connections are attached: " + "; ".join(others) + ". Close the "
            "application everywhere and stop `siege-node run` first: a change made "
            "while capture steps aside would never reach the other sites. Nothing "
            "was changed")


def _online(cfg: NodeConfig) -> None:
    failed = _tool(cfg, [GFIX, "-online", cfg.database.dsn])
    # A restored database is already online: gfix then says the mode is invalid.
    if failed and "shutdown mode is invalid" not in failed:
        raise UpgradeError(f"the database could not be brought back online ({failed}): run "
                           f"`gfix -online {cfg.database.dsn}` as SYSDBA before anyone works")


def _reinstall(cfg: NodeConfig, failure: str | None) -> tuple[Schema, list[str]]:
    """Capture back on, for the schema as it now is; then the catch-up."""
    try:
        with connection(cfg.database) as con:
            report = capture.install(con, cfg.tables, cfg.fire_triggers, cfg.generators)
            guardwatch.remember_install(con, cfg.fire_triggers)
            assert report.schema is not None
            return report.schema, catch_up(con, cfg.site, cfg.policies, sealer=sealer_for(
                cfg.service.bundle if cfg.service else None))
    except Exception as exc:  # said loudly: the database is without capture
        raise UpgradeError(
            f"capture could NOT be reinstalled after the upgrade ({exc}). The database "
            "stays shut down to its owner: run `siege-node install`, then `gfix -online "
            f"{cfg.database.dsn}` as SYSDBA. The upgrade itself "
            f"{'failed: ' + failure if failure else 'ran'}") from exc


def _tool(cfg: NodeConfig, argv: list[str]) -> str | None:
    """Run a Firebird tool as the node's database user; its complaint, or None."""
    try:
        done = subprocess.run(argv, env=_env(cfg), capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]}: {exc}"
    if done.returncode != 0:
        return f"{argv[0]}: {' '.join((done.stdout + done.stderr).split())[-1000:]}"
    return None


def _env(cfg: NodeConfig) -> dict[str, str]:
    spec = cfg.database
    env = {**os.environ, DSN_ENV: spec.dsn, "ISC_USER": spec.user}
    if spec.password:
        env["ISC_PASSWORD"] = spec.password
    return env


def _run(cfg: NodeConfig, script: Path | None, command: Sequence[str]) -> str | None:
    spec = cfg.database
    env = _env(cfg)
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
