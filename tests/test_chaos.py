"""The short chaos run of `make test` (the long one is `make chaos`): seeded trials of three
`siege-node run` processes with nodes killed (SIGKILL, also mid-round) and restarted, checked
against the trials' own journal of committed changes."""

from __future__ import annotations

import os

from tools.chaos import Mesh, TrialResult, _check, run

TRIALS = int(os.environ.get("SIEGE_CHAOS_TRIALS", "4"))


def test_short_chaos_run_loses_nothing():
    summary = run(TRIALS, first_seed=1, steps=30)
    assert summary["trials"] == TRIALS
    assert (summary["lost"], summary["duplicated"], summary["diverged"]) == (0, 0, 0), summary
    assert summary["kills"] > 0, "the run killed no node: it proved nothing"


def test_the_check_sees_a_lost_and_a_diverged_row(fb_server, tmp_path):
    mesh = Mesh(fb_server, tmp_path)
    try:
        journal = {
            2001: [("lyon", "committed at lyon")],  # no site holds it: lost everywhere
            1: [("siege", "start"), ("nice", "x")],  # nobody holds it either: diverged
        }
        out = TrialResult(seed=0)
        _check(mesh, journal, out)
        assert out.lost == 3 and out.diverged == 1, out
    finally:
        mesh.close()
