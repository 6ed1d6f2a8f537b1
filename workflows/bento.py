"""Build the service's Bento around the champion bundle, through the service's own CLI.

Why a subprocess and not `import services`: workflows and services never import each
other (Bazel visibility enforces the layers). The contract between them is one command,
documented in services/README.md: `python -m services.packaging <bundle>` imports the
bundle into the BentoML model store, builds `services/bentofile.yaml` around it with
every package pinned from the lock file, and prints `__tag__:<name>:<version>`.

The child runs from the repository root without KINDLE_* variables, so the service
module imported by the build sees none of this process's settings. BENTOML_HOME picks
the stores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from flytekit import Resources, task
from flytekit.types.directory import FlyteDirectory

from workflows.image import TASK_IMAGE

REPO_ROOT = Path(__file__).absolute().parents[1]
_TAG_LINE = re.compile(r"__tag__:(\S+)")


class BentoBuildError(RuntimeError):
    """The Bento build failed; the message carries its output."""


def build(bundle_dir: Path, env: dict[str, str] | None = None, version: str | None = None) -> str:
    """Runs the service's packaging command on a bundle folder; returns the Bento tag.

    `env` adds to this process's environment (e.g. BENTOML_HOME, which picks the stores);
    KINDLE_* variables never reach the build.
    """
    if not (REPO_ROOT / "services" / "packaging.py").is_file():
        raise BentoBuildError(f"services/ not found under {REPO_ROOT}: the Bento is built from a checkout")
    child_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith("KINDLE_")}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "services.packaging", str(bundle_dir.resolve())]
    if version:
        command += ["--version", version]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=child_env, capture_output=True, text=True, timeout=900
    )
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
def build_bento(bundle: FlyteDirectory, promoted: bool, model_version: str, enabled: bool) -> str:
    """Builds the Bento for a promoted champion's bundle; returns its tag ("" when none is built).

    Not cached: the BentoML store is outside Flyte's view, and a cache hit would
    return the tag of a Bento that may have been deleted since.
    """
    if not enabled or not promoted:
        print(f"bento: not built ({'build_bento=false' if not enabled else 'no new champion'})")
        return ""
    tag = build(Path(bundle.download()))
    print(f"bento: built {tag} for registry version {model_version}")
    return tag
