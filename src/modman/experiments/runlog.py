"""Deprecated: moved to ``modman.experiments.common.files``, ``modman.experiments.common.environment``."""

import warnings

from .common.environment import *  # noqa: F403
from .common.files import *  # noqa: F403

warnings.warn(
    "modman.experiments.runlog is deprecated; import from modman.experiments.common (files, environment)",
    DeprecationWarning,
    stacklevel=2,
)
