"""The node's own tables in the site's database, and what they record.

Owns capture (the ``SYNC$`` objects and triggers: install, upgrade, uninstall), reading what
was captured, the event log and large BLOBs, the seals of source transactions, the records an
operator reads (losing versions, held transactions, the status), a site's own chain and its
incarnations, the schema cache, the guards' watch, who occupies the database, and what may be
forgotten (retention). Must never apply another site's events (``pipeline``) nor talk to a
peer (``mesh``).

* ``capture``     — the capture objects: install, upgrade, uninstall;
* ``reader``      — which committed transactions to publish next, in order;
* ``eventlog``    — every origin's stored events (``SYNC$EVENTS``);
* ``storage``     — large BLOB values by sha256 (``SYNC$BLOBS``);
* ``seal``        — source transactions signed by their origin, checked on receipt;
* ``schemacache`` — the schema as last read, until DDL commits;
* ``guardwatch``  — application triggers that lost their guard, and since when;
* ``occupant``    — whose database this is, and one node per database;
* ``news``        — the application's commits heard through a Firebird event;
* ``rewind``      — a site's own chain confirmed; new incarnations after a restore;
* ``conflicts``   — losing versions on record (``SYNC$CONFLICTS``);
* ``parking``     — held transactions (``SYNC$PARKED``);
* ``status``      — what a node tells an operator of itself;
* ``retention``   — what a site may forget, given what every site applied;
* ``catchup``     — another site's newer schema, kept until this one upgrades;
* ``digest``      — order-independent, bit-exact digests of tables;
* ``ranges``      — digests and rows by primary-key range (``analyse``).
"""
