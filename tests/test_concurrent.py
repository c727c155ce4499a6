"""Concurrent lanes (modman.optim.concurrent) in ManifoldMuon and ModularDescent: the results of solving in turn."""

import threading

import pytest
import torch
from torch import nn

from modman.modular import MLP, ModularDescent
from modman.optim import ManifoldMuon
from modman.optim.concurrent import run_concurrently

SHAPES = [(48, 16), (48, 16), (16, 48), (16, 16), (16, 16), (24, 24), (40, 8)]


def trained(workers, device="cpu", steps=3):
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64).to(device)) for s in SHAPES]
    opt = ManifoldMuon(params, lr=0.05, momentum=0.9, nesterov=True, workers=workers)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(device)
        opt.step()
    return params, opt


def test_lanes_give_bit_identical_weights_state_and_diagnostics():
    (seq, opt_seq), (par, opt_par) = trained(1), trained(3)
    assert all(torch.equal(a, b) for a, b in zip(seq, par))
    for a, b in zip(seq, par):
        for key in ("multiplier", "momentum_buffer"):
            assert torch.equal(opt_seq.state[a][key], opt_par.state[b][key])
    assert opt_seq.diagnostics() == opt_par.diagnostics()
    # 7 matrices: the two 16x16 share one batched closed form; the five others take lanes, kept across steps
    assert len(opt_par._lanes) == 5


def test_lanes_really_run_in_threads_and_without_grad(monkeypatch):
    seen = []
    original = ManifoldMuon._update

    def spy(self, W, G, state, group):
        seen.append((threading.current_thread().name, torch.is_grad_enabled()))
        return original(self, W, G, state, group)

    monkeypatch.setattr(ManifoldMuon, "_update", spy)
    trained(2, steps=1)
    names = {name for name, _ in seen}
    assert len(seen) == 5 and len(names) == 2 and all(n.startswith("modman-lane") for n in names)
    assert not any(grad for _, grad in seen)


def test_run_concurrently_reraises_after_every_lane_finished():
    done = []

    def ok(i):
        return lambda: done.append(i)

    def boom():
        raise RuntimeError("lane failed")

    tasks = [(0, boom), (1, ok(1)), (2, ok(2)), (3, ok(3)), (4, ok(4))]
    with pytest.raises(RuntimeError, match="lane failed"):
        run_concurrently(tasks, torch.device("cpu"), 3, {})
    # lanes 0 and 3 share a thread (3 workers), which stops at the failure; the other threads finish
    assert sorted(done) == [1, 2, 4]


def test_one_worker_runs_in_order_in_the_calling_thread():
    order = []
    tasks = [(lane, (lambda lane=lane: order.append((lane, threading.current_thread().name)))) for lane in range(4)]
    run_concurrently(tasks, torch.device("cpu"), 1, {})
    assert order == [(lane, threading.current_thread().name) for lane in range(4)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lanes_match_cuda_in_turn_and_the_default_stream_sees_the_update():
    (seq, _), (par, opt) = trained(1, "cuda"), trained(None, "cuda")  # None: 4 lanes on CUDA
    assert len(opt._streams) == 1
    # read on the default stream right after step(): it must wait for every lane
    assert all(torch.equal(a, b) for a, b in zip(seq, par))


def modular_trained(workers, device="cpu", steps=3):
    torch.manual_seed(0)
    net = MLP((16, 48, 24, 4), seed=0).double().to(device)
    opt = ModularDescent(net, lr=0.3, momentum=0.9, workers=workers)
    X = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    for _ in range(steps):
        opt.zero_grad()
        net(X).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()], opt


def test_modular_descent_lanes_give_bit_identical_weights():
    (seq, opt_seq), (par, opt_par) = modular_trained(1), modular_trained(3)
    assert len(seq) == 3 and all(torch.equal(a, b) for a, b in zip(seq, par))
    for a, b in zip(opt_seq.state.values(), opt_par.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert not opt_seq._streams and opt_par.local_work["matrices"] == 9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_modular_descent_cuda_lanes_match_cuda_in_turn():
    (seq, _), (par, _) = modular_trained(1, "cuda"), modular_trained(None, "cuda")
    assert all(torch.equal(a, b) for a, b in zip(seq, par))


def test_state_dicts_saved_before_workers_and_warm_start_existed_still_load_and_step():
    params, opt = trained(1, steps=1)
    old = opt.state_dict()
    for group in old["param_groups"]:
        del group["workers"]  # as written by modman before the lanes
    fresh = ManifoldMuon(params, lr=0.05, momentum=0.9, nesterov=True, workers=2)
    fresh.load_state_dict(old)
    assert all(g["workers"] == 2 for g in fresh.param_groups)
    for p in params:
        p.grad = torch.randn_like(p)
    fresh.step()

    weights, mod = modular_trained(1, steps=1)
    old = mod.state_dict()
    for group in old["param_groups"]:
        del group["warm_start"]
    again = ModularDescent(MLP((16, 48, 24, 4), seed=0).double(), lr=0.3)
    again.load_state_dict(old)
    assert all(g["warm_start"] is True for g in again.param_groups)
