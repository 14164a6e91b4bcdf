"""Firebird as the node meets it: the lowest layer of ``node``, knowing nothing of the mesh.

Owns connections (embedded or through a server, dialect 1 or 3), the schema as the engine
describes it, the exact value codec and its SQL literals, which key values the engine calls
equal, the guards in application triggers, and writing many rows per statement. Must never
know the node's own tables, events or peers (those live above).

* ``database``   — opening a site's database; transactions, prepared statements, quoting;
* ``dbserver``   — the Firebird server behind a DSN: its services (backup, restore);
* ``schema``     — introspection: what can be replicated, and why not;
* ``values``     — the exact value codec (driver values <-> ``values_pb2.Value``);
* ``literal``    — SQL literals that store exactly what a parameter would;
* ``collation``  — a key value's identity under its column's collation;
* ``guard``      — the guard statement in application triggers;
* ``rowwrite``   — many rows per statement, exactly (literal ``EXECUTE BLOCK``s);
* ``lockholder`` — who holds the row an apply waits for.
"""
