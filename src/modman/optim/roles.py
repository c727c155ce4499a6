"""Which part of a network each parameter belongs to: embedding, head, attention, ffn, norm or other.

The LLM experiment plan classifies by name (``'w1' in name`` → ffn, ...), which misfires on a ``w1`` inside an
attention module, a ``norm`` inside an FFN, BERT's FFN ``output.dense`` (→ head) or T5's FFN ``wo`` (→ attention).
Here the module tree decides first:

1. a parameter of a normalisation module (``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``, batch norms,
   or any class whose name ends in ``Norm``) → ``norm``;
2. of an ``nn.Embedding`` (or ``nn.EmbeddingBag``) → ``embedding`` (a head tied to it is the same tensor);
3. inside a block whose class says what it is — the innermost such block wins: attention
   (``nn.MultiheadAttention``, class name with ``Attention``/``Attn``) → ``attention``; feed-forward (``FeedForward``,
   ``MLP``, ``FFN``, ``SwiGLU``; BERT's ``…Intermediate`` and the FFN's ``…Output`` beside it, not the attention's
   ``…SelfOutput``; T5's ``…DenseActDense`` / ``…LayerFF``) → ``ffn``; an output head (class name with ``Head``,
   e.g. BERT's ``BertLMPredictionHead``) → ``head``;
4. the output layer: the last ``nn.Linear`` of the model in registration order when it is outside every
   such block → ``head``;
5. only then the name: the path's module names are matched against known spellings (``attn``,
   ``q_proj`` … → attention; ``mlp``, ``ffn``, ``w1`` … → ffn; ``embed``, ``wte`` … → embedding;
   ``lm_head`` … → head; ``norm``, ``ln_`` … → norm); inside a repeated layer (an element of an
   ``nn.ModuleList``) a name never says head or embedding. Anything else is ``other``.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["ROLES", "classify_parameters", "roles_table", "transposed_weights", "fused_projections"]

ROLES = ("embedding", "head", "attention", "ffn", "norm", "other")

_NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_ATTENTION_CLASS = re.compile(r"attention|attn", re.IGNORECASE)
_FFN_CLASS = re.compile(
    r"feedforward|feed_forward|mlp|ffn|swiglu|intermediate|(?<!self)output$|actdense$|layerff$", re.IGNORECASE
)
_HEAD_CLASS = re.compile(r"(?<!multi)head", re.IGNORECASE)

# Name patterns, tried on each component of the dotted path (innermost first), only when types are silent.
_NAME_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("norm", re.compile(r"^(.*norm.*|ln_?\w*|ln\d*)$", re.IGNORECASE)),
    ("embedding", re.compile(r"^(.*embed.*|wte|wpe|tok_embeddings)$", re.IGNORECASE)),
    ("head", re.compile(r"^(lm_head|head|output|classifier)$", re.IGNORECASE)),
    (
        "attention",
        re.compile(r"^(.*attn.*|.*attention.*|q_proj|k_proj|v_proj|o_proj|qkv|c_attn|wq|wk|wv|wo)$", re.IGNORECASE),
    ),
    (
        "ffn",
        re.compile(r"^(.*mlp.*|.*ffn.*|feed_forward|w1|w2|w3|c_fc|gate_proj|up_proj|down_proj|fc\d*)$", re.IGNORECASE),
    ),
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def _block_kind(module: nn.Module) -> str | None:
    """'attention' / 'ffn' / 'head' when the module's type says it is one, else None."""
    name = type(module).__name__
    if isinstance(module, nn.MultiheadAttention) or _ATTENTION_CLASS.search(name):
        return "attention"
    if _FFN_CLASS.search(name):
        return "ffn"
    if _HEAD_CLASS.search(name):
        return "head"
    return None


def _by_name(path: str, in_layer: bool) -> str:
    for part in reversed(path.split(".")):
        for role, pattern in _NAME_PATTERNS:
            if pattern.match(part) and not (in_layer and role in ("head", "embedding")):
                return role
    return "other"


def classify_parameters(model: nn.Module) -> dict[str, str]:
    """``{parameter name: role}`` for every parameter of ``model`` (names as ``model.named_parameters()``)."""
    modules = dict(model.named_modules())
    # The innermost attention/ffn module around each module, by type.
    enclosing: dict[str, str | None] = {"": None}  # the root is the whole network, whatever its class name
    in_layer: dict[str, bool] = {"": False}  # inside an element of an nn.ModuleList (a repeated layer)
    for name, module in modules.items():
        if name:
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            enclosing[name] = _block_kind(module) or enclosing.get(parent)
            in_layer[name] = in_layer.get(parent, False) or isinstance(modules[parent], nn.ModuleList)
    linears = [name for name, m in modules.items() if isinstance(m, nn.Linear) and enclosing[name] is None]
    head = linears[-1] if linears and linears[-1] == _last_parameterized(model) else None

    roles: dict[str, str] = {}
    for pname, _ in model.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else ""
        module = modules[owner]
        if _is_norm(module):
            roles[pname] = "norm"
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            roles[pname] = "embedding"
        elif (block := enclosing[owner]) is not None:
            roles[pname] = block
        elif owner == head:
            roles[pname] = "head"
        else:
            roles[pname] = _by_name(pname, in_layer[owner])
    return roles


def transposed_weights(model: nn.Module) -> set[str]:
    """Names of the weights stored as (in, out) rather than torch's (out, in): Hugging Face's ``Conv1D`` (GPT-2's
    c_attn, c_proj, c_fc; ``y = x·W + b``). Rules that read a matrix's out and in sides (Muon's shape scale, the
    spectral sphere's radius) take them transposed (param group option ``transposed=True``)."""
    out = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (
            type(module).__name__ == "Conv1D"
            and isinstance(weight, nn.Parameter)
            and weight.ndim == 2
            and weight.shape[1] == getattr(module, "nf", None)
        ):
            out.add(f"{name}.weight" if name else "weight")
    return out


def fused_projections(model: nn.Module) -> dict[str, int]:
    """``{weight name: 3}`` for the query, key and value projections stored as one matrix whose out side is q, k, v
    one after the other: GPT-2's ``c_attn`` (a ``Conv1D``), ``nn.MultiheadAttention.in_proj_weight`` and an
    ``nn.Linear`` named ``qkv`` (timm's ViT). Muon orthogonalizes such a matrix per block, as modded-nanogpt does
    with separate q, k, v: the three play different parts, and one msign over the stack would couple their
    singular values. Layouts that interleave heads (GPT-NeoX's ``query_key_value``) are not split."""
    out = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        leaf = name.rsplit(".", 1)[-1]
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            out[f"{prefix}in_proj_weight"] = 3
        elif type(module).__name__ == "Conv1D" and leaf == "c_attn" and weight is not None and weight.shape[1] % 3 == 0:
            out[f"{prefix}weight"] = 3
        elif isinstance(module, nn.Linear) and leaf == "qkv" and module.out_features % 3 == 0:
            out[f"{prefix}weight"] = 3
    return out


def _last_parameterized(model: nn.Module) -> str | None:
    """The name of the last module (registration order) that owns parameters directly."""
    last = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def roles_table(model: nn.Module, assignment: dict[str, str] | None = None) -> str:
    """A fixed-width table: parameter, shape, role (and the rule each gets, when ``assignment`` is given; a fused
    projection that a matrix rule steps per block says so)."""
    roles, fused = classify_parameters(model), fused_projections(model)
    rule = {
        n: a + (f" (q, k, v: {fused[n]} blocks)" if n in fused and a != "adamw" else "")
        for n, a in (assignment or {}).items()
    }
    rows = [
        (name, "x".join(map(str, p.shape)), roles[name], rule.get(name, "")) for name, p in model.named_parameters()
    ]
    width = max([9] + [len(r[0]) for r in rows]) + 2
    head = f"{'parameter':<{width}}{'shape':>12}  {'role':<10}" + ("  rule" if assignment else "")
    lines = [head, "-" * len(head)]
    lines += [f"{n:<{width}}{s:>12}  {r:<10}" + (f"  {a}" if assignment else "") for n, s, r, a in rows]
    return "\n".join(lines)
