"""Deprecated: moved to ``modman.experiments.llm.model``."""

import warnings

from .llm.model import *  # noqa: F403

warnings.warn(
    "modman.experiments.model is deprecated; import from modman.experiments.llm.model",
    DeprecationWarning,
    stacklevel=2,
)
