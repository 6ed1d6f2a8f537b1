"""Build the service's Bento around the champion bundle, with the `bentoml build` CLI.

Why a subprocess and not `import services`: workflows and services never import each
other (Bazel visibility enforces the layers). The contract between them is files and
names, all documented in services/README.md:

- the bundle goes into the BentoML model store as `kindle-sentiment:<version>`, the
  bundle folder at `bundle/` inside the model (services.runtime's MODEL_NAME/BUNDLE_DIR);
- the Bento is `services/bentofile.yaml` with that model declared under the alias
  `champion`, which the service resolves at start;
- `bentoml build -o tag` prints `__tag__:<name>:<version>`.

The build runs from the repository root (the bentofile's `include` paths are relative to
it) in a child process without KINDLE_* variables, so the service module imported by
the build sees none of this process's settings. BENTOML_HOME picks the stores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bentoml
import yaml
from flytekit import Resources, task
from flytekit.types.directory import FlyteDirectory

from workflows.image import TASK_IMAGE

REPO_ROOT = Path(__file__).absolute().parents[1]
BENTOFILE = REPO_ROOT / "services" / "bentofile.yaml"
MODEL_NAME = "kindle-sentiment"  # services/README.md: "the BentoML model kindle-sentiment:<version>"
BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model (services.runtime.BUNDLE_DIR)
MODEL_ALIAS = "champion"  # the alias the service resolves inside a Bento (KINDLE_BENTO_MODEL)
_TAG_LINE = re.compile(r"__tag__:(\S+)")


class BentoBuildError(RuntimeError):
    """`bentoml build` failed; the message carries its output."""


def bentofile_for(model_tag: str, bentofile: Path = BENTOFILE) -> dict:
    """services/bentofile.yaml plus the imported model under the alias `champion`."""
    if not bentofile.is_file():
        raise BentoBuildError(f"{bentofile} not found: the services package is not in this checkout")
    config = yaml.safe_load(bentofile.read_text())
    config["models"] = [{"tag": model_tag, "alias": MODEL_ALIAS}]
    return config


def import_bundle(bundle_dir: Path, labels: dict[str, str], metadata: dict) -> str:
    """Copies the bundle into the BentoML model store; returns the model tag."""
    safe_labels = {k: re.sub(r"[^A-Za-z0-9_.\-]", "_", str(v))[:63] for k, v in labels.items()}
    safe_metadata = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}
    with bentoml.models.create(
        MODEL_NAME, labels=safe_labels, metadata=safe_metadata, module="workflows.bento"
    ) as model:
        shutil.copytree(bundle_dir, model.path_of(BUNDLE_DIR))
    return str(model.tag)


def build(model_tag: str, version: str | None = None, repo_root: Path = REPO_ROOT) -> str:
    """Runs `bentoml build` on the derived bentofile; returns the Bento tag."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KINDLE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    cli = Path(sys.executable).with_name("bentoml")
    base = [str(cli)] if cli.is_file() else [sys.executable, "-m", "bentoml"]
    with tempfile.TemporaryDirectory(prefix="kindle-bentofile-") as folder:
        bentofile = Path(folder) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(bentofile_for(model_tag), sort_keys=False))
        command = [*base, "build", "-f", str(bentofile), "--output", "tag", str(repo_root)]
        if version:
            command[2:2] = ["--version", version]
        result = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    match = _TAG_LINE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise BentoBuildError(
            f"`{' '.join(command)}` failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return match.group(1)


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def build_bento(bundle: FlyteDirectory, model_version: str, run_id: str, enabled: bool) -> str:
    """Imports the champion bundle and builds the Bento; returns its tag ("" when disabled).

    Not cached: the BentoML store is outside Flyte's view, and a cache hit would
    return the tag of a Bento that may have been deleted since.
    """
    if not enabled:
        print("bento: build skipped (build_bento=false)")
        return ""
    local = Path(bundle.download())
    model_tag = import_bundle(
        local,
        labels={"registry_version": model_version, "mlflow_run_id": run_id},
        metadata={"registry_version": model_version, "mlflow_run_id": run_id},
    )
    tag = build(model_tag)
    print(f"bento: built {tag} (model {model_tag})")
    return tag
