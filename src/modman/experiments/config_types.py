"""Deprecated: moved to ``modman.experiments.common.config``."""

import warnings

from .common.config import *  # noqa: F403

warnings.warn(
    "modman.experiments.config_types is deprecated; import from modman.experiments.common.config",
    DeprecationWarning,
    stacklevel=2,
)
