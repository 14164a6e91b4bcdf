"""An event's life through a site's database: published from what was captured here, applied
from what other sites published, each merged row settled against the constraints.

Owns the order and atomicity of DESIGN §3.4 and the same constraint outcome at every site
(§3.5). Must never talk to a peer: events come in and go out through ``mesh``.

* ``publish``     — captured changes become stamped, dense, hash-chained events;
* ``apply``       — other sites' events applied, whole source transactions at a time;
* ``sourcetx``    — one source transaction: ready or what it waits for, its events in the
  order the engine needs, each merged and settled;
* ``heldcheck``   — deletes made to wait for a row, checked again once committed;
* ``constraints`` — merged rows written with the same constraint outcome everywhere
  (``Settler``), with its parts:

  * ``lookup``      — what a settler reads: rows found as the engine compares values,
    registers, the records of hidden and kept rows;
  * ``clashes``     — UNIQUE clashes between referenced rows: which row hides, where its
    referencing rows go;
  * ``reparenting`` — the ``REPARENTED`` records, decided from registers alone;
  * ``tablewrites`` — a decided row becomes statements; the CHECK fall-back;
  * ``refusals``    — held, waiting, deferred: what settling answers instead of writing.
"""
