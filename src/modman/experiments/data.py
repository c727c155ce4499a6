"""Deprecated: moved to ``modman.experiments.common.data``."""

import warnings

from .common.data import *  # noqa: F403

warnings.warn(
    "modman.experiments.data is deprecated; import from modman.experiments.common.data",
    DeprecationWarning,
    stacklevel=2,
)
