"""A transformer bundle served on ONNX Runtime: a tiny random DistilBERT, fine-tuned briefly, exported."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["KINDLE_ONNX_THREADS"] = "1"

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from libs.models.bundle import MANIFEST, ModelBundle, load_bundle, model_digest, save_bundle
from libs.models.kinds import ModelKind
from libs.models.onnx_export import CHECK_TEXTS, INT8_MAX_DIFF, LabelledCheck, choose_precision
from libs.models.onnx_runtime import OnnxClassifier
from libs.models.training.data import fingerprint, labels_of
from libs.models.training.estimators import build_estimator
from libs.models.transformer import DistilBertClassifier
from tests.fixtures.tiny_transformer import tiny_distilbert

torch.set_num_threads(1)
PARAMS = {"learning_rate": 2e-3, "epochs": 3, "batch_size": 16, "max_length": 64, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, train_df: pd.DataFrame) -> DistilBertClassifier:
    pretrained = tiny_distilbert(tmp_path_factory.mktemp("tiny_distilbert"), train_df["text"].tolist())
    model = build_estimator(ModelKind.DISTILBERT, {**PARAMS, "pretrained": str(pretrained)}, None, seed=0)
    result: DistilBertClassifier = model.fit(train_df, labels_of(train_df))
    return result


@pytest.fixture(scope="module")
def saved(
    fitted: DistilBertClassifier, train_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    bundle = ModelBundle.new("distilbert", fitted, None, fingerprint(train_df))
    return save_bundle(bundle, tmp_path_factory.mktemp("bundle") / "bundle")


def _scorer(bundle: Path, name: str, batch_size: int = 16) -> OnnxClassifier:
    onnx = bundle / "estimator" / "onnx"
    serving = json.loads((onnx / "serving.json").read_text())
    return OnnxClassifier(
        onnx / name, onnx / "tokenizer.json", serving["max_length"], serving["pad_id"], batch_size, 1
    )


def test_the_fp32_export_scores_as_the_torch_model(
    fitted: DistilBertClassifier, saved: Path, val_df: pd.DataFrame
) -> None:
    texts = val_df["text"].tolist()
    np.testing.assert_allclose(
        _scorer(saved, "model.onnx").predict_proba(texts), fitted.predict_proba(texts), atol=1e-5
    )


def test_the_int8_export_is_close_and_its_choice_follows_the_rule(
    fitted: DistilBertClassifier, saved: Path
) -> None:
    texts = list(CHECK_TEXTS)
    fp32 = _scorer(saved, "model.onnx").predict_proba(texts)
    int8 = _scorer(saved, "model.int8.onnx").predict_proba(texts)
    assert not np.array_equal(fp32, int8)  # really quantised
    serving = json.loads((saved / "estimator" / "onnx" / "serving.json").read_text())
    expected = choose_precision(fitted.predict_proba(texts), fp32, int8)
    assert serving["precision"] == expected.precision
    assert serving["model"] == {"int8": "model.int8.onnx", "fp32": "model.onnx"}[expected.precision]
    if expected.precision == "int8":
        assert np.array_equal(fp32.argmax(axis=1), int8.argmax(axis=1))
        assert np.abs(fp32 - int8).max() <= INT8_MAX_DIFF


def test_each_layer_serves_as_one_fused_attention_operator(fitted: DistilBertClassifier, saved: Path) -> None:
    onnx_folder = saved / "estimator" / "onnx"
    layers = fitted.model_.config.num_hidden_layers
    assert json.loads((onnx_folder / "serving.json").read_text())["fused_operators"]["Attention"] == layers
    operators = {
        name: [node.op_type for node in onnx.load(str(onnx_folder / name)).graph.node]
        for name in ("model.onnx", "model.int8.onnx")
    }
    assert operators["model.onnx"].count("Attention") == layers
    assert operators["model.int8.onnx"].count("QAttention") == layers
    assert "Softmax" not in operators["model.onnx"]  # no unfused attention left beside it


def test_the_precision_rule() -> None:
    fp32 = np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.6, 0.1, 0.1, 0.1, 0.1]])
    near = fp32 + np.array([[0.01, -0.01, 0, 0, 0], [0, 0, 0, 0, 0]])
    flipped = np.array([[0.1, 0.45, 0.25, 0.1, 0.1], [0.6, 0.1, 0.1, 0.1, 0.1]])
    assert choose_precision(fp32, fp32, near).precision == "int8"
    assert choose_precision(fp32, fp32, flipped).precision == "fp32"  # argmax moved
    assert (
        choose_precision(fp32, fp32, fp32 + np.array([[0.06, 0, -0.06, 0, 0], [0] * 5])).precision == "fp32"
    )
    # With labels: int8 only while its macro-F1 stays within 0.005 of torch's.
    labels = [3, 1]
    assert choose_precision(fp32, fp32, flipped, labels).precision == "fp32"
    assert choose_precision(flipped, fp32, flipped, labels).precision == "int8"
    labelled = choose_precision(fp32, fp32, near, labels)
    assert (
        labelled.precision == "int8"
        and labelled.evidence["macro_f1_torch"] == labelled.evidence["macro_f1_int8"]
    )


def test_order_is_kept_across_length_sorted_batches(saved: Path, val_df: pd.DataFrame) -> None:
    texts = [t[: 5 + 37 * i % 300] for i, t in enumerate(val_df["text"].tolist()[:23])]
    scorer = _scorer(saved, "model.onnx", batch_size=4)
    one_by_one = np.vstack([scorer.predict_proba([text]) for text in texts])
    np.testing.assert_allclose(scorer.predict_proba(texts), one_by_one, atol=1e-5)
    np.testing.assert_allclose(scorer.predict_proba(texts[::-1]), one_by_one[::-1], atol=1e-5)
    assert len({len(t) for t in texts}) > 10


def test_empty_input(saved: Path) -> None:
    assert _scorer(saved, "model.onnx").predict_proba([]).shape == (0, 5)
    assert load_bundle(saved).predict_proba([]).shape == (0, 5)


def test_the_bundle_round_trips_and_serves_onnx(fitted: DistilBertClassifier, saved: Path) -> None:
    manifest = json.loads((saved / MANIFEST).read_text())
    onnx_files = {n for n in manifest["files"] if n.startswith("estimator/onnx/")}
    assert onnx_files == {
        f"estimator/onnx/{n}" for n in ("model.onnx", "model.int8.onnx", "tokenizer.json", "serving.json")
    }
    serving = manifest["serving"]
    assert serving == json.loads((saved / "estimator" / "onnx" / "serving.json").read_text())
    assert serving["runtime"] == "onnxruntime" and serving["max_length"] == PARAMS["max_length"]
    assert serving["check"]["labelled"] is False and serving["check"]["fp32_max_abs_diff_vs_torch"] < 1e-4
    assert {"onnxruntime", "tokenizers"} <= set(manifest["library_versions"])
    assert not {"torch", "transformers"} & set(manifest["library_versions"])
    loaded = load_bundle(saved)
    assert isinstance(loaded.estimator, OnnxClassifier)
    reviews = ["Great story, loved the characters", "Terrible. Stopped reading.", "ok"]
    served = _scorer(saved, serving["model"]).predict_proba(reviews)
    np.testing.assert_allclose(loaded.predict_proba(reviews), served, atol=1e-6)
    np.testing.assert_allclose(loaded.predict_proba(reviews).sum(axis=1), 1.0)
    # Finished with new metadata, the model files and the serving choice are kept.
    again = save_bundle(loaded, saved.parent / "finished", model_files_from=saved)
    assert model_digest(again) == model_digest(saved)
    assert json.loads((again / MANIFEST).read_text())["serving"] == serving


def test_loading_and_scoring_imports_neither_torch_nor_transformers(saved: Path) -> None:
    """As in the Bento, where neither is installed: importing either fails in the child process.

    (Where torch is installed, `import skops.io` imports it anyway: scikit-learn's
    `all_estimators` walks its vendored array-api-compat, whose torch module imports torch,
    and skips it when that fails. So the child makes torch unimportable instead of only
    looking at sys.modules.)
    """
    script = (
        "import json, sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'transformers'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from libs.models.bundle import load_bundle\n"
        f"bundle = load_bundle({str(saved)!r})\n"
        "proba = bundle.predict_proba(['Great story', 'Terrible. Stopped reading.'])\n"
        "heavy = sorted(m for m in sys.modules if m.partition('.')[0] in ('torch', 'transformers'))\n"
        "print(json.dumps({'heavy': heavy, 'estimator': type(bundle.estimator).__name__,"
        " 'proba': proba.tolist()}))\n"
    )
    env = {
        **os.environ,
        "KINDLE_ONNX_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),  # the modules this process imports, where it does
    }
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["estimator"] == "OnnxClassifier"
    expected = load_bundle(saved).predict_proba(["Great story", "Terrible. Stopped reading."])
    np.testing.assert_allclose(np.array(result["proba"]), expected, atol=1e-6)


def test_a_labelled_check_applies_the_macro_f1_rule(
    fitted: DistilBertClassifier, train_df: pd.DataFrame, val_df: pd.DataFrame, tmp_path: Path
) -> None:
    bundle = ModelBundle.new("distilbert", fitted, None, fingerprint(train_df))
    check = LabelledCheck(val_df["text"].tolist(), labels_of(val_df).tolist())
    path = save_bundle(bundle, tmp_path / "bundle", onnx_check=check)
    serving = json.loads((path / MANIFEST).read_text())["serving"]
    assert serving["check"]["labelled"] is True and serving["rule"] == "macro_f1_within_0.005"
    f1_torch, f1_int8 = serving["check"]["macro_f1_torch"], serving["check"]["macro_f1_int8"]
    assert serving["precision"] == ("int8" if f1_int8 >= f1_torch - 0.005 else "fp32")


def test_a_bundle_without_onnx_files_still_loads_through_torch(
    fitted: DistilBertClassifier, saved: Path, tmp_path: Path
) -> None:
    import shutil

    older = tmp_path / "older"
    shutil.copytree(saved, older)
    shutil.rmtree(older / "estimator" / "onnx")
    manifest = json.loads((older / MANIFEST).read_text())
    manifest["files"] = {n: d for n, d in manifest["files"].items() if not n.startswith("estimator/onnx/")}
    del manifest["serving"]
    (older / MANIFEST).write_text(json.dumps(manifest))
    loaded = load_bundle(older)
    assert isinstance(loaded.estimator, DistilBertClassifier)
    reviews = ["Great story, loved the characters", "Terrible. Stopped reading."]
    np.testing.assert_allclose(loaded.predict_proba(reviews), fitted.predict_proba(reviews), atol=1e-6)


def test_onnx_runtime_takes_one_thread_per_process_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from libs.models.onnx_runtime import THREADS_ENV, _threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert _threads() == 1  # the service runs one API worker per CPU
    monkeypatch.setenv(THREADS_ENV, "0")
    assert _threads() == 0  # every core
    monkeypatch.setenv(THREADS_ENV, "-2")
    with pytest.raises(ValueError, match="KINDLE_ONNX_THREADS must be 0"):
        _threads()
