"""What the node reasons with: configuration, time, version vectors and the row merge.

Owns the node's TOML configuration, its clock and hybrid-logical-clock stamps, version
vectors, the row-register merge (pure: DESIGN §3.3) and how a row's registers are stored
(``SYNC$ROWS``), and which key sources hand out the same values at every site. Must never
touch the event log or the network.

* ``config``     — the node's configuration (one TOML file per site);
* ``clock``      — the injectable UTC clock, markers, HLC stamps;
* ``vector``     — how far a node holds each origin's events;
* ``merge``      — how one event changes one row's registers (pure);
* ``registers``  — the registers in the database, and events <-> merge translation;
* ``keysources`` — what hands out each replicated key's values (generator ranges).
"""
