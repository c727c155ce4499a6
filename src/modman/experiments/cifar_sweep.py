"""Deprecated: moved to ``modman.experiments.cifar.sweep``."""

import warnings

from .cifar.sweep import *  # noqa: F403

warnings.warn(
    "modman.experiments.cifar_sweep is deprecated; import from modman.experiments.cifar.sweep",
    DeprecationWarning,
    stacklevel=2,
)
