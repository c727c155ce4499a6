"""The README's quick start runs as printed, and its commands name options that exist."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from modman.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_quick_start_runs_and_leaves_the_weights_on_stiefel(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    model = scope["model"]
    for p in model.parameters():  # after ManifoldMuon's step (the later optimizers are only built)
        s = torch.linalg.svdvals(p.detach().double())
        assert (s - 1).abs().max() < 1e-5
    assert "0.weight" in capsys.readouterr().out
    assert type(scope["opt"]).__name__ == "ModularOptimizer"


def _readme_commands() -> list[str]:
    """Every ``modman ...`` command of the README's bash blocks (each part of an ``a && b`` line)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    parts = [part.split("#")[0].strip() for block in blocks for line in block.splitlines() for part in line.split("&&")]
    return [part for part in parts if part.startswith("modman ")] + ["modman train"]


@pytest.mark.parametrize("command", _readme_commands())
def test_every_modman_command_in_the_readme_parses(command):
    build_parser().parse_args(shlex.split(command)[1:])
