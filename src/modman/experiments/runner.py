"""Deprecated: moved to ``modman.experiments.llm.runner``."""

import warnings

from .llm.runner import *  # noqa: F403

warnings.warn(
    "modman.experiments.runner is deprecated; import from modman.experiments.llm.runner",
    DeprecationWarning,
    stacklevel=2,
)
