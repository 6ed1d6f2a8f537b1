"""`ruff check` and `ruff format --check` over the whole repository, `mypy` (strict)
over the libraries, the service and the workflows, and no import of `tests` in the
product folders' non-test modules.
The pre-commit hooks (.pre-commit-config.yaml) run the same checks.

The test finds the source tree through the runfiles link of pyproject.toml and is
tagged `external` (never cached), because a lint must see every file, including
ones no target lists yet.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruff import find_ruff_bin

from tools import product_imports

ROOT = Path(os.path.realpath("pyproject.toml")).parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]) -> None:
    result = subprocess.run(
        [find_ruff_bin(), *command, "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    """Every type hint in the product's Python is checked: the paths (libs/, services/,
    workflows/) and the settings are pyproject.toml's [tool.mypy]."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_product_code_imports_nothing_from_tests() -> None:
    """libs/, services/, workflows/ and deploy/ ship without tests/ (tools.product_imports)."""
    found = product_imports.imports_of_tests(ROOT)
    assert not found, "\n".join(found)
