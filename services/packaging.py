"""Packaging a champion: bundle -> BentoML model -> Bento. Called by the training workflow.

The bundle travels as a BentoML model (`kindle-sentiment:<version>`) rather than as an
included folder: the Bento then records exactly which model it serves, `bentoml models
list` shows every imported champion, and `bentoml containerize` puts the model in the
image's model store, where the service finds it by tag. The bundle is loaded and checked
(contract hash, labels) before it is imported, so a Bento never packs a bad bundle.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import bentoml
import yaml

from libs.models.registry import CHAMPION, MODEL_NAME
from services.champion import check_bundle
from services.model_source import BUNDLE_DIR

REPO_ROOT = Path(__file__).absolute().parents[1]  # not resolve(): under Bazel, the runfiles tree
BENTOFILE = Path(__file__).with_name("bentofile.yaml")
LOCK_FILE = REPO_ROOT / "third_party" / "python" / "requirements_lock.txt"
TORCH_PIN_FILE = REPO_ROOT / "third_party" / "python" / "torch.txt"


def lock_pins(lock_file: Path = LOCK_FILE, torch_file: Path = TORCH_PIN_FILE) -> dict[str, str]:
    """{normalised distribution name: version} from the hash-checked lock file, and torch's
    pin, which lives outside the lock (a bundle saved before the ONNX export needs torch)."""
    pins = {}
    lines = lock_file.read_text().splitlines()
    lines += torch_file.read_text().splitlines() if torch_file.is_file() else []
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if match:
            pins[_normalise(match.group(1))] = match.group(2)
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _json_safe(value: Any) -> Any:
    """BentoML model metadata takes only basic values (not even None: absent keys are dropped)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value if v is not None]
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def import_bundle(bundle_path: str | Path, name: str = MODEL_NAME) -> bentoml.Model:
    """Validates the bundle and copies it into the BentoML model store; returns the model."""
    from libs.models.bundle import load_bundle

    bundle_path = Path(bundle_path)
    bundle = load_bundle(bundle_path)
    check_bundle(bundle)
    with bentoml.models.create(
        name,
        labels={
            "kind": str(bundle.kind),
            "bundle_version": re.sub(r"[^A-Za-z0-9_.\-]", "_", str(bundle.version)),
        },
        metadata=_json_safe(
            {
                "kind": bundle.kind,
                "version": bundle.version,
                "contract_hash": bundle.contract_hash,
                "mlflow_run_id": bundle.mlflow_run_id,
                "metrics": bundle.metrics,
            }
        ),
        module="services.packaging",
    ) as model:
        shutil.copytree(bundle_path, model.path_of(BUNDLE_DIR))
    return model


def dependency_closure(roots: list[str], pins: dict[str, str] | None = None) -> dict[str, str]:
    """Every distribution `roots` need at run time, pinned to the lock (else the installed version).

    The container installs exactly these versions, so it runs what the tests ran; pip
    would otherwise pick the newest transitive dependencies on the day of the build.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    pins = lock_pins() if pins is None else pins
    environments = _target_environments()
    closure: dict[str, str] = {}
    pending = [_normalise(root) for root in roots]
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            # Not installed here (e.g. torch for a torch champion in a sklearn-only Bazel
            # target): pin it from the lock; pip resolves its own dependencies.
            if name not in pins:
                raise RuntimeError(
                    f"{name} is needed by the Bento but neither installed nor locked"
                ) from None
            closure[name] = pins[name]
            continue
        closure[name] = pins.get(name, distribution.version)
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                pending.append(_normalise(requirement.name))
    return closure


def _target_environments() -> list[dict[str, str]]:
    """Marker environments the Bento installs in: this interpreter's, and the first release
    of its minor version, so that an older patch release (Debian 12's CPython is 3.11.2)
    gets its extra requirements pinned too (redis wants async-timeout below 3.11.3)."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [{"extra": ""}, {"extra": "", "python_full_version": f"{minor}.0"}]


def _bentofile_for(bundle_libraries: dict[str, str] | None, bentoml_base: bool = False) -> dict[str, Any]:
    """services/bentofile.yaml with its packages (plus any library the champion records
    that the lock knows) expanded to their full, lock-pinned dependency closure.

    `bentoml_base`: on BentoML's default base image (python:<this Python>-slim from Docker
    Hub) instead of the bentofile's, for machines that reach a registry.
    """
    config = yaml.safe_load(BENTOFILE.read_text())
    if bentoml_base:
        del config["docker"]["base_image"]
    pins = lock_pins()
    roots = [package.split("==")[0] for package in config["python"]["packages"]]
    roots += [library for library in bundle_libraries or {} if _normalise(library) in pins]
    closure = dependency_closure(roots, pins)
    config["python"]["packages"] = [f"{name}=={version}" for name, version in sorted(closure.items())]
    return config


def build_in_process(bundle_path: str | Path, version: str | None = None, bentoml_base: bool = False) -> str:
    """Import + build in this process (its BentoML home, its environment); returns the tag."""
    from libs.models.bundle import load_bundle

    # A BentoML installed from a wheel file (as .venv's is) would otherwise be required by
    # that file's URL, which no container has: the Bento names it by version instead.
    os.environ["BENTOML_NO_LOCAL_URL"] = "true"
    model = import_bundle(bundle_path)
    libraries = getattr(load_bundle(Path(bundle_path)), "library_versions", None)
    config = _bentofile_for(libraries, bentoml_base)
    # The alias pins the exact model: `latest` could later name a newer import.
    config["models"] = [{"tag": str(model.tag), "alias": CHAMPION}]
    with tempfile.TemporaryDirectory(prefix="kindle-bento-build-") as folder:
        context = _stage_context(config["include"], Path(folder) / "context")
        bentofile = Path(folder) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False))
        bento = bentoml.bentos.build_bentofile(str(bentofile), version=version, build_ctx=str(context))
    return str(bento.tag)


def _stage_context(include: list[str], context: Path) -> Path:
    """A build context holding real copies of exactly the included files.

    BentoML refuses files whose real path lies outside the context, and under Bazel every
    source is a symlink out of the runfiles tree; copying (following links) also keeps
    stray files of a working tree out of the Bento.
    """
    for pattern in include:
        for source in sorted(REPO_ROOT.glob(pattern)):
            if source.is_file() and "__pycache__" not in source.parts:
                target = context / source.relative_to(REPO_ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    return context


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Import a model bundle and build the service's Bento.")
    parser.add_argument("bundle_path", type=Path)
    parser.add_argument("--version", default=None)
    parser.add_argument(
        "--bentoml-base",
        action="store_true",
        help="build on BentoML's default base image (python:3.11-slim, from Docker Hub) "
        "instead of the bentofile's localhost/kindle-base:bookworm (tools/image_base.sh)",
    )
    args = parser.parse_args(argv)
    print(f"__tag__:{build_in_process(args.bundle_path, args.version, args.bentoml_base)}")


if __name__ == "__main__":
    main()
