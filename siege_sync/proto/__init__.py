"""The wire contract (``package siege.v1``): ``*.proto`` sources and the generated modules.

Regenerate with ``make proto`` (``tools/gen_proto.py``); a test fails when they are stale.
"""
