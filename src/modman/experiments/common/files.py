"""Files written atomically: text, JSON and JSON Lines logs.

Every file is written to a temporary file in the same folder and renamed over the target, so a crash
(even SIGKILL) leaves either the previous complete file or the new complete file, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ...errors import UserError

__all__ = [
    "atomic_file",
    "write_text_atomic",
    "write_json_atomic",
    "json_safe",
    "read_json",
    "JsonlLog",
]


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the permissions of a plain open(), not mkstemp's 0600
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    with atomic_file(path) as fh:
        fh.write(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, replaced atomically."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: Path, missing: str, fix: str = "") -> Any:
    """The JSON in ``path``; a UserError ``"{path}: {missing}"`` when it is absent, one naming it with ``fix``
    appended when it is not JSON."""
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})" + (f"; {fix}" if fix else "")) from None


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/Inf: non-finite floats become None (strict JSON readers accept every line)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class JsonlLog:
    """One JSON object per line, kept in memory and rewritten atomically on ``flush``.

    ``keep_until(step)`` drops the records written after ``step`` (a resumed run continues from its
    checkpoint, so the log then matches an uninterrupted run line for line).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict] = []

    def read_existing(self) -> list[dict]:
        """Load the records already in the file (an unreadable line raises ValueError naming the file)."""
        self.records = []
        if self.path.exists():
            try:
                text = self.path.read_text()
            except UnicodeDecodeError:
                raise UserError(f"{self.path} is not text (damaged); move the file away to start over") from None
            for i, line in enumerate(text.splitlines(), 1):
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{self.path}: line {i} is not JSON ({e.msg}); move the file away to start over"
                    ) from None
        return self.records

    def keep_until(self, step: int) -> None:
        self.records = [r for r in self.records if r.get("step", 0) <= step]

    def append(self, record: dict) -> None:
        self.records.append(json_safe(record))

    def flush(self) -> None:
        write_text_atomic(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.records))
