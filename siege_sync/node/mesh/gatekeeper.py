"""Who is calling a node's service, from the TLS certificate only, and refusing a call in
words: the checks every handler makes first (``service.py``, the coordinator's service,
``analysis.py``).

Owns reading the caller's identity from the TLS peer (never from a request field), refusing
a revoked certificate or a kind of certificate the call does not take, and the relay role
counting only for the coordinators of this node's config (``admission``). Every refusal is
logged here with its real reason: the caller often sees only a bare status code. Must never
read the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

import grpc

from ...certs import CertError, Kind, PeerIdentity, from_auth_context
from .admission import relaying_only_if_coordinator
from .transport import BundleWatcher

log = logging.getLogger(__name__)


class Gatekeeper:
    """Who is calling, from the TLS certificate only; refusals logged with their reason.

    ``coordinators()``: the sites this node's config says may coordinate; a caller's relay
    role counts only for them (relaying, purges, repairs, epochs: issue 20)."""

    def __init__(self, watcher: BundleWatcher, site: str,
                 coordinators: Callable[[], set[str]] | None = None) -> None:
        self._watcher = watcher
        self._site = site
        self._coordinators = coordinators

    def caller(self, context: grpc.ServicerContext, *kinds: Kind) -> PeerIdentity:
        bundle, _changed = self._watcher.refresh()
        try:
            ident = from_auth_context(context.auth_context(), mesh=bundle.identity.mesh)
        except CertError as exc:
            self.refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"{context.peer()}: {exc}")
        if bundle.revocations.is_revoked(ident.serial):
            self.refuse(context, grpc.StatusCode.UNAUTHENTICATED,
                        f"{ident.name}'s certificate (serial {ident.serial:x}) is revoked")
        if ident.kind not in kinds:
            self.refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                        f"{ident.name} ({ident.kind}) may not call this; it needs a "
                        f"{' or '.join(k.value for k in kinds)} certificate")
        if self._coordinators is not None:
            ident = relaying_only_if_coordinator(ident, self._coordinators())
        return ident

    def refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode,
               why: str) -> NoReturn:
        log.warning("[%s] refused: %s", self._site, why)
        context.abort(code, why)
        raise AssertionError("abort raises")
