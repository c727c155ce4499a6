"""Roles of Hugging Face models (tiny random-init configs, nothing downloaded): every parameter of GPT-2, Llama,
Qwen2, Qwen3, Mistral, BERT, T5 and ViT against a table, and a warning when an experiment reaches no matrix."""

import re
import warnings

import pytest
import torch

from modman.optim import ModularOptimizer, classify_parameters

T = pytest.importorskip("transformers")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=64)
DECODER = [
    (r"embed_tokens", "embedding"),
    (r"norm", "norm"),
    (r"self_attn\.[qkvo]_proj", "attention"),
    (r"mlp\.(gate|up|down)_proj", "ffn"),
    (r"^lm_head", "head"),
]

MODELS = {
    "gpt2": (
        lambda: T.GPT2LMHeadModel(
            T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
        ),
        [
            (r"\.w[tp]e\.", "embedding"),
            (r"\.ln_(1|2|f)\.", "norm"),
            (r"\.attn\.c_(attn|proj)\.", "attention"),
            (r"\.mlp\.c_(fc|proj)\.", "ffn"),
        ],
    ),
    "llama": (lambda: T.LlamaForCausalLM(T.LlamaConfig(**SMALL, num_key_value_heads=1)), DECODER),
    "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL, num_key_value_heads=1)), DECODER),
    "qwen3": (lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**SMALL, num_key_value_heads=1, head_dim=16)), DECODER),
    "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(**SMALL, num_key_value_heads=1)), DECODER),
    "bert": (
        lambda: T.BertForMaskedLM(T.BertConfig(**SMALL)),
        [
            (r"_embeddings\.", "embedding"),
            (r"LayerNorm", "norm"),
            (r"attention\.(self\.(query|key|value)|output\.dense)\.", "attention"),
            (r"(intermediate|layer\.\d+\.output)\.dense\.", "ffn"),
            (r"^cls\.predictions\.", "head"),
        ],
    ),
    "t5": (
        lambda: T.T5ForConditionalGeneration(
            T.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=64)
        ),
        [
            (r"^shared\.|relative_attention_bias", "embedding"),
            (r"layer_norm", "norm"),
            (r"(SelfAttention|EncDecAttention)\.[qkvo]\.", "attention"),
            (r"DenseReluDense\.w[io]\.", "ffn"),
        ],
    ),
    "vit": (
        lambda: T.ViTForImageClassification(
            T.ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=16,
                patch_size=8,
                num_labels=3,
            )
        ),
        [
            (r"\.embeddings\.", "embedding"),
            (r"layernorm", "norm"),
            (r"attention\.([qkvo]_proj|attention\.(query|key|value)|output\.dense)\.", "attention"),
            (r"(mlp\.fc[12]|intermediate\.dense|layers?\.\d+\.output\.dense)\.", "ffn"),
            (r"^classifier\.", "head"),
        ],
    ),
}


@pytest.mark.parametrize("arch", MODELS)
def test_every_parameter_gets_its_role(arch):
    make, table = MODELS[arch]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own config notices
        model = make()
    roles = classify_parameters(model)
    assert roles.keys() == dict(model.named_parameters()).keys()
    for name, role in roles.items():
        expected = [r for pattern, r in table if re.search(pattern, name)]
        assert expected, f"{arch}: no row of the table for {name}"
        assert role == expected[0], f"{arch}: {name} is {role}, expected {expected[0]}"
    for kind in ("attention", "ffn"):  # each architecture has both kinds of matrices
        assert any(r == kind and p.ndim >= 2 for (n, p), r in zip(model.named_parameters(), roles.values())), kind


@pytest.mark.parametrize("arch", ["bert", "t5"])
def test_muon_ffn_moves_the_ffn_matrices_of_encoders(arch):
    make, _ = MODELS[arch]
    torch.manual_seed(0)
    model = make()
    opt = ModularOptimizer(model, "muon_ffn")
    on_muon = [n for n, rule in opt.assignment.items() if rule == "muon"]
    assert on_muon and all(classify_parameters(model)[n] == "ffn" for n in on_muon)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in on_muon}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    assert all(not torch.equal(params[n], before[n]) for n in on_muon)  # Muon moved every FFN matrix
    assert len(on_muon) == {"bert": 4, "t5": 8}[arch]  # 2 layers x (in, out); T5: encoder and decoder


def test_an_experiment_that_reaches_no_matrix_of_a_role_warns():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))
    with pytest.warns(UserWarning, match="'muon_ffn' puts ffn matrices on muon, but this model has no ffn"):
        ModularOptimizer(model, "muon_ffn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ModularOptimizer(model, "baseline")  # AdamW everywhere: nothing to reach


def test_gpt2_conv1d_weights_are_stepped_as_out_by_in():
    """HF Conv1D stores (in, out): c_fc (32 → 128) gets Muon's √(out/in) = 2 like an nn.Linear(32, 128) would,
    c_proj (128 → 32) gets 1; without the orientation the two would be swapped."""
    from modman.optim import transposed_weights

    make, _ = MODELS["gpt2"]
    torch.manual_seed(0)
    model = make()
    assert transposed_weights(model) == {
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    opt = ModularOptimizer(model, "muon_all", lr=0.01, weight_decay=0.0, momentum=0.0)
    assert all(g.get("transposed") for g in opt.param_groups if g["rule"] == "muon")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 64, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    step = {
        n: torch.linalg.matrix_norm((p.detach() - before[n]).double(), ord=2).item()
        for n, p in model.named_parameters()
        if n.endswith(("c_fc.weight", "mlp.c_proj.weight"))
    }
    # bfloat16 Polar Express leaves the top singular value of msign within ~15 % of 1
    fc, proj = step["transformer.h.0.mlp.c_fc.weight"], step["transformer.h.0.mlp.c_proj.weight"]
    assert fc / proj == pytest.approx(2.0, rel=0.15) and proj == pytest.approx(0.01, rel=0.2)


def test_gpt2_spectral_sphere_radius_reads_out_and_in():
    from modman.manifolds import SpectralSphere

    make, _ = MODELS["gpt2"]
    torch.manual_seed(0)
    model = make()
    ModularOptimizer(model, "spectral_sphere")
    c_fc = dict(model.named_parameters())["transformer.h.0.mlp.c_fc.weight"]  # stored 32x128: 32 in, 128 out
    assert SpectralSphere(2.0).violation(c_fc.detach()) < 1e-5  # R = √(128/32)


def test_without_transformers_the_integration_names_the_extra(monkeypatch):
    import importlib
    import sys

    saved = sys.modules.pop("modman.integrations.huggingface", None)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    try:
        with pytest.raises(ImportError, match=r"pip install 'modman\[hf\]'"):
            importlib.import_module("modman.integrations.huggingface")
    finally:
        sys.modules.pop("modman.integrations.huggingface", None)
        if saved is not None:
            sys.modules["modman.integrations.huggingface"] = saved


def test_fused_qkv_is_orthogonalized_per_block():
    """GPT-2's c_attn (stored 32x96: q, k, v side by side) and nn.MultiheadAttention's in_proj_weight: Muon's step
    is msign of each 32-wide block of the momentum, not of the whole stack."""
    from modman.msign import msign
    from modman.optim import Muon, fused_projections

    make, _ = MODELS["gpt2"]
    torch.manual_seed(0)
    model = make()
    assert set(fused_projections(model)) == {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight"}
    opt = ModularOptimizer(model, "muon_all", lr=0.01, weight_decay=0.0, momentum=0.0)
    c_attn = dict(model.named_parameters())["transformer.h.0.attn.c_attn.weight"]
    before = c_attn.detach().clone()
    x = torch.randint(0, 64, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    G = c_attn.grad.detach().clone()
    opt.step()
    blocks = [msign(b, steps=5, dtype="auto") for b in G.chunk(3, dim=1)]  # out side = columns when stored (in, out)
    assert torch.allclose(c_attn.detach(), before - 0.01 * torch.cat(blocks, dim=1), atol=1e-6)

    mha = torch.nn.MultiheadAttention(16, 2, bias=False)
    assert fused_projections(torch.nn.Sequential(mha)) == {"0.in_proj_weight": 3}
    W0 = mha.in_proj_weight.detach().clone()
    mha.in_proj_weight.grad = torch.randn_like(W0)
    Muon([{"params": [mha.in_proj_weight], "split": 3}], lr=0.01, momentum=0.0).step()
    want = W0 - 0.01 * torch.cat([msign(b, steps=5, dtype="auto") for b in mha.in_proj_weight.grad.chunk(3, dim=0)])
    assert torch.allclose(mha.in_proj_weight.detach(), want, atol=1e-6)
    with pytest.raises(ValueError, match="split=3.*shape \\(16, 16\\)"):
        Muon([{"params": [torch.nn.Parameter(torch.randn(16, 16))], "split": 3}])


@pytest.mark.parametrize("experiment", ["manifold_muon", "stiefel_all", "spel"])
def test_gpt2_c_attn_blocks_each_stay_on_stiefel_under_every_manifold_rule(experiment):
    from modman.manifolds import Stiefel

    make, _ = MODELS["gpt2"]
    for split_fused in (True, False):
        torch.manual_seed(0)
        model = make()
        opt = ModularOptimizer(model, experiment, split_fused=split_fused)
        x = torch.randint(0, 64, (2, 16))
        for _ in range(3):
            opt.zero_grad()
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
        c_attn = dict(model.named_parameters())["transformer.h.1.attn.c_attn.weight"].detach()  # stored (32, 96)
        blocks = [Stiefel().violation(b) for b in c_attn.chunk(3, dim=1)]
        whole = Stiefel().violation(c_attn)
        if split_fused:  # q, k, v each (32, 32) orthogonal; the (32, 96) stack then has singular values √3
            assert max(blocks) < 1e-5 and whole > 0.5
        else:
            assert whole < 1e-5 and min(blocks) > 0.1
