"""The feature code behaves as the committed golden fixture says, or the contract version moved.

Changing cleaning, tokenising or a numeric feature without bumping `CONTRACT.version`
would let old bundles and Flyte caches (keyed by the contract hash) be reused with
features computed differently: this test fails until both the version and the fixture
are updated (`bazel run //tests/fixtures:regenerate_feature_golden`).
"""

import json

import polars as pl
import pytest

from libs.features import CONTRACT, table
from libs.features.charclasses import Classes
from libs.features.cleaning import cleaned
from tests.fixtures.feature_golden import FIXTURE, compute, differences

REGENERATE = "bazel run //tests/fixtures:regenerate_feature_golden"


def test_the_fixture_belongs_to_this_contract_version() -> None:
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["contract_version"] == CONTRACT.version, (
        f"golden fixture is for contract {fixture['contract_version']}, the code says {CONTRACT.version}: "
        f"regenerate it ({REGENERATE})"
    )
    assert fixture["contract_hash"] == CONTRACT.hash, f"the contract's declarations changed: {REGENERATE}"


def test_features_and_tokens_match_the_golden_fixture() -> None:
    problems = differences(json.loads(FIXTURE.read_text()), compute())
    assert not problems, (
        "feature behaviour changed under the same contract version: "
        + "; ".join(problems)
        + f". Bump CONTRACT.version in libs/features/contract.py, then {REGENERATE}"
    )


def test_a_changed_cleaning_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def without_marks(text: pl.Expr, classes: Classes) -> pl.Expr:
        return cleaned(text, classes).str.replace_all("!", "", literal=True)

    monkeypatch.setattr(table, "cleaned", without_marks)
    table._feature_expressions.cache_clear()  # built once per process: rebuild with the change
    try:
        problems = differences(json.loads(FIXTURE.read_text()), compute())
    finally:
        monkeypatch.undo()
        table._feature_expressions.cache_clear()
    assert problems and "rows changed" in problems[0]
