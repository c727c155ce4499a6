"""Deprecated: moved to ``modman.experiments.llm.roles_report``."""

import warnings

from .llm.roles_report import *  # noqa: F403

warnings.warn(
    "modman.experiments.roles_report is deprecated; import from modman.experiments.llm.roles_report",
    DeprecationWarning,
    stacklevel=2,
)
