"""The coordinator role (siège) and ``siege-ctl``. Depends on ``node``, never the reverse:
the role attaches to a running node through the ``siege_sync.roles`` entry point.

* ``rounds``    — a sync round: gather from every site, redistribute, per-site progress;
* ``reports``   — round reports stored in the coordinating node's database, as text;
* ``siteprobe`` — the connection test of every site (``siege-ctl test``);
* ``service``   — the ``siege.v1.Coordinator`` gRPC service (admin certificates only);
* ``role``      — whether this node coordinates, and attaching the service;
* ``ctl``       — the ``siege-ctl`` command.
"""
