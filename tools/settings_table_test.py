"""The README's settings table is the one the settings classes generate."""

from tools.settings_table import README, START, current, rows, table


def test_the_readme_lists_every_variable_as_the_settings_classes_define_it() -> None:
    assert current(README.read_text()) == table(), (
        "README.md's settings table is stale: bazel run //tools:settings_table"
    )


def test_every_variable_has_a_meaning_and_one_default() -> None:
    found = rows()
    assert len(found) > 40
    assert all(meaning for _, _, _, meaning in found)
    shared = {variable for variable, _, users, _ in found if users == "service, pipeline"}
    assert {"KINDLE_MLFLOW_TRACKING_URI", "KINDLE_MODEL_NAME"} <= shared


def test_a_stale_table_is_detected() -> None:
    stale = current(README.read_text()).replace("| `KINDLE_MODEL_NAME` |", "| `KINDLE_MODEL` |")
    assert START in stale and stale != table()
