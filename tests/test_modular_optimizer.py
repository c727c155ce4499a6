"""ModularOptimizer: the LLM experiment plan's per-role rules behind one torch.optim interface."""

import copy

import pytest
import torch
import torch.nn.functional as F

from modman.experiments.llm.model import PRESETS, Transformer
from modman.experiments.llm.recipes import EXPERIMENTS
from modman.manifolds import SpectralBall, Stiefel
from modman.manifolds import SpectralSphere as SphereSet
from modman.optim import (
    SPEL,
    Hyperball,
    ManifoldMuon,
    ModularOptimizer,
    Muon,
    SpectralRetraction,
    SpectralSphere,
    StiefelRetraction,
)
from modman.optim.modular import DEFAULT_LR

KIND = {
    "adamw": torch.optim.AdamW,
    "muon": Muon,
    "stiefel": StiefelRetraction,
    "spectral": SpectralRetraction,
    "manifold_muon": ManifoldMuon,
    "spectral_sphere": SpectralSphere,
    "hyperball": Hyperball,
    "spel": SPEL,
}


def model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = Transformer(PRESETS["tiny"])
    x = torch.randint(0, 256, (4, 17), generator=torch.Generator().manual_seed(seed + 1))
    return model, x


def loss_of(model, x):
    return F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())


def train_steps(opt, model, x, n):
    for _ in range(n):
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step()


@pytest.mark.slow
@pytest.mark.parametrize("exp", list(EXPERIMENTS))
def test_each_parameter_goes_to_the_rule_the_seed_says(exp):
    model, _ = model_and_batch()
    opt = ModularOptimizer(model, exp)
    owner = {id(p): rule for rule, sub in opt.optimizers.items() for g in sub.param_groups for p in g["params"]}
    assert len(owner) == len(list(model.parameters()))  # each parameter in exactly one sub-optimizer
    for name, p in model.named_parameters():
        role = opt.roles[name]
        expected = EXPERIMENTS[exp].get(role, "adamw") if p.ndim >= 2 else "adamw"
        assert owner[id(p)] == expected, name
        assert isinstance(opt.optimizers[expected], KIND[expected])
    for g in opt.param_groups:
        constrained = g["rule"] in ("stiefel", "spectral", "manifold_muon", "spectral_sphere", "hyperball", "spel")
        vector = g["params"][0].ndim < 2
        assert (g["weight_decay"] == 0.0) == (constrained or vector), (g["rule"], g["role"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "exp,manifold",
    [
        ("stiefel_all", Stiefel()),
        ("manifold_muon", Stiefel()),
        ("spectral_all", SpectralBall()),
        ("spel", Stiefel()),
        ("spectral_sphere", None),
    ],
)
def test_constrained_matrices_start_and_stay_on_their_manifold(exp, manifold):
    model, x = model_and_batch()
    opt = ModularOptimizer(model, exp)
    matrices = [p for n, p in model.named_parameters() if opt.roles[n] in ("attention", "ffn") and p.ndim == 2]

    def on(p):  # the spectral sphere's radius is √(fan_out/fan_in) per matrix
        return manifold or SphereSet((p.shape[0] / p.shape[1]) ** 0.5)

    assert all(on(p).violation(p) < 1e-5 for p in matrices)
    train_steps(opt, model, x, 3)
    assert all(on(p).violation(p) < 1e-4 for p in matrices)
    assert Stiefel().violation(model.tok_embeddings.weight) > 0.1  # embeddings stay unconstrained


def test_learning_rates_per_rule_lr_and_role_overrides():
    model, _ = model_and_batch()
    lrs = {(g["rule"], g["role"]): g["lr"] for g in ModularOptimizer(model, "muon_attention").param_groups}
    assert lrs[("muon", "attention")] == DEFAULT_LR["muon"]
    assert lrs[("adamw", "ffn")] == DEFAULT_LR["adamw"]
    assert lrs[("adamw", "embedding")] == lrs[("adamw", "norm")] == 3e-3
    opt = ModularOptimizer(model, "muon_attention", lr=0.05, adamw_lr=1e-3, role_lr={"ffn": 7e-4, "head": 2e-3})
    lrs = {(g["rule"], g["role"]): g["lr"] for g in opt.param_groups}
    assert lrs == {
        ("adamw", "embedding"): 1e-3,
        ("adamw", "norm"): 1e-3,
        ("muon", "attention"): 0.05,
        ("adamw", "ffn"): 7e-4,
        ("adamw", "head"): 2e-3,
    }


@pytest.mark.slow
def test_lr_scheduler_reaches_every_sub_optimizer():
    model, x = model_and_batch()
    opt = ModularOptimizer(model, "manifold_muon")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    base = {id(g): g["lr"] for g in opt.param_groups}
    train_steps(opt, model, x, 1)
    sched.step()
    for sub in opt.optimizers.values():
        for g in sub.param_groups:
            assert g["lr"] == pytest.approx(0.5 * base[id(g)])


@pytest.mark.slow
@pytest.mark.parametrize("exp", ["muon_all", "stiefel_ffn", "manifold_muon", "spectral_all"])
def test_state_dict_round_trip_continues_bit_identically(exp):
    model, x = model_and_batch()
    opt = ModularOptimizer(model, exp)
    train_steps(opt, model, x, 2)
    twin = copy.deepcopy(model)
    twin_opt = ModularOptimizer(twin, exp)
    twin.load_state_dict(model.state_dict())  # after the constructor's projection
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    train_steps(opt, model, x, 2)
    train_steps(twin_opt, twin, x, 2)
    for (n, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), n


def test_state_of_another_experiment_is_refused():
    model, _ = model_and_batch()
    sd = ModularOptimizer(model, "muon_all").state_dict()
    with pytest.raises(ValueError, match="muon_all"):
        ModularOptimizer(model, "baseline").load_state_dict(sd)


def test_nonfinite_gradient_changes_nothing_anywhere():
    model, x = model_and_batch()
    opt = ModularOptimizer(model, "muon_all")
    before = copy.deepcopy(model.state_dict())
    opt.zero_grad()
    loss_of(model, x).backward()
    model.layers[1].feed_forward.w2.weight.grad[0, 0] = float("nan")  # the last sub-optimizer's parameter
    with pytest.raises(ValueError, match=r"layers\.1\.feed_forward\.w2\.weight"):
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    skipping = ModularOptimizer(model, "muon_all", skip_nonfinite=True)
    skipping.step()
    assert skipping.nonfinite_skips == 1


def test_bad_arguments_name_the_fix():
    model, _ = model_and_batch()
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*baseline, muon_all"):
        ModularOptimizer(model, "nope")
    with pytest.raises(ValueError, match="invalid lr=-1"):
        ModularOptimizer(model, "muon_all", lr=-1)
    with pytest.raises(ValueError, match="role_lr has unknown role"):
        ModularOptimizer(model, "muon_all", role_lr={"mlp": 0.1})
    with pytest.raises(ValueError, match="no valid role for lm_head.weight"):
        ModularOptimizer(
            model, "muon_all", roles={n: "ffn" for n, _ in model.named_parameters() if n != "lm_head.weight"}
        )
    with pytest.raises(ValueError, match="no parameters"):
        ModularOptimizer(torch.nn.ReLU(), "baseline")
