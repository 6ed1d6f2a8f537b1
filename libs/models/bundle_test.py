"""The bundle round-trips exactly and refuses, by name, anything it cannot trust; loading one
never runs code from its files."""

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io

from libs.drift import ReferenceProfile
from libs.features import CONTRACT, Tfidf
from libs.models.bundle import (
    CALIBRATION_FILE,
    DRIFT_FILE,
    ESTIMATOR_FILE,
    MANIFEST,
    TFIDF_FILE,
    BundleError,
    ModelBundle,
    load_bundle,
    model_digest,
    save_bundle,
)
from libs.models.calibration import TemperatureScaling
from libs.models.components import ExplanationUnavailable
from libs.models.training.data import fingerprint, labels_of
from libs.models.training.estimators import build_estimator

REVIEWS = ["Loved every page, a wonderful story.", "Boring and badly written. Do not buy.", "It was ok."]
SUMMARIES = ["Great", None, "Meh"]


@pytest.fixture(scope="module")
def bundle(train_df: pd.DataFrame, tfidf: Tfidf) -> ModelBundle:
    estimator = build_estimator("logreg", {"C": 5.0}, tfidf).fit(train_df, labels_of(train_df))
    return ModelBundle.new(
        "logreg",
        estimator,
        tfidf,
        fingerprint(train_df),
        metrics={"val_macro_f1": np.float64(0.5)},
        drift_reference=ReferenceProfile.build(train_df),
        mlflow_run_id="run-1",
    )


@pytest.fixture
def saved(bundle: ModelBundle, tmp_path: Path) -> Path:
    return save_bundle(bundle, tmp_path / "bundle")


def edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def rehash(path: Path) -> None:
    """Recomputes the manifest's checksums for the files on disk, as a forger would."""
    files = {
        f.relative_to(path).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    edit_manifest(path, files=files)


class CreatesMarker:
    """Unpickling this creates a file: the proof that loading ran code from the bundle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_saved_bundle_loads_with_the_same_probabilities(bundle: ModelBundle, saved: Path) -> None:
    loaded = load_bundle(saved)
    np.testing.assert_array_equal(
        loaded.predict_proba(REVIEWS, SUMMARIES), bundle.predict_proba(REVIEWS, SUMMARIES)
    )
    assert (loaded.kind, loaded.version, loaded.labels) == (bundle.kind, bundle.version, [1, 2, 3, 4, 5])
    assert loaded.drift_reference == bundle.drift_reference
    assert loaded.tfidf is not None and loaded.tfidf.terms == bundle.tfidf.terms


def test_the_drift_reference_is_stored_in_the_profiles_own_json_format(
    bundle: ModelBundle, saved: Path
) -> None:
    """Bundles saved before the reference was typed hold this same JSON, so they still load."""
    assert bundle.drift_reference is not None
    assert json.loads((saved / DRIFT_FILE).read_text()) == bundle.drift_reference.to_dict()


def test_a_drift_reference_this_code_cannot_read_refuses_the_bundle_at_load(saved: Path) -> None:
    reference = json.loads((saved / DRIFT_FILE).read_text())
    (saved / DRIFT_FILE).write_text(json.dumps({**reference, "format_version": 99}))
    rehash(saved)
    with pytest.raises(BundleError, match=r"drift reference of bundle .*: format version 99"):
        load_bundle(saved)


def test_probabilities_are_five_columns_summing_to_one(bundle: ModelBundle) -> None:
    proba = bundle.predict_proba(REVIEWS)
    assert proba.shape == (3, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert bundle.predict_proba([]).shape == (0, 5)


def test_sentiment_of_stars() -> None:
    assert ModelBundle.sentiment([1, 2, 3, 4, 5]) == [
        "negative",
        "negative",
        "neutral",
        "positive",
        "positive",
    ]


def test_metadata_is_json_with_contract_and_versions(bundle: ModelBundle) -> None:
    metadata = json.loads(json.dumps(bundle.metadata()))
    assert metadata["contract"] == CONTRACT.to_dict()
    assert metadata["contract_hash"] == CONTRACT.hash
    assert metadata["library_versions"]["scikit-learn"]
    assert metadata["metrics"] == {"val_macro_f1": 0.5}


def test_the_vocabulary_is_stored_once_in_tfidf_json(saved: Path) -> None:
    stored = skops.io.load(
        saved / ESTIMATOR_FILE, trusted=skops.io.get_untrusted_types(file=saved / ESTIMATOR_FILE)
    )
    assert stored.feature_matrix.tfidf is None


def test_a_tampered_file_fails_its_checksum(saved: Path) -> None:
    with (saved / ESTIMATOR_FILE).open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match=r"checksum mismatch for estimator.skops"):
        load_bundle(saved)


def test_a_pickle_with_matching_checksums_is_refused_without_running_it(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (saved / ESTIMATOR_FILE).write_bytes(pickle.dumps(CreatesMarker(marker)))
    rehash(saved)
    with pytest.raises(BundleError, match="corrupt bundle"):
        load_bundle(saved)
    assert not marker.exists()
    pickle.loads((saved / ESTIMATOR_FILE).read_bytes())  # the same bytes do run code when unpickled
    assert marker.exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused(saved: Path) -> None:
    archive = saved / ESTIMATOR_FILE
    with zipfile.ZipFile(archive) as source:
        members = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(members["schema.json"])
    learner = schema["content"]["content"]["steps"]["content"][1]["content"][1]  # ("classifier", LR)
    learner.update(__module__="os", __class__="system")
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(archive, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    rehash(saved)
    with pytest.raises(BundleError, match=r"outside the trusted list.*os\.system"):
        load_bundle(saved)


def test_a_manifest_listing_no_files_is_refused(saved: Path) -> None:
    edit_manifest(saved, files={})
    with pytest.raises(BundleError, match=r"lists no estimator\.skops"):
        load_bundle(saved)


def test_a_file_the_manifest_does_not_list_is_refused(saved: Path) -> None:
    (saved / "extra.py").write_text("print('hello')")
    with pytest.raises(BundleError, match=r"does not list: \['extra.py'\]"):
        load_bundle(saved)


def test_a_missing_file_is_named(saved: Path) -> None:
    (saved / TFIDF_FILE).unlink()
    with pytest.raises(BundleError, match=r"missing file tfidf.json"):
        load_bundle(saved)


def test_a_folder_without_manifest_is_not_a_bundle(saved: Path) -> None:
    (saved / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest.json missing"):
        load_bundle(saved)


def test_a_foreign_contract_hash_is_refused(saved: Path) -> None:
    edit_manifest(saved, contract_hash="0" * 64)
    with pytest.raises(BundleError, match="feature contract 000000000000"):
        load_bundle(saved)


def test_an_unknown_format_version_is_refused(saved: Path) -> None:
    edit_manifest(saved, format_version=99)
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(saved)


def test_a_scikit_learn_feature_release_skew_is_refused(saved: Path) -> None:
    versions = json.loads((saved / MANIFEST).read_text())["library_versions"]
    edit_manifest(saved, library_versions={**versions, "scikit-learn": "0.24.2"})
    with pytest.raises(BundleError, match=r"version skew.*scikit-learn 0.24.2"):
        load_bundle(saved)


def test_a_corrupt_manifest_is_named(saved: Path) -> None:
    (saved / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"corrupt manifest.json"):
        load_bundle(saved)


def test_saving_over_an_existing_bundle_replaces_it(bundle: ModelBundle, saved: Path) -> None:
    save_bundle(bundle, saved)
    assert load_bundle(saved).version == bundle.version
    assert [p.name for p in saved.parent.iterdir()] == ["bundle"]


def test_a_failed_save_leaves_nothing_behind(bundle: ModelBundle, tmp_path: Path) -> None:
    broken = ModelBundle(**{**bundle.__dict__, "estimator": lambda frame: frame})
    with pytest.raises(BundleError, match="StarPipeline"):
        save_bundle(broken, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


CRASHING_SAVE = """
import os, sys
from libs.models.bundle import load_bundle, save_bundle
bundle = load_bundle(sys.argv[1])

class DiesWhileSaved:
    def __getstate__(self):
        os._exit(9)  # the process dies mid-write, as on a power cut or an OOM kill

bundle.estimator.steps.append(("crash", DiesWhileSaved()))
save_bundle(bundle, sys.argv[2])
"""


def test_a_process_killed_mid_save_leaves_no_complete_looking_bundle(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "crashed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(saved), str(target)], env=env, timeout=120
    )
    assert result.returncode == 9
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".crashed.partial-")]
    assert leftovers, "the crash should have happened inside the temporary folder"
    with pytest.raises(BundleError, match=r"manifest.json missing"):
        load_bundle(leftovers[0])


def test_a_linear_model_explains_a_prediction_with_terms_of_the_review(bundle: ModelBundle) -> None:
    explained = bundle.explain(["Loved every page, a wonderful story."], ["Great"], top_k=3)
    assert (
        explained[0]["label"]
        == int(bundle.predict_proba(["Loved every page, a wonderful story."], ["Great"]).argmax()) + 1
    )
    tokens = [token["token"] for token in explained[0]["tokens"]]
    assert 0 < len(tokens) <= 3
    assert all(token in bundle.tfidf.index for token in tokens)
    assert all(t["weight"] > 0 for t in explained[0]["tokens"])


def test_a_model_without_term_weights_says_it_cannot_explain(
    bundle: ModelBundle, train_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    mlp = build_estimator("mlp", {"hidden": 8, "alpha": 1e-4, "learning_rate": 1e-3, "epochs": 1}, tfidf)
    unexplainable = ModelBundle.new("mlp", mlp.fit(train_df, labels_of(train_df)), tfidf, "x")
    with pytest.raises(ExplanationUnavailable, match="no linear coefficients"):
        unexplainable.explain(["fine"], None, top_k=3)


def test_a_finished_bundle_keeps_the_model_files_and_their_digest(saved: Path, tmp_path: Path) -> None:
    loaded = load_bundle(saved)
    finished = dataclasses.replace(loaded, metrics={"test_macro_f1": 0.5}, mlflow_run_id="run-2")
    path = save_bundle(finished, tmp_path / "finished", model_files_from=saved)
    assert (path / ESTIMATOR_FILE).read_bytes() == (saved / ESTIMATOR_FILE).read_bytes()
    assert model_digest(path) == model_digest(saved)
    assert load_bundle(path).metrics == {"test_macro_f1": 0.5}
    resaved = save_bundle(loaded, tmp_path / "resaved")  # skops records object ids: other bytes
    assert load_bundle(resaved).predict_proba(REVIEWS).tolist() == loaded.predict_proba(REVIEWS).tolist()


def test_a_terms_only_linear_model_round_trips_and_explains(
    train_df: pd.DataFrame, tfidf: Tfidf, tmp_path: Path
) -> None:
    estimator = build_estimator("logreg", {"C": 2.0, "numeric": False}, tfidf).fit(
        train_df, labels_of(train_df)
    )
    fresh = ModelBundle.new("logreg", estimator, tfidf, "x")
    loaded = load_bundle(save_bundle(fresh, tmp_path / "terms"))
    np.testing.assert_array_equal(loaded.predict_proba(REVIEWS), fresh.predict_proba(REVIEWS))
    assert loaded.explain(REVIEWS[:1], None, top_k=3)[0]["tokens"]


def test_a_calibrated_bundle_applies_its_calibration_everywhere_and_keeps_it(
    bundle: ModelBundle, saved: Path, tmp_path: Path
) -> None:
    temperature = TemperatureScaling(2.0)
    path = save_bundle(dataclasses.replace(bundle, calibration=temperature), tmp_path / "calibrated")
    assert json.loads((path / CALIBRATION_FILE).read_text()) == {"method": "temperature", "temperature": 2.0}
    loaded = load_bundle(path)
    assert loaded.calibration == temperature
    raw = load_bundle(saved).predict_proba(REVIEWS, SUMMARIES)
    np.testing.assert_allclose(loaded.predict_proba(REVIEWS, SUMMARIES), temperature.apply(raw))
    assert loaded.metadata()["calibration"] == {"method": "temperature", "temperature": 2.0}
    assert model_digest(path) != model_digest(saved)  # it decides the probabilities served
    relabelled = dataclasses.replace(loaded, metrics={})
    finished = save_bundle(relabelled, tmp_path / "finished", model_files_from=path)
    assert load_bundle(finished).calibration == temperature
    assert model_digest(finished) == model_digest(path)
