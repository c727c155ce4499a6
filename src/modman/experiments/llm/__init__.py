"""The LLM experiments: the decoder, its recipes, ``modman train`` (one run), ``modman sweep`` (a grid of runs),
``modman roles`` and ``modman demo``."""
