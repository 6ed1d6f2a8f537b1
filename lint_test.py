"""`ruff check` and `ruff format --check` over the whole repository, and `mypy` (strict)
over the libraries.

The test finds the source tree through the runfiles link of pyproject.toml and is
tagged `external` (never cached), because a lint must see every file, including
ones no target lists yet.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.path.realpath("pyproject.toml")).parent


def ruff() -> str:
    import ruff as package

    return str(Path(package.__file__).parents[1] / "bin" / "ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]) -> None:
    result = subprocess.run(
        [ruff(), *command, "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_libraries() -> None:
    """Every type hint in libs/ is checked (settings in pyproject.toml's [tool.mypy])."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "libs"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
