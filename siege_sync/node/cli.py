"""``siege-node``: the site node's command line.

Commands that exist work: ``install``, ``uninstall``, ``tables``, ``publish``, ``status``,
``conflicts``, ``held [--retry]`` (transactions of other sites this database does not apply
yet: refused by it, or waiting; their rows, its message, what to do — the rows from the
siège's log, which is told what is held here), ``upgrade`` (a vendor upgrade with capture
stepped aside), ``run`` (the mesh service), ``join`` (a new site: wait for the siège's copy,
restore it, then serve), ``resync`` (rebuild this site from the siège's copy, then serve) and
``exchange --with SITE`` (asks the running node to sync with a peer now).
Operator mistakes (bad config, unreachable database, refused uninstall) print what is wrong
and what to do, and exit 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from firebird.driver import Connection, DatabaseError

from .. import __version__
from ..certs import CertError
from ..console import quiet_on_closed_pipe
from ..i18n import N_, _, ngettext, use_for_command_line, when
from .db import values
from .db.database import DatabaseUnavailable, connection
from .db.schema import FINGERPRINT_VERSION, Schema, fingerprint_version, introspect
from .journal import capture, conflicts, guardwatch, occupant, parking
from .journal.seal import sealer_for
from .journal.status import capture_status
from .mesh.daemon import NodeError
from .model import config, keysources
from .model.clock import Clock
from .operations.upgrade import UpgradeError
from .pipeline.apply import catch_up
from .pipeline.publish import Publisher, PublishError


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*["-" * w for w in widths])]
    out += [line.format(*[str(x) for x in row]) for row in rows]
    return "\n".join(out)


def cmd_install(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    # Another site's database (its node recorded whose): refused before anything changes,
    # as `run` refuses it — install would move its generators into this site's range.
    occupant.check_site(con, cfg.site, None, cfg.database.dsn, str(cfg.path or "the config"),
                        record=False)
    # Guards a vendor's upgrade dropped, and what fired meanwhile: said once they are back.
    before = guardwatch.check(con, cfg.fire_triggers)
    report = capture.install(con, cfg.tables, cfg.fire_triggers, cfg.generators)
    guardwatch.remember_install(con, cfg.fire_triggers)
    after = guardwatch.check(con, cfg.fire_triggers)
    for line in catch_up(con, cfg.site, cfg.policies, sealer=sealer_for(
            cfg.service.bundle if cfg.service else None)):
        print(f"  caught up with the new schema: {line}")
    schema = report.schema
    assert schema is not None
    print(f"site {cfg.site}: capture installed on {len(schema.tables)} tables "
          f"(schema {schema.fingerprint()})")
    for title, items in (("created", report.created), ("upgraded", report.upgraded),
                         ("removed", report.removed), ("guarded triggers", report.guarded),
                         ("generators", report.generators)):
        for item in items:
            print(f"  {title}: {item}")
    still = {g.trigger for g in after.lost}
    for lost in before.lost:
        if lost.trigger not in still:
            print(f"  guard RESTORED in trigger {lost.trigger} on {lost.table}: it was missing "
                  f"since {lost.since} at least, and fired again for every change applied "
                  "from other sites meanwhile (their effects were doubled)")
    if len(still) < len(before.lost):
        print(f"  {before.lines()[-1]}")  # what was seen of their effects
    for note in report.notes:  # e.g. the schema cache is off (no privilege for a DB trigger)
        print(f"  WARNING: {note}")
    for item in report.unguardable:
        print(f"  WARNING: trigger {item} has no stored source and cannot be guarded: it will "
              "fire again for changes applied from other sites (duplicated effects). Add it to "
              "[triggers] fire if that is intended, or have the vendor ship its source.")
    for refusal in schema.refused:
        print(f"  NOT replicated: {refusal.table}: {refusal.reason}")
    for crossing in schema.crossings:
        print(f"  WARNING: foreign key {crossing.key.name} {crossing.key.ddl()} crosses the edge "
              f"of what is replicated: {crossing.meaning()}")
    for trig in schema.database_triggers:
        if trig.needs_attention(trig.name in cfg.fire_triggers):
            print(f"  WARNING: database trigger {trig.name} ({trig.event}): "
                  f"{trig.effect(trig.name in cfg.fire_triggers)}")
    _warn_key_sources(con, cfg, schema)
    return 0


def _warn_key_sources(con: Connection, cfg: config.NodeConfig, schema: Schema) -> None:
    """Keys every site hands out alike (no per-site range): said loudly (keysources.py)."""
    for line in keysources.warnings(con, schema, cfg.generators):
        print(f"  WARNING: {line}")


def cmd_uninstall(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    removed = capture.uninstall(con, force=args.force)
    print(ngettext("site {site}: removed {count} object", "site {site}: removed {count} objects",
                   len(removed)).format(site=cfg.site, count=len(removed)) if removed
          else _("site {site}: nothing to remove").format(site=cfg.site))
    for item in removed:
        print(f"  {item}")
    return 0


def cmd_tables(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    schema = introspect(con, cfg.tables)
    numbers = {name: no for no, (name, _keys) in capture.table_registry(con).items()} \
        if capture.is_installed(con) else {}
    rows = [[t.name, str(len(t.columns)), ",".join(t.primary_key),
             f"{capture.IMAGE_PREFIX}{numbers[t.name]}" if t.name in numbers else "not installed"]
            for t in schema.tables.values()]
    print(f"Replicated tables (dialect {schema.dialect}, schema {schema.fingerprint()}):")
    print(_table(rows, ["table", "columns", "primary key", "capture"]))
    refused = [r for r in schema.refused if not r.temporary]
    if refused:
        print("\nRefused (not replicated):")
        for refusal in refused:
            print(f"  {refusal.table}: {refusal.reason}")
    temporary = [r.table for r in schema.refused if r.temporary]
    if temporary:
        print("\nNever replicated: global temporary tables (their rows are private to one "
              "connection or transaction; nothing to do):")
        print(f"  {', '.join(temporary)}")
    if schema.crossings:
        print("\nForeign keys between replicated tables and tables that are not:")
        for crossing in schema.crossings:
            print(f"  {crossing.key.name}: {crossing.key.ddl()}")
            print(f"    {crossing.meaning()}")
    trig_rows = []
    for table, triggers in schema.triggers.items():
        for trig in triggers:
            if trig.source is None:
                state = "NO SOURCE: cannot be guarded, will fire on applied changes"
            elif trig.name in cfg.fire_triggers:
                state = "fires on applied changes (config)"
            elif capture.guard.is_guarded(trig.source):
                state = "guarded"
            else:
                state = "NOT guarded yet: run install"
            trig_rows.append([table, trig.name, trig.description,
                              "active" if trig.active else "inactive", state])
    if trig_rows:
        print("\nApplication triggers on replicated tables:")
        print(_table(trig_rows, ["table", "trigger", "fires", "", "on applied changes"]))
    if schema.database_triggers:
        print("\nDatabase triggers (on connect, transactions, DDL) and what they do to "
              "replication:")
        print(_table([[t.name, t.event, "active" if t.active else "inactive",
                       ", ".join(t.writes) or "-"] for t in schema.database_triggers],
                     ["trigger", "fires", "", "replicated tables it writes"]))
        for trig in schema.database_triggers:
            fires = trig.name in cfg.fire_triggers
            flag = "WARNING: " if trig.needs_attention(fires) else ""
            print(f"  {flag}{trig.name}: {trig.effect(fires)}")
    findings = keysources.assess(con, keysources.find(con, schema), cfg.generators)
    if findings:
        print("\nWhat hands out key values (generators, identity columns, MAX()+1):")
        for finding in findings:
            print(f"  {finding.text}")
        for finding in findings:
            if finding.warning:
                print(f"WARNING: {finding.warning}")
    return 0


def cmd_publish(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    if not capture.is_installed(con):
        print(_("error: {problem}").format(problem=_(
            "capture is not installed here; run siege-node install first")), file=sys.stderr)
        return 2
    sealer = sealer_for(cfg.service.bundle if cfg.service else None)
    if sealer is None:
        # Unsigned, they would be refused by every peer (seal.py) and hold this site's
        # later transactions there: nothing is published.
        print(_("error: {problem}").format(problem=_(
            "publishing signs every transaction with this site's certificate, and this config "
            "names no [node] bundle; add it (the node's bundle directory) or let `siege-node "
            "run` publish. Nothing was published")), file=sys.stderr)
        return 2
    result = Publisher(con, cfg.site, policies=cfg.policies, sealer=sealer).publish()
    print(ngettext("site {site}: published {events} change ({transactions} transaction)",
                   "site {site}: published {events} changes (transactions: {transactions})",
                   result.events).format(site=cfg.site, events=result.events,
                                         transactions=result.transactions)
          + (f" (seq {result.first_seq}..{result.last_seq})" if result.events else ""))
    for message in result.capture_errors:
        print("  " + _("CAPTURE ERROR: {message}").format(message=message))
    return 1 if result.capture_errors else 0


def cmd_status(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    st = capture_status(con)
    if not st.installed:
        print(_("site {site}: capture not installed (run siege-node install)").format(
            site=cfg.site))
        return 1
    schema = introspect(con, cfg.tables)
    live = schema.fingerprint()
    facts: list[tuple[str, str]] = []
    print(_("site {site}").format(site=cfg.site))
    if st.state.get("needs_resync"):  # written by the running node (upstream.check_resync)
        facts.append((_("NEEDS A RESYNC"), st.state["needs_resync"]))
    facts += [(_("published changes"), str(st.published_seq)),
              (_("waiting to publish"), _("{count} captured changes").format(
                  count=st.pending_entries)),
              (_("schema"), f"{live}{_since_install(schema, st.state)}")]
    _facts(facts)
    for line in keysources.warnings(con, schema, cfg.generators):
        print("  " + _("WARNING: {warning}").format(warning=line))
    for line in guardwatch.check(con, cfg.fire_triggers).lines():
        print("  " + _("WARNING: {warning}").format(warning=line))
    facts = [(_("capture errors"), str(st.capture_errors) + (
        " " + _("(last: {when})").format(when=st.state.get("last_capture_errors"))
        if st.capture_errors else ""))]
    facts += [(_("applied from {site}").format(site=origin),
               _("up to #{seq} (incarnation {incarnation})").format(
                   seq=seq, incarnation=incarnation))
              for (origin, incarnation), seq in st.applied.items()]
    facts.append((_("changes set aside"), _("{count} on record").format(count=st.conflicts)
                  + (", " + _("{count} AWAITING A DECISION (siege-node conflicts)").format(
                      count=st.awaiting_decision) if st.awaiting_decision else "")))
    _facts(facts)
    for p in st.parked:
        limit = " — " + _("PAST THE TIME LIMIT: fix the cause") if p.past_limit() else ""
        print("  " + _("HELD ({state}): {origin} (incarnation {incarnation}) #{seq} since "
                       "{since}, {attempts} attempts{limit}: {reason} — siege-node held says "
                       "what to do").format(
            state=_(parking.state_of(p.reason)), origin=p.origin, incarnation=p.incarnation,
            seq=p.seq, since=when(p.first_seen, seconds=False), attempts=p.attempts,
            limit=limit, reason=p.reason))
    if "restores" in st.state:
        _facts([(_("restores detected"), _("{count} (last: {when})").format(
            count=st.state["restores"], when=st.state.get("last_restores")))])
    if st.limbo_transactions:
        _facts([(_("LIMBO transactions"), _(
            "{count} (their changes wait; resolve with gfix -commit/-rollback)").format(
                count=st.limbo_transactions))])
    if st.open_transactions:
        print("  " + _("open transactions (their captured changes wait for their commit):"))
        rows = [[str(t.tx_id), when(t.started), t.user, t.address or _("local")]
                for t in st.open_transactions]
        print("    " + _table(rows, [_("tx"), _("since"), _("user"), _("from")]
                              ).replace("\n", "\n    "))
    return 0


def _facts(facts: list[tuple[str, str]]) -> None:
    """``  label:   value`` lines, the values aligned."""
    width = max(22, *(len(label) + 2 for label, _value in facts))
    for label, value in facts:
        print(f"  {label + ':':<{width}} {value}")


def _since_install(schema: Schema, state: dict[str, str]) -> str:
    """What status says of the live schema against the fingerprint install recorded: an
    older node recorded it in an older form, compared in that form (a new algorithm is not
    a schema change)."""
    recorded = state.get("schema_fingerprint") or ""
    if not recorded:
        return " (no fingerprint recorded at install: run siege-node install)"
    if schema.fingerprint_like(recorded) != recorded:
        return f" (CHANGED since install {recorded}: run siege-node install)"
    if fingerprint_version(recorded) != FINGERPRINT_VERSION:
        return (f" (unchanged since install, which an older node recorded as {recorded}: "
                "that form does not cover NOT NULL, defaults, CHECKs nor foreign keys' "
                "actions, and sites compare fingerprints of one form only: run siege-node "
                "install to record this one)")
    return ""


def cmd_conflicts(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    if args.reapply:
        done = conflicts.reapply(con, args.reapply)
        print(_("re-applied {id}: {column} = {value} as a new local change; the next sync "
                "carries it to every site").format(
            id=done.short_id, column=f"{done.table}.{done.column}",
            value=values.describe(done.value)))
        return 0
    found = conflicts.listing(con, args.table, cfg.policies)
    if not found:
        print(_("site {site}: no change set aside on record").format(site=cfg.site))
        return 0
    rows = [[c.short_id, when(c.recorded, seconds=False), c.table,
             ",".join(values.describe(k) for k in c.key), _(c.kind), c.column or _("(row)"),
             values.describe(c.value),
             c.loser, when(c.changed) if c.changed else "?", c.lost_to or c.winner or "",
             _("re-applied") if c.reapplied else (_("DECIDE") if c.awaiting_decision else "")]
            for c in found]
    print(_table(rows, [_("id"), _("recorded"), _("table"), _("key"), _("kind"), _("column"),
                        _("value set aside"), _("from"), _("changed"), _("lost to"),
                        _("state")]))
    return 0


HELD_TIMEOUT = 15.0  # seconds for the siège to describe what is held here


def cmd_held(cfg: config.NodeConfig, con: Connection, args: argparse.Namespace) -> int:
    """Every transaction of another site held here: refused by this database (its message,
    what to do) or waiting for something still to come. ``--retry``: the running node
    exchanges with the siège now (its push carries them again), then the list again."""
    if not capture.is_installed(con):
        print(_("error: {problem}").format(problem=_(
            "capture is not installed here; run siege-node install first")), file=sys.stderr)
        return 2
    before = parking.held_here(con, cfg.site)
    if args.retry:
        if not before:
            print(_("site {site}: nothing is held here; nothing to retry").format(
                site=cfg.site))
            return 0
        peer = _retry_peer(cfg, before)
        print(_("retrying now: exchanging with {peer} ...").format(peer=peer), flush=True)
        problem = _ask_exchange(cfg, peer, args.timeout)
        if problem is not None:
            print(_("error: {problem}").format(problem=problem), file=sys.stderr)
            return 2
        after = parking.held_here(con, cfg.site)
        still = {(h.parked.origin, h.parked.incarnation, h.parked.seq): h for h in after}
        for h in before:
            now = still.get((h.parked.origin, h.parked.incarnation, h.parked.seq))
            print(_("retry: {line}").format(line=f"{h.events}: " + (
                _("APPLIED now") if now is None else
                _("still {state} ({attempts} attempts): {message}").format(
                    state=_(now.state), attempts=now.parked.attempts, message=now.message))))
        before = after
        print()
    if not before:
        print(_("site {site}: no transaction is held here").format(site=cfg.site))
        return 0
    _describe_at_siege(cfg, before)
    refused = [h for h in before if h.state == parking.REFUSED]
    print(ngettext("site {site}: {count} held transaction: {refused} refused by this database "
                   "(an operator must act), {waiting} waiting for something still to come",
                   "site {site}: {count} held transactions: {refused} refused by this "
                   "database (an operator must act), {waiting} waiting for something still "
                   "to come", len(before)).format(site=cfg.site, count=len(before),
                                                  refused=len(refused),
                                                  waiting=len(before) - len(refused)))
    for h in sorted(before, key=lambda h: h.state != parking.REFUSED):
        print()
        print("\n".join(h.lines()))
    return 1


def _retry_peer(cfg: config.NodeConfig, held: list[parking.Held]) -> str:
    """Who sends the held transactions again: the siège (it relays every origin), else the
    origin itself."""
    svc = cfg.service
    if svc is None:
        raise config.ConfigError(f"{cfg.path}: `held --retry` needs the [node] section of the "
                                 "running node")
    if svc.siege and svc.siege != cfg.site and svc.siege in svc.peers:
        return svc.siege
    for h in held:
        if h.parked.origin in svc.peers:
            return h.parked.origin
    raise config.ConfigError(f"{cfg.path}: neither the siège nor {held[0].parked.origin} is "
                             "in [peers]: no one to ask for the held transactions again")


def _own_node(listen: str) -> tuple[str, str]:
    """Where this machine reaches the node listening on ``listen`` (a wildcard address is
    dialled on loopback)."""
    host, _, port = listen.rpartition(":")
    return {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host), port


def _ask_exchange(cfg: config.NodeConfig, peer: str, timeout: float) -> str | None:
    """The running node (over mTLS, as itself) exchanges with ``peer`` now; a problem that
    stopped it, or None."""
    import grpc

    from ..certs import load_bundle
    from ..proto import sync_pb2, sync_pb2_grpc
    from .mesh.transport import channel

    assert cfg.service is not None
    bundle = load_bundle(cfg.service.bundle)
    host, port = _own_node(cfg.service.listen)
    with channel(f"{host}:{port}", bundle, cfg.site) as ch:
        try:
            reply = sync_pb2_grpc.SyncNodeStub(ch).Exchange(
                sync_pb2.ExchangeRequest(peer=peer), timeout=timeout)
        except grpc.RpcError as exc:
            return (f"the node at {host}:{port} did not answer ({exc.code().name}: "
                    f"{exc.details()}); is `siege-node run --config {cfg.path}` running?")
    if reply.unreachable:
        return f"{peer} is unreachable from this node: {'; '.join(reply.problems)}"
    return None


def _describe_at_siege(cfg: config.NodeConfig, held: list[parking.Held]) -> None:
    """This site keeps only the events it applied: the siège's log describes the rows and
    values, and the siège learns what is held here (a site that dials in is never asked)."""
    svc = cfg.service
    if svc is None or not svc.siege or svc.siege == cfg.site:
        return
    import grpc

    from ..certs import load_bundle
    from ..proto import coordinator_pb2_grpc
    from .mesh.transport import channel

    address = svc.peers[svc.siege].address if svc.siege in svc.peers else None
    if address is None:
        for h in held:
            h.rows_note = (f"its events are not stored here, and [peers.{svc.siege}] has no "
                           "address to ask the siège for them: siege-ctl held shows them")
        return
    request = parking.report(held)
    try:
        with channel(address, load_bundle(svc.bundle), svc.siege) as ch:
            reply = coordinator_pb2_grpc.CoordinatorStub(ch).ReportHeld(
                request, timeout=HELD_TIMEOUT)
    except grpc.RpcError as exc:
        print(f"warning: the siège {svc.siege} at {address} did not answer ({exc.code().name}"
              f": {exc.details()}): the rows and values are not shown (this site does not "
              "store events it has not applied)", file=sys.stderr)
        return
    described = {(t.origin, t.incarnation, t.first_seq): t for t in reply.held}
    for h in held:
        t = described.get((h.parked.origin, h.parked.incarnation, h.parked.seq))
        if t is None or not t.rows:
            if t is not None:
                h.rows_note = t.rows_note
            continue
        h.last_seq = t.last_seq
        h.rows = [parking.HeldRow(r.table, r.op, r.key, list(r.values), r.key_data)
                  for r in t.rows]
        h.rows_note = ""


COMMANDS = {
    "install": (cmd_install, N_("create or upgrade the capture objects for the live schema")),
    "uninstall": (cmd_uninstall, N_("remove exactly the sync's objects and guards")),
    "tables": (cmd_tables, N_("what is replicated, refused and why, triggers, key "
                              "generators")),
    "publish": (cmd_publish, N_("publish the captured changes now")),
    "status": (cmd_status, N_("backlog, open transactions, capture errors, counters")),
    "conflicts": (cmd_conflicts, N_("changes set aside, on record; --reapply ID writes one "
                                    "back")),
    "held": (cmd_held, N_("transactions of other sites not applied here yet (refused by this "
                          "database, or waiting): rows, its message, what to do; --retry")),
}


# Fault injection only (tools/chaos/): the node runs as if this machine's clock were
# skewed by that many seconds — fixed at start, or read from a file the injector rewrites
# while the node runs (a clock jump). Not a setting: a real site's clock is fixed with NTP.
CLOCK_SKEW_ENV = "SIEGE_SYNC_FAULT_CLOCK_SKEW_S"
CLOCK_SKEW_FILE_ENV = "SIEGE_SYNC_FAULT_CLOCK_SKEW_FILE"


def fault_clock() -> Clock:
    """The node's clock: the system's, unless fault injection skews it (above) — for
    ``run``, and for ``join``/``resync``, which go on serving as the site."""
    import os

    from .model.clock import FileSkewedClock, SkewedClock, SystemClock

    skew_file = os.environ.get(CLOCK_SKEW_FILE_ENV)
    if skew_file:
        return FileSkewedClock(SystemClock(), Path(skew_file))
    skew = os.environ.get(CLOCK_SKEW_ENV)
    if skew:
        try:
            offset_us = int(float(skew) * 1_000_000)
        except ValueError:
            raise config.ConfigError(f"{CLOCK_SKEW_ENV}={skew!r}: give seconds, e.g. -3600"
                                     ) from None
        return SkewedClock(SystemClock(), offset_us)
    return SystemClock()


def cmd_run(cfg: config.NodeConfig, args: argparse.Namespace) -> int:
    from .mesh.daemon import run

    return run(cfg, fault_clock())


def cmd_join(cfg: config.NodeConfig, args: argparse.Namespace) -> int:
    """A new site: wait for the siège's snapshot (siege-ctl join SITE there), then serve."""
    from .mesh.daemon import run

    return run(cfg, fault_clock(), join=True)


def cmd_resync(cfg: config.NodeConfig, args: argparse.Namespace) -> int:
    """A site the mesh no longer takes: wait for the siège's copy (siege-ctl resync SITE
    there), keep this database beside it and what it wrote on record, then serve."""
    from .mesh.daemon import run

    return run(cfg, fault_clock(), resync=True)


def cmd_exchange(cfg: config.NodeConfig, args: argparse.Namespace) -> int:
    """Ask the node running with this config (over mTLS, as itself) to exchange now."""
    import grpc

    from ..certs import load_bundle
    from ..proto import sync_pb2, sync_pb2_grpc
    from .mesh.transport import channel

    if cfg.service is None:
        raise config.ConfigError(f"{cfg.path}: `exchange` needs the [node] section of the "
                                 "running node")
    bundle = load_bundle(cfg.service.bundle)
    host, port = _own_node(cfg.service.listen)
    with channel(f"{host}:{port}", bundle, cfg.site) as ch:
        try:
            reply = sync_pb2_grpc.SyncNodeStub(ch).Exchange(
                sync_pb2.ExchangeRequest(peer=args.peer), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(_("error: {problem}").format(problem=_(
                "the node at {address} did not answer ({code}: {details}); is `siege-node run "
                "--config {config}` running?").format(
                    address=f"{host}:{port}", code=exc.code().name, details=exc.details(),
                    config=cfg.path)), file=sys.stderr)
            return 2
    print(_table([[reply.peer, str(reply.pulled_events), str(reply.pushed_events),
                   f"{reply.clock_offset_us / 1e6:+.3f} s"]],
                 [_("peer"), _("applied here"), _("applied there"), _("clock offset")]))
    for problem in reply.problems:
        print(_("problem: {problem}").format(problem=problem))
    return 1 if reply.problems else 0


def cmd_upgrade(cfg: config.NodeConfig, args: argparse.Namespace) -> int:
    """Run a vendor upgrade with capture stepped aside (upgrade.py)."""
    from .operations.upgrade import upgrade

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    outcome = upgrade(cfg, args.script, command, args.backup_dir)
    print(f"site {cfg.site}: {outcome.published} captured changes published before the "
          "upgrade")
    for line in outcome.change.lines() or ["no replicated table or column changed"]:
        print(f"  {line}")
    for line in outcome.caught_up:
        print(f"  caught up with the new schema: {line}")
    for line in outcome.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if outcome.failure:
        print(f"error: the upgrade FAILED: {outcome.failure}", file=sys.stderr)
        state = ("the database is restored as it was before the upgrade (schema and rows, "
                 "from the backup taken just before it)" if outcome.restored
                 else "the database is as the failed upgrade left it")
        print(f"{state}; capture is reinstalled on that schema ({outcome.fingerprint}): users "
              "can work and sync goes on. Fix the script and run siege-node upgrade again",
              file=sys.stderr)
        return 1
    print(f"capture reinstalled on the new schema ({outcome.fingerprint}); start "
          "`siege-node run` again")
    return 0


SERVICE_COMMANDS = {
    "upgrade": (cmd_upgrade, N_("run a vendor upgrade script (or -- COMMAND) with capture "
                                "stepped aside, then reinstall it")),
    "run": (cmd_run, N_("serve this site on the mesh (mTLS gRPC) until SIGTERM")),
    "join": (cmd_join, N_("a new site: wait for the siège's copy of the database (siege-ctl "
                          "join SITE there), restore it as this site's own, then serve")),
    "resync": (cmd_resync, N_("rebuild this site from the siège's copy (siege-ctl resync "
                              "SITE there): its database kept beside, what it wrote that the "
                              "mesh lacks put on record, then serve")),
    "exchange": (cmd_exchange, N_("ask the running node to sync with a peer now")),
}


def build_parser() -> argparse.ArgumentParser:
    """Built once the language is chosen: its help speaks it."""
    parser = argparse.ArgumentParser(prog="siege-node",
                                     description=_("The site node's command line."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_func, help_text) in [*COMMANDS.items(), *SERVICE_COMMANDS.items()]:
        p = sub.add_parser(name, help=_(help_text))
        p.add_argument("--config", "-c", type=Path, required=True,
                       help=_("the node's TOML file"))
        p.add_argument("--verbose", "-v", action="store_true")
        if name == "uninstall":
            p.add_argument("--force", action="store_true",
                           help=_("also drop captured changes not yet published"))
        if name == "conflicts":
            p.add_argument("--table", help=_("only this table"))
            p.add_argument("--reapply", metavar="ID",
                           help=_("write this change set aside back as a new local change"))
        if name == "upgrade":
            p.add_argument("--script", type=Path, help=_("an SQL script, run with isql-fb"))
            p.add_argument("--backup-dir", type=Path, default=None,
                           help=_("where the backup taken before the upgrade goes (default: "
                                  "the system's temporary folder); removed afterwards"))
            p.add_argument("command_line", nargs=argparse.REMAINDER,
                           help=_("-- COMMAND ...: the vendor's upgrader instead (it gets "
                                  "SIEGE_SYNC_DSN, ISC_USER, ISC_PASSWORD)"))
        if name == "held":
            p.add_argument("--retry", action="store_true",
                           help=_("the running node asks for them again now (an exchange "
                                  "with the siège), then the list again"))
            p.add_argument("--timeout", type=float, default=600.0, help=_("seconds"))
        if name == "exchange":
            p.add_argument("--with", dest="peer", required=True, metavar="SITE",
                           help=_("the peer, as named in [peers]"))
            p.add_argument("--timeout", type=float, default=600.0, help=_("seconds"))
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    use_for_command_line()
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(_("error: {problem}").format(problem=exc), file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s site={cfg.site} %(name)s: %(message)s")
    try:
        if args.command in SERVICE_COMMANDS:
            return SERVICE_COMMANDS[args.command][0](cfg, args)
        func = COMMANDS[args.command][0]
        with connection(cfg.database) as con:
            if args.command != "install" and capture.is_installed(con):
                capture.upgrade_core(con)  # (install does it itself, and says so)
            return func(cfg, con, args)
    except (DatabaseUnavailable, capture.InstallError, PublishError,
            conflicts.ConflictError, config.ConfigError, CertError, NodeError,
            UpgradeError, occupant.Occupied) as exc:
        print(_("error: {problem}").format(problem=exc), file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(_("error: {problem}").format(problem=_(
            "the database refused the operation: {message}").format(
                message=str(exc).strip())), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
