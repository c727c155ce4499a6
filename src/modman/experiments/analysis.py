"""Deprecated: moved to ``modman.experiments.report.analysis``."""

import warnings

from .report.analysis import *  # noqa: F403

warnings.warn(
    "modman.experiments.analysis is deprecated; import from modman.experiments.report.analysis",
    DeprecationWarning,
    stacklevel=2,
)
