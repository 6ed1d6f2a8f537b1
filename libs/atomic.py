"""Atomic files: every artefact the libraries save (vectoriser, drift profile, live drift
state, production batches and feedback, model bundles) is read by another process, which
must see the old file or the new one, never half of one, even when the writer is killed
mid-write. One implementation for all of them, so every writer gets the same guarantee.

The new content goes to a hidden temporary file in the target's folder (`.<name>.<random>`,
which readers' patterns such as `batch-*.parquet` or `*.json` lookups by name never match),
is flushed to disk, and is renamed over the target; the folder is synced so the rename
survives a power cut too. A writer killed before the rename leaves only that hidden file.
Writers of whole folders (the model bundle) rename a folder instead and use `fsync` alone.
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
        fsync(temporary)
        os.replace(temporary, path)
        fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flushes a file's content, or a folder's entries (what makes a rename in it durable), to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json(path: Path, data: object, indent: int | None = None) -> None:
    """Writes `data` as JSON to `path` atomically (see the module docstring)."""
    with atomic_path(path) as temporary, temporary.open("w") as out:
        json.dump(data, out, indent=indent)
