"""ManifoldMuon's solver selection, warm starts and retraction, and batched msign across optimizers."""

import pytest
import torch
from test_optim import batches, make_model, train
from torch import nn

import modman.optim.manifold_muon as manifold_muon_module
from modman.manifolds import Stiefel
from modman.optim import SPEL, Hyperball, ManifoldMuon, Muon, SpectralSphere


def test_manifold_muon_projects_at_construction_never_inside_step():
    model = make_model()
    opt = ManifoldMuon(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # user moves it off the manifold afterwards
    off = model[0].weight.detach().clone()
    model[0].weight.grad = torch.zeros_like(off)
    opt.step()
    assert torch.equal(model[0].weight, off)


@pytest.mark.parametrize("warm", [True, False])
def test_manifold_muon_warm_starts_from_multiplier_in_state(warm, monkeypatch):
    W = nn.Parameter(torch.randn(24, 8))
    opt = ManifoldMuon([W], lr=0.1, warm_start=warm, steps=5)
    W.grad = torch.randn(24, 8)
    opt.step()
    stored = opt.state[W]["multiplier"]
    assert stored.shape == (8, 8)
    seen = []
    original = manifold_muon_module.manifold_muon_direction

    def spy(*args, **kwargs):
        seen.append(kwargs["multiplier"])
        return original(*args, **kwargs)

    monkeypatch.setattr(manifold_muon_module, "manifold_muon_direction", spy)
    W.grad = torch.randn(24, 8)
    opt.step()
    assert (seen[0] is None) != warm
    if warm:
        assert torch.equal(seen[0], stored)


@pytest.mark.slow
def test_diagnostics_name_parameters_and_report_solver_numbers():
    model = make_model()
    opt = ManifoldMuon(model.named_parameters(), lr=0.1, steps=7, tol=0.0, solver="dual_ascent")
    train(model, opt, batches(1))
    diag = opt.diagnostics()
    assert set(diag) == {"0.weight", "2.weight", "4.weight"}
    for d in diag.values():
        assert (
            d["iterations"] == 7 and d["msign_calls"] == 7 and d["residual"] > 0 and d["step"] == 1
        )  # no retraction msign
        assert d["solver"] == "dual_ascent"


def test_default_solver_is_closed_form_for_square_and_hybrid_on_the_first_step_otherwise():
    model = make_model()  # 24x12 (tall), 24x24 (square), 5x24 (wide)
    opt = ManifoldMuon(model.named_parameters(), lr=0.1)
    train(model, opt, batches(1))
    diag = opt.diagnostics()
    assert diag["2.weight"]["solver"] == "closed_form" and diag["2.weight"]["msign_calls"] == 1
    # tall layer, full-rank gradient: no msign at all (n×n eigh, then the exact cheap retraction)
    assert diag["0.weight"]["solver"] == "hybrid" and diag["0.weight"]["msign_calls"] == 0
    assert diag["0.weight"]["residual"] < 1e-6
    # the 5-class head's gradient has rank 4 (softmax gradients sum to zero): the fixed point stalls there
    # (it used to be repaired and retracted with msign); Newton on the smoothed dual converges
    assert diag["4.weight"]["solver"] == "hybrid" and diag["4.weight"]["iterations"] > 20
    assert diag["4.weight"]["residual"] < 1e-6
    assert 0 <= diag["0.weight"]["gap"] < 1e-4 and 0 <= diag["4.weight"]["gap"] < 1e-4 and "gap" not in diag["2.weight"]
    train(model, opt, batches(1))  # from then on the tall and wide matrices track their multipliers
    diag = opt.diagnostics()
    assert diag["2.weight"]["solver"] == "closed_form"
    for name in ("0.weight", "4.weight"):
        assert diag[name]["solver"] == "tracking" and diag[name]["msign_calls"] == 1
        assert diag[name]["iterations"] == 1 and 0 < diag[name]["residual"] < 1 and "gap" not in diag[name]


@pytest.mark.slow
def test_cheap_retraction_does_not_drift_over_many_steps():
    model = make_model()
    opt = ManifoldMuon(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    train(model, opt, batches(60))
    for p in model.parameters():
        assert Stiefel().violation(p) < 2e-6


@pytest.mark.parametrize(
    "cls,shape",
    [
        (Muon, (24, 12)),
        (Muon, (16, 16)),
        (ManifoldMuon, (16, 16)),
        (ManifoldMuon, (24, 12)),
        (Hyperball, (24, 12)),
        (Hyperball, (16, 16)),
        (SPEL, (24, 12)),
        (SPEL, (16, 16)),
        (SpectralSphere, (40, 24)),
        (SpectralSphere, (24, 24)),
    ],
)
def test_same_shape_matrices_batched_in_one_group_match_separate_groups(cls, shape):
    torch.manual_seed(0)
    base = [torch.randn(*shape) for _ in range(3)]
    grads = [[torch.randn(*shape) for _ in range(3)] for _ in range(2)]
    together = [nn.Parameter(b.clone()) for b in base]
    apart = [nn.Parameter(b.clone()) for b in base]
    kw = {"msign_dtype": None}  # float32, so batched and single agree to rounding
    opt_t = cls(together, lr=0.05, **kw)
    opt_a = cls([{"params": [p]} for p in apart], lr=0.05, **kw)
    for step_grads in grads:
        for ps, opt in ((together, opt_t), (apart, opt_a)):
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(together, apart):
        assert torch.allclose(a, b, atol=1e-6)


def test_batched_msign_is_one_call_per_bucket(monkeypatch):
    import modman.optim.base as base_module

    calls = []
    original = base_module.msign

    def counting(G, **kw):
        calls.append(tuple(G.shape))
        return original(G, **kw)

    monkeypatch.setattr(base_module, "msign", counting)
    params = [nn.Parameter(torch.randn(8, 8)) for _ in range(4)] + [nn.Parameter(torch.randn(12, 8))]
    opt = Muon(params)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert sorted(calls) == [(1, 12, 8), (4, 8, 8)]
