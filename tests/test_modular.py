"""modman.modular: composition arithmetic, dualize against exact duals, project, the well-normed statement."""

from __future__ import annotations

import math

import pytest
import torch

from modman.modular import (
    GELU,
    GPT,
    MLP,
    Attention,
    Embed,
    Linear,
    ModularDescent,
    Mul,
    ReLU,
    RMSNorm,
    Tuple,
    residual,
    rms_norm,
)
from modman.modular.bonds import GELU_LIPSCHITZ


def coefs(net):
    return [c for _, c in net.budgets()]


def spectral(w):
    return torch.linalg.matrix_norm(w.double(), ord=2).item()


# ---- composition arithmetic ----------------------------------------------------------------------------


def test_composition_mass_sensitivity_and_norm_by_hand():
    a, b = Linear(4, 8, seed=0), Linear(8, 2, seed=1)
    net = b @ a
    assert (net.mass, net.sensitivity, coefs(net)) == (2.0, 1.0, [2.0, 2.0])
    assert list(net.parameters()) == [a.weight, b.weight]  # order of application
    scaled = b @ Mul(2.0) @ a  # ‖·‖ = max((2/1)·2·‖w_a‖_a, (2/1)·‖w_b‖_b)
    assert (scaled.mass, scaled.sensitivity, coefs(scaled)) == (2.0, 2.0, [4.0, 2.0])
    wa, wb = torch.randn(8, 4), torch.randn(2, 8)
    expected = max(4.0 * math.sqrt(4 / 8) * spectral(wa), 2.0 * math.sqrt(8 / 2) * spectral(wb))
    assert scaled.norm([wa, wb]).item() == pytest.approx(expected, rel=1e-9)
    three = 3 * (b @ a)
    assert (three.sensitivity, coefs(three)) == (3.0, [6.0, 6.0])
    pair = Tuple(Linear(4, 4), Linear(4, 4), Linear(4, 4))
    assert (pair.mass, pair.sensitivity, coefs(pair)) == (3.0, 3.0, [3.0, 3.0, 3.0])
    summed = Linear(4, 4) + Linear(4, 4)
    assert (summed.mass, summed.sensitivity, coefs(summed)) == (2.0, 2.0, [2.0, 2.0])
    res = residual(Linear(4, 4), 0.25)  # (1 − α)·x + α·f(x): sensitivity 1, coefficient α
    assert (res.mass, res.sensitivity, coefs(res)) == (1.0, 1.0, [0.25])
    deep = (Linear(8, 8) @ ReLU()) ** 3
    assert (deep.mass, deep.sensitivity, coefs(deep)) == (3.0, 1.0, [3.0, 3.0, 3.0])
    assert len({id(p) for p in deep.parameters()}) == 3  # ** makes fresh weights
    head_embed = Linear(16, 50) @ Embed(50, 16)
    assert coefs(head_embed) == [2.0, 2.0]


def test_tare_rescales_masses_and_moves_the_budget_split():
    a, b = Linear(4, 8), Linear(8, 2)
    a.tare(3.0)
    net = b @ a
    assert net.mass == 4.0 and coefs(net) == pytest.approx([4 / 3, 4.0])
    net.tare(8.0)
    assert net.mass == pytest.approx(8.0) and a.mass == pytest.approx(6.0)
    assert coefs(net) == pytest.approx([4 / 3, 4.0])  # ratios of masses, not their total, set the split
    with pytest.raises(ValueError, match="mass 0"):
        ReLU().tare(1.0)


# ---- dualize ------------------------------------------------------------------------------------------

# Shapes with aspect ratio 1 or >= 4: the manifold Muon solver is fast there (aspects 1.5-2 are slower to certify).
NETS = {"mlp": lambda: MLP((16, 64, 16, 16), seed=0).double(), "gpt": lambda: GPT(64, 16, 2, 2, seed=0).double()}


def exact_dual_norm(net, grads):
    """Σ_i (1/c_i)·‖g_i‖_i^*: the largest ⟨g, Δ⟩ over ‖Δ‖_modular ≤ 1 (nuclear norm / sum of row norms)."""
    total = 0.0
    for (atom, c), g in zip(net.budgets(), grads):
        if isinstance(atom, Linear):
            dual = math.sqrt(atom.out_features / atom.in_features) * torch.linalg.matrix_norm(g, ord="nuc").item()
        else:
            dual = math.sqrt(atom.embedding_dim) * torch.linalg.vector_norm(g, dim=-1).sum().item()
        total += dual / c
    return total


def inner(xs, ys):
    return sum((x * y).sum().item() for x, y in zip(xs, ys))


@pytest.mark.parametrize("name", list(NETS))
def test_dualize_has_unit_norm_and_reaches_the_exact_dual_norm(name):
    net = NETS[name]()
    torch.manual_seed(1)
    grads = [torch.randn_like(p) for p in net.parameters()]
    free = net.dualize(grads, tangent=False)
    assert net.norm(free).item() == pytest.approx(1.0, abs=1e-6)
    assert inner(grads, free) == pytest.approx(exact_dual_norm(net, grads), rel=1e-5)
    for _ in range(20):  # no random direction of unit modular norm does better
        d = [torch.randn_like(p) for p in net.parameters()]
        n = net.norm(d).item()
        assert inner(grads, [x / n for x in d]) < inner(grads, free)


@pytest.mark.parametrize("name", list(NETS))
def test_tangent_dualize_is_unit_norm_tangent_and_beats_tangent_directions(name):
    net = NETS[name]()
    torch.manual_seed(2)
    grads = [torch.randn_like(p) for p in net.parameters()]
    step = net.dualize(grads)
    assert net.norm(step).item() == pytest.approx(1.0, abs=1e-6)
    for (atom, _), d in zip(net.budgets(), step):
        assert torch.allclose(atom.manifold.tangent(atom.weight, d), d, atol=1e-6)
    best = inner(grads, step)
    assert best <= inner(grads, net.dualize(grads, tangent=False)) + 1e-9
    for _ in range(20):
        d = [atom.manifold.tangent(atom.weight, torch.randn_like(atom.weight)) for atom, _ in net.budgets()]
        n = net.norm(d).item()
        assert inner(grads, [x / n for x in d]) < best


def test_bad_lists_and_structures_are_named():
    net = MLP((8, 4, 2))
    with pytest.raises(ValueError, match="expected 2 tensors"):
        net.norm([torch.zeros(4, 8)])
    with pytest.raises(ValueError, match=r"shape \(8, 4\) where Linear has weight shape \(4, 8\)"):
        net.dualize([torch.zeros(8, 4), torch.zeros(2, 4)])
    shared = Linear(4, 4)
    with pytest.raises(ValueError, match="exactly one atom, used once"):
        (shared @ shared).budgets()
    for bad, match in (
        (lambda: Linear(0, 3), "in_features"),
        (lambda: Embed(5, -1), "embedding_dim"),
        (lambda: ReLU() ** 0, "n >= 1"),
        (lambda: residual(ReLU(), 0), "alpha"),
        (lambda: GPT(dim=10, num_heads=4), "divisible"),
        (lambda: Linear(2, 2) @ torch.nn.ReLU(), None),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            bad()


# ---- project -----------------------------------------------------------------------------------------


def test_project_puts_every_weight_on_its_manifold():
    net = GPT(64, 16, 2, 2, seed=0).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    assert max(a.manifold.violation(a.weight) for a, _ in net.budgets()) > 0.1
    net.project()
    assert max(a.manifold.violation(a.weight) for a, _ in net.budgets()) < 1e-9
    for atom, _ in net.budgets():
        if isinstance(atom, Linear):
            assert atom.weight_norm(atom.weight).item() == pytest.approx(1.0, abs=1e-9)  # RMS→RMS norm 1


# ---- the well-normed statement ----------------------------------------------------------------------


def unit_rms(*shape):
    x = torch.randn(*shape, dtype=torch.float64)
    return x / x.square().mean(-1, keepdim=True).sqrt()


def change_ratio(net, x, dw, t=1e-5):
    """‖f(w + tΔw, x) − f(w, x)‖_RMS / t over ‖Δw‖_modular."""
    params = list(net.parameters())
    with torch.no_grad():
        y0 = net(x)
        for p, d in zip(params, dw):
            p.add_(t * d)
        y1 = net(x)
        for p, d in zip(params, dw):
            p.sub_(t * d)
    return (rms_norm(y1 - y0) / t / net.norm(dw)).item()


CASES = {
    "linear_tall": (lambda: Linear(8, 32, seed=0), lambda: unit_rms(6, 8)),
    "linear_wide": (lambda: Linear(32, 8, seed=0), lambda: unit_rms(6, 32)),
    "linear_square": (lambda: Linear(16, 16, seed=0), lambda: unit_rms(6, 16)),
    "embed": (lambda: Embed(30, 12, seed=0), lambda: torch.randint(0, 30, (3, 7))),
    "mlp": (lambda: MLP((16, 64, 16, 16), seed=0), lambda: unit_rms(6, 16)),
    "gpt": (lambda: GPT(64, 16, 2, 3, seed=0), lambda: torch.randint(0, 64, (2, 12))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_well_normed(name):
    make_net, make_x = CASES[name]
    torch.manual_seed(3)
    net, x = make_net().double(), make_x()
    for trial in range(15):
        dw = [torch.randn_like(p) * torch.rand(()) ** 2 for p in net.parameters()]
        if trial % 3 == 0:  # the direction a gradient would take: dualized, on one atom at a time
            k = trial % len(dw)
            dw = [d if i == k else torch.zeros_like(d) for i, d in enumerate(net.dualize(dw))]
        assert change_ratio(net, x, dw) <= 1.01, (name, trial)


def test_linear_bound_is_tight():
    """ΔW = u vᵀ scaled to unit norm and x along v: the change equals ‖ΔW‖ (the test above can fail)."""
    lin = Linear(16, 8, seed=0).double()
    v, u = torch.randn(16, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    v, u = v / v.norm(), u / u.norm()
    dw = torch.outer(u, v)
    x = (v * math.sqrt(16))[None]  # RMS 1
    assert change_ratio(lin, x, [dw]) == pytest.approx(1.0, rel=1e-6)


def test_bonds_are_one_lipschitz_and_keep_the_unit_ball():
    x = torch.linspace(-6, 6, 10001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(GELU()(x).sum(), x)
    assert g.max().item() == pytest.approx(1.0, abs=1e-6)
    assert GELU_LIPSCHITZ == pytest.approx(1.1289041451, abs=1e-9)
    y = unit_rms(4, 16)
    for bond in (ReLU(), GELU()):
        assert rms_norm(bond(y)) <= 1.0 + 1e-12
    assert rms_norm(RMSNorm()(3 * y)).item() == pytest.approx(1.0, abs=1e-5)
    q, k, v = unit_rms(2, 6, 8), unit_rms(2, 6, 8), unit_rms(2, 6, 8)
    assert rms_norm(Attention(2)((q, k, v))) <= 1.0 + 1e-9  # a convex combination of the values


# ---- training -------------------------------------------------------------------------------------------


def test_modular_descent_trains_an_mlp_on_its_manifolds_and_round_trips_state():
    torch.manual_seed(0)
    X = unit_rms(256, 16).float()
    labels = X[:, :4].argmax(1)  # learnable: which of the first four inputs is largest
    net = MLP((16, 64, 4), seed=0)
    opt = ModularDescent(net, lr=0.5, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 / c for c in coefs(net)])
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(net(X) * 4, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::10]
    assert max(a.manifold.violation(a.weight) for a, _ in net.budgets()) < 1e-4
    again = ModularDescent(MLP((16, 64, 4), seed=1), lr=0.5)
    again.load_state_dict(opt.state_dict())
    p0 = next(iter(opt.state.values()))["momentum_buffer"]
    assert torch.equal(next(iter(again.state.values()))["momentum_buffer"], p0)
    for kwargs, match in (
        ({"lr": 0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"workers": 0}, "workers"),
        ({"workers": True}, "workers"),
        ({"warm_start": 1}, "warm_start"),
    ):
        with pytest.raises(ValueError, match=match):
            ModularDescent(net, **kwargs)
    with pytest.raises(TypeError, match="modman.modular Module"):
        ModularDescent(torch.nn.Linear(2, 2))


def test_sharded_weights_are_refused_by_name():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        net = MLP((4, 8, 2), seed=0)
        mesh = init_device_mesh("cpu", (1,))
        for atom, _ in net.budgets():
            atom.weight = torch.nn.Parameter(distribute_tensor(atom.weight.detach(), mesh, [Shard(0)]))
        with pytest.raises(TypeError, match="DTensors \\(FSDP2\\).*DDP"):
            ModularDescent(net)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_it_is_a_torch_module():
    net = GPT(40, 16, 2, 1, seed=0)
    compiled = torch.compile(net, backend="aot_eager")
    idx = torch.randint(0, 40, (2, 8))
    assert torch.allclose(compiled(idx), net(idx), atol=1e-5)
    assert net.double()(idx).dtype == torch.float64
    assert {type(m).__name__ for m in net.modules()} >= {"Linear", "Embed", "Attention", "GELU", "Tuple"}


@pytest.mark.parametrize("warm", [True, False])
def test_modular_descent_warm_starts_each_linear_solve_from_its_multiplier(warm, monkeypatch):
    import modman.modular.atoms as atoms

    seen = []
    original = atoms.manifold_muon_direction

    def spy(*args, **kwargs):
        seen.append(kwargs["multiplier"])
        return original(*args, **kwargs)

    monkeypatch.setattr(atoms, "manifold_muon_direction", spy)
    net = MLP((16, 32, 4), seed=0)
    opt = ModularDescent(net, lr=0.2, warm_start=warm)
    X = unit_rms(32, 16).float()
    for _ in range(2):
        opt.zero_grad()
        net(X).square().mean().backward()
        opt.step()
    assert len(seen) == 4 and seen[0] is None and seen[1] is None  # two atoms, cold on the first step
    states = [opt.state[a.weight] for a, _ in net.budgets()]
    if warm:
        assert [tuple(s["multiplier"].shape) for s in states] == [(16, 16), (4, 4)]
        assert seen[2] is not None and seen[3] is not None and seen[2].shape == (16, 16)
        assert all(s["iterations"] == 1 and s["residual"] > 0 for s in states)  # auto: tracking, one msign
    else:
        assert seen[2] is None and seen[3] is None and not any("multiplier" in s for s in states)
