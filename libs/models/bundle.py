"""The model bundle: everything the service needs to score reviews, in one checked folder.

Layout (format version 1):
    manifest.json          format version, sha256 of every other file, kind, version, labels,
                           metrics, data fingerprint, contract hash, library versions
    estimator.joblib       scikit-learn kinds: the fitted StarPipeline, its TF-IDF detached
    estimator/             distilbert: save_pretrained weights + tokenizer, hyperparameters JSON
    tfidf.json             the fitted vectoriser (the one copy; re-attached on load)
    drift_reference.json   libs.drift's reference profile, when given (opaque here)

`save_bundle` writes into a hidden temporary folder beside the target, manifest last, and
renames it into place, so a crash never leaves a complete-looking bundle. `load_bundle`
refuses, with the reason in the message, anything it cannot trust: a missing or altered
file, an unknown format, another feature contract, or a scikit-learn feature release other
than the one that pickled the estimator (pickles are not compatible across them).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from libs.features import CONTRACT, FeatureContractError, Tfidf, compute_features
from libs.models.estimators import FeatureMatrix
from libs.models.evaluation import sentiment_of
from libs.models.kinds import LABELS, ModelKind

logger = logging.getLogger("kindle.models.bundle")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ESTIMATOR_FILE = "estimator.joblib"
ESTIMATOR_FOLDER = "estimator"
TFIDF_FILE = "tfidf.json"
DRIFT_FILE = "drift_reference.json"
STRICT_LIBRARY = "scikit-learn"
"""The library whose feature release (major.minor) must match: the estimator is its pickle."""

_SKLEARN_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "joblib")
_TORCH_LIBRARIES = ("torch", "transformers", "tokenizers")


class BundleError(Exception):
    """A bundle cannot be saved or trusted; the message names the file or check that failed."""


def library_versions(kind: ModelKind | str) -> dict[str, str]:
    """Versions of the libraries the estimator needs at load time (and Python's)."""
    names = _SKLEARN_LIBRARIES + (_TORCH_LIBRARIES if ModelKind.parse(kind).needs_torch else ())
    return {"python": platform.python_version(), **{name: importlib.metadata.version(name) for name in names}}


def new_version(data_fingerprint: str, kind: ModelKind | str, now: datetime | None = None) -> str:
    """`<UTC timestamp>-<8 hex>`: sortable by time, distinct for different data or kind."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(f"{stamp}|{kind}|{data_fingerprint}".encode()).hexdigest()[:8]
    return f"{stamp}-{digest}"


@dataclass
class ModelBundle:
    kind: str
    version: str
    labels: list[int]
    estimator: Any
    tfidf: Tfidf | None
    metrics: dict
    data_fingerprint: str
    contract_hash: str
    library_versions: dict
    drift_reference: dict | None = None
    mlflow_run_id: str | None = None

    def predict_proba(
        self, reviews: Sequence[str], summaries: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """(n, 5) star probabilities, columns 1..5, each row summing to 1.

        Features come from `compute_features`, the same code training used.
        """
        return self.predict_features(compute_features(reviews, summaries))

    def predict_features(self, frame: pd.DataFrame) -> np.ndarray:
        """`predict_proba` of reviews whose features are computed already (`compute_features`
        output): callers that need the features too (the service's drift feed) compute them once."""
        if len(frame) == 0:
            return np.empty((0, len(self.labels)))
        proba = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        if proba.shape != (len(frame), len(self.labels)):
            raise BundleError(
                f"estimator of bundle {self.version} returned shape {proba.shape}, "
                f"expected ({len(frame)}, {len(self.labels)})"
            )
        return proba / proba.sum(axis=1, keepdims=True)

    @staticmethod
    def sentiment(labels: Iterable[int]) -> list[str]:
        """1-2 negative, 3 neutral, 4-5 positive."""
        return [sentiment_of(label) for label in labels]

    def metadata(self) -> dict[str, Any]:
        """JSON-able summary for the service's /metadata and logs."""
        return _jsonable(
            {
                "kind": self.kind,
                "version": self.version,
                "labels": list(self.labels),
                "mlflow_run_id": self.mlflow_run_id,
                "metrics": self.metrics,
                "data_fingerprint": self.data_fingerprint,
                "contract_hash": self.contract_hash,
                "contract": CONTRACT.to_dict(),
                "library_versions": self.library_versions,
                "has_drift_reference": self.drift_reference is not None,
            }
        )


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays from metrics become floats and lists."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _feature_step(estimator: Any) -> FeatureMatrix | None:
    steps = getattr(estimator, "steps", None)
    if steps and isinstance(steps[0][1], FeatureMatrix):
        return steps[0][1]
    return None


def _write_estimator(bundle: ModelBundle, folder: Path) -> None:
    if ModelKind.parse(bundle.kind) is ModelKind.DISTILBERT:
        bundle.estimator.save(folder / ESTIMATOR_FOLDER)
        return
    step = _feature_step(bundle.estimator)
    attached = step.tfidf if step is not None else None
    if step is not None:
        step.tfidf = None  # tfidf.json is the one copy; no vocabulary inside the pickle
    try:
        joblib.dump(bundle.estimator, folder / ESTIMATOR_FILE)
    finally:
        if step is not None:
            step.tfidf = attached


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_bundle(bundle: ModelBundle, path: Path) -> Path:
    """Writes the bundle atomically to `path` (a folder, replaced if it exists); returns `path`."""
    path = Path(path)
    kind = ModelKind.parse(bundle.kind)
    if list(bundle.labels) != LABELS:
        raise BundleError(f"bundle labels must be {LABELS}, got {list(bundle.labels)}")
    if bundle.tfidf is None and kind is not ModelKind.DISTILBERT:
        raise BundleError(f"a {kind.value} bundle needs its fitted TF-IDF vectoriser")
    if path.exists() and not path.is_dir():
        raise BundleError(f"cannot save bundle to {path}: a file is in the way")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        _write_estimator(bundle, temporary)
        if bundle.tfidf is not None:
            bundle.tfidf.save(temporary / TFIDF_FILE)
        if bundle.drift_reference is not None:
            (temporary / DRIFT_FILE).write_text(json.dumps(bundle.drift_reference))
        files = {
            file.relative_to(temporary).as_posix(): _sha256(file)
            for file in sorted(temporary.rglob("*"))
            if file.is_file()
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind.value,
            "version": bundle.version,
            "labels": list(bundle.labels),
            "metrics": bundle.metrics,
            "data_fingerprint": bundle.data_fingerprint,
            "contract_hash": bundle.contract_hash,
            "library_versions": bundle.library_versions,
            "mlflow_run_id": bundle.mlflow_run_id,
            "created_at": datetime.now(UTC).isoformat(),
            "files": files,
        }
        # The manifest is written last: a folder without one is never a bundle.
        (temporary / MANIFEST).write_text(json.dumps(_jsonable(manifest), indent=2, sort_keys=True))
        for file in temporary.rglob("*"):
            if file.is_file():
                _fsync(file)
        _replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync(path.parent)
    return path


def _replace(source: Path, target: Path) -> None:
    """Renames `source` to `target`; an existing `target` is moved aside first, then removed."""
    if not target.exists():
        os.rename(source, target)
        return
    aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, aside)
    os.rename(source, target)
    shutil.rmtree(aside, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise BundleError(f"bundle folder {path} does not exist")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a complete bundle: {MANIFEST} missing (an interrupted save?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise BundleError(f"corrupt {MANIFEST} in {path}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: bundle format version {found!r}; this code reads {FORMAT_VERSION}")
    required = ["kind", "version", "labels", "files", "contract_hash", "library_versions"]
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(f"corrupt {MANIFEST} in {path}: keys {missing} missing")
    return manifest


def _check_files(path: Path, files: dict[str, str]) -> None:
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path} is missing file {name}")
        found = _sha256(file)
        if found != expected:
            raise BundleError(
                f"checksum mismatch for {name} in bundle {path}: manifest sha256 {expected[:12]}, "
                f"file sha256 {found[:12]} (corrupt or tampered)"
            )


def _check_versions(path: Path, recorded: dict[str, str]) -> None:
    for name, version in recorded.items():
        if name == "python":
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise BundleError(f"bundle {path} needs {name} {version}, which is not installed") from None
        if installed == version:
            continue
        if name == STRICT_LIBRARY and installed.split(".")[:2] != version.split(".")[:2]:
            raise BundleError(
                f"version skew: bundle {path} was saved with {name} {version}, this process runs "
                f"{installed}; its pickle cannot be trusted across feature releases: retrain"
            )
        logger.warning("bundle %s was saved with %s %s, running %s", path, name, version, installed)


def load_bundle(path: Path) -> ModelBundle:
    """Loads and validates a bundle folder; every refusal is a BundleError naming the problem."""
    path = Path(path)
    manifest = _read_manifest(path)
    _check_files(path, manifest["files"])
    try:
        CONTRACT.require_hash(manifest["contract_hash"], f"model bundle {path}")
        kind = ModelKind.parse(manifest["kind"])
    except (FeatureContractError, ValueError) as error:
        raise BundleError(str(error)) from error
    if manifest["labels"] != LABELS:
        raise BundleError(f"bundle {path} has labels {manifest['labels']}; expected {LABELS}")
    _check_versions(path, manifest["library_versions"])
    try:
        tfidf = Tfidf.load(path / TFIDF_FILE) if TFIDF_FILE in manifest["files"] else None
        estimator = _read_estimator(path, kind, tfidf)
        drift = json.loads((path / DRIFT_FILE).read_text()) if DRIFT_FILE in manifest["files"] else None
    except BundleError:
        raise
    except Exception as error:
        raise BundleError(f"corrupt bundle {path}: {type(error).__name__}: {error}") from error
    return ModelBundle(
        kind=kind.value,
        version=manifest["version"],
        labels=list(manifest["labels"]),
        estimator=estimator,
        tfidf=tfidf,
        metrics=manifest.get("metrics") or {},
        data_fingerprint=manifest.get("data_fingerprint", ""),
        contract_hash=manifest["contract_hash"],
        library_versions=manifest["library_versions"],
        drift_reference=drift,
        mlflow_run_id=manifest.get("mlflow_run_id"),
    )


def _read_estimator(path: Path, kind: ModelKind, tfidf: Tfidf | None) -> Any:
    if kind is ModelKind.DISTILBERT:
        from libs.models.distilbert import DistilBertClassifier  # torch only for this kind

        return DistilBertClassifier.load(path / ESTIMATOR_FOLDER)
    estimator = joblib.load(path / ESTIMATOR_FILE)
    step = _feature_step(estimator)
    if step is None or tfidf is None:
        raise BundleError(f"bundle {path}: a {kind.value} estimator needs its feature step and {TFIDF_FILE}")
    step.tfidf = tfidf
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if classes != LABELS:
        raise BundleError(f"bundle {path}: estimator classes {classes}, expected {LABELS}")
    return estimator
