"""siege-sync: keeps the Firebird databases of several establishments identical.

Layout (the design card's): ``proto`` is the wire contract, ``node`` is what every site runs,
``siege`` the coordinator role and ``siege-ctl``, ``certs`` the mesh PKI. Dependencies point
one way: siege -> node -> certs. ``console`` (how the command-line programs end when their
reader goes away) and ``i18n`` (the operator's language) sit below the three and import none
of them.
"""

__version__ = "0.1.0"
