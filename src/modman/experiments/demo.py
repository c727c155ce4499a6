"""Deprecated: moved to ``modman.experiments.llm.demo``."""

import warnings

from .llm.demo import *  # noqa: F403

warnings.warn(
    "modman.experiments.demo is deprecated; import from modman.experiments.llm.demo",
    DeprecationWarning,
    stacklevel=2,
)
