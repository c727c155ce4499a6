"""modman tune: the plan (grid, extension at an edge, seeds at the best and its neighbours), resume, refusals."""

import json
import math

import pytest

from modman.cli import main
from modman.errors import UserError
from modman.experiments.llm.tune import TuneSpec, format_tune, plan, run_name, tune, tune_summary
from modman.experiments.llm.tune_plan import chosen, seeded_mean

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
    assert row["best_multiplier"] == 2.0**5 and not row["interior"] and row["seeds"] == 3  # lowest seeded mean


def test_when_the_seeds_prefer_a_neighbour_its_other_side_is_seeded_too():
    def loss(k, s):  # seed 0 prefers k = 1, the other seeds k = 2 by far
        return bowl(1)(k, s) if s == 0 or k != 2 else 1.0

    order, losses = run_plan(SPEC, loss)
    assert {(3, s) for s in (0, 1, 2)} <= set(order)  # k = 2 won on the seeds: k = 3 is seeded as well
    assert chosen(SPEC, losses) == (2, False) and (4, 0) not in losses


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


def test_the_chosen_setting_is_the_lowest_mean_over_every_seed():
    losses = {(k, 0): bowl(1)(k, 0) for k in range(-2, 3)}
    assert chosen(SPEC, losses) is None  # the seeds phase has not run
    losses.update({(k, s): bowl(1)(k, s) for k in (0, 1, 2) for s in (1, 2)})
    assert chosen(SPEC, losses) == (1, False)
    losses[(2, 1)] = losses[(2, 2)] = 1.0  # the neighbour's seeds are better on average: the report would pick it
    assert chosen(SPEC, losses) is None  # ... once its other side is seeded too
    losses.update({(3, s): bowl(1)(3, s) for s in (0, 1, 2)})
    assert chosen(SPEC, losses) == (2, False) and seeded_mean(SPEC, losses, 2) == pytest.approx((2.1 + 2) / 3)
    without = {(2, s): 1.2 for s in (0, 1)}
    assert chosen(SPEC, losses, without) == (2, False)  # seed 2 missing without decay: not a candidate yet
    without[(2, 2)] = 1.2
    assert chosen(SPEC, losses, without) == (2, True)
    losses[(0, 1)] = math.inf
    assert seeded_mean(SPEC, losses, 0) == math.inf


def test_bad_specs_are_refused():
    for kwargs in ({"points": 2}, {"max_extend": -1}, {"seeds": (0, 0)}):
        with pytest.raises(UserError):
            TuneSpec(("muon_all",), **kwargs)
    with pytest.raises(UserError, match="unknown experiment"):
        TuneSpec(("nope",))
    with pytest.raises(UserError, match="--no-decay: stiefel_all not among"):
        TuneSpec(("muon_all",), no_decay=("stiefel_all",))


TINY = {"preset": "tiny", "batch_size": 4, "eval_batches": 1, "warmup_steps": 1, "max_steps": 2, "progress": False}


@pytest.mark.slow
def test_tune_runs_resumes_and_refuses_a_folder_of_other_settings(tmp_path, capsys):
    spec = TuneSpec(("baseline",), seeds=(0, 1), points=3, max_extend=0, no_decay=("baseline",))
    settings = dict(TINY, out=str(tmp_path))
    partial = tune(settings, spec, max_runs=2)
    assert len(partial) == 2
    ended = tune(settings, spec, timing=False)
    assert set(partial) <= set(ended) and len(ended) in (8, 9)  # 9: the best on an edge, its outer neighbour too
    assert len(list(tmp_path.glob("*/summary.json"))) == len(ended)  # every run once, none trained twice
    no_decay = [s for s in ended.values() if s["no_decay"]]
    assert len(no_decay) == 2 and {s["config"]["weight_decay"] for s in no_decay} == {0.0}
    assert all(s["config"]["weight_decay"] == 0.1 for s in ended.values() if not s["no_decay"])
    manifest = json.loads((tmp_path / "tune.json").read_text())
    assert manifest["settings"]["preset"] == "tiny" and len(manifest["settings"]["data_sha256"]) == 64
    with pytest.raises(UserError, match="max_steps: 2 there, 3 now"):
        tune(dict(settings, max_steps=3), spec)
    with pytest.raises(UserError, match="sets seed"):
        tune(dict(settings, seed=1), spec)
    args = ["tune", "--exp", "baseline", "--seeds", "0,1", "--points", "3", "--max-extend", "0", "--out", str(tmp_path)]
    args += ["--preset", "tiny", "--batch-size", "4", "--eval-batches", "1", "--warmup-steps", "1", "--max-steps", "2"]
    assert main(args + ["--no-progress", "--no-timing"]) == 0  # every run ended: nothing trains, the table prints
    assert "baseline" in capsys.readouterr().out
    assert main(args[:-2] + ["--max-steps", "5", "--no-progress"]) == 2
    assert "holds a tune with other settings" in capsys.readouterr().err

    # the timed phase: each best setting once more, apart from the seeds
    assert not (tmp_path / "timed").exists() and not any(s["timed"] for s in ended.values())
    rows = tune_summary(spec, ended)
    assert rows[0]["done"] and not rows[0]["timed"]
    ended = tune(settings, spec)  # only the timed run is left
    (timed,) = [name for name, s in ended.items() if s["timed"]]
    best, without = int(math.log2(rows[0]["best_multiplier"])), rows[0]["chosen_without_decay"]
    assert timed == "timed/" + run_name("baseline", best, 0, without)
    assert list((tmp_path / "timed").glob("*/summary.json")) == [tmp_path / timed / "summary.json"]
    assert tune_summary(spec, ended)[0]["timed"] and "done, timed" in format_tune(tune_summary(spec, ended))
    seeded = json.loads((tmp_path / run_name("baseline", best, 0, without) / "summary.json").read_text())
    again = json.loads((tmp_path / timed / "summary.json").read_text())
    assert again["final_val_loss"] == pytest.approx(seeded["final_val_loss"], abs=1e-4)  # the same run, re-timed
    assert again["versions"]["cpu"] and tune(settings, spec).keys() == ended.keys()  # nothing left to run


def test_a_manifest_older_than_a_setting_counts_it_at_its_default(tmp_path):
    from modman.experiments.llm.tune import _check_manifest

    manifest = {"settings": {"preset": "tiny"}, "seeds": [0], "points": 5, "max_extend": 3}
    saved = dict(manifest, settings={"preset": "tiny"})
    (tmp_path / "tune.json").write_text(json.dumps(saved))
    _check_manifest(tmp_path / "tune.json", dict(manifest, settings={"preset": "tiny", "weight_decay": 0.1}))
    with pytest.raises(UserError, match="weight_decay: 0.1 there, 0.0 now"):
        _check_manifest(tmp_path / "tune.json", dict(manifest, settings={"preset": "tiny", "weight_decay": 0.0}))
