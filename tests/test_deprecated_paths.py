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
