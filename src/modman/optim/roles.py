"""Which part of a network each parameter belongs to: embedding, head, attention, ffn, norm or other.

Seed 002 classifies by name (``'w1' in name`` → ffn, ...), which misfires on a ``w1`` inside an attention
module or a ``norm`` inside an FFN. Here the module tree decides first:

1. a parameter of a normalisation module (``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``, batch norms,
   or any class whose name ends in ``Norm``) → ``norm``;
2. of an ``nn.Embedding`` (or ``nn.EmbeddingBag``) → ``embedding`` (a head tied to it is the same tensor);
3. inside an attention module (``nn.MultiheadAttention`` or a class whose name contains ``Attention``/``Attn``)
   → ``attention``; inside a feed-forward module (class name contains ``FeedForward``, ``MLP``, ``FFN`` or
   ``SwiGLU``) → ``ffn`` — the innermost such module wins;
4. the output layer: the last ``nn.Linear`` of the model in registration order when it is outside every
   attention and feed-forward module → ``head``;
5. only then the name: the path's module names are matched against known spellings (``attn``,
   ``q_proj`` … → attention; ``mlp``, ``ffn``, ``w1`` … → ffn; ``embed``, ``wte`` … → embedding;
   ``lm_head`` … → head; ``norm``, ``ln_`` … → norm); anything else is ``other``.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["ROLES", "classify_parameters", "roles_table"]

ROLES = ("embedding", "head", "attention", "ffn", "norm", "other")

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
               nn.LocalResponseNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_ATTENTION_CLASS = re.compile(r"attention|attn", re.IGNORECASE)
_FFN_CLASS = re.compile(r"feedforward|feed_forward|mlp|ffn|swiglu", re.IGNORECASE)

# Name patterns, tried on each component of the dotted path (innermost first), only when types are silent.
_NAME_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("norm", re.compile(r"^(.*norm.*|ln_?\w*|ln\d*)$", re.IGNORECASE)),
    ("embedding", re.compile(r"^(.*embed.*|wte|wpe|tok_embeddings)$", re.IGNORECASE)),
    ("head", re.compile(r"^(lm_head|head|output|classifier)$", re.IGNORECASE)),
    ("attention", re.compile(r"^(.*attn.*|.*attention.*|q_proj|k_proj|v_proj|o_proj|qkv|c_attn|wq|wk|wv|wo)$",
                             re.IGNORECASE)),
    ("ffn", re.compile(r"^(.*mlp.*|.*ffn.*|feed_forward|w1|w2|w3|c_fc|gate_proj|up_proj|down_proj|fc\d*)$",
                       re.IGNORECASE)),
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def _block_kind(module: nn.Module) -> str | None:
    """'attention' / 'ffn' when the module's type says it is one, else None."""
    if isinstance(module, nn.MultiheadAttention) or _ATTENTION_CLASS.search(type(module).__name__):
        return "attention"
    if _FFN_CLASS.search(type(module).__name__):
        return "ffn"
    return None


def _by_name(path: str) -> str:
    for part in reversed(path.split(".")):
        for role, pattern in _NAME_PATTERNS:
            if pattern.match(part):
                return role
    return "other"


def classify_parameters(model: nn.Module) -> dict[str, str]:
    """``{parameter name: role}`` for every parameter of ``model`` (names as ``model.named_parameters()``)."""
    modules = dict(model.named_modules())
    # The innermost attention/ffn module around each module, by type.
    enclosing: dict[str, str | None] = {"": None}  # the root is the whole network, whatever its class name
    for name, module in modules.items():
        if name:
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            enclosing[name] = _block_kind(module) or enclosing.get(parent)
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
        elif enclosing[owner] is not None:
            roles[pname] = enclosing[owner]
        elif owner == head:
            roles[pname] = "head"
        else:
            roles[pname] = _by_name(pname)
    return roles


def _last_parameterized(model: nn.Module) -> str | None:
    """The name of the last module (registration order) that owns parameters directly."""
    last = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def roles_table(model: nn.Module, assignment: dict[str, str] | None = None) -> str:
    """A fixed-width table: parameter, shape, role (and the rule each gets, when ``assignment`` is given)."""
    roles = classify_parameters(model)
    rows = [(name, "x".join(map(str, p.shape)), roles[name], (assignment or {}).get(name, ""))
            for name, p in model.named_parameters()]
    width = max([9] + [len(r[0]) for r in rows]) + 2
    head = f"{'parameter':<{width}}{'shape':>12}  {'role':<10}" + ("  rule" if assignment else "")
    lines = [head, "-" * len(head)]
    lines += [f"{n:<{width}}{s:>12}  {r:<10}" + (f"  {a}" if assignment else "") for n, s, r, a in rows]
    return "\n".join(lines)
