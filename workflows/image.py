"""The task image and the resources of each kind of task.

Why an ImageSpec: `pyflyte register/package` needs an image name per task, and an
ImageSpec both names it and describes how to build it (Python 3.11 + the pinned lock),
so the cluster runs the versions the tests ran. Locally (`pyflyte run` without --remote)
the image is never built or pulled. Set KINDLE_IMAGE to use a prebuilt image instead.
"""

from __future__ import annotations

from pathlib import Path

from flytekit import ImageSpec

from workflows.settings import SETTINGS

REPO_ROOT = Path(__file__).absolute().parents[1]
LOCK_FILE = REPO_ROOT / "third_party" / "python" / "requirements_lock.txt"
TORCH_PIN_FILE = REPO_ROOT / "third_party" / "python" / "torch.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_pin() -> str:
    """`torch==X` as third_party/python/torch.txt pins it (the lock leaves torch out)."""
    for line in TORCH_PIN_FILE.read_text().splitlines():
        if line.startswith("torch=="):
            return line.split()[0]
    raise ValueError(f"{TORCH_PIN_FILE} pins no torch")


IMAGE_SPEC = ImageSpec(
    name="kindle-sentiment-workflows",
    python_version="3.11",
    # The same hash-checked lock Bazel and .venv use (pyspark, flytekit, mlflow, sklearn...).
    requirements=str(LOCK_FILE) if LOCK_FILE.is_file() else None,
    # torch's CPU build, for the transformer kind's task (a GPU node's image would take the
    # default index's CUDA build instead: docs/torch.md).
    packages=[torch_pin()] if TORCH_PIN_FILE.is_file() else None,
    pip_extra_index_url=[TORCH_CPU_INDEX],
    apt_packages=["openjdk-17-jre-headless"],  # Spark's JVM
    source_root=str(REPO_ROOT),
    registry=SETTINGS.image_registry,
    env={"PYTHONPATH": "/root", "PYSPARK_PYTHON": "python3"},
)

# By default tasks take the image of `pyflyte package/register --image`; KINDLE_IMAGE pins
# one; KINDLE_BUILD_IMAGE=true makes `pyflyte register` build the ImageSpec (Docker/envd).
TASK_IMAGE: str | ImageSpec | None = IMAGE_SPEC if SETTINGS.build_image else SETTINGS.image or None
"""None: the image given to `pyflyte package/register --image` (or the default)."""
