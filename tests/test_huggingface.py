"""modman in the Hugging Face Trainer (tiny random-init Llama on CPU, nothing downloaded)."""

import json
import warnings

import pytest
import torch

from modman.manifolds import Stiefel

T = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from modman.integrations.huggingface import ModmanCallback, ModmanTrainer, create_optimizer, role_summary  # noqa: E402


def tiny_llama():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return T.LlamaForCausalLM(
            T.LlamaConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                intermediate_size=64,
                vocab_size=64,
            )
        )


def data(n=80):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": (ids := torch.randint(0, 64, (16,), generator=g)), "labels": ids} for _ in range(n)]


class Capture(T.TrainerCallback):
    """What every reporting integration (TensorBoard, W&B...) receives."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def cpu_args(tmp_path, **settings):
    return T.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-3,
        disable_tqdm=True,
        **settings,
    )


@pytest.mark.slow
def test_trainer_keeps_manifold_muon_on_stiefel_and_logs_spectra(tmp_path):
    model = tiny_llama()
    capture = Capture()
    args = cpu_args(tmp_path, max_steps=20, logging_steps=5)
    trainer = ModmanTrainer(
        model=model, args=args, train_dataset=data(), experiment="manifold_muon", callbacks=[capture]
    )
    result = trainer.train()
    assert result.global_step == 20
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    matrices = [(n, p) for n, p in model.named_parameters() if opt.roles[n] in ("attention", "ffn") and p.ndim == 2]
    assert len(matrices) == 14
    for n, p in matrices:
        assert Stiefel().violation(p.detach()) < 1e-5, n
    train_logs = [entry for entry in capture.logs if "loss" in entry]
    assert len(train_logs) == 4
    for entry in train_logs:
        for role in ("attention", "ffn"):
            assert abs(entry[f"modman/{role}/sigma_max_max"] - 1) < 1e-5  # on Stiefel: every σ = 1
            assert entry[f"modman/{role}/grad_norm"] > 0
        assert entry["modman/msign_calls_mean"] >= 1
    assert train_logs[-1]["loss"] < train_logs[0]["loss"]


def test_create_optimizer_for_a_plain_trainer_and_the_summary():
    model = tiny_llama()
    args = T.TrainingArguments(
        output_dir="unused", learning_rate=2e-3, weight_decay=0.05, report_to="none", use_cpu=True
    )
    opt = create_optimizer(model, "muon_all", args)
    groups = {(g["rule"], g["role"]): g for g in opt.param_groups}
    assert groups[("adamw", "embedding")]["lr"] == 2e-3 and groups[("muon", "attention")]["weight_decay"] == 0.05
    x = data(1)[0]["input_ids"][None]
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    summary = role_summary(model, opt)
    assert set(opt.last_grad_norms) >= {"attention", "ffn", "embedding"}
    assert summary["modman/ffn/sigma_max_max"] >= summary["modman/ffn/sigma_max_mean"] > 0


@pytest.mark.slow
def test_a_plain_trainer_with_the_callback_reports_spectra(tmp_path):
    model = tiny_llama()
    capture = Capture()
    args = cpu_args(tmp_path, max_steps=6, logging_steps=3)
    trainer = T.Trainer(
        model=model,
        args=args,
        train_dataset=data(),
        callbacks=[capture],
        optimizers=(create_optimizer(model, "spectral_sphere", args), None),
    )
    ModmanCallback.install(trainer)
    trainer.train()
    reported = [entry for entry in capture.logs if "loss" in entry]
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(reported) == len(history) == 2
    for entry in reported + history:
        assert entry["modman/attention/sigma_max_max"] > 0 and entry["modman/ffn/condition_max"] >= 1


def test_unknown_experiment_is_refused():
    with pytest.raises(ValueError, match="unknown experiment 'muon_everything'.*muon_all"):
        ModmanTrainer(model=tiny_llama(), experiment="muon_everything")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["hf:llama", "hf:gpt2"])
def test_modman_train_on_a_hugging_face_architecture_resumes_bit_for_bit(tmp_path, model):
    from test_train import _final_state, cfg

    from modman.experiments.llm.train import train

    settings = dict(exp="muon_all", model=model)
    train(cfg(tmp_path / "straight", **settings))
    assert train(cfg(tmp_path / "broken", **settings), stop_after=13)["status"] == "stopped"
    train(cfg(tmp_path / "broken", **settings), resume=True)
    a, b = _final_state(tmp_path / "straight" / "muon_all"), _final_state(tmp_path / "broken" / "muon_all")
    assert b["step"] == 20 and any(k.startswith("model.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
@pytest.mark.parametrize("model, exp", [("hf:gpt2", "manifold_muon"), ("hf:llama", "spectral_sphere")])
def test_fsdp2_on_a_hugging_face_model_matches_one_process_and_resumes_alone(tmp_path, model, exp):
    from test_parallel import DRIVER, TINY64, flags, torchrun, weights

    from modman.experiments.common.checkpoint import load_checkpoint
    from modman.experiments.common.parallel import shard_units
    from modman.experiments.llm.config import TrainConfig
    from modman.experiments.llm.model import PRESETS
    from modman.experiments.llm.train import train
    from modman.integrations.hf_models import build_hf_model

    assert len(shard_units(build_hf_model(model, PRESETS["tiny"]))) == PRESETS["tiny"].n_layers
    settings = dict(TINY64, exp=exp, model=model)
    train(TrainConfig(**settings, out=str(tmp_path / "one")))
    torchrun(
        ["-m", "modman", "train", "--parallel", "fsdp", "--out", str(tmp_path / "two"), *flags(settings)], tmp_path
    )
    a, b = weights(tmp_path / "one" / exp), weights(tmp_path / "two" / exp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    # The sharded run's step-3 checkpoint, resumed in one process, ends where the straight run did.
    (tmp_path / "driver.py").write_text(DRIVER)
    cfg = dict(settings, out=str(tmp_path / "broken"), parallel="fsdp")
    torchrun([str(tmp_path / "driver.py"), json.dumps(cfg), "4"], tmp_path)  # checkpoint at 3; step 4 is lost
    assert load_checkpoint(tmp_path / "broken" / exp)["step"] == 3
    train(TrainConfig(**settings, out=str(tmp_path / "broken")), resume=True)
    c = weights(tmp_path / "broken" / exp)
    assert max((a[k] - c[k]).abs().max().item() for k in a) < 1e-5


def test_bad_model_names_and_combinations_are_refused():
    from modman.experiments.llm.config import TrainConfig

    with pytest.raises(ValueError, match="unknown model 'hf:bert'.*hf:llama"):
        TrainConfig(model="hf:bert")
    with pytest.raises(ValueError, match="modular trains its own"):
        TrainConfig(model="hf:llama", exp="modular")
    TrainConfig(model="hf:gpt2", parallel="fsdp")  # FSDP2 shards its GPT2Blocks


def test_modman_roles_shows_a_hugging_face_model(capsys):
    from modman.cli import main

    assert main(["roles", "--model", "hf:gpt2", "--preset", "tiny", "--exp", "muon_ffn"]) == 0
    out = capsys.readouterr().out
    assert "model.transformer.h.0.mlp.c_fc.weight" in out and "ffn         muon" in out
    assert main(["roles", "--model", "hf:bert", "--preset", "tiny"]) == 2
    assert "unknown Hugging Face model 'hf:bert'" in capsys.readouterr().err


def test_hf_model_without_transformers_names_the_extra(monkeypatch):
    import sys

    from modman.experiments.llm.model import PRESETS
    from modman.integrations.hf_models import build_hf_model

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(
        ValueError,
        match=r"--model hf:llama needs Hugging Face transformers: "
        r"pip install 'modman\[hf\]'",
    ):
        build_hf_model("hf:llama", PRESETS["tiny"])
