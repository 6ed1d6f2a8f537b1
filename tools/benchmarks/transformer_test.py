"""The transformer suite's engines in quick mode: the tiny random DistilBERT saved as a bundle,
scored by torch and by ONNX Runtime fp32 and int8 on real reviews.

The service half (`service_row`) is `serving.wrk_points` against a `bentoml serve`, which
`serving_test.py` and `services/server_test.py` cover; here the parts that are the suite's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from libs.models.bundle import ONNX_FOLDER
from libs.models.onnx_runtime import ServingSettings
from tests import fixtures
from tools.benchmarks import int8_ceiling, transformer
from tools.benchmarks.report import Report

ENGINES = ("torch", "onnx fp32", "onnx int8")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = transformer.transformer_bundle(transformer.QUICK, tmp_path_factory.mktemp("bench"))
    return path


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return transformer.model_texts(fixtures.kindle_reviews(), max(transformer.QUICK.texts.values()))


def test_every_engine_scores_the_same_model(bundle: Path, texts: list[str]) -> None:
    scorers = transformer.engines(bundle, 64)
    assert list(scorers) == list(ENGINES)
    proba = {engine: score(texts[:64]) for engine, score in scorers.items()}
    np.testing.assert_allclose(proba["onnx fp32"], proba["torch"], atol=1e-4)
    assert not np.array_equal(proba["onnx int8"], proba["onnx fp32"])  # the quantised file


def test_quick_engine_rows_give_texts_per_second_at_both_batch_sizes(bundle: Path, texts: list[str]) -> None:
    report = Report(mode="quick")
    measured = transformer.engine_rows(report, bundle, texts, transformer.QUICK, "tiny")
    assert set(measured) == {(engine, size) for engine in ENGINES for size in (1, 64)}
    max_length = ServingSettings.read(bundle / ONNX_FOLDER).max_length
    assert max_length == 128  # the product's default, read from serving.json
    assert [(row.system, row.settings["batch"]) for row in report.rows] == list(measured)
    for row in report.rows:
        assert row.benchmark == "transformer"
        assert row.settings["max_length"] == max_length
        assert row.settings["threads"] == transformer.THREADS
        assert float(row.metrics["texts_per_s"]) > 0
        assert 0 < float(row.metrics["p50_ms"]) <= float(row.metrics["p99_ms"])


def test_ratio_rows_say_whether_the_target_is_met() -> None:
    report = Report(mode="quick")
    transformer.ratio_row(report, "service c16 / torch", 90.0, 30.0, torch_batch=64)
    transformer.ratio_row(report, "onnx int8 / torch", 50.0, 30.0, batch=1)
    first, second = report.rows
    assert first.metrics == {"ratio": 3.0, "target": 3.0, "meets_target": "yes"}
    assert second.metrics["meets_target"] == "no" and second.settings == {"batch": 1}


def test_the_ceiling_times_each_engine_on_the_bundle_models_feed_forward_shape(bundle: Path) -> None:
    report = Report(mode="quick")
    seconds = transformer.ceiling_rows(report, bundle)
    assert list(seconds) == ["torch fp32", "onnx fp32", "onnx int8"]
    assert [row.system for row in report.rows] == [f"GEMM {engine}" for engine in seconds]
    # The tiny DistilBERT of the quick plan: dim 32, hidden_dim 64.
    assert {row.settings["shape"] for row in report.rows} == {f"{int8_ceiling.TOKENS}x32 @ 32x64"}
    for row, spent in zip(report.rows, seconds.values(), strict=True):
        assert spent > 0
        assert row.metrics["vs_torch_fp32"] == pytest.approx(seconds["torch fp32"] / spent)
    assert report.rows[0].metrics["vs_torch_fp32"] == 1.0
