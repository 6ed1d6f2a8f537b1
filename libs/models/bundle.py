"""The model bundle: everything the service needs to score reviews, in one checked folder.

Layout (format version 2):
    manifest.json          format version, sha256 of every other file, kind, version, labels,
                           metrics, data fingerprint, contract hash, library versions
    estimator.skops        scikit-learn kinds and the ensemble's TF-IDF member: the fitted
                           StarPipeline (skops format), its TF-IDF detached
    estimator/             the transformer kind and the ensemble's transformer member:
                           safetensors weights, tokenizer and hyperparameters (JSON), as
                           `save_pretrained` writes them, and
    estimator/onnx/        the same model exported to ONNX (fp32 and int8), `tokenizer.json` and
                           `serving.json` (which file serves; mirrored as the manifest's
                           `serving`): what serving loads, with onnxruntime and tokenizers only
    ensemble.json          the ensemble kind: the transformer's weight in the soft vote
    tfidf.json             the fitted vectoriser (the one copy; re-attached on load)
    drift_reference.json   libs.drift's reference profile (`ReferenceProfile.to_dict`), when given
    calibration.json       the calibration every returned probability goes through
                           (`libs.models.calibration`), when given

Why skops and not pickle: a pickle runs whatever code its bytes name when it is loaded,
so anyone able to write a bundle folder or the MLflow artifact store could run code in
the service. skops stores the object graph as data and `load_bundle` constructs only
the types in `TRUSTED_TYPES` (scikit-learn's, numpy's and this package's own classes);
anything else is refused before it is built. Transformer weights are safetensors and
JSON, loaded with `use_safetensors=True`, never `torch.load` of a pickle.

Why the manifest must list exactly the files on disk: the checksums are only worth
something if every file a loader reads was checked first. A bundle is refused if a
file is missing from the manifest, missing from the folder, altered, or extra; if the
kind's estimator entry is absent; if the format, feature contract or scikit-learn
feature release differs. The manifest itself is not signed: this detects corruption and
tampering with a file, and skops keeps a forged manifest from running code.

`save_bundle` writes into a hidden temporary folder beside the target, manifest last, and
renames it into place, so a crash never leaves a complete-looking bundle.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import skops.io
from skops.io.exceptions import UntrustedTypesFoundException

from libs.atomic import fsync
from libs.drift import ReferenceProfile
from libs.features import CONTRACT, FeatureContractError, Tfidf, compute_features
from libs.models.calibration import Calibration, calibration_from_dict
from libs.models.components import ExplanationUnavailable, SoftVote, StarPipeline
from libs.models.kinds import LABELS, ModelKind, sentiment_of

if TYPE_CHECKING:  # the export needs torch; only training saves transformer bundles
    from libs.models.onnx_export import LabelledCheck

logger = logging.getLogger("kindle.models.bundle")

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ESTIMATOR_FILE = "estimator.skops"
ESTIMATOR_FOLDER = "estimator"
TFIDF_FILE = "tfidf.json"
DRIFT_FILE = "drift_reference.json"
ENSEMBLE_FILE = "ensemble.json"
CALIBRATION_FILE = "calibration.json"
STRICT_LIBRARY = "scikit-learn"
"""The library whose feature release (major.minor) must match the one that saved the estimator."""

TRUSTED_TYPES = [
    "libs.models.components.BalancedEpochMLP",
    "libs.models.components.FeatureMatrix",
    "libs.models.components.StarPipeline",
    "libs.models.components.TermColumns",
    # scikit-learn internals of fitted estimators that skops does not trust by default
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
]
"""Types a scikit-learn bundle may contain beyond skops' defaults (scikit-learn, numpy, scipy)."""

_SKLEARN_LIBRARIES = ("scikit-learn", "skops", "numpy", "scipy", "pandas")
_ONNX_LIBRARIES = ("onnxruntime", "tokenizers")
"""What a transformer bundle needs at load time: its ONNX export, not torch or transformers
(the versions it was exported with are in `serving.exported_with`)."""
ONNX_FOLDER = f"{ESTIMATOR_FOLDER}/onnx"
SERVING_FILE = "serving.json"
"""Beside a transformer's ONNX files: which of them serves, the tokenizer and its padding."""


class BundleError(Exception):
    """A bundle cannot be saved or trusted; the message names the file or check that failed."""


def library_versions(kind: ModelKind | str) -> dict[str, str]:
    """Versions of the libraries the estimator needs at load time (and Python's)."""
    names = _SKLEARN_LIBRARIES + (_ONNX_LIBRARIES if ModelKind.parse(kind).needs_torch else ())
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
    estimator: Any
    tfidf: Tfidf | None
    data_fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    drift_reference: ReferenceProfile | None = None
    mlflow_run_id: str | None = None
    labels: list[int] = field(default_factory=lambda: list(LABELS))
    contract_hash: str = CONTRACT.hash
    library_versions: dict[str, str] = field(default_factory=dict)
    calibration: Calibration | None = None  # applied to every probability the bundle returns

    @classmethod
    def new(
        cls,
        kind: ModelKind | str,
        estimator: Any,
        tfidf: Tfidf | None,
        data_fingerprint: str,
        **details: Any,
    ) -> ModelBundle:
        """A bundle of a freshly fitted estimator: new version, this code's contract and libraries."""
        kind = ModelKind.parse(kind)
        return cls(
            kind=kind.value,
            version=new_version(data_fingerprint, kind),
            estimator=estimator,
            tfidf=tfidf,
            data_fingerprint=data_fingerprint,
            library_versions=library_versions(kind),
            **details,
        )

    def predict_proba(
        self, reviews: Sequence[object], summaries: Sequence[object] | None = None
    ) -> np.ndarray:
        """(n, 5) star probabilities, columns 1..5, each row summing to 1.

        Features come from `compute_features`, the same code training used.
        """
        return self.predict_features(compute_features(reviews, summaries))

    def predict_features(self, frame: pd.DataFrame) -> np.ndarray:
        """`predict_proba` of reviews whose features are computed already (`compute_features`
        output): callers that need the features too (the service's drift feed) compute them once.
        Calibrated where the bundle carries a calibration."""
        if len(frame) == 0:
            return np.empty((0, len(self.labels)))
        proba = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        if proba.shape != (len(frame), len(self.labels)):
            raise BundleError(
                f"estimator of bundle {self.version} returned shape {proba.shape}, "
                f"expected ({len(frame)}, {len(self.labels)})"
            )
        proba = proba / proba.sum(axis=1, keepdims=True)
        return proba if self.calibration is None else self.calibration.apply(proba)

    def explain(
        self, reviews: Sequence[object], summaries: Sequence[object] | None, top_k: int
    ) -> list[dict[str, Any]]:
        """Per review, the predicted star and the terms that pushed it (ExplanationUnavailable
        for a model without per-term weights)."""
        explain = getattr(self.estimator, "explain", None)
        if explain is None:
            raise ExplanationUnavailable(f"model kind {self.kind!r} does not explain its predictions")
        return list(explain(compute_features(reviews, summaries), top_k))

    @staticmethod
    def sentiment(labels: Iterable[int]) -> list[str]:
        """1-2 negative, 3 neutral, 4-5 positive."""
        return [sentiment_of(label) for label in labels]

    @property
    def test_metrics(self) -> dict[str, float]:
        """The model's metrics on its test split (`test_<name>` in `metrics`), by name: what
        live and offline monitoring compare the window's performance with."""
        return {
            name: value for key, value in self.metrics.items() if (name := key.removeprefix("test_")) != key
        }

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
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
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


def _write_estimator(bundle: ModelBundle, folder: Path, onnx_check: LabelledCheck | None) -> None:
    kind = ModelKind.parse(bundle.kind)
    if kind is ModelKind.ENSEMBLE:
        if not isinstance(bundle.estimator, SoftVote):
            raise BundleError(f"an ensemble bundle holds a SoftVote, got {type(bundle.estimator).__name__}")
        _write_transformer(bundle.estimator.transformer, bundle.version, folder, onnx_check)
        _write_pipeline(bundle.estimator.tfidf_model, kind, folder)
    elif kind.needs_torch:
        _write_transformer(bundle.estimator, bundle.version, folder, onnx_check)
    else:
        _write_pipeline(bundle.estimator, kind, folder)


def _write_transformer(
    transformer: Any, version: str, folder: Path, onnx_check: LabelledCheck | None
) -> None:
    """The torch model as saved, and its ONNX export (what serving loads)."""
    from libs.models.onnx_export import export_onnx  # torch only for these kinds

    if not hasattr(transformer, "save"):
        raise BundleError(
            f"bundle {version}: a {type(transformer).__name__} cannot be written again; pass "
            "model_files_from (the bundles it was loaded from)"
        )
    transformer.save(folder / ESTIMATOR_FOLDER)
    try:
        export_onnx(transformer, folder / ONNX_FOLDER, onnx_check)
    except ValueError as error:
        raise BundleError(f"bundle {version}: {error}") from error


def _write_pipeline(pipeline: Any, kind: ModelKind, folder: Path) -> None:
    """The StarPipeline in skops format, without its vectoriser (tfidf.json is the one copy)."""
    if not isinstance(pipeline, StarPipeline):
        raise BundleError(f"a {kind.value} bundle holds a StarPipeline, got {type(pipeline).__name__}")
    attached = pipeline.feature_matrix.tfidf
    pipeline.attach(None)
    try:
        skops.io.dump(pipeline, folder / ESTIMATOR_FILE)
    finally:
        pipeline.attach(attached)


def _is_model_file(name: str) -> bool:
    """Files that decide predictions: estimator, vectoriser, the ensemble's weight, the calibration."""
    deciding = (ESTIMATOR_FILE, TFIDF_FILE, ENSEMBLE_FILE, CALIBRATION_FILE)
    return name in deciding or name.startswith(f"{ESTIMATOR_FOLDER}/")


def _files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in `folder` except the manifest."""
    return {
        file.relative_to(folder).as_posix(): _sha256(file)
        for file in sorted(folder.rglob("*"))
        if file.is_file() and file.relative_to(folder).as_posix() != MANIFEST
    }


def _copy_model_files(sources: Sequence[Path], folder: Path) -> None:
    """The model files of the bundles at `sources`, byte for byte (an ensemble's come from its
    two members' bundles; a file two sources both hold must be the same in both). Not the
    calibration: it belongs to the bundle being written (an ensemble has its own), which
    `save_bundle` writes from `ModelBundle.calibration`."""
    for source in sources:
        for name, digest in _read_manifest(source)["files"].items():
            if _is_model_file(name) and name != CALIBRATION_FILE:
                if (folder / name).exists():
                    if _sha256(folder / name) != digest:
                        raise BundleError(f"the bundles {list(map(str, sources))} hold different {name}")
                    continue
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, folder / name)


def save_bundle(
    bundle: ModelBundle,
    path: Path,
    model_files_from: Path | Sequence[Path] | None = None,
    onnx_check: LabelledCheck | None = None,
) -> Path:
    """Writes the bundle atomically to `path` (a folder, replaced if it exists); returns `path`.

    With `model_files_from` (the bundle `bundle` was loaded from, or for an ensemble its
    members' bundles), the estimator and the vectoriser are copied from there byte for byte
    instead of written again: a bundle finished with new metadata keeps the model files,
    and the `model_digest`, it had. An ensemble's weight is written from its estimator.

    A transformer is also exported to ONNX (`libs.models.onnx_export`); `onnx_check`, labelled
    texts (e.g. the validation split), lets int8 serve only if its macro-F1 stays within
    0.005 of the torch model's; without it int8 must agree with fp32 on fixed check texts.
    """
    path = Path(path)
    kind = ModelKind.parse(bundle.kind)
    if list(bundle.labels) != LABELS:
        raise BundleError(f"bundle labels must be {LABELS}, got {list(bundle.labels)}")
    if bundle.tfidf is None and kind.uses_tfidf:
        raise BundleError(f"a {kind.value} bundle needs its fitted TF-IDF vectoriser")
    if path.exists() and not path.is_dir():
        raise BundleError(f"cannot save bundle to {path}: a file is in the way")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        if model_files_from is not None:
            sources = [model_files_from] if isinstance(model_files_from, str | Path) else model_files_from
            _copy_model_files([Path(source) for source in sources], temporary)
        else:
            _write_estimator(bundle, temporary, onnx_check)
            if bundle.tfidf is not None:
                bundle.tfidf.save(temporary / TFIDF_FILE)
        if kind is ModelKind.ENSEMBLE:
            (temporary / ENSEMBLE_FILE).write_text(json.dumps({"weight": bundle.estimator.weight}))
        if bundle.drift_reference is not None:
            (temporary / DRIFT_FILE).write_text(json.dumps(bundle.drift_reference.to_dict()))
        if bundle.calibration is not None:
            (temporary / CALIBRATION_FILE).write_text(json.dumps(bundle.calibration.to_dict()))
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
            "files": _files(temporary),
        }
        serving = temporary / ONNX_FOLDER / SERVING_FILE
        if serving.is_file():
            # The checked file decides; the manifest mirrors it for people and /metadata.
            manifest["serving"] = json.loads(serving.read_text())
        # The manifest is written last: a folder without one is never a bundle.
        (temporary / MANIFEST).write_text(json.dumps(_jsonable(manifest), indent=2, sort_keys=True))
        for file in temporary.rglob("*"):
            if file.is_file():
                fsync(file)
        _replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync(path.parent)
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
        raise BundleError(
            f"{path}: bundle format version {found!r}; this code reads {FORMAT_VERSION} (retrain to convert)"
        )
    required = ["kind", "version", "labels", "files", "contract_hash", "library_versions"]
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(f"corrupt {MANIFEST} in {path}: keys {missing} missing")
    if not isinstance(manifest["files"], dict):
        raise BundleError(f"corrupt {MANIFEST} in {path}: 'files' is not a mapping of names to sha256")
    return manifest


def _check_files(path: Path, kind: ModelKind, listed: Mapping[str, str]) -> None:
    """Every file on disk is listed, every listed file is there with its checksum, and the
    kind's estimator is among them: nothing is read that was not verified first."""
    needed = [f"{ESTIMATOR_FOLDER}/"] if kind.needs_torch else []
    if kind.uses_tfidf:
        needed += [ESTIMATOR_FILE, TFIDF_FILE]
    if kind is ModelKind.ENSEMBLE:
        needed.append(ENSEMBLE_FILE)
    for estimator in needed:
        if not any(name == estimator or name.startswith(estimator) for name in listed):
            raise BundleError(
                f"bundle {path}: the manifest lists no {estimator} (part of a {kind.value} model)"
            )
    on_disk = _files(path)
    unlisted = sorted(set(on_disk) - set(listed))
    if unlisted:
        raise BundleError(f"bundle {path} holds files its manifest does not list: {unlisted[:5]}")
    for name, expected in listed.items():
        if name not in on_disk:
            raise BundleError(f"bundle {path} is missing file {name}")
        if on_disk[name] != expected:
            raise BundleError(
                f"checksum mismatch for {name} in bundle {path}: manifest sha256 {str(expected)[:12]}, "
                f"file sha256 {on_disk[name][:12]} (corrupt or tampered)"
            )


def model_digest(path: Path) -> str:
    """sha256 over the checksums of the files that decide predictions (estimator, vectoriser):
    two bundles with the same digest score every review the same, whatever their metadata."""
    files = _read_manifest(Path(path))["files"]
    deciding = sorted((name, digest) for name, digest in files.items() if _is_model_file(name))
    return hashlib.sha256(json.dumps(deciding).encode()).hexdigest()


def model_bytes(path: Path) -> int:
    """Bytes of the files that decide predictions: what a server loads, comparable across kinds
    (a transformer's counts each of its files, the unused ONNX precision too)."""
    path = Path(path)
    return sum((path / name).stat().st_size for name in _read_manifest(path)["files"] if _is_model_file(name))


def _check_versions(path: Path, recorded: Mapping[str, str]) -> None:
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
                f"{installed}; its estimator cannot be trusted across feature releases: retrain"
            )
        logger.warning("bundle %s was saved with %s %s, running %s", path, name, version, installed)


def load_bundle(path: Path) -> ModelBundle:
    """Loads and validates a bundle folder; every refusal is a BundleError naming the problem."""
    path = Path(path)
    manifest = _read_manifest(path)
    try:
        kind = ModelKind.parse(manifest["kind"])
        CONTRACT.require_hash(manifest["contract_hash"], f"model bundle {path}")
    except (FeatureContractError, ValueError) as error:
        raise BundleError(str(error)) from error
    _check_files(path, kind, manifest["files"])
    if manifest["labels"] != LABELS:
        raise BundleError(f"bundle {path} has labels {manifest['labels']}; expected {LABELS}")
    _check_versions(path, manifest["library_versions"])
    try:
        tfidf = Tfidf.load(path / TFIDF_FILE) if TFIDF_FILE in manifest["files"] else None
        estimator = _read_estimator(path, kind, tfidf, manifest["files"])
        drift = _read_drift_reference(path) if DRIFT_FILE in manifest["files"] else None
        calibration = (
            calibration_from_dict(json.loads((path / CALIBRATION_FILE).read_text()), len(LABELS))
            if CALIBRATION_FILE in manifest["files"]
            else None
        )
    except BundleError:
        raise
    except Exception as error:
        raise BundleError(f"corrupt bundle {path}: {type(error).__name__}: {error}") from error
    return ModelBundle(
        kind=kind.value,
        version=manifest["version"],
        estimator=estimator,
        tfidf=tfidf,
        data_fingerprint=manifest.get("data_fingerprint", ""),
        metrics=manifest.get("metrics") or {},
        drift_reference=drift,
        mlflow_run_id=manifest.get("mlflow_run_id"),
        labels=list(manifest["labels"]),
        contract_hash=manifest["contract_hash"],
        library_versions=manifest["library_versions"],
        calibration=calibration,
    )


def _read_drift_reference(path: Path) -> ReferenceProfile:
    """The one place a bundle's drift reference is parsed: every consumer gets the checked object."""
    data = json.loads((path / DRIFT_FILE).read_text())
    return ReferenceProfile.from_dict(data, f"drift reference of bundle {path}")


def _read_estimator(path: Path, kind: ModelKind, tfidf: Tfidf | None, files: Mapping[str, str]) -> Any:
    if kind is ModelKind.ENSEMBLE:
        weight = json.loads((path / ENSEMBLE_FILE).read_text())["weight"]
        return SoftVote(_read_transformer(path, files), _read_pipeline(path, tfidf), float(weight))
    if kind.needs_torch:
        return _read_transformer(path, files)
    return _read_pipeline(path, tfidf)


def _read_transformer(path: Path, files: Mapping[str, str]) -> Any:
    if f"{ONNX_FOLDER}/{SERVING_FILE}" in files:
        from libs.models.onnx_runtime import OnnxClassifier  # onnxruntime and tokenizers only

        return OnnxClassifier.load(path / ONNX_FOLDER)
    # A bundle saved before the ONNX export: torch and transformers are needed to serve it.
    from libs.models.transformer import DistilBertClassifier

    return DistilBertClassifier.load(path / ESTIMATOR_FOLDER)


def _read_pipeline(path: Path, tfidf: Tfidf | None) -> StarPipeline:
    try:
        estimator = skops.io.load(path / ESTIMATOR_FILE, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as error:
        raise BundleError(
            f"bundle {path}: {ESTIMATOR_FILE} holds types outside the trusted list: {error}"
        ) from None
    if not isinstance(estimator, StarPipeline):
        raise BundleError(
            f"bundle {path}: {ESTIMATOR_FILE} holds a {type(estimator).__name__}, not a StarPipeline"
        )
    estimator.attach(tfidf)
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if classes != LABELS:
        raise BundleError(f"bundle {path}: estimator classes {classes}, expected {LABELS}")
    return estimator
