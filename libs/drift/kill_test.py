"""SIGKILL mid-write: a real child process writing a production batch (Parquet) or a JSON
artefact is killed once its hidden temporary file has data in it. Nothing complete-looking
may be left, readers must ignore the leftover, and the next write must succeed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from libs.drift import BatchWriter, read_batches
from libs.features import CONTRACT
from tests.fixtures.processes import sigkill_when

# Big enough that writing takes far longer than the parent's 5 ms poll, so the kill lands
# while the temporary file is being filled (the test fails, saying so, if it ever does not).
BIG_BATCH = """
import sys
import numpy as np, pandas as pd
from libs.drift import BatchWriter
from libs.features import CONTRACT
rows = 3_000_000
frame = pd.DataFrame({name: np.random.default_rng(0).random(rows) for name in CONTRACT.numeric_names})
BatchWriter(sys.argv[1], rows_per_file=rows).write(frame, ["5"] * rows)
"""

BIG_JSON = """
import sys
from pathlib import Path
from libs.features.atomic import write_json
write_json(Path(sys.argv[1]), {"values": [i / 7 for i in range(4_000_000)]})
"""


def kill_mid_write(code: str, target: str, folder: Path) -> list[Path]:
    """Runs `code` in a child, SIGKILLs it once a hidden file in `folder` has data in it;
    returns the hidden leftovers."""

    def writing() -> bool:
        return any(p.is_file() and p.stat().st_size > 0 for p in folder.glob(".*"))

    sigkill_when(code, [target], writing)
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def small_features(rows: int) -> pd.DataFrame:
    return pd.DataFrame({name: [float(i) for i in range(rows)] for name in CONTRACT.numeric_names})


def test_a_batch_writer_killed_mid_write_leaves_no_batch_and_the_next_one_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "batches"
    folder.mkdir()
    leftovers = kill_mid_write(BIG_BATCH, str(folder), folder)
    assert leftovers and all(p.name.startswith(".batch-") for p in leftovers), leftovers
    assert not list(folder.glob("batch-*.parquet")), "a complete-looking batch after the kill"
    with pytest.raises(FileNotFoundError, match="no batch"):
        read_batches(folder)

    with BatchWriter(folder) as writer:
        writer.write(small_features(30), ["4"] * 30)
    batches = read_batches(folder)
    assert len(batches) == 30 and set(batches["predicted_label"]) == {"4"}


def test_a_json_write_killed_mid_way_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text(json.dumps({"values": [1, 2, 3]}))
    leftovers = kill_mid_write(BIG_JSON, str(target), tmp_path)
    assert leftovers and all(p.name.startswith(".state.json.") for p in leftovers), leftovers
    with pytest.raises(ValueError):
        json.loads(leftovers[0].read_text())  # the leftover really is half a file
    assert json.loads(target.read_text()) == {"values": [1, 2, 3]}
    assert sorted(tmp_path.glob("*.json")) == [target]

    from libs.features.atomic import write_json

    write_json(target, {"values": [4]})
    assert json.loads(target.read_text()) == {"values": [4]}
