"""The node's configuration: one TOML file per site.

Owns parsing and validation; every mistake becomes a ``ConfigError`` that names the file, the
key and what to write instead. Secrets may come from the environment or from a file readable
only by its owner. Must never print a secret.

Also owns what ``[policies]`` *mean*, so that two sites can compare theirs (``PolicyTable``):
every site must settle a conflict the same way, or they diverge for good; hellos carry each
side's table and an exchange between sites whose tables differ is refused (exchange.py,
service.py). Spelling does not count: a table is named as Firebird stores it or as an
unquoted identifier would be (``prices`` is ``PRICES``), the policy's words in any case and
spacing (``Prefer-Site  siege``); a table this site does not replicate, or ``lww`` (the
default) written out, changes nothing.

Example::

    site = "lyon"

    [database]
    dsn = "/var/lib/siege/lyon.fdb"        # or "localhost:/path" through a server
    user = "SYSDBA"
    password_env = "SIEGE_DB_PASSWORD"     # or password_file = "/etc/siege/db.pw" (0600)

    [tables]
    include = []                            # default: every table
    exclude = ["TMP_*"]

    [triggers]
    fire = ["TRG_STOCK_HISTORY"]            # application triggers that must still fire

    [generators.GEN_INVOICE_ID]
    start = 2000000
    end = 2999999

    [policies]                              # per table; "lww" by default
    PRICES = "prefer-site siege"            # the named site wins concurrent column writes
    STOCK = "manual"                        # lww stands, losses wait for an operator

    [node]                                  # for `siege-node run` (the mesh service)
    listen = "0.0.0.0:7443"                 # mTLS only; there is no plaintext port
    bundle = "/etc/siege/lyon"              # the folder `siege-certs issue lyon` wrote
    siege = "siege"                         # the site that coordinates (default: none)
    coordinator = true                      # may stand in for the siège when it is gone
                                            # (its certificate needs the relay role)
    priority = 10                           # rank among stand-ins (lower first, then id)
    takeover_after = 600                    # seconds the siège must be unreachable first
    lan = ["192.168.1.20"]                  # zeroconf on these interface addresses only
    outbound_only = false                   # true: cannot be dialled (CGNAT); it dials
    dial_every = 60                         # the coordinator itself every this many s
    announce_every = 300                    # tells the coordinators its port this often
                                            # (0: never — a LAN-only mesh)

    [operator]
    language = "fr"                         # what the siège writes: reports, emails
                                            # ("en" by default; "fr")

    [peers.siege]
    address = "siege.example.net:7443"      # optional: a fixed or DDNS name, re-resolved
    coordinator = true                      # (the siège always is; stand-ins are listed)
    priority = 1                            # the same ranks at every site

A peer without an address is found by the address it last announced, then by zeroconf.
Every site must have the same ``[policies]`` (the siège's are the reference): a site whose
policies differ exchanges nothing until they agree.
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...i18n import LanguageError, check_language
from ..db.database import DatabaseSpec
from ..db.schema import TableSelection
from .merge import LWW, Policy


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class GeneratorRange:
    name: str
    start: int
    end: int | None = None


@dataclass(frozen=True)
class Peer:
    site: str
    address: str | None = None  # host:port, a fixed or DDNS name (discovery.py otherwise)
    coordinator: bool = False  # may stand in for the siège (election.py)
    priority: int = 100


@dataclass(frozen=True)
class ServiceConfig:
    listen: str
    bundle: Path
    siege: str | None = None
    priority: int = 100
    peers: Mapping[str, Peer] = field(default_factory=dict)
    coordinator: bool = False  # this node may stand in for the siège
    takeover_after: float = 600.0  # seconds
    lan: tuple[str, ...] = ()  # interface addresses for zeroconf
    outbound_only: bool = False
    dial_every: float = 60.0
    announce_every: float = 300.0

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def coordinators(self, own_site: str) -> list[str]:
        """The sites that may coordinate, best first: the configured siège, then the
        stand-ins by priority, then site id. Every site's config lists the same ones, so
        every site ranks them the same way (election.py)."""
        ranked = [(p.priority, p.site) for p in self.peers.values()
                  if p.coordinator and p.site != self.siege]
        if self.coordinator and own_site != self.siege:
            ranked.append((self.priority, own_site))
        return ([self.siege] if self.siege else []) + [site for _p, site in sorted(ranked)]


@dataclass(frozen=True)
class NodeConfig:
    site: str
    database: DatabaseSpec
    tables: TableSelection = TableSelection()
    fire_triggers: frozenset[str] = frozenset()
    generators: tuple[GeneratorRange, ...] = ()
    policies: Mapping[str, Policy] = field(default_factory=dict)  # table -> merge policy
    path: Path | None = field(default=None, compare=False)
    service: ServiceConfig | None = None  # [node] and [peers]: needed by run and exchange
    # [siege]: the coordinator role's own settings (schedule, alerts), validated by the role
    # itself (siege_sync/siege) when it attaches — node/ does not interpret them.
    role_settings: Mapping[str, Any] = field(default_factory=dict)
    language: str = "en"  # [operator] language: what this node writes for operators


def load(path: Path) -> NodeConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path | None = None) -> NodeConfig:
    where = str(path) if path else "config"
    site = _str(raw, "site", where)
    if not site or any(c in site for c in "/\\ :") or len(site.encode()) > 63:
        raise ConfigError(f"{where}: site = {site!r}: use a short id without spaces, / or :")
    db = _table(raw, "database", where, required=True)
    spec = DatabaseSpec(
        dsn=_str(db, "dsn", f"{where} [database]"),
        user=db.get("user", "SYSDBA"),
        password=_secret(db, f"{where} [database]", path),
        role=db.get("role"),
    )
    tables = _table(raw, "tables", where)
    selection = TableSelection(
        include=tuple(_str_list(tables, "include", f"{where} [tables]")),
        exclude=tuple(_str_list(tables, "exclude", f"{where} [tables]")),
    )
    triggers = _table(raw, "triggers", where)
    generators = []
    for name, spec_raw in _table(raw, "generators", where).items():
        if not isinstance(spec_raw, dict) or not isinstance(spec_raw.get("start"), int):
            raise ConfigError(
                f"{where} [generators.{name}]: needs start = <integer> (and optionally end)")
        end = spec_raw.get("end")
        if end is not None and (not isinstance(end, int) or end <= spec_raw["start"]):
            raise ConfigError(f"{where} [generators.{name}]: end must be an integer > start")
        generators.append(GeneratorRange(name, spec_raw["start"], end))
    policies = _policies(_table(raw, "policies", where), where)
    unknown = set(raw) - {"site", "database", "tables", "triggers", "generators", "policies",
                          "node", "peers", "siege", "operator"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    service = _service(raw, where, path, site)
    operator = _table(raw, "operator", where)
    if set(operator) - {"language"}:
        raise ConfigError(f"{where} [operator]: unknown keys "
                          f"{sorted(set(operator) - {'language'})}")
    try:
        language = check_language(str(operator.get("language", "en")), f"{where} [operator]")
    except LanguageError as exc:
        raise ConfigError(str(exc)) from None
    return NodeConfig(
        site=site,
        database=spec,
        tables=selection,
        fire_triggers=frozenset(_str_list(triggers, "fire", f"{where} [triggers]")),
        generators=tuple(generators),
        policies=policies,
        path=path,
        service=service,
        role_settings=_table(raw, "siege", where),
        language=language,
    )


def _policies(raw: dict[str, Any], where: str) -> dict[str, Policy]:
    """Table -> policy, as the applier looks them up (by the name Firebird stores)."""
    given: dict[str, Policy] = {}
    for table, text in raw.items():
        words = text.split() if isinstance(text, str) else []
        if words and words[0].lower() in _POLICY_WORDS:
            words[0] = words[0].lower()  # "LWW", "Manual": the same words; site ids are not
        try:
            given[table.strip()] = Policy.parse(" ".join(words))
        except ValueError:
            raise ConfigError(f"{where} [policies] {table}: {text!r} is not a policy: write "
                              "\"lww\", \"manual\" or \"prefer-site SITE\"") from None
    # An unquoted identifier is stored in upper case: `prices = ...` means the table PRICES
    # (a table created with a quoted lower-case name matches its exact spelling first).
    out = dict(given)
    for table, policy in given.items():
        out.setdefault(table.upper(), policy)
    return out


_POLICY_WORDS = ("lww", "manual", "prefer-site")


def policy_text(policy: Policy) -> str:
    """The one spelling of a policy, as configs and hellos show it."""
    if policy.prefer_site is not None:
        return f"prefer-site {policy.prefer_site}"
    return "manual" if policy.manual else "lww"


@dataclass(frozen=True)
class PolicyDifference:
    table: str
    mine: str  # the policy text at each side
    theirs: str


@dataclass(frozen=True)
class PolicyTable:
    """What a site's ``[policies]`` mean for the merge, in the form two sites compare.

    ``replicated``: every table this site replicates, with the policy it merges it by
    (``lww`` included: "not replicated here" and "lww" differ). ``elsewhere``: the policies
    ``[policies]`` gives tables this site does not replicate (yet: a table another site has
    is merged here with that policy once it is installed — catchup.py), ``lww`` left out.
    """

    replicated: Mapping[str, str] = field(default_factory=dict)
    elsewhere: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, policies: Mapping[str, Policy], replicated: Iterable[str]) -> PolicyTable:
        tables = sorted(set(replicated))
        ours = {t: policy_text(policies.get(t, LWW)) for t in tables}
        other = {t: policy_text(p) for t, p in policies.items()
                 if t not in ours and p != LWW
                 and not (t != t.upper() and policies.get(t.upper()) == p)}  # its alias
        return cls(ours, dict(sorted(other.items())))

    def policy(self, table: str) -> str | None:
        """The policy this site merges ``table`` with (None: no say — it neither
        replicates it nor names it, so it would merge it as ``lww`` if ever)."""
        return self.replicated.get(table, self.elsewhere.get(table))

    def differences(self, other: PolicyTable) -> list[PolicyDifference]:
        """The tables at least one side replicates whose policies differ. A table neither
        replicates is nobody's business now (a line for a table dropped long ago)."""
        out = []
        for table in sorted(set(self.replicated) | set(other.replicated)):
            mine = self.policy(table) or "lww"
            theirs = other.policy(table) or "lww"
            if mine != theirs:
                out.append(PolicyDifference(table, mine, theirs))
        return out


_LISTED = 12  # tables named in a refusal: it must stay readable in a report and an email


def policy_refusal(here: str, peer: str, differences: list[PolicyDifference],
                   siege: str | None) -> str:
    """Why ``here`` and ``peer`` exchange nothing, naming each table and both sides'
    policies, and what to do (the siège's policies are the reference)."""
    listed = "; ".join(f'{d.table}: "{d.mine}" at {here}, "{d.theirs}" at {peer}'
                       for d in differences[:_LISTED])
    if len(differences) > _LISTED:
        listed += f"; and {len(differences) - _LISTED} more tables"
    if siege == here:
        fix = f"make {peer}'s [policies] match the siège's and restart its node"
    elif siege == peer:
        fix = f"make {here}'s [policies] match the siège's and restart its node"
    else:
        fix = "make both [policies] match the siège's and restart their nodes"
    return (f"merge policies differ between {here} and {peer} ({listed}): they would settle "
            f"the same conflicts differently and diverge for good, so no events cross between "
            f"them until the [policies] agree — {fix}")


def _address(text: object, where: str) -> str:
    host, sep, port = str(text).rpartition(":")
    if not isinstance(text, str) or not sep or not host or not port.isdigit() \
            or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: {text!r} is not an address; write \"host:port\" "
                          "(e.g. \"0.0.0.0:7443\" or \"lyon.example.net:7443\")")
    return text


def _service(raw: dict[str, Any], where: str, path: Path | None,
             site: str) -> ServiceConfig | None:
    node = _table(raw, "node", where)
    peers_raw = _table(raw, "peers", where)
    if not node:
        if peers_raw:
            raise ConfigError(f"{where}: [peers] needs a [node] section (listen, bundle)")
        return None
    unknown = set(node) - {"listen", "bundle", "siege", "priority", "coordinator",
                           "takeover_after", "lan", "outbound_only", "dial_every",
                           "announce_every"}
    if unknown:
        raise ConfigError(f"{where} [node]: unknown keys {sorted(unknown)}")
    listen = _address(node.get("listen"), f"{where} [node] listen")
    bundle = Path(_str(node, "bundle", f"{where} [node]"))
    if path is not None and not bundle.is_absolute():
        bundle = path.parent / bundle
    if not bundle.is_dir():
        raise ConfigError(f"{where} [node] bundle = {str(bundle)!r}: no such folder; give the "
                          "folder `siege-certs issue SITE` wrote")
    siege = node.get("siege")
    if siege is not None and not isinstance(siege, str):
        raise ConfigError(f"{where} [node] siege must be a site id (a string)")
    priority = _int(node, "priority", 100, f"{where} [node]")
    peers = {}
    for name, spec in peers_raw.items():
        at = f"{where} [peers.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: must be a section (address, coordinator, priority)")
        unknown = set(spec) - {"address", "coordinator", "priority"}
        if unknown:
            raise ConfigError(f"{at}: unknown keys {sorted(unknown)}")
        if name == site:
            raise ConfigError(f"{at}: that is this site itself")
        address = (_address(spec["address"], f"{at} address") if "address" in spec
                   else None)
        peers[name] = Peer(name, address, _bool(spec, "coordinator", name == siege, at),
                           _int(spec, "priority", 100, at))
    if siege is not None and siege != site and siege not in peers:
        # Else the node would serve, and wait for a siège it can never reach or admit.
        known = ", ".join(sorted(peers)) or "none"
        raise ConfigError(f"{where} [node] siege = {siege!r}: no [peers.{siege}] section "
                          f"names that site (peers: {known}); add [peers.{siege}] (its "
                          "address, or none to find it by its announcements) or correct "
                          "the name")
    lan = _str_list(node, "lan", f"{where} [node]")
    for item in lan:
        if item in ("0.0.0.0", "") or not all(p.isdigit() for p in item.split(".")) \
                or item.count(".") != 3:
            raise ConfigError(f"{where} [node] lan: {item!r}: give the IPv4 address of each "
                              "interface on the shop's LAN (never 0.0.0.0: zeroconf must "
                              "not answer on every interface)")
    return ServiceConfig(
        listen, bundle, siege, priority, peers,
        coordinator=_bool(node, "coordinator", False, f"{where} [node]"),
        takeover_after=_seconds(node, "takeover_after", 600.0, f"{where} [node]"),
        lan=tuple(lan),
        outbound_only=_bool(node, "outbound_only", False, f"{where} [node]"),
        dial_every=_seconds(node, "dial_every", 60.0, f"{where} [node]"),
        announce_every=_seconds(node, "announce_every", 300.0, f"{where} [node]",
                                zero=True))


def _int(raw: dict[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be an integer")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _seconds(raw: dict[str, Any], key: str, default: float, where: str,
             zero: bool = False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
            value == 0 and not zero):
        raise ConfigError(f"{where}: {key} must be a number of seconds > 0"
                          + (" (or 0: never)" if zero else ""))
    return float(value)


def _table(raw: dict[str, Any], key: str, where: str, required: bool = False) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing section [{key}]")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a section [{key}]")
    return value


def _str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string (e.g. {key} = \"...\")")
    return value


def _str_list(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return value


def secret(section: dict[str, Any], where: str, config_path: Path | None) -> str | None:
    """``password``, ``password_env`` or ``password_file`` (0600) of a section."""
    return _secret(section, where, config_path)


def _secret(db: dict[str, Any], where: str, config_path: Path | None) -> str | None:
    given = [k for k in ("password", "password_env", "password_file") if k in db]
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of password, password_env, password_file")
    if "password_env" in db:
        name = db["password_env"]
        if name not in os.environ:
            raise ConfigError(f"{where}: password_env = {name!r} but that variable is not set")
        return os.environ[name]
    if "password_file" in db:
        pw_path = Path(db["password_file"])
        if config_path is not None and not pw_path.is_absolute():
            pw_path = config_path.parent / pw_path
        try:
            mode = pw_path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"{where}: password_file {pw_path} does not exist") from None
        # POSIX permissions only: on Windows the file's ACL protects it instead.
        if sys.platform != "win32" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{where}: password_file {pw_path} is readable by others; chmod 600 it")
        return pw_path.read_text(encoding="utf-8").strip()
    if "password" in db and config_path is not None and config_path.is_file() and \
            sys.platform != "win32" and \
            config_path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where}: password = is written in {config_path}, which others may read: "
            f"chmod 600 {config_path.name}, or move the password to a password_file (0600) "
            "or a password_env variable")
    return db.get("password")
