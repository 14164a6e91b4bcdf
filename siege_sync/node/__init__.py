"""What every site runs (``siege-node``), in six layers; a layer imports only from the layers
below it (``[tool.importlinter]`` in pyproject.toml, tests/test_layers.py):

* ``mesh/``       — the node on the network: mTLS, admission, the gRPC service, exchanges,
  discovery, the long-running daemon;
* ``operations/`` — what an operator starts on one database: join and resync, vendor
  upgrades, analyse's repairs;
* ``pipeline/``   — an event's life through the database: published from captured changes,
  applied from other sites, settled against the constraints;
* ``journal/``    — the node's own tables in the site's database: capture, the event log,
  what is on record (losses, holds, seals), what may be forgotten;
* ``model/``      — what the node reasons with: its configuration, clocks, version vectors,
  the row-register merge and its storage;
* ``db/``         — Firebird as the node meets it: connections, servers, the schema, exact
  values, literals, collations, guards, batched row writes.

``cli`` (``siege-node``) sits on top. An event's path: capture (``journal/capture``) →
``pipeline/publish`` → ``journal/eventlog`` → the wire (``mesh/exchange``, ``mesh/service``) →
``pipeline/apply`` → ``model/merge`` → rows (``pipeline/constraints``, ``db/rowwrite``).
"""
