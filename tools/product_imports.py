"""The product folders import nothing from `tests` outside their own test code.

libs/, services/, workflows/ and deploy/ are what users build, run and deploy; tests/ holds
the fixtures and test servers, which ship with none of them. A product module that imports
`tests` would break once deployed without the test tree, and Bazel sees it only for the
targets that happen to declare such a dependency, so this reads every non-test module's
imports (with `ast`, so strings and comments never count). Test code (`*_test.py`,
`conftest.py`) may import the fixtures; tools/ and the benchmarks may too.

`//:lint_test` calls `imports_of_tests`; the pre-commit hook runs `python -m tools.product_imports`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PRODUCT_FOLDERS = ("libs", "services", "workflows", "deploy")
TEST_PACKAGE = "tests"
ROOT = Path(__file__).resolve().parents[1]


def is_test_code(path: Path) -> bool:
    return path.name.endswith("_test.py") or path.name == "conftest.py"


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import statement, nested ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            yield node.lineno, node.module


def imports_of_tests(root: Path = ROOT) -> list[str]:
    """`path:line: module` for every import of `tests` in the product folders' non-test modules."""
    found = []
    for folder in PRODUCT_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            if is_test_code(path):
                continue
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for line, module in imported_modules(tree):
                if module == TEST_PACKAGE or module.startswith(f"{TEST_PACKAGE}."):
                    found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def main() -> int:
    found = imports_of_tests()
    for finding in found:
        print(finding)
    if found:
        print("product code imports `tests`: move the module under tests/, or what it needs out of tests/")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
