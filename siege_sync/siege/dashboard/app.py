"""The dashboard's pages: a Starlette application rendering Jinja2 templates.

Pages: **overview** (``/``: every site's state, the siège role, the next sync, the last sync,
what needs looking at), **syncs** (``/rounds``: the last ten or all; one opens its report,
printable, and as PDF), **conflicts** (``/conflicts``: the changes set aside, by table and
site; acknowledge one), **held** (``/held``: transactions a site does not apply yet),
**actions** (``/actions``: Test, Manual sync, Stop, Analyse — with repair behind a
confirmation —, each then followed live on its own page).

Every page asks the node that coordinates now (``siege.reach``: the siège, or the stand-in
while the siège is gone, which the page says) over mTLS, in the page's language: a choice made
on the page (a cookie), else the browser's ``Accept-Language``, else the shell's. When no node
answers the page says so and what to do, and the rest of the dashboard keeps working.

Must never perform an operation itself: reads and the acknowledgement go through the same
coordinator calls as ``siege-ctl``, and actions run ``siege-ctl`` (``actions``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...certs import CertError
from ...i18n import LANGUAGES, _, ngettext, number, speaking, when
from ...proto import coordinator_pb2
from ..printout import render_html, write_pdf
from ..reach import CtlError, Link, Target, connect
from ..reports import DEFAULT_LIST, held_lines, kind_of, per_table, word
from .access import FIELD, Access
from .actions import Actions
from .states import certificates, site_state, warnings

LANGUAGE_COOKIE = "siege_dashboard_lang"
HERE = Path(__file__).resolve().parent
RPC_TIMEOUT = 60.0


class Unreachable(Exception):
    """No node that may coordinate answered: the page says why."""


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("siege_sync.siege.dashboard", "templates"),
                      autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(gettext=_, ngettext=ngettext, newstyle=False)  # type: ignore[attr-defined]
    env.globals.update(when=when, word=word, kind_of=kind_of, number=number, FIELD=FIELD)
    return env


def page_language(request: Request, fallback: str) -> str:
    """The language chosen on the page, else the browser's first we speak, else ``fallback``."""
    chosen = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    wanted = []
    for n, part in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _sep, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        wanted.append((-weight, n, tag.strip().lower().split("-")[0]))
    for _w, _n, code in sorted(wanted):
        if code in LANGUAGES:
            return code
    return fallback


class _Token(BaseHTTPMiddleware):
    """Every request: the printed address (sets the cookie), else the cookie, else 403."""

    def __init__(self, app: object, access: Access, language: str) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.access, self.language = access, language

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        entry = self.access.entry(request)
        if entry is not None:
            return entry
        if self.access.allows(request):
            return await call_next(request)
        with speaking(page_language(request, self.language)):
            return HTMLResponse(_templates().get_template("refused.html").render(), 403)


def make_app(target: Target, access: Access, actions: Actions, language: str) -> Starlette:
    """The dashboard for the mesh ``target`` names; ``language``: the shell's."""
    env = _templates()

    def render(request: Request, name: str, code: int = 200, **context: object) -> Response:
        response = HTMLResponse(env.get_template(name).render(
            request=request, token=access.token, lang=page_language(request, language),
            **context), code)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANGUAGE_COOKIE, request.query_params["lang"], httponly=True,
                                samesite="strict", path="/")
        return response

    def coordinator(command: str, notices: list[str]) -> Link:
        try:
            return connect(target, command, on_stand_in=notices.append)
        except (CtlError, CertError, OSError) as exc:
            raise Unreachable(str(exc)) from None

    def page(name: str, command: str = "status"
             ) -> Callable[[Callable[..., dict[str, object]]], Callable[[Request], Response]]:
        """An endpoint rendering ``name`` with what ``body(request, stub)`` returns, in the
        page's language, and what to do when the mesh does not answer."""
        def wrap(body: Callable[..., dict[str, object]]) -> Callable[[Request], Response]:
            def endpoint(request: Request) -> Response:
                with speaking(page_language(request, language)):
                    notices: list[str] = []
                    try:
                        with coordinator(command, notices) as link:
                            context = body(request, link.stub)
                            if isinstance(context, Response):
                                return context
                            return render(request, name, notices=notices, link=link,
                                          target=target, **context)
                    except Unreachable as exc:
                        return render(request, "unreachable.html", 503, problem=str(exc),
                                      target=target, notices=notices)
                    except grpc.RpcError as exc:
                        problem = f"{exc.code().name}: {exc.details()}"
                        if exc.code() in (grpc.StatusCode.NOT_FOUND,
                                          grpc.StatusCode.INVALID_ARGUMENT):
                            return render(request, "unreachable.html", 404, missing=True,
                                          problem=exc.details(), target=target,
                                          notices=notices)
                        return render(request, "unreachable.html", 503, problem=problem,
                                      target=target, notices=notices)
            return endpoint
        return wrap

    @page("overview.html")
    def overview(request: Request, stub: object) -> dict[str, object]:
        status = stub.MeshStatus(coordinator_pb2.MeshStatusRequest(), timeout=RPC_TIMEOUT)
        recent = list(stub.Reports(coordinator_pb2.ReportsRequest(limit=DEFAULT_LIST),
                                   timeout=RPC_TIMEOUT).reports)
        certs = certificates(recent, status.coordinator)
        expiring = [_("{site}'s certificate expires in {days} days: siege-certs renew {site}"
                      ).format(site=site, days=c.days) for site, c in certs.items()
                    if c.level != "ok"]
        return {"status": status, "sites": [site_state(s) for s in status.sites],
                "warnings": expiring + warnings(status), "problems": [
                    f"{s.site}: {s.problem}" for s in status.sites if s.problem],
                "last": recent[0] if recent else None,
                "certificates": certs,
                "running": [a for a in actions.recent() if a.running]}

    @page("rounds.html")
    def rounds(request: Request, stub: object) -> dict[str, object]:
        everything = request.query_params.get("all") == "1"
        reply = stub.Reports(coordinator_pb2.ReportsRequest(
            limit=0 if everything else DEFAULT_LIST), timeout=RPC_TIMEOUT)
        return {"reports": reply.reports, "everything": everything}

    def _report(request: Request, stub: object) -> coordinator_pb2.RoundReport:
        return stub.Report(coordinator_pb2.ReportRequest(
            id=int(request.path_params["number"])), timeout=RPC_TIMEOUT)

    @page("report.html")
    def report(request: Request, stub: object) -> dict[str, object]:
        shown = _report(request, stub)
        return {"report": shown, "per_table": per_table(shown)}

    @page("report.html")
    def printable(request: Request, stub: object) -> Response:
        return HTMLResponse(render_html(_report(request, stub)))

    @page("report.html")
    def pdf(request: Request, stub: object) -> Response:
        shown = _report(request, stub)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"report-{shown.id}.pdf"
            write_pdf(shown, path)
            data = path.read_bytes()
        return Response(data, media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="siege-sync-report-{shown.id}.pdf"'})

    @page("conflicts.html")
    def conflicts(request: Request, stub: object) -> dict[str, object]:
        table = request.query_params.get("table", "")
        site = request.query_params.get("site", "")
        everything = request.query_params.get("all") == "1"
        reply = stub.Conflicts(coordinator_pb2.ConflictsRequest(all=everything),
                               timeout=RPC_TIMEOUT)
        records = list(reply.conflicts)
        tables = sorted({c.table for c in records})
        sites = sorted({c.loser.split("/")[0] for c in records if "/" in c.loser})
        shown = [c for c in records if (not table or c.table == table)
                 and (not site or c.loser.split("/")[0] == site)]
        return {"records": shown, "tables": tables, "sites": sites, "table": table,
                "site": site, "everything": everything, "left_out": reply.seen_left_out,
                "acknowledged": request.query_params.get("acknowledged", "")}

    async def acknowledge(request: Request) -> Response:
        form = await request.form()
        if not access.good(str(form.get(FIELD, ""))):
            return Response(status_code=403)
        ident = str(form.get("id", ""))
        return await run_in_threadpool(_acknowledge, request, ident)

    def _acknowledge(request: Request, ident: str) -> Response:
        with speaking(page_language(request, language)):
            notices: list[str] = []
            try:
                with coordinator("conflicts", notices) as link:
                    link.stub.Conflicts(coordinator_pb2.ConflictsRequest(ack=ident),
                                        timeout=RPC_TIMEOUT)
            except Unreachable as exc:
                return render(request, "unreachable.html", 503, problem=str(exc),
                              target=target, notices=notices)
            except grpc.RpcError as exc:
                return render(request, "unreachable.html", 503, target=target,
                              notices=notices, problem=f"{exc.code().name}: {exc.details()}")
        return RedirectResponse(f"/conflicts?acknowledged={ident}", status_code=303)

    @page("held.html", "held")
    def held(request: Request, stub: object) -> dict[str, object]:
        reply = stub.Held(coordinator_pb2.HeldRequest(), timeout=RPC_TIMEOUT)
        ordered = sorted(reply.held, key=lambda t: t.state != "refused")
        return {"held": [(t, held_lines(t)) for t in ordered], "problems": reply.problems}

    def actions_page(request: Request) -> Response:
        with speaking(page_language(request, language)):
            return render(request, "actions.html", actions=actions.recent(), target=target,
                          notices=[])

    async def start_action(request: Request) -> Response:
        form = await request.form()
        if not access.good(str(form.get(FIELD, ""))):
            return Response(status_code=403)
        command = str(form.get("command", ""))
        argv = [command]
        if command == "analyse":
            for option in ("table", "site"):
                if form.get(option):
                    argv += [f"--{option}", str(form[option]).strip()]
            if form.get("repair"):
                prefer = str(form.get("prefer", "")).strip()
                if not prefer or not form.get("confirmed"):
                    with speaking(page_language(request, language)):
                        return render(request, "confirm.html", form=dict(form), prefer=prefer,
                                      target=target, notices=[])
                argv += ["--repair", "--prefer", prefer]
        try:
            action = actions.start(argv, page_language(request, language))
        except ValueError:
            return Response(status_code=400)
        return RedirectResponse(f"/actions/{action.number}", status_code=303)

    def action_page(request: Request) -> Response:
        action = actions.get(int(request.path_params["number"]))
        with speaking(page_language(request, language)):
            if action is None:
                return render(request, "unreachable.html", 404, target=target, notices=[],
                              problem=_("no such action: the dashboard was started again?"))
            return render(request, "action.html", action=action, target=target, notices=[])

    routes = [
        Route("/", overview),
        Route("/rounds", rounds),
        Route("/rounds/{number:int}", report),
        Route("/rounds/{number:int}/print", printable),
        Route("/rounds/{number:int}/pdf", pdf),
        Route("/conflicts", conflicts),
        Route("/conflicts/ack", acknowledge, methods=["POST"]),
        Route("/held", held),
        Route("/actions", actions_page),
        Route("/actions", start_action, methods=["POST"]),
        Route("/actions/{number:int}", action_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
                  Middleware(_Token, access=access, language=language)]
    return Starlette(routes=routes, middleware=middleware)

