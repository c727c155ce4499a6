"""Deprecated: moved to ``modman.experiments.report.hypotheses``."""

import warnings

from .report.hypotheses import *  # noqa: F403

warnings.warn(
    "modman.experiments.hypotheses is deprecated; import from modman.experiments.report.hypotheses",
    DeprecationWarning,
    stacklevel=2,
)
