"""The batch CLI on the three kinds of production data it accepts."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from libs.drift import ReferenceProfile
from libs.drift.reports import check_drift
from libs.drift.reports.cli import main
from libs.features import CONTRACT, Tfidf, compute_features
from libs.production import BatchWriter
from tests import fixtures


@pytest.fixture(scope="module")
def reference_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reviews = fixtures.kindle_sample()
    path = tmp_path_factory.mktemp("reference") / "reference.json"
    ReferenceProfile.build(
        compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    ).save(path)
    return path


@pytest.fixture(scope="module")
def devices_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("production") / "devices.csv"
    fixtures.kindle_devices()[["reviewText", "summary"]].to_csv(path, index=False)
    return path


def test_cli_on_raw_reviews_prints_the_decision_and_writes_the_report(
    reference_path: Path, devices_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--reference", str(reference_path), "--production", str(devices_csv), "--out", str(tmp_path)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["retrain"] is True
    assert summary["psi"]["text_len"] > 0.2
    assert (tmp_path / "index.html").is_file()


def test_cli_runs_as_a_module(reference_path: Path, devices_csv: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "libs.drift.reports.cli", "--reference", str(reference_path)]
    command += ["--production", str(devices_csv), "--out", str(tmp_path), "--threshold", "5"]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert json.loads(result.stdout)["retrain"] is False


def test_features_parquet_is_read_as_is(reference_path: Path, tmp_path: Path) -> None:
    reviews = fixtures.kindle_2018()
    features = compute_features(reviews["reviewText"].tolist())[CONTRACT.numeric_names]
    features.to_parquet(tmp_path / "features.parquet")
    report = check_drift(reference_path, tmp_path / "features.parquet", tmp_path / "out")
    assert report.rows == len(reviews)
    print("kindle 2018", {f.name: round(f.psi or 0, 4) for f in report.features})


def test_folder_of_persisted_batches_brings_its_predicted_labels(
    reference_path: Path, tmp_path: Path
) -> None:
    reviews = fixtures.kindle_sample().tail(600)
    features = compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    with BatchWriter(tmp_path / "batches", rows_per_file=200) as writer:
        writer.write(features, predicted_labels=reviews["overall"].tolist())
    report = check_drift(reference_path, tmp_path / "batches", tmp_path / "out")
    assert report.rows == 600
    assert not report.retrain


def test_vocabulary_coverage_is_measured_with_the_model_vectoriser(
    reference_path: Path, devices_csv: Path, tmp_path: Path
) -> None:
    books = fixtures.kindle_sample()
    Tfidf.fit(compute_features(books["reviewText"].tolist())["clean_text"].tolist()).save(
        tmp_path / "tfidf.json"
    )
    report = check_drift(reference_path, devices_csv, tmp_path / "out", tfidf=tmp_path / "tfidf.json")
    assert report.coverage is not None and 0.5 < report.coverage < 1.0


def test_unknown_file_kind_is_named(reference_path: Path, tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_text("")
    with pytest.raises(ValueError, match=r"data.xlsx: expected a folder of batches, a \.parquet or a \.csv"):
        check_drift(reference_path, tmp_path / "data.xlsx", tmp_path / "out")


def test_reviews_without_text_or_features_are_named(reference_path: Path, tmp_path: Path) -> None:
    pd.DataFrame({"stars": [1, 2]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="neither a 'reviewText' column nor the features"):
        check_drift(reference_path, tmp_path / "bad.csv", tmp_path / "out")
