"""Hugging Face decoders in the shape of a modman preset, for ``modman train --model hf:NAME``.

Random init from the preset's width, depth, heads, FFN width and context (byte vocabulary, no dropout, untied
head as modman's decoder), so every experiment runs on a real architecture with the same data, logs, checkpoints
and resume. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..experiments.llm.model import ModelConfig

__all__ = ["HF_MODELS", "HFCausalLM", "build_hf_model"]

HF_MODELS = ("gpt2", "llama", "qwen2", "qwen3", "mistral")


def _config(name: str, cfg: ModelConfig):
    import transformers as T

    common: dict[str, Any] = dict(vocab_size=cfg.vocab_size, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    if name == "gpt2":
        return T.GPT2Config(
            n_embd=cfg.dim,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.ffn_hidden,
            n_positions=cfg.seq_len,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    decoder: dict[str, Any] = dict(
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        intermediate_size=cfg.ffn_hidden,
        max_position_embeddings=cfg.seq_len,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        attention_dropout=0.0,
        **common,
    )
    if name == "llama":
        return T.LlamaConfig(**decoder)
    if name == "qwen2":
        return T.Qwen2Config(**decoder)
    if name == "qwen3":
        return T.Qwen3Config(**decoder, head_dim=cfg.dim // cfg.n_heads)
    return T.MistralConfig(**decoder, sliding_window=None)


class HFCausalLM(nn.Module):
    """``forward(idx (B, T)) → logits (B, T, V)`` around a Hugging Face causal LM (``self.model``)."""

    def __init__(self, model: nn.Module, seq_len: int):
        super().__init__()
        self.model, self.seq_len = model, seq_len

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[-1] > self.seq_len:
            raise UserError(f"HFCausalLM: sequence of {idx.shape[-1]} tokens is longer than seq_len={self.seq_len}")
        return self.model(input_ids=idx, use_cache=False).logits


def build_hf_model(spec: str, cfg: ModelConfig) -> HFCausalLM:
    """``spec`` = ``"hf:NAME"`` (NAME in ``HF_MODELS``): the architecture at the preset's shape, random init."""
    name = spec.removeprefix("hf:")
    if name not in HF_MODELS:
        raise UserError(
            f"--model: unknown Hugging Face model {spec!r}; choose one of: "
            f"{', '.join('hf:' + n for n in HF_MODELS)} (or modman, the built-in decoder)"
        )
    try:
        import transformers as T
    except ImportError:
        raise UserError(f"--model {spec} needs Hugging Face transformers: pip install 'modman[hf]'") from None
    config = _config(name, cfg)
    model = T.AutoModelForCausalLM.from_config(config)
    return HFCausalLM(model, cfg.seq_len)
