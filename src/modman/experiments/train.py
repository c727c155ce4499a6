"""Deprecated: moved to ``modman.experiments.llm`` (``train``, ``config``, ``recipes``, ``build``) and
``modman.experiments.common.environment``."""

import warnings

from .common.environment import *  # noqa: F403
from .llm.build import *  # noqa: F403
from .llm.config import *  # noqa: F403
from .llm.recipes import *  # noqa: F403
from .llm.train import *  # noqa: F403

warnings.warn(
    "modman.experiments.train is deprecated; import from modman.experiments.llm (train, config, recipes, build)",
    DeprecationWarning,
    stacklevel=2,
)
