"""What an operator starts on one site's database, beyond the running pipeline.

Owns a new site's join and a resync from the siège's copy, vendor upgrades run through the
node, and the repairs ``siege-ctl analyse --repair`` orders. Must never run on its own: each
is asked for by a command or a call.

* ``join``    — a new or rebuilt site from a copy of the siège's database;
* ``unpublished`` — rows the copy's source had deleted and not published, written back as
  its registers say;
* ``sequences`` — a resynced site's generators going on from its old database's values;
* ``upgrade`` — a vendor's upgrade with capture stepped aside;
* ``repair``  — rows made what the preferred site holds, the overwritten values on record.
"""
