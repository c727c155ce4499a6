"""Role classification: by module type and position first, names second (the plan's name rule misfires)."""

from torch import nn

from modman.experiments.llm.model import PRESETS, Transformer
from modman.experiments.llm.recipes import EXPERIMENTS
from modman.optim import ModularOptimizer, classify_parameters, roles_table


def test_builtin_transformer_roles():
    model = Transformer(PRESETS["tiny"])
    roles = classify_parameters(model)
    assert set(roles) == {n for n, _ in model.named_parameters()}
    assert roles["tok_embeddings.weight"] == "embedding"
    assert roles["lm_head.weight"] == "head"
    assert roles["norm.weight"] == "norm"
    for i in range(PRESETS["tiny"].n_layers):
        for proj in "qkvo":
            assert roles[f"layers.{i}.attention.{proj}.weight"] == "attention"
        for w in ("w1", "w2", "w3"):
            assert roles[f"layers.{i}.feed_forward.{w}.weight"] == "ffn"
        assert roles[f"layers.{i}.attention_norm.weight"] == "norm"
        assert roles[f"layers.{i}.ffn_norm.weight"] == "norm"


class SelfAttention(nn.Module):  # a w1/w2 inside attention: the LLM experiment plan's rule calls these 'ffn'
    def __init__(self, d):
        super().__init__()
        self.w1 = nn.Linear(d, 3 * d)
        self.w2 = nn.Linear(d, d, bias=False)


class GatedMLP(nn.Module):  # a norm inside the FFN (the plan says 'ffn'), and a projection named 'attention_gate'
    def __init__(self, d):
        super().__init__()
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.feed_forward_norm = nn.LayerNorm(4 * d)
        self.attention_gate = nn.Linear(4 * d, d, bias=False)


class Layer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.embed_mix = SelfAttention(d)  # 'embed' in the name, attention by type
        self.lm_head = GatedMLP(d)  # 'lm_head' in the name, an FFN by type


class Misleading(nn.Module):
    def __init__(self, d=8, vocab=11):
        super().__init__()
        self.feed_forward = nn.Embedding(vocab, d)  # an embedding named like an FFN
        self.block = Layer(d)
        self.attention_out = nn.Linear(d, vocab, bias=False)  # the output layer, named like attention


def test_types_and_position_beat_misleading_names():
    roles = classify_parameters(Misleading())
    assert roles["feed_forward.weight"] == "embedding"
    assert roles["block.embed_mix.w1.weight"] == "attention"
    assert roles["block.embed_mix.w1.bias"] == "attention"
    assert roles["block.embed_mix.w2.weight"] == "attention"
    assert roles["block.lm_head.up.weight"] == "ffn"
    assert roles["block.lm_head.feed_forward_norm.weight"] == "norm"
    assert roles["block.lm_head.feed_forward_norm.bias"] == "norm"
    assert roles["block.lm_head.attention_gate.weight"] == "ffn"
    assert roles["attention_out.weight"] == "head"


def test_names_decide_only_when_types_are_silent():
    model = nn.Sequential()
    model.add_module("wte", nn.Linear(4, 4))  # a Linear is not an embedding type: the name decides
    model.add_module("q_proj", nn.Linear(4, 4))
    model.add_module("mlp", nn.Linear(4, 4))
    model.add_module("proj", nn.Linear(4, 4))
    model.add_module("scale", nn.Linear(4, 2))  # last Linear outside any block: the head
    roles = classify_parameters(model)
    assert roles["wte.weight"] == "embedding"
    assert roles["q_proj.weight"] == "attention"
    assert roles["mlp.weight"] == "ffn"
    assert roles["proj.weight"] == "other"
    assert roles["scale.weight"] == "head"


def test_torch_multihead_attention_and_tied_head():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 8)
            self.mha = nn.MultiheadAttention(8, 2)
            self.out = nn.Linear(8, 10, bias=False)
            self.out.weight = self.tok.weight  # tied: one tensor, listed once, as the embedding

    roles = classify_parameters(Net())
    assert roles == {
        "tok.weight": "embedding",
        "mha.in_proj_weight": "attention",
        "mha.in_proj_bias": "attention",
        "mha.out_proj.weight": "attention",
        "mha.out_proj.bias": "attention",
    }


def test_roles_table_lists_every_parameter_with_its_rule():
    model = Transformer(PRESETS["tiny"])
    for exp, table in EXPERIMENTS.items():
        assignment = ModularOptimizer(model, exp).assignment
        text = roles_table(model, assignment)
        for name, p in model.named_parameters():
            line = next(line for line in text.splitlines() if line.startswith(name + " "))
            assert assignment[name] in line
            role = classify_parameters(model)[name]
            expected = table.get(role, "adamw") if p.ndim >= 2 else "adamw"
            assert assignment[name] == expected
