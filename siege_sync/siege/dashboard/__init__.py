"""``siege-ctl dashboard``: the head office's screen, a local web application.

What the legacy tool's window showed — every shop's state, the last syncs and their reports to
print, the changes set aside, and buttons for Test, Manual, Stop and Analyse — served on
127.0.0.1 only, to whoever holds the address with its token that ``siege-ctl dashboard``
prints. It talks to the siège (or the stand-in that coordinates while the siège is gone)
exactly as ``siege-ctl`` does: ``siege.reach``, mTLS with the admin bundle.

Modules:

* ``access``  — the token: who may use the dashboard (a cookie once the printed address was
  opened), refused otherwise;
* ``states``  — each site's state at a glance (in step, behind, unreachable, silent, held…),
  from the siège's ``MeshStatus``;
* ``actions`` — the buttons: each runs the ``siege-ctl`` command itself as a child process
  (the same code path as typing it) and keeps its output for the page;
* ``app``     — the Starlette application: pages (Jinja2 templates in ``templates/``, one
  stylesheet in ``static/``), French or English;
* ``server``  — binding 127.0.0.1, the address with its token, uvicorn.

Public: ``serve``.
"""

from .server import serve

__all__ = ["serve"]
