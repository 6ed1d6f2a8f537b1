"""Labelled feedback: Parquet files of reviews and true ratings, read back in time order; a
strict log raises what it could not write instead of acknowledging it."""

from pathlib import Path

import pandas as pd
import pytest

from libs.production import FeedbackWriter, read_feedback, since


def test_feedback_round_trips_texts_ratings_requests_and_versions(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    with FeedbackWriter(tmp_path, rows_per_file=2, clock=lambda: now[0]) as writer:
        writer.write(["Loved it", "Awful"], ["Yes", None], [5, 1], ["r1", None], "v1")
        now[0] += 3600
        writer.write(["Fine"], None, [3], None, "v2")
    feedback = read_feedback(tmp_path)
    assert feedback["reviewText"].tolist() == ["Loved it", "Awful", "Fine"]
    assert feedback["overall"].tolist() == [5, 1, 3]
    assert feedback["request_id"].tolist() == ["r1", None, None]
    assert feedback["model_version"].tolist() == ["v1", "v1", "v2"]
    later = since(feedback, pd.Timestamp(1_700_000_000 + 1800, unit="s", tz="UTC").to_pydatetime())
    assert later["reviewText"].tolist() == ["Fine"]
    assert read_feedback(tmp_path / "none").empty


def test_feedback_with_misaligned_ratings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 ratings for 2 reviews"):
        FeedbackWriter(tmp_path).write(["a", "b"], None, [5], None, "v1")


def test_a_strict_log_raises_what_it_could_not_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer = FeedbackWriter(blocker / "feedback", rows_per_file=1, strict=True)
    with pytest.raises(OSError):
        writer.write(["text"], None, [4], None, "v1")
    assert writer.dropped_rows == 1
