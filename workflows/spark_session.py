"""The Spark session of a Spark task, with this project's code on every executor.

In `local[N]` the executors' Python workers are children of this process and import the
project the way it does. On a cluster they run on workers that have the lock's
dependencies installed (the task image, or a `pip install` of the lock) but not this
checkout: a task that left it at that would fail on the first UDF with
`ModuleNotFoundError: libs`, or, worse, run whatever older copy a worker happens to hold.
So on any other master the task ships the code it runs itself: a zip of the project's
packages, added to the session (`SparkContext.addPyFile`), which puts it first on every
Python worker's import path.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import shutil
import tempfile
import zipfile
from pathlib import Path

from flytekit import current_context
from pyspark.sql import SparkSession

import libs
import workflows

SHIPPED_PACKAGES = (libs, workflows)
"""What a Spark task's executors import: the features and readers (libs, workflows), and
what those import."""
_SHIPPED_TO: set[str] = set()  # Spark applications that have the zip (one per task chain)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entries carry no build time: same code, same bytes


def _sources(package_dir: Path) -> list[Path]:
    """A package's Python modules, without its tests."""
    return sorted(
        path
        for path in package_dir.rglob("*.py")
        if not path.name.endswith("_test.py") and "__pycache__" not in path.parts
    )


def archive_bytes() -> bytes:
    """The shipped packages as a zip whose bytes depend on their sources alone."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in SHIPPED_PACKAGES:
            package_dir = Path(package.__path__[0])
            for path in _sources(package_dir):
                entry = zipfile.ZipInfo(str(path.relative_to(package_dir.parent)), _FIXED_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, path.read_bytes())
    return buffer.getvalue()


@functools.cache
def project_archive() -> Path:
    """The zip in a folder of this process, named by its content hash: Spark refuses a second
    file of one name with other bytes, and the same code keeps the same name."""
    data = archive_bytes()
    name = f"kindle-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    folder = Path(tempfile.mkdtemp(prefix="kindle-code-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # served to executors until then
    path = folder / name
    path.write_bytes(data)
    return path


def ship_project_code(session: SparkSession) -> None:
    """Adds the project's zip to `session` unless its executors share this process's imports."""
    context = session.sparkContext
    if context.master.startswith("local") or context.applicationId in _SHIPPED_TO:
        return
    context.addPyFile(str(project_archive()))
    _SHIPPED_TO.add(context.applicationId)


def task_session() -> SparkSession:
    """The session the Flyte Spark plugin made for the running task, ready for its UDFs."""
    session: SparkSession = current_context().spark_session
    ship_project_code(session)
    return session
