"""How an operator's program reaches the coordinating node: ``siege-ctl`` and its dashboard.

Owns the ``siege-ctl.toml`` (``find_target``: the siège's address and id, the admin bundle,
the stand-ins in order), the choice of node (the siège, or while it does not answer the first
listed stand-in that does; ``join``, ``resync`` and ``decommission`` wait for the siège), and
the stub whose every call asks for the answers in the operator's language (``LANGUAGE_KEY``).

Must never talk to a node over anything but mTLS with the admin bundle, nor print: what the
caller shows of a stand-in is its business (``on_stand_in``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..certs import Bundle, load_bundle
from ..i18n import LANGUAGE_KEY, _, current
from ..node.mesh.transport import channel, health_check
from ..proto import coordinator_pb2_grpc


class CtlError(Exception):
    """An operator's mistake or an unreachable mesh, said with what to do."""


HEALTH_TIMEOUT = 5.0  # seconds for the siège to answer before a stand-in is tried

# What only the configured siège records (a new site's epoch, a decommissioned site, a copy
# only it may send): never sent to a stand-in.
SIEGE_ONLY = frozenset({"join", "resync", "decommission"})


@dataclass(frozen=True)
class Target:
    address: str
    siege: str
    bundle: Path
    stand_ins: tuple[tuple[str, str], ...] = ()  # (site, address), in the order to try


@dataclass
class Link:
    """An open channel to the coordinating node: the siège, or ``site`` standing in."""

    channel: grpc.Channel
    stub: coordinator_pb2_grpc.CoordinatorStub
    site: str
    address: str

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


def find_target(config: str | None, address: str | None = None, siege: str | None = None,
                bundle: str | None = None) -> Target:
    """The siège from ``config`` (else ``SIEGE_CTL_CONFIG``, else ``./siege-ctl.toml``), each
    of ``address``, ``siege``, ``bundle`` given overriding the file's."""
    raw: dict[str, object] = {}
    path = config or os.environ.get("SIEGE_CTL_CONFIG")
    if path is None and Path("siege-ctl.toml").exists():
        path = "siege-ctl.toml"
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CtlError(_("{path}: no such file").format(path=path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise CtlError(_("{path}: not valid TOML: {error}").format(path=path, error=exc)
                           ) from None
    given = {"address": address, "siege": siege, "bundle": bundle}
    values = {k: given[k] or raw.get(k) for k in ("address", "siege", "bundle")}
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise CtlError(_("missing {names}: give --{first} or write a siege-ctl.toml "
                         "(address, siege, bundle)").format(names=", ".join(missing),
                                                            first=missing[0]))
    folder = Path(str(values["bundle"]))
    if path is not None and not folder.is_absolute():
        folder = Path(path).parent / folder
    if not folder.is_dir():
        # Said with what to do (the bundle loader only says it does not exist).
        raise CtlError(_("bundle {bundle}: no such folder; give the folder `siege-certs "
                         "issue-admin NAME` wrote (--bundle, or bundle = in siege-ctl.toml)"
                         ).format(bundle=folder))
    stand_ins = raw.get("stand_ins", {})
    if not isinstance(stand_ins, dict) or not all(
            isinstance(v, str) and v for v in stand_ins.values()):
        raise CtlError(_("{path}: [stand_ins] must map site ids to addresses, e.g. "
                         'lyon = "lyon.example.net:7443"').format(path=path))
    return Target(str(values["address"]), str(values["siege"]), folder.absolute(),
                  tuple((str(k), str(v)) for k, v in stand_ins.items()))


def connect(target: Target, command: str,
            on_stand_in: Callable[[str], None] | None = None) -> Link:
    """A channel to the node that coordinates now, for ``command``. ``on_stand_in(notice)``
    is told, in words, when that is a stand-in because the siège does not answer."""
    bundle = load_bundle(target.bundle)
    site, address = _coordinator(target, bundle, command, on_stand_in)
    ch = channel(address, bundle, site)
    return Link(ch, _Speaking(coordinator_pb2_grpc.CoordinatorStub(ch)), site, address)


class _Speaking:
    """The stub, each call asking for the texts in the caller's language (``i18n.current``
    when the call is made)."""

    def __init__(self, stub: coordinator_pb2_grpc.CoordinatorStub) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Callable:
        call = getattr(self._stub, name)
        return lambda request, **kw: call(request, metadata=((LANGUAGE_KEY, current()),), **kw)


def _coordinator(target: Target, bundle: Bundle, command: str,
                 on_stand_in: Callable[[str], None] | None) -> tuple[str, str]:
    """The siège, or while it does not answer, the first listed stand-in that does."""
    if not target.stand_ins:
        return target.siege, target.address
    problem = health_check(target.address, bundle, target.siege, HEALTH_TIMEOUT)
    if problem is None:
        return target.siege, target.address
    if command in SIEGE_ONLY:
        raise CtlError(_("the siège {siege} at {address} does not answer ({problem}), and "
                         "`{command}` is recorded by the siège alone: run it once the siège "
                         "is back").format(siege=target.siege, address=target.address,
                                           problem=problem, command=command))
    tried = [_("the siège {siege} at {address}: {problem}").format(
        siege=target.siege, address=target.address, problem=problem)]
    for site, address in target.stand_ins:
        answer = health_check(address, bundle, site, HEALTH_TIMEOUT)
        if answer is None:
            if on_stand_in is not None:
                on_stand_in(_("the siège {siege} at {address} does not answer ({problem}); "
                              "talking to the stand-in {site} at {stand_in}").format(
                    siege=target.siege, address=target.address, problem=problem, site=site,
                    stand_in=address))
            return site, address
        tried.append(_("the stand-in {site} at {address}: {problem}").format(
            site=site, address=address, problem=answer))
    raise CtlError(_("no node that may coordinate answers — {tried}. Are their nodes "
                     "running, and is the admin certificate from the same mesh CA and not "
                     "revoked?").format(tried="; ".join(tried)))
