"""Import paths that moved keep working for a while, with a DeprecationWarning that says where to go."""

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    "old, name",
    [
        ("modman.rules.manifold_muon_solvers", "closed_form_batch"),
        ("modman.rules.manifold_muon_solvers", "polar_correction"),
        ("modman.rules.manifold_muon_newton", "smoothed_newton"),
        ("modman.rules.manifold_muon_tracking", "lyapunov_cg"),
    ],
)
def test_a_moved_module_warns_and_gives_the_same_objects(old, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="import from modman.rules.manifold_muon"):
        module = importlib.import_module(old)
    new = importlib.import_module("modman.rules.manifold_muon")
    where = [
        m
        for m in ("", ".fixed_point", ".newton", ".reduced", ".tracking")
        if hasattr(importlib.import_module("modman.rules.manifold_muon" + m), name)
    ]
    assert where and getattr(module, name) is getattr(importlib.import_module(new.__name__ + where[0]), name)


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("modman.experiments.train", "TrainConfig", "modman.experiments.llm.config"),
        ("modman.experiments.train", "train", "modman.experiments.llm.train"),
        ("modman.experiments.train", "TRAIN_EXPERIMENTS", "modman.experiments.llm.recipes"),
        ("modman.experiments.model", "Transformer", "modman.experiments.llm.model"),
        ("modman.experiments.checkpoint", "load_checkpoint", "modman.experiments.common.checkpoint"),
        ("modman.experiments.runlog", "write_json_atomic", "modman.experiments.common.files"),
        ("modman.experiments.sweep", "run_sweep", "modman.experiments.llm.sweep"),
        ("modman.experiments.lr_transfer", "run_transfer", "modman.experiments.cifar.lr_transfer"),
    ],
)
def test_a_moved_experiment_module_warns_and_gives_the_same_objects(old, name, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; import from modman.experiments"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_the_packages_that_replaced_modules_keep_their_names():
    from modman.experiments.cifar import CifarConfig, run_cifar
    from modman.experiments.cifar.cifar import CifarConfig as config
    from modman.experiments.cifar.cifar import run_cifar as run
    from modman.experiments.report import analyze
    from modman.experiments.report.report import analyze as analyze_

    assert (CifarConfig, run_cifar, analyze) == (config, run, analyze_)


def test_experiments_left_the_optimizers_namespace_with_a_warning():
    import modman.optim
    from modman.experiments.llm.recipes import EXPERIMENTS
    from modman.optim import ModularOptimizer

    with pytest.warns(DeprecationWarning, match="ModularOptimizer.EXPERIMENTS"):
        old = modman.optim.EXPERIMENTS
    assert old is ModularOptimizer.EXPERIMENTS is EXPERIMENTS and "EXPERIMENTS" not in modman.optim.__all__
