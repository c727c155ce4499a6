"""The one exception users see as a message: a mistake they can fix (a bad option, file, model or state)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake the caller can fix; the message names what is wrong and the fix. The ``modman`` command prints it
    as one line (``--debug``: with its traceback); any other exception is a bug and shows its traceback.
    A ``ValueError``, so ``except ValueError`` keeps working."""
