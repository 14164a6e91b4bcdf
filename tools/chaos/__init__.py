"""``make chaos``: the whole product under faults, with the data real shops hold (issue 19).

Being rebuilt; ``first_generation`` is the run it replaces.
"""
