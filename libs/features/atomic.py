"""Atomic JSON files: every artefact the libraries save (vectoriser, drift profile,
live drift state) is read by another process, which must see the old file or the new
one, never half of one, even when the writer is killed mid-write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json(path: Path, data: object, indent: int | None = None) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it into place.

    The temporary file is removed whatever goes wrong; the error still propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=indent)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
