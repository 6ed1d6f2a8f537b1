"""SIGKILL mid-write: a real child process writing a production batch (Parquet) is killed
once its hidden temporary file has data in it. Nothing complete-looking may be left, readers
must ignore the leftover, and the next write must succeed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from libs.features import CONTRACT
from libs.production import BatchWriter, read_batches
from tests.fixtures.processes import kill_mid_write

# Big enough that writing takes far longer than the parent's 5 ms poll, so the kill lands
# while the temporary file is being filled (the test fails, saying so, if it ever does not).
BIG_BATCH = """
import sys
import numpy as np, pandas as pd
from libs.production import BatchWriter
from libs.features import CONTRACT
rows = 3_000_000
frame = pd.DataFrame({name: np.random.default_rng(0).random(rows) for name in CONTRACT.numeric_names})
BatchWriter(sys.argv[1], rows_per_file=rows).write(frame, ["5"] * rows)
"""


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
