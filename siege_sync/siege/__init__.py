"""The coordinator role (siège) and ``siege-ctl``. Depends on ``node``, never the reverse:
the role attaches to a running node through the ``siege_sync.roles`` entry point.

* ``settings``   — the ``[siege]`` section: schedule, alerts, bandwidth caps;
* ``schedule``   — rounds by themselves: on an interval, at times, or continuously;
* ``rounds``     — a sync round: gather from every site, redistribute, per-site progress;
* ``purge``      — the purge every round orders, and decommissioned sites;
* ``reports``    — round reports stored in the coordinating node's database, as text;
* ``printout``   — a report as HTML and PDF;
* ``alerts``     — which alerts a round calls for, one email per round, retried;
* ``mailer``     — the SMTP conversation (STARTTLS, implicit TLS, a LAN relay);
* ``siteprobe``  — the connection test of every site (``siege-ctl test``);
* ``meshstatus`` — what ``siege-ctl status`` shows of every site;
* ``analyse``    — comparing and repairing sites by range digests (``siege-ctl analyse``);
* ``join``       — sending a new or rebuilt site the siège's copy (``siege-ctl join``);
* ``election``   — who coordinates: the siège, or a stand-in while it is gone;
* ``service``    — the ``siege.v1.Coordinator`` gRPC service (admin certificates only),
  answering in the caller's language;
* ``role``       — whether this node coordinates, and attaching the service;
* ``reach``      — how ``siege-ctl`` and the dashboard find the siège (or a stand-in) and
  ask it in the operator's language;
* ``ctl``        — the ``siege-ctl`` command;
* ``dashboard/`` — ``siege-ctl dashboard``, the head office's screen (its ``__init__`` lists
  its modules).
"""
