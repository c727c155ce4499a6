"""Deprecated: moved to ``modman.experiments.common.checkpoint``."""

import warnings

from .common.checkpoint import *  # noqa: F403

warnings.warn(
    "modman.experiments.checkpoint is deprecated; import from modman.experiments.common.checkpoint",
    DeprecationWarning,
    stacklevel=2,
)
