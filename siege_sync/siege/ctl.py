"""``siege-ctl``: the operator's command line, talking to the siège's node over mTLS with an
admin certificate (``siege-certs issue-admin NAME``).

Commands that exist work: ``test``, ``manual``, ``stop``, ``status [--watch]``, ``join SITE``,
``resync SITE``, ``adopt``, ``alert-test``,
``conflicts [--table T] [--reapply ID] [--ack ID] [--ack-before DATE] [--all]``,
``decommission SITE``,
``held [--site S] [--retry]`` (transactions a site does not apply yet, why, what to do),
``analyse [--table T] [--site S] [--repair --prefer SITE]``,
``report list [--all]``, ``report show ID [--html FILE] [--pdf FILE]``. The siège is found
from a small TOML file (``--config``, default ``siege-ctl.toml`` in the current folder, or the
``SIEGE_CTL_CONFIG`` environment variable)::

    address = "siege.example.net:7443"   # the siège node's [node] listen address
    siege = "siege"                      # its site id (the name in its certificate)
    bundle = "/home/alice/siege-admin"   # the folder issue-admin wrote

    [stand_ins]                          # optional: the nodes that may stand in, in order
    lyon = "lyon.example.net:7443"

or from ``--address/--siege/--bundle``. When the siège does not answer the health check and
stand-ins are listed, the command goes to the first stand-in that answers (said on stderr):
while the siège is gone, that is the node running the rounds. ``join``, ``resync`` and
``decommission`` wait for the siège: it alone records them.

Mistakes (no config, no bundle, siège unreachable, refused certificate) print what is wrong
and what to do and exit 2; a round or a test that finds problems exits 1. It speaks the
shell's language (i18n), and asks the siège for its answers in it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from .. import __version__
from ..certs import CertError
from ..console import quiet_on_closed_pipe
from ..i18n import _, current, ngettext, number, signed, use_for_command_line, when
from ..proto import coordinator_pb2, coordinator_pb2_grpc
from .printout import render_html, write_pdf
from .reach import CtlError, Target, connect, find_target
from .reports import DEFAULT_LIST, held_lines, kind_of, render_text, word


def _target(args: argparse.Namespace) -> Target:
    return find_target(args.config, args.address, args.siege, args.bundle)


def _stub(target: Target, command: str
          ) -> tuple[grpc.Channel, coordinator_pb2_grpc.CoordinatorStub]:
    link = connect(target, command, on_stand_in=lambda notice: print(
        "siege-ctl: " + notice, file=sys.stderr))
    return link.channel, link.stub


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def cmd_manual(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    report = None
    began: dict[tuple[str, str], float] = {}  # (site, phase) -> when it started running
    for event in stub.Round(coordinator_pb2.RoundRequest(trigger="manual"),
                            timeout=args.timeout):
        if event.HasField("progress"):
            p = event.progress
            started = began.setdefault((p.site, p.phase), time.monotonic())
            counts = ("  " + _("{n_in} in, {n_out} out").format(n_in=p.events_in,
                                                               n_out=p.events_out)
                      if p.state in ("done", "failed") else
                      "  " + _moving(p, time.monotonic() - started)
                      if p.expected_in or p.expected_out else "")
            error = f"  ({p.error})" if p.error else ""
            print(f"{word(p.phase):<13} {p.site:<16} {word(p.state):<8}{counts}{error}",
                  flush=True)
        else:
            report = event.done
    if report is None:
        raise CtlError(_("the siège ended the sync without a report"))
    print()
    print(render_text(report))
    print("\n" + _("report {id}: siege-ctl report show {id}").format(id=report.id))
    return 0 if report.outcome == "complete" else 1


def _moving(p: coordinator_pb2.SiteProgress, elapsed: float) -> str:
    """``1 200 of ~13 000 in, 0 of ~0 out, ETA 0:15``: a long phase as it goes."""
    done, expected = p.events_in + p.events_out, p.expected_in + p.expected_out
    line = _("{n_in} of ~{e_in} in, {n_out} of ~{e_out} out").format(
        n_in=number(p.events_in), e_in=number(p.expected_in), n_out=number(p.events_out),
        e_out=number(p.expected_out))
    if 0 < done < expected and elapsed > 0:
        left = (expected - done) * elapsed / done
        line += ", " + _("ETA {minutes}:{seconds:02d}").format(minutes=int(left // 60),
                                                              seconds=int(left % 60))
    return line


def cmd_analyse(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace,
                adopt: bool = False) -> int:
    request = coordinator_pb2.AnalyseRequest(tables=args.table or [], sites=args.site or [],
                                             repair=args.repair, prefer=args.prefer or "",
                                             adopt=adopt)
    report = None
    bars: dict[tuple[str, str], str] = {}
    for event in stub.Analyse(request, timeout=args.timeout):
        if event.HasField("done"):
            report = event.done
            continue
        p = event.progress
        line = _bar(p)
        if bars.get((p.site, p.table)) != line:
            bars[(p.site, p.table)] = line
            print(line, flush=True)
    if report is None:
        raise CtlError(_("the siège ended the analysis without a report"))
    print()
    print(render_text(report))
    print("\n" + _("report {id}: siege-ctl report show {id}").format(id=report.id))
    return 0 if report.outcome in ("equal", "repaired", "adopted") else 1


def cmd_adopt(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    """Sites kept in step by another tool, installed where they stand: prove they hold the
    same rows; the differences are listed for the operator to settle."""
    args.table, args.site, args.repair, args.prefer = [], [], False, None
    return cmd_analyse(stub, args, adopt=True)


def _bar(p: coordinator_pb2.AnalyseProgress, width: int = 30) -> str:
    """``lyon  ITEM  [#########-----]  61%  comparing``."""
    share = p.rows_done / p.rows_total if p.rows_total else (1.0 if p.state == "done" else 0.0)
    filled = int(round(min(share, 1.0) * width))
    return (f"{p.site:<12} {p.table:<20} [{'#' * filled}{'-' * (width - filled)}] "
            f"{share:4.0%}  {word(p.state)}")


def cmd_join(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    report = None
    started = time.monotonic()
    shown: tuple[str, int] = ("", -1)
    request = coordinator_pb2.JoinRequest(site=args.site, resync=args.command == "resync")
    for event in stub.Join(request, timeout=args.timeout):
        if event.HasField("done"):
            report = event.done
            continue
        p = event.progress
        step = (p.phase, int(100 * p.bytes_done / p.bytes_total) if p.bytes_total else 0)
        if step != shown:  # one line per phase and per percent
            shown = step
            print(_transfer_bar(p, time.monotonic() - started), flush=True)
    if report is None:
        raise CtlError(_("the siège ended the join without a report"))
    print()
    print(render_text(report))
    return 0 if report.outcome in ("joined", "resynced") else 1


def _transfer_bar(p: coordinator_pb2.JoinProgress, elapsed: float, width: int = 30) -> str:
    """``transfer  [#######-------]  41%  12.0 of 29.3 MB  ETA 0:42``."""
    if p.phase != "transfer" or not p.bytes_total:
        return f"{p.site}: {word(p.phase)}"
    share = min(p.bytes_done / p.bytes_total, 1.0)
    filled = int(share * width)
    eta = (elapsed / share - elapsed) if share > 0.01 else None
    return (f"{p.site}: {word('transfer')} [{'#' * filled}{'-' * (width - filled)}] "
            f"{int(share * 100):3d}%  "
            + _("{done} of {total} MB").format(done=number(p.bytes_done / 1e6, 1),
                                               total=number(p.bytes_total / 1e6, 1))
            + ("  " + _("ETA {minutes}:{seconds:02d}").format(minutes=int(eta // 60),
                                                               seconds=int(eta % 60))
               if eta is not None else ""))


def cmd_stop(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    reply = stub.Stop(coordinator_pb2.StopRequest(), timeout=30)
    print(_("the running sync stops at the next transaction boundary") if reply.was_running
          else _("no sync is running"))
    return 0


def cmd_report(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    if args.action == "show":
        if args.id is None:
            raise CtlError(_("report show needs the report's id (siege-ctl report list)"))
        report = stub.Report(coordinator_pb2.ReportRequest(id=args.id), timeout=30)
        if args.html:
            Path(args.html).write_text(render_html(report), encoding="utf-8")
            print(_("report {id} written to {path}").format(id=report.id, path=args.html))
        if args.pdf:
            write_pdf(report, Path(args.pdf))
            print(_("report {id} written to {path}").format(id=report.id, path=args.pdf))
        if not (args.html or args.pdf):
            print(render_text(report))
        return 0
    reply = stub.Reports(coordinator_pb2.ReportsRequest(limit=0 if args.all else DEFAULT_LIST),
                         timeout=30)
    if not reply.reports:
        print(_("no sync yet"))
        return 0
    rows = [[_("id"), _("kind"), _("started"), _("ended"), _("outcome"), _("sites"),
             _("in"), _("out"), _("problems")]]
    for r in reply.reports:
        rows.append([str(r.id), kind_of(r), when(r.started), when(r.ended), word(r.outcome),
                     f"{sum(s.outcome == 'complete' for s in r.sites)}/{len(r.sites)}",
                     str(sum(s.events_in for s in r.sites)),
                     str(sum(s.events_out for s in r.sites)),
                     str(sum(len(s.errors) for s in r.sites))])
    print(_table(rows))
    return 0


def cmd_test(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    reply = stub.Test(coordinator_pb2.TestRequest(), timeout=args.timeout)
    rows = [[_("site"), _("address"), _("found by"), _("reachable"), _("identity"),
             _("cert days"), _("versions"), _("database"), _("clock"), _("latency")]]
    for t in reply.sites:
        rows.append([_("{site} (siège)").format(site=t.site) if t.coordinator else t.site,
                     t.address or "-", word(t.address_source) or "-",
                     _("yes") if t.reachable else _("NO"), t.identity or "-",
                     str(t.cert_days_left) if t.reachable else "-",
                     _("match") if t.versions_match else (_("DIFFER") if t.reachable else "-"),
                     _("ok") if t.database_ok else (_("NO") if t.reachable else "-"),
                     _("{seconds} s").format(seconds=signed(t.clock_offset_us / 1e6, 3))
                     if t.reachable else "-",
                     _("{ms} ms").format(ms=number(t.latency_us / 1000, 1))
                     if t.reachable else "-"])
    print(_table(rows))
    problems = [(t.site, p) for t in reply.sites for p in t.problems]
    for site, problem in problems:
        print(f"{site}: {problem}")
    # Risks, not connection problems: the exit code stays the connection test's.
    for t in reply.sites:
        for warning in t.warnings:
            print(f"{t.site}: " + _("WARNING: {warning}").format(warning=warning))
    return 1 if problems else 0


def cmd_status(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    while True:
        reply = stub.MeshStatus(coordinator_pb2.MeshStatusRequest(), timeout=60)
        if args.watch:
            print("\033[2J\033[H", end="")
        print(_("siège role: {site}").format(site=reply.coordinator)
              + (f", {reply.role}" if reply.role else "")
              + ("  " + _("(a sync is running)") if reply.round_running else ""))
        if reply.next_round:
            print((_("next scheduled sync: {when} (continuous: a shop's changes start one at "
                     "once)") if reply.continuous else _("next scheduled sync: {when}")).format(
                when=when(reply.next_round)))
        else:
            print(_("no sync scheduled: they run by hand (siege-ctl manual)"))
        print(_("changes set aside, on record at the siège: {count}").format(
            count=reply.conflicts)
              + (", " + _("{count} awaiting a decision").format(count=reply.awaiting_decision)
                 if reply.awaiting_decision else ""))
        rows = [[_("site"), _("reachable"), _("last complete sync"), _("published"),
                 _("at siège"), _("pending"), _("backlog"), _("held at siège"), _("clock"),
                 _("schema")]]
        rows.append([_("{site} (siège)").format(site=reply.coordinator), _("yes"), "", "", "",
                     "", "", "", "", reply.schema_fingerprint])
        for s in reply.sites:
            if s.decommissioned:
                rows.append([s.site, _("decommissioned {when}").format(
                    when=when(s.decommissioned, seconds=False))] + [""] * 8)
                continue
            pending = str(max(s.published - s.held_here, 0)) if s.reachable else "?"
            reachable = _("yes") if s.reachable else _("NO")
            backlog = str(s.backlog) if s.reachable and not s.dials_in else "?"
            clock = _("{seconds} s").format(seconds=signed(s.clock_offset_us / 1e6, 2))
            rows.append([s.site, _("{reachable}, dials in").format(reachable=reachable)
                         if s.dials_in else reachable,
                         when(s.last_complete_sync) or _("never"), str(s.published or "?"),
                         str(s.held_here), pending, backlog, str(s.parked),
                         # Not reachable: the offset its last sync measured, said as old.
                         clock if s.reachable else _("{clock} (last sync)").format(
                             clock=clock) if s.clock_offset_us else "?",
                         s.schema_fingerprint or "?"])
        print(_table(rows))
        for s in reply.sites:
            if s.problem:
                print(f"{s.site}: {s.problem}")
        drifted = [(reply.coordinator, reply.schema_changes),
                   *((s.site, s.schema_changes) for s in reply.sites)]
        for site, changes in drifted:
            for change in changes:
                print(f"{site}: " + _("schema changed since capture was installed: {change} "
                                      "— run siege-node upgrade (or install) there").format(
                    change=change))
        kept = [(reply.coordinator, reply.kept_values),
                *((s.site, s.kept_values) for s in reply.sites)]
        for site, lines in kept:
            for line in lines:
                print(f"{site}: {line}")
        guards = [(reply.coordinator, reply.lost_guards),
                  *((s.site, s.lost_guards) for s in reply.sites)]
        for site, lines in guards:
            for line in lines:
                print(f"{site}: " + _("WARNING: {warning}").format(warning=line))
        for site, lines in [(reply.coordinator, reply.key_warnings),
                            *((s.site, s.key_warnings) for s in reply.sites)]:
            for line in lines:
                print(f"{site}: " + _("WARNING: {warning}").format(warning=line))
        for line in reply.alert_problems:
            print(f"{reply.coordinator}: " + _("WARNING: {warning}").format(warning=line))
        if not args.watch:
            return 0 if all(s.reachable and not s.parked and not s.problem
                            for s in reply.sites if not s.decommissioned) and not any(
                changes for _site, changes in drifted) and not any(
                lines for _site, lines in kept) and not any(
                lines for _site, lines in guards) and not reply.alert_problems else 1
        time.sleep(args.interval)


def cmd_conflicts(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    reply = stub.Conflicts(coordinator_pb2.ConflictsRequest(
        table=args.table or "", reapply=args.reapply or "", ack=args.ack or "",
        ack_before=args.ack_before or "", all=args.all), timeout=60)
    if reply.reapplied:
        print(_("re-applied {id} as a new change at the siège: the next sync carries it to "
                "every site").format(id=reply.reapplied) + "\n")
    if args.ack or args.ack_before:
        print(ngettext("{count} change set aside marked seen (kept on record)",
                       "{count} changes set aside marked seen (kept on record)",
                       reply.acknowledged).format(count=reply.acknowledged) + "\n")
    left_out = ("\n" + ngettext("{count} seen left out: --all lists it",
                                "{count} seen left out: --all lists them",
                                reply.seen_left_out).format(count=reply.seen_left_out)
                if reply.seen_left_out else "")
    if not reply.conflicts:
        print(_("no change set aside on record") + left_out)
        return 0
    rows = [[_("id"), _("recorded"), _("table"), _("key"), _("kind"), _("column"),
             _("value set aside"), _("now"), _("from"), _("changed"), _("lost to"),
             _("state")]]
    for c in reply.conflicts:
        rows.append([c.id, when(c.recorded), c.table, c.key, word(c.kind),
                     c.column or _("(row)"), c.losing_value, c.current_value or "-", c.loser,
                     when(c.changed) or "?", c.winner,
                     ", ".join(w for w in (word(c.state), _("seen") if c.seen else "") if w)])
    print(_table(rows) + left_out)
    return 0


def cmd_decommission(stub: coordinator_pb2_grpc.CoordinatorStub,
                     args: argparse.Namespace) -> int:
    stub.Decommission(coordinator_pb2.DecommissionRequest(site=args.site), timeout=30)
    print(_("{site} is decommissioned: no more syncs with it, and it no longer holds back "
            "the purge of old changes. Remove it from the siège's [peers] and revoke its "
            "certificate (siege-certs revoke {site}).").format(site=args.site))
    return 0


def cmd_held(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace) -> int:
    """Every transaction held at every site: refused by its database (an operator acts) or
    waiting for something still to come; ``--retry``: each holding site's next attempt now."""
    if args.retry:
        print(_("retrying now: the siège exchanges with each holding site ..."), flush=True)
    reply = stub.Held(coordinator_pb2.HeldRequest(sites=args.site or [], retry=args.retry),
                      timeout=args.timeout)
    for line in reply.retried:
        print(_("retry: {line}").format(line=line))
    if reply.retried:
        print()
    refused = [t for t in reply.held if t.state == "refused"]
    waiting = [t for t in reply.held if t.state != "refused"]
    if not reply.held:
        print(_("no transaction is held at any site asked") if reply.problems
              else _("no transaction is held at any site"))
    else:
        print(ngettext("{count} held transaction: {refused} refused by a database (an operator "
                       "must act), {waiting} waiting for something still to come",
                       "{count} held transactions: {refused} refused by a database (an "
                       "operator must act), {waiting} waiting for something still to come",
                       len(reply.held)).format(count=len(reply.held), refused=len(refused),
                                               waiting=len(waiting)))
    for t in [*refused, *waiting]:
        print()
        print("\n".join(held_lines(t)))
    for problem in reply.problems:
        print("\n" + _("not asked: {problem}").format(problem=problem))
    return 1 if reply.held or reply.problems else 0


def cmd_alert_test(stub: coordinator_pb2_grpc.CoordinatorStub, args: argparse.Namespace
                   ) -> int:
    """An email now from the siège to its [siege.alerts] recipients, and every answer of
    the SMTP server: what to fix when alerts do not arrive."""
    reply = stub.AlertTest(coordinator_pb2.AlertTestRequest(), timeout=120)
    for line in reply.said:
        print(f"  {line}")
    if reply.sent:
        print(_("test email sent to {to}: check that it arrived").format(
            to=", ".join(reply.to)))
        return 0
    print("siege-ctl: " + _("error: {problem}").format(problem=reply.problem), file=sys.stderr)
    return 1


def cmd_dashboard(target: Target, args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C; its actions run this program with the same way to
    the siège (the same config, so the same stand-ins)."""
    from .dashboard import serve

    ctl = [sys.executable, "-m", "siege_sync.siege.ctl", "--address", target.address,
           "--siege", target.siege, "--bundle", str(target.bundle)]
    config = args.config or os.environ.get("SIEGE_CTL_CONFIG") or (
        "siege-ctl.toml" if Path("siege-ctl.toml").exists() else None)
    if config:
        ctl += ["--config", str(Path(config).absolute())]
    return serve(target, args.port, current(), ctl, say=lambda url: print(_(
        "the dashboard is at {url} (open it on this machine; Ctrl-C stops it)").format(
            url=url), flush=True))


COMMANDS = {"manual": cmd_manual, "held": cmd_held, "conflicts": cmd_conflicts, "stop": cmd_stop,
            "decommission": cmd_decommission,
            "report": cmd_report, "test": cmd_test, "status": cmd_status,
            "analyse": cmd_analyse, "join": cmd_join, "resync": cmd_join,
            "adopt": cmd_adopt, "alert-test": cmd_alert_test}


def build_parser() -> argparse.ArgumentParser:
    """Built once the language is chosen: its help speaks it."""
    parser = argparse.ArgumentParser(
        prog="siege-ctl", description=_("The operator's command line: it talks to the siège's "
                                        "node over mTLS with an admin certificate."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help=_("siege-ctl TOML (address, siege, bundle)"))
    parser.add_argument("--address", help=_("the siège node's host:port"))
    parser.add_argument("--siege", help=_("the siège's site id"))
    parser.add_argument("--bundle", help=_("the admin bundle folder"))
    parser.add_argument("--timeout", type=float, default=3600.0, help=_("seconds"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("test", help=_("connection test of every site"))
    sub.add_parser("manual", help=_("a sync now, with progress; the report at the end"))
    sub.add_parser("stop", help=_("stop the running sync between transactions"))
    sub.add_parser("alert-test", help=_(
        "send a test alert email now and show what the mail server answered"))
    analyse = sub.add_parser("analyse", help=_(
        "compare every site's tables with the siège's (or --prefer SITE's) by range "
        "checksums; --repair fixes them"))
    analyse.add_argument("--table", action="append", help=_("only this table (repeatable)"))
    analyse.add_argument("--site", action="append", help=_("only this site (repeatable)"))
    analyse.add_argument("--repair", action="store_true", help=_(
        "write the preferred site's rows where they differ (the next sync carries them; "
        "overwritten values go on record)"))
    analyse.add_argument("--prefer", metavar="SITE",
                         help=_("the site whose rows are right (needed by --repair)"))
    sub.add_parser("adopt", help=_(
        "sites kept in step by another tool, installed where they stand: prove every table "
        "holds the same rows everywhere (lists the differences to settle with analyse "
        "--repair --prefer SITE)"))
    join = sub.add_parser("join", help=_(
        "send a copy of the siège's database to a new site (its node waits: siege-node "
        "join), which takes it as its own"))
    join.add_argument("site")
    resync = sub.add_parser("resync", help=_(
        "rebuild a site the mesh no longer takes from a copy of the siège's database (its "
        "node waits: siege-node resync); what it wrote that the mesh lacks goes on record"))
    resync.add_argument("site")
    gone = sub.add_parser("decommission", help=_("remove a site for good"))
    gone.add_argument("site")
    found = sub.add_parser("conflicts", help=_("changes set aside, on record at the siège"))
    found.add_argument("--table", help=_("only this table"))
    found.add_argument("--reapply", metavar="ID",
                       help=_("write this change set aside back, as a new change"))
    found.add_argument("--ack", metavar="ID",
                       help=_("mark it seen: kept on record, left out of the list"))
    found.add_argument("--ack-before", metavar="DATE",
                       help=_("mark every one recorded before DATE (YYYY-MM-DD) seen"))
    found.add_argument("--all", action="store_true",
                       help=_("list the ones marked seen too"))
    held = sub.add_parser("held", help=_(
        "transactions a site does not apply yet (refused by its database, or waiting): rows, "
        "the database's message, what to do"))
    held.add_argument("--site", action="append",
                      help=_("only held at this site (repeatable)"))
    held.add_argument("--retry", action="store_true",
                      help=_("the holding sites try again now; then the list again"))
    status = sub.add_parser("status", help=_("per site: last complete sync, pending, held"))
    status.add_argument("--watch", action="store_true", help=_("refresh until Ctrl-C"))
    status.add_argument("--interval", type=float, default=2.0,
                        help=_("seconds, with --watch"))
    board = sub.add_parser("dashboard", help=_(
        "the head office's screen: a web page on this machine (127.0.0.1 only) with every "
        "site's state, the syncs and their reports, the changes set aside and the actions"))
    board.add_argument("--port", type=int, default=8470,
                       help=_("the local port (0: any free one)"))
    report = sub.add_parser("report", help=_("stored sync reports"))
    report.add_argument("action", choices=["list", "show"])
    report.add_argument("id", nargs="?", type=int)
    report.add_argument("--all", action="store_true",
                        help=_("every report, not the 10 newest"))
    report.add_argument("--html", metavar="FILE", help=_("with show: write it as HTML"))
    report.add_argument("--pdf", metavar="FILE",
                        help=_("with show: write it as PDF, to print"))
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    use_for_command_line()
    args = build_parser().parse_args(argv)
    try:
        target = _target(args)
        if args.command == "dashboard":
            return cmd_dashboard(target, args)
        ch, stub = _stub(target, args.command)
        with ch:
            return COMMANDS[args.command](stub, args)
    except (CtlError, CertError) as exc:
        print("siege-ctl: " + _("error: {problem}").format(problem=exc), file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # the reader of our output went away: quiet_on_closed_pipe ends quietly
    except OSError as exc:
        print("siege-ctl: " + _("error: {problem}").format(
            problem=f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except grpc.RpcError as exc:
        hint = ""
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            hint = " — " + _("is the siège's node running at that address, and is the "
                             "admin certificate from the same mesh CA and not revoked?")
        elif exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            hint = " — " + _("that node does not hold the siège role ([node] siege in its "
                             "config)")
        print("siege-ctl: " + _("error: {problem}").format(
            problem=f"{exc.code().name}: {exc.details()}{hint}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
