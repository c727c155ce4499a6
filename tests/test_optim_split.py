"""Param group option ``split=k``: a fused q, k, v projection is stepped as k separate matrices by every rule."""

import pytest
import torch

from modman.manifolds import Stiefel
from modman.optim import SPEL, Hyperball, ManifoldMuon, Muon, SpectralDescent, SpectralSphere, StiefelRetraction
from modman.optim.constrained import sphere_radius

RULES = {
    "muon": lambda groups: Muon(groups, lr=0.05, momentum=0.9),
    "manifold_muon": lambda groups: ManifoldMuon(groups, lr=0.05, momentum=0.9, nesterov=True),
    "spel": lambda groups: SPEL(groups, lr=0.05),
    "hyperball": lambda groups: Hyperball(groups, lr=0.05),
    "spectral_sphere": lambda groups: SpectralSphere(groups, lr=0.05),
    "sso": lambda groups: SpectralSphere(groups, lr=0.05, tangent=True),
    "spectral": lambda groups: SpectralDescent(groups, lr=0.05, radius=0.5),
    "stiefel": lambda groups: StiefelRetraction(torch.optim.AdamW(groups, lr=0.01)),
}


def _fused_and_separate(transposed: bool, seed: int = 0):
    """A fused (3·16, 24) weight (stored (24, 48) when transposed) and its three blocks as separate weights."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(24, 48, generator=g) if transposed else torch.randn(48, 24, generator=g)
    axis = -1 if transposed else 0
    fused = torch.nn.Parameter(W.clone())
    separate = [torch.nn.Parameter(b.clone().contiguous()) for b in W.chunk(3, dim=axis)]
    return fused, separate, axis


@pytest.mark.parametrize("transposed", [False, True], ids=["out_in", "in_out"])
@pytest.mark.parametrize("rule", RULES)
def test_a_split_weight_steps_as_its_blocks_would_alone(rule, transposed):
    fused, separate, axis = _fused_and_separate(transposed)
    extra = {"transposed": True} if transposed else {}
    opt_fused = RULES[rule]([{"params": [fused], "split": 3, **extra}])
    opt_separate = RULES[rule]([{"params": separate, **extra}])
    # Built: each block projected onto its own set exactly as the separate weights were.
    assert torch.allclose(fused.detach(), torch.cat([p.detach() for p in separate], dim=axis), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        G = torch.randn(fused.shape, generator=g)
        fused.grad = G.clone()
        for p, block in zip(separate, G.chunk(3, dim=axis)):
            p.grad = block.contiguous()
        opt_fused.step()
        opt_separate.step()
    want = torch.cat([p.detach() for p in separate], dim=axis)
    assert not torch.allclose(want, torch.cat(_fused_and_separate(transposed)[1], dim=axis).detach())  # it moved
    assert torch.allclose(fused.detach(), want, atol=2e-5), (fused.detach() - want).abs().max()


def test_every_block_lands_on_its_own_manifold_and_the_stack_does_not():
    fused, _, _ = _fused_and_separate(False)
    opt = ManifoldMuon([{"params": [fused], "split": 3}], lr=0.1)
    for _ in range(3):
        fused.grad = torch.randn_like(fused)
        opt.step()
    for block in fused.detach().chunk(3):
        assert Stiefel().violation(block) < 1e-5
    assert Stiefel().violation(fused.detach()) > 0.1  # three orthonormal blocks are not one orthonormal stack
    diag = opt.diagnostics()["param_groups[0]['params'][0]"]
    blocks = opt.state[fused]["blocks"].values()
    assert diag["step"] == 3 and diag["msign_calls"] == sum(b["msign_calls"] for b in blocks) >= 3
    assert diag["residual"] == max(b["residual"] for b in blocks)

    sphere = torch.nn.Parameter(torch.randn(24, 48))
    SpectralSphere([{"params": [sphere], "split": 3, "transposed": True}], radius=2.0)
    R = sphere_radius((16, 24), 2.0)  # each block: out 16, in 24
    for block in sphere.detach().chunk(3, dim=1):
        assert torch.linalg.matrix_norm(block.double(), ord=2) == pytest.approx(R, rel=1e-5)


def test_split_state_round_trips_and_a_failed_step_restores_it(monkeypatch):
    torch.manual_seed(0)
    fused = torch.nn.Parameter(torch.randn(48, 24))
    opt = ManifoldMuon([{"params": [fused], "split": 3}], lr=0.05, momentum=0.9, nesterov=True)
    fused.grad = torch.randn_like(fused)
    opt.step()
    blocks = opt.state[fused]["blocks"]
    assert sorted(blocks) == [0, 1, 2] and blocks[0]["multiplier"].shape == (16, 16)
    twin = torch.nn.Parameter(fused.detach().clone())
    copy = ManifoldMuon([{"params": [twin], "split": 3}], lr=0.05, momentum=0.9, nesterov=True)
    copy.load_state_dict(opt.state_dict())
    G = torch.randn_like(fused)
    fused.grad, twin.grad = G.clone(), G.clone()
    opt.step()
    copy.step()
    assert torch.equal(fused.detach(), twin.detach())

    before_w = fused.detach().clone()
    before = {j: b["momentum_buffer"].clone() for j, b in opt.state[fused]["blocks"].items()}
    original = ManifoldMuon._update_many

    def update_then_fail(self, *args):
        original(self, *args)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(
        ManifoldMuon, "_update_buckets", lambda self, buckets: [update_then_fail(self, *b) for b in buckets]
    )
    fused.grad = torch.randn_like(fused)
    with pytest.raises(RuntimeError, match="interrupted"):
        opt.step()
    assert torch.equal(fused.detach(), before_w)
    for j, b in opt.state[fused]["blocks"].items():
        assert torch.equal(b["momentum_buffer"], before[j]), j


def test_split_that_does_not_divide_is_refused_before_anything_changes():
    W = torch.nn.Parameter(torch.randn(16, 20))
    before = W.detach().clone()
    for build in (
        lambda: ManifoldMuon([{"params": [W], "split": 3}]),
        lambda: StiefelRetraction(torch.optim.AdamW([{"params": [W], "split": 3}])),
    ):
        with pytest.raises(ValueError, match=r"split=3 needs 2-D weights.*shape \(16, 20\).*drop split"):
            build()
        assert torch.equal(W.detach(), before)
    with pytest.raises(ValueError, match=r"split=3.*\(stored \(in, out\)\)"):
        Muon([{"params": [torch.nn.Parameter(torch.randn(24, 16))], "split": 3, "transposed": True}])
