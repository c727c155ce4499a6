"""The recipes the LLM experiments train with: which experiments ``modman train`` runs and their settings.

The role → rule tables and each rule's default lr belong to ``modman.optim.ModularOptimizer``, whose
``ModularOptimizer(model, "muon_all")`` names them; this module adds what only the experiment framework has.
"""

from __future__ import annotations

from ...optim.modular import DEFAULT_LR, EXPERIMENTS, MANIFOLD_MUON_STEPS, MANIFOLD_MUON_TOL, training_steps

__all__ = [
    "EXPERIMENTS",
    "TRAIN_EXPERIMENTS",
    "COMPARISON",
    "DEFAULT_LR",
    "MODULAR_LR",
    "MANIFOLD_MUON_TOL",
    "MANIFOLD_MUON_STEPS",
    "training_steps",
    "modular_role",
]

# The LLM experiment plan's experiments, then ``modular``: the modman.modular GPT trained by ModularDescent with its
# modular-norm budgets (one lr for the whole network).
TRAIN_EXPERIMENTS = (*EXPERIMENTS, "modular")
MODULAR_LR = 1.0

# What ``modman train`` runs when no --exp is given (under 10 minutes on 2 CPU cores at the small preset): AdamW,
# Muon, AdamW + Stiefel retraction, manifold Muon and the best of the constrained-Muon family; --all runs all.
COMPARISON = ("baseline", "muon_all", "stiefel_all", "manifold_muon", "hyperball")


def modular_role(label: str) -> str:
    """The parameter role of an atom of the modman.modular GPT from its label (``block0.attention.q`` →
    attention, ``block0.ffn.up`` → ffn, ``embed`` → embedding, ``head`` → head): the experiment framework's
    per-role logs and ``modman roles`` read it from ``ModularDescent``'s param groups."""
    parts = label.split(".")
    if len(parts) == 3:
        return parts[1]
    return {"embed": "embedding", "head": "head"}.get(label, "other")
