"""Where the champion comes from: a bundle folder, an MLflow alias, or the BentoML model store.

A champion from MLflow is downloaded into a temporary folder of its own, which the loader
removes as soon as the bundle is loaded (it is served from memory) or refused: a server
that follows its alias for months must not fill its disk with old downloads, and nothing
is left to clean up at exit (BentoML's workers exit without running `atexit` handlers).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bentoml

from libs.models.registry import CHAMPION, MODEL_NAME
from services.settings import ServiceSettings

logger = logging.getLogger("kindle.runtime")

BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model
DOWNLOAD_PREFIX = "kindle-mlflow-"  # temporary folders of MLflow downloads, in the system temp dir


@dataclass(frozen=True)
class Source:
    """Where a bundle was found: its folder, a description for logs and metadata, and the
    temporary download folder holding it (MLflow only), to remove once it is loaded."""

    path: Path
    description: str
    download_dir: Path | None = None


def bento_model(settings: ServiceSettings) -> bentoml.Model | None:
    """The bundle's entry in the BentoML model store (inside a Bento: the Bento's own models)."""
    candidates = [settings.bento_model]
    if settings.bento_model == CHAMPION:  # not inside a Bento: the newest import
        candidates.append(f"{MODEL_NAME}:latest")
    for tag in candidates:
        try:
            return bentoml.models.get(tag)
        except Exception as error:
            logger.debug("no BentoML model %s: %s", tag, error)
    return None


def _download_from_mlflow(settings: ServiceSettings, version: str | None = None) -> tuple[Path, Path]:
    """(bundle folder, the temporary folder holding it) of the MLflow registry's `version`,
    else the alias's; the temporary folder is the caller's to remove."""
    import mlflow  # only when configured: the Bento does not need mlflow otherwise

    from libs.models.bundle import MANIFEST

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    name = settings.model_name
    uri = f"models:/{name}/{version}" if version else f"models:/{name}@{settings.mlflow_alias}"
    folder = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
        manifests = list(local.rglob(MANIFEST))
        if not manifests:  # e.g. the artifact store lost the files: not a bundle to refuse
            raise FileNotFoundError(
                f"{uri} downloaded no {MANIFEST}: its files are not in the artifact store"
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # A bundle is the folder holding the manifest; it may sit one level down (the first in
    # path order: the download itself when it holds one, since a path sorts before its subpaths).
    return min(manifest.parent for manifest in manifests), folder


def _mlflow_configured(settings: ServiceSettings) -> bool:
    return bool(settings.mlflow_tracking_uri)


def resolve_bundle_path(settings: ServiceSettings, mlflow_version: str | None = None) -> Source:
    """Where the champion is now; raises with a reason when there is none."""
    if settings.bundle_path is not None:
        return Source(settings.bundle_path, f"path {settings.bundle_path}")
    if _mlflow_configured(settings):
        path, download_dir = _download_from_mlflow(settings, mlflow_version)
        pinned = f" (version {mlflow_version})" if mlflow_version else ""
        described = f"mlflow {settings.model_name}@{settings.mlflow_alias}{pinned}"
        return Source(path, described, download_dir)
    model = bento_model(settings)
    if model is None:
        raise FileNotFoundError(
            f"no bundle: KINDLE_BUNDLE_PATH unset, MLflow not configured and BentoML model "
            f"{settings.bento_model!r} not found"
        )
    return Source(Path(model.path_of(BUNDLE_DIR)), f"bentoml model {model.tag}")


def source_fingerprint(settings: ServiceSettings) -> str | None:
    """What the source points at now, cheaply: a changed value means a new champion may be there.

    A bundle folder: its real path (a symlink swap changes it) and its manifest's inode,
    size and mtime (an atomic rename of a new bundle changes them; `save_bundle` writes the
    manifest last). MLflow: the alias's version number (one registry call). The Bento's
    own model never changes while the server runs: None.
    """
    if settings.bundle_path is not None:
        from libs.models.bundle import MANIFEST  # model code, imported when first needed (not by the arbiter)

        real = os.path.realpath(settings.bundle_path)
        try:
            stat = os.stat(os.path.join(real, MANIFEST))
        except OSError as error:
            return f"{real}|{type(error).__name__}"
        return f"{real}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
    if _mlflow_configured(settings):
        return _alias_version(settings)
    return None


def _alias_version(settings: ServiceSettings) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    return str(client.get_model_version_by_alias(settings.model_name, settings.mlflow_alias).version)
