"""``siege-certs``: the mesh PKI's command line (``siege-certs COMMAND --dir CA_DIR ...``).

Owns argument parsing, the words printed to the operator and the exit codes: 0 on success,
2 with ``siege-certs: error: <what is wrong and what to do>`` on stderr for any operator
mistake (missing or uninitialised CA directory, unsafe key permissions, unknown or duplicate
name, bad site id, bad IP...) — never a traceback.

Must never print a private key, or do anything ``authority`` and ``bundle`` do not offer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..console import quiet_on_closed_pipe
from ..i18n import _, use_for_command_line
from . import files
from .authority import DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS, Authority, Issued
from .bundle import check_destination, default_dir, key_file, write_bundle
from .chain import days_left
from .errors import CertError
from .identity import validate_admin_name, validate_site_id
from .index import Status, serial_hex, short_serial
from .revocation import DEFAULT_CRL_DAYS, Reason

PROG = "siege-certs"
WARN_DAYS = 30
CA_WARN_DAYS = 90


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _print_issued(issued: Issued, out: Path, verb: str) -> None:
    ident = issued.identity
    print(f"{verb} {ident.kind.value} {ident.name} ({ident.spiffe_id})")
    print(f"  roles:     {', '.join(sorted(r.value for r in ident.roles))}")
    print(f"  serial:    {serial_hex(ident.serial)}")
    print(f"  valid to:  {ident.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"  bundle:    {out}  (install it as is; {key_file(ident.kind)} is secret)")


def cmd_init(args: argparse.Namespace) -> int:
    auth = Authority.create(args.dir, args.mesh, args.days)
    print(f"created the CA of mesh {auth.mesh} in {auth.paths.root}")
    print(f"  valid to:  {auth.ca_cert.not_valid_after_utc:%Y-%m-%d} UTC")
    print(f"  CA key:    {auth.paths.key}  (mode 0600: keep it offline, back it up)")
    print(f"next: {PROG} issue SITE --dir {auth.paths.root}")
    return 0


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out) if args.out else default_dir(args.dir, name)


def cmd_issue(args: argparse.Namespace) -> int:
    validate_site_id(args.site)
    auth = Authority.open(args.dir)
    out = _out_dir(args, args.site)
    check_destination(out, auth.mesh, args.site)
    issued = auth.issue_site(args.site, args.relay, args.dns, args.ip, args.days)
    write_bundle(out, issued)
    _print_issued(issued, out, "issued")
    return 0


def cmd_issue_admin(args: argparse.Namespace) -> int:
    validate_admin_name(args.name)
    auth = Authority.open(args.dir)
    out = _out_dir(args, args.name)
    check_destination(out, auth.mesh, args.name)
    issued = auth.issue_admin(args.name, args.days)
    write_bundle(out, issued)
    _print_issued(issued, out, "issued")
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    auth = Authority.open(args.dir)
    out = _out_dir(args, args.name)
    check_destination(out, auth.mesh, args.name)
    issued, old = auth.renew(args.name, args.days, revoke_old=not args.keep_old)
    write_bundle(out, issued)
    _print_issued(issued, out, "renewed")
    fate = ("revoked (copy the new crl.pem into every site's bundle)" if old.revoked_at
            else "superseded (still accepted until it expires)")
    print(f"  previous:  {serial_hex(old.serial)} {fate}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    auth = Authority.open(args.dir)
    revoked = auth.revoke(args.target, args.reason)
    for record in revoked:
        print(
            f"revoked {record.kind.value} {record.name} serial {serial_hex(record.serial)} "
            f"({record.reason.value if record.reason else Reason.UNSPECIFIED.value})"
        )
    print(f"CRL updated: {auth.paths.crl} — give it to every site ({PROG} crl --out FILE)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    auth = Authority.open(args.dir)
    now = datetime.now(UTC)
    listing = auth.listing(now)
    ca_end = auth.ca_cert.not_valid_after_utc
    print(f"mesh {auth.mesh}, CA valid to {ca_end:%Y-%m-%d} ({days_left(ca_end, now)} days)")
    if not listing:
        print(f"no certificates issued yet: {PROG} issue SITE --dir {auth.paths.root}")
        return 0
    rows = [
        [
            item.record.name,
            item.record.kind.value,
            ",".join(sorted(r.value for r in item.record.roles)),
            short_serial(item.record.serial),
            f"{item.record.not_after:%Y-%m-%d}",
            str(item.days_left),
            item.status.value,
        ]
        for item in listing
    ]
    print(_table(rows, ["NAME", "KIND", "ROLES", "SERIAL", "NOT-AFTER", "DAYS-LEFT", "STATUS"]))
    for item in listing:
        if item.status is Status.VALID and item.days_left < WARN_DAYS:
            print(
                f"warning: {item.record.kind.value} {item.record.name} expires in "
                f"{item.days_left} days: {PROG} renew {item.record.name} --dir {auth.paths.root}"
            )
    if days_left(ca_end, now) < CA_WARN_DAYS:
        print(f"warning: the CA itself expires on {ca_end:%Y-%m-%d}: plan a new mesh CA")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    auth = Authority.open(args.dir)
    pem = auth.refresh_crl(args.days)
    if args.out:
        files.write_atomic(Path(args.out), pem)
        print(f"wrote the CRL (valid {args.days} days) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(pem.decode("ascii"))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} days: give at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Built once the language is chosen: its help speaks it."""
    parser = argparse.ArgumentParser(prog=PROG, description=_(
        "The siege-sync mesh PKI: CA, site and admin certificates, CRL."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", required=True, type=Path, metavar="CA_DIR",
                        help=_("the CA directory (ca.key, ca.crt, crl.pem, index.json)"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help=_("create the mesh CA"))
    p.add_argument("--mesh", required=True, help=_("mesh name (the SPIFFE trust domain)"))
    p.add_argument("--days", type=_positive, default=DEFAULT_CA_DAYS)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("issue", parents=[common],
                       help=_("issue a site certificate and bundle"))
    p.add_argument("site", help=_("site id: lowercase letters, digits, '-'"))
    p.add_argument("--relay", action="store_true", help=_("may relay other sites' events"))
    p.add_argument("--dns", action="append", default=[], metavar="NAME",
                   help=_("extra DNS name (repeatable), e.g. the site's DDNS host name"))
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help=_("extra IP address (repeatable)"))
    p.add_argument("--days", type=_positive, default=DEFAULT_LEAF_DAYS)
    p.add_argument("--out", type=Path, metavar="DIR", help=_("bundle directory "
                   "(default CA_DIR/bundles/SITE)"))
    p.set_defaults(func=cmd_issue)

    p = sub.add_parser("issue-admin", parents=[common], help=_("issue an admin certificate"))
    p.add_argument("name")
    p.add_argument("--days", type=_positive, default=DEFAULT_LEAF_DAYS)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=_("bundle directory (default CA_DIR/bundles/NAME)"))
    p.set_defaults(func=cmd_issue_admin)

    p = sub.add_parser("revoke", parents=[common],
                       help=_("revoke a certificate, update the CRL"))
    p.add_argument("target", metavar="NAME_OR_SERIAL",
                   help=_("a name (revokes all its unexpired certificates) or a hex serial"))
    p.add_argument("--reason", choices=[r.value for r in Reason], default=Reason.UNSPECIFIED.value)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("list", parents=[common], help=_("list issued certificates"))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("renew", parents=[common],
                       help=_("new key and certificate for the same identity and roles"))
    p.add_argument("name", metavar="SITE")
    p.add_argument("--days", type=_positive, default=DEFAULT_LEAF_DAYS)
    p.add_argument("--keep-old", action="store_true",
                   help=_("let the previous certificate work until it expires instead of "
                        "revoking it (a staged rollout; copy the new CRL to every site later)"))
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=_("bundle directory (default CA_DIR/bundles/SITE)"))
    p.set_defaults(func=cmd_renew)

    p = sub.add_parser("crl", parents=[common], help=_("re-sign and write the current CRL"))
    p.add_argument("--out", type=Path, metavar="FILE", help=_("default: standard output"))
    p.add_argument("--days", type=_positive, default=DEFAULT_CRL_DAYS,
                   help=_("days until the CRL's next update"))
    p.set_defaults(func=cmd_crl)
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    use_for_command_line()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CertError as exc:
        print(f"{PROG}: " + _("error: {problem}").format(problem=exc), file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # the reader of our output went away: quiet_on_closed_pipe ends quietly
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: " + _("error: {problem}").format(problem=f"{exc.strerror or exc}{where}"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: " + _("interrupted"), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
