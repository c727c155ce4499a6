"""Deprecated: moved to ``modman.experiments.llm.sweep``."""

import warnings

from .llm.sweep import *  # noqa: F403

warnings.warn(
    "modman.experiments.sweep is deprecated; import from modman.experiments.llm.sweep",
    DeprecationWarning,
    stacklevel=2,
)
