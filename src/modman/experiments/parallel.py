"""Deprecated: moved to ``modman.experiments.common.parallel``."""

import warnings

from .common.parallel import *  # noqa: F403

warnings.warn(
    "modman.experiments.parallel is deprecated; import from modman.experiments.common.parallel",
    DeprecationWarning,
    stacklevel=2,
)
