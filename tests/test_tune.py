"""modman tune: the plan (grid, extension at an edge, seeds at the best and its neighbours), resume, refusals."""

import json
import math

import pytest

from modman.cli import main
from modman.errors import UserError
from modman.experiments.llm.tune import TuneSpec, plan, run_name, tune, tune_summary

SPEC = TuneSpec(("muon_all",), seeds=(0, 1, 2), points=5, max_extend=2)


def bowl(best_k):
    """Final val loss of a run at exponent k: a bowl around best_k (seed noise 1e-3)."""
    return lambda k, s: 2.0 + 0.1 * (k - best_k) ** 2 + 1e-3 * s


def run_plan(spec, loss):
    """Follow the plan to its end; returns every (k, seed) it ran, in order."""
    losses, order = {}, []
    while True:
        runs, phase = plan(spec, losses)
        if phase == "done":
            return order, losses
        k, s = runs[0]
        losses[(k, s)] = loss(k, s)
        order.append((k, s))


def test_an_interior_optimum_takes_the_grid_then_every_seed_at_it_and_its_neighbours():
    order, _ = run_plan(SPEC, bowl(1))
    assert order[:5] == [(k, 0) for k in range(-2, 3)]
    assert sorted(order[5:]) == [(k, s) for k in (0, 1, 2) for s in (1, 2)]


def test_an_optimum_on_the_edge_extends_the_grid_up_to_max_extend():
    order, _ = run_plan(SPEC, bowl(3))  # best at k = 3: one extension past the first grid's top (k = 2)
    assert (3, 0) in order and (4, 0) in order and (5, 0) not in order
    assert {(k, s) for k in (2, 3, 4) for s in (0, 1, 2)} <= set(order)
    order, losses = run_plan(SPEC, bowl(10))  # beyond the limit: stops at k = 4, measures k = 5, says EDGE
    assert max(k for k, _ in order) == 5 and {(5, s) for s in (0, 1, 2)} <= set(order)
    summary = {
        run_name("muon_all", k, s): {
            "experiment": "muon_all",
            "tune": [k, s],
            "final_val_loss": v,
            "status": "finished",
        }
        for (k, s), v in losses.items()
    }
    row = tune_summary(SPEC, summary)[0]
    assert row["best_multiplier"] == 2.0**4 and not row["interior"] and row["seeds"] == 3


def test_diverged_runs_count_as_worst_and_are_reported():
    def loss(k, s):
        return math.inf if k >= 1 else bowl(0)(k, s)

    order, losses = run_plan(SPEC, loss)
    summary = {
        run_name("muon_all", k, s): {
            "experiment": "muon_all",
            "tune": [k, s],
            "status": "diverged" if math.isinf(v) else "finished",
            "final_val_loss": None if math.isinf(v) else v,
        }
        for (k, s), v in losses.items()
    }
    row = tune_summary(SPEC, summary)[0]
    assert row["best_multiplier"] == 1.0 and row["interior"] and row["diverged"] == 0
    assert (1, 1) in order  # the diverging neighbour is still measured with every seed


def test_bad_specs_are_refused():
    for kwargs in ({"points": 2}, {"max_extend": -1}, {"seeds": (0, 0)}):
        with pytest.raises(UserError):
            TuneSpec(("muon_all",), **kwargs)
    with pytest.raises(UserError, match="unknown experiment"):
        TuneSpec(("nope",))


TINY = {"preset": "tiny", "batch_size": 4, "eval_batches": 1, "warmup_steps": 1, "max_steps": 2, "progress": False}


@pytest.mark.slow
def test_tune_runs_resumes_and_refuses_a_folder_of_other_settings(tmp_path, capsys):
    spec = TuneSpec(("baseline",), seeds=(0, 1), points=3, max_extend=0)
    settings = dict(TINY, out=str(tmp_path))
    partial = tune(settings, spec, max_runs=2)
    assert len(partial) == 2
    ended = tune(settings, spec)
    assert set(partial) <= set(ended) and len(ended) in (6, 7)  # 7: the best on an edge, its outer neighbour too
    assert len(list(tmp_path.glob("*/summary.json"))) == len(ended)  # every run once, none trained twice
    manifest = json.loads((tmp_path / "tune.json").read_text())
    assert manifest["settings"]["preset"] == "tiny" and len(manifest["settings"]["data_sha256"]) == 64
    with pytest.raises(UserError, match="max_steps: 2 there, 3 now"):
        tune(dict(settings, max_steps=3), spec)
    with pytest.raises(UserError, match="sets seed"):
        tune(dict(settings, seed=1), spec)
    args = ["tune", "--exp", "baseline", "--seeds", "0,1", "--points", "3", "--max-extend", "0", "--out", str(tmp_path)]
    args += ["--preset", "tiny", "--batch-size", "4", "--eval-batches", "1", "--warmup-steps", "1", "--max-steps", "2"]
    assert main(args + ["--no-progress"]) == 0  # every run ended: nothing trains, the table prints
    assert "baseline" in capsys.readouterr().out
    assert main(args[:-2] + ["--max-steps", "5", "--no-progress"]) == 2
    assert "holds a tune with other settings" in capsys.readouterr().err
