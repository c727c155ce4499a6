"""Deprecated: moved to ``modman.experiments.llm.logs``."""

import warnings

from .llm.logs import *  # noqa: F403

warnings.warn(
    "modman.experiments.trainlog is deprecated; import from modman.experiments.llm.logs",
    DeprecationWarning,
    stacklevel=2,
)
