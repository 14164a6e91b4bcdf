"""``make chaos``: the whole product under faults, with the data real shops hold (issue 19).

Each trial builds a mesh configured like a customer's, lets a shop's application write at
every site while faults strike at seeded moments, heals everything, waits until the mesh is
quiet, and has an oracle that owes nothing to the node read every site.

Modules (one concept each; the arrows are the only imports between them):

* ``shop`` — the application of a real shop as an ordinary Firebird user: its schema
  (invoices, lines, payments, customers every site edits, triggers keeping totals and
  history, WIN1252 text, BLOBs, arrays…), rows from before install, its transactions, and
  the ``Journal`` of every committed write with its ordering facts.
* ``oracle`` (→ shop) — the checks: lost, duplicated, diverged, unrecorded, wrong winner,
  from the journal and the sites' tables read directly (an independent digest).
* ``mesh`` — the product as shipped: ``siege-node run`` processes (siège, stand-in, a site
  behind faulty lines on a small disk, one dialling in, one joining), their logs, and the
  operator's procedures (join, resync).
* ``faults`` (→ mesh) — every fault kind, struck when work is in flight (seen in MON$, on
  the lines, in the nodes' logs), and whether it hit.
* ``trial`` (→ shop, oracle, mesh, faults) — one trial's timeline and result.
* ``__main__`` (→ trial) — ``python -m tools.chaos``: trials in a row, the table, the JSON.
"""
