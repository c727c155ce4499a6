"""Deprecated: moved to ``modman.experiments.cifar.lr_transfer``."""

import warnings

from .cifar.lr_transfer import *  # noqa: F403

warnings.warn(
    "modman.experiments.lr_transfer is deprecated; import from modman.experiments.cifar.lr_transfer",
    DeprecationWarning,
    stacklevel=2,
)
