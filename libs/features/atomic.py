"""Atomic files: every artefact the libraries save (vectoriser, drift profile, live drift
state, production batches) is read by another process, which must see the old file or the
new one, never half of one, even when the writer is killed mid-write.

The new content goes to a hidden temporary file in the target's folder (`.<name>.<random>`,
which readers' patterns such as `batch-*.parquet` or `*.json` lookups by name never match),
is flushed to disk, and is renamed over the target; the folder is synced so the rename
survives a power cut too. A writer killed before the rename leaves only that hidden file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write `path`'s new content to; on exit it becomes `path`.

    The temporary file is removed whatever goes wrong; the error still propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary, os.O_RDONLY)
        os.replace(temporary, path)
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json(path: Path, data: object, indent: int | None = None) -> None:
    """Writes `data` as JSON to `path` atomically (see the module docstring)."""
    with atomic_path(path) as temporary, temporary.open("w") as out:
        json.dump(data, out, indent=indent)
