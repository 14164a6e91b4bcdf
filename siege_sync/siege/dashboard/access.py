"""Who may use the dashboard: the holder of the address ``siege-ctl dashboard`` printed.

The address carries a random token. Opening it sets a cookie (HttpOnly, SameSite=Strict) and
redirects to the same page without the token, so it does not stay in the browser's history;
every later request must bring that cookie, and every form its token again (a page of
another site cannot post to the dashboard). Anything else gets 403 and what to do.

Must never accept a request without the token, nor compare it in a way that leaks it (time).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

COOKIE = "siege_dashboard"
FIELD = "token"  # the query parameter of the printed address, and the forms' hidden field


@dataclass(frozen=True)
class Access:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def good(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    def allows(self, request: Request) -> bool:
        return self.good(request.cookies.get(COOKIE))

    def entry(self, request: Request) -> Response | None:
        """The printed address opened: the cookie set and the token taken out of the URL.
        None when the request carries no token in its query."""
        given = request.query_params.get(FIELD)
        if given is None or not self.good(given):
            return None
        rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != FIELD])
        response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""),
                                    status_code=303)
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response
