"""Deprecated: moved to ``modman.experiments.report.figures``."""

import warnings

from .report.figures import *  # noqa: F403

warnings.warn(
    "modman.experiments.report_figures is deprecated; import from modman.experiments.report.figures",
    DeprecationWarning,
    stacklevel=2,
)
