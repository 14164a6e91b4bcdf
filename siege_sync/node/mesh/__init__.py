"""The node on the network: the top layer of what every site runs.

Owns mutual TLS, who may start a call (admission), the gRPC service, exchanges with peers
(hello, pull, push; paced, with BLOBs in chunks), where peers are (discovery, zeroconf,
announcements), the long-lived call of a site that cannot be dialled, the replica that puts
the layers below behind one lock, and the daemon (``siege-node run``). Must never open a
plaintext port.

* ``transport``  — mTLS credentials, channels, the pinned server name;
* ``admission``  — who may start a call and how many at once, before any work;
* ``origins``    — whose events may travel from whom;
* ``gatekeeper`` — who is calling, from the certificate; refusals said and logged;
* ``service``    — the ``SyncNode`` gRPC service;
* ``analysis``   — its calls for ``siege-ctl analyse``: range digests, rows, repairs;
* ``exchange``   — one exchange with a peer;
* ``pacing``     — a bandwidth cap for one exchange;
* ``blobs``      — large BLOBs cut into chunks and put back together;
* ``replica``    — this site's database as the mesh sees it: one lock, one pipeline;
* ``ownchain``   — whether this site may publish: its chain confirmed, a claim proved;
* ``outbox``     — what a peer lacks of what this database holds, as a stream's messages;
* ``discovery``  — where a peer can be reached now;
* ``announce``   — zeroconf on the LAN;
* ``tidings``    — news for the sites that cannot be dialled;
* ``readiness``  — systemd's notify protocol;
* ``upstream``   — what a site asks of and tells its coordinators itself: dial-out,
  purge orders, what is held here, whether it needs a resync;
* ``daemon``     — ``siege-node run``: the long-running service.
"""
