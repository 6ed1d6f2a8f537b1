"""The drift check's parts: the batch files it leaves out, the window's performance and text drift,
and the retraining decision."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flytekit.types.directory import FlyteDirectory

from libs.drift import realised_performance
from libs.features import CONTRACT, TEXT_COLUMN, compute_features
from libs.models.bundle import ModelBundle, load_bundle
from libs.models.training.data import labelled_features, labels_of
from libs.production import BatchWriter, FeedbackWriter, load_production, read_feedback
from tests import fixtures
from tests.fixtures.models import logreg_bundle
from workflows.drift import (
    ChampionInfo,
    DriftOutcome,
    decide_retraining,
    skipped_note,
    window_performance,
    window_text_drift,
)


def test_the_batch_files_of_another_contract_are_counted_and_a_few_named(tmp_path: Path) -> None:
    reviews = fixtures.kindle_sample().head(40)
    features = compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    old = pa.Table.from_pandas(features[CONTRACT.numeric_names].iloc[:5], preserve_index=False)
    for n in range(5):
        pq.write_table(
            old.replace_schema_metadata({b"kindle_contract_hash": b"feedface"}),
            tmp_path / f"batch-20230101T00000{n}000000-old-1-00000{n}-00000000.parquet",
        )
    with BatchWriter(tmp_path, clock=lambda: 1_700_000_000.0) as writer:
        writer.write(features, [5] * len(features), "v2")
    data = load_production(tmp_path, datetime(2023, 6, 1, tzinfo=UTC))
    assert len(data.features) == 40
    note = skipped_note(data.skipped_files)
    assert note.startswith("5 batch file(s) of another feature contract skipped, not checked: ")
    assert "batch-20230101T000000000000-old-1-000000-00000000.parquet" in note
    assert "batch-20230101T000002000000-old-1-000002-00000000.parquet and 2 more" in note
    assert "000003-00000000" not in note
    assert skipped_note(()) == ""


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """A calibrated logistic regression of Kindle book reviews, with test metrics."""
    frame = labelled_features(fixtures.kindle_2018())
    train, validation = frame.iloc[:3000], frame.iloc[3000:]
    bundle = load_bundle(
        logreg_bundle(train, tmp_path_factory.mktemp("champion") / "b", validation=validation)
    )
    test = realised_performance(labels_of(validation), bundle.predict_features(validation).argmax(axis=1) + 1)
    return dataclasses.replace(bundle, metrics={f"test_{name}": value for name, value in test.items()})


def test_the_window_is_judged_from_logged_probabilities_feedback_and_texts(
    champion: ModelBundle, tmp_path: Path
) -> None:
    """Device reviews, scored and logged as the service does (probabilities, opt-in texts), with
    a third of them sent back as feedback: estimate, truth, drop and text drift."""
    devices = fixtures.kindle_devices().dropna(subset=["reviewText"]).reset_index(drop=True)
    features = compute_features(devices["reviewText"].tolist(), devices["summary"].tolist())
    proba = champion.predict_features(features)
    with BatchWriter(tmp_path / "batches", keep_text=True) as writer:
        writer.write(features, (proba.argmax(axis=1) + 1).tolist(), "v1", proba)
    with FeedbackWriter(tmp_path / "feedback") as feedback:
        sent = devices.iloc[:250]
        feedback.write(
            sent["reviewText"].tolist(), sent["summary"].tolist(), sent["overall"].tolist(), None, "v1"
        )
    data = load_production(tmp_path / "batches")
    assert data.probabilities is not None and np.allclose(data.probabilities, proba)
    check = window_performance(champion, data, read_feedback(tmp_path / "feedback"), max_drop=0.05)
    assert check.estimate is not None and check.estimate.rows == len(devices)
    assert check.feedback_rows == 250 and check.realised is not None
    truth = realised_performance(sent["overall"], proba[:250].argmax(axis=1) + 1)
    assert check.realised == pytest.approx(truth)
    assert check.degraded  # device reviews: estimated macro-F1 far below the books' test one
    text = window_text_drift(champion.drift_reference, data)  # type: ignore[arg-type]
    assert text is not None and text.drifted
    assert (
        window_text_drift(
            champion.drift_reference, replace(data, features=data.features.drop(columns=TEXT_COLUMN))
        )
        is None
    )  # type: ignore[arg-type]


def test_a_performance_drop_alone_calls_for_retraining_on_new_feedback(tmp_path: Path) -> None:
    with FeedbackWriter(tmp_path) as feedback:
        feedback.write(["a fine book"], None, [4], None, "v1")
    outcome = DriftOutcome(
        False,
        0.05,
        "stable",
        1000,
        "2026-01-01T00:00:00+00:00",
        FlyteDirectory(str(tmp_path)),
        "run",
        degraded=True,
        estimated_macro_f1=0.31,
        test_macro_f1=0.49,
    )
    champion = ChampionInfo("3", "2026-01-01T00:00:00+00:00", "", FlyteDirectory(str(tmp_path)))
    retrain, message = decide_retraining(
        outcome=outcome, champion=champion, feedback=str(tmp_path), training_input="x.csv"
    )
    assert retrain, message
    assert message.startswith(
        "estimated macro-F1 0.310 below the test macro-F1 0.490 and 1 new labelled reviews"
    )
    calm = replace(outcome, degraded=False)
    retrain, message = decide_retraining(
        outcome=calm, champion=champion, feedback=str(tmp_path), training_input="x.csv"
    )
    assert not retrain and message.startswith("no drift"), message
