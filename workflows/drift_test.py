"""What the drift check says of the batch files it leaves out for another feature contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from libs.features import CONTRACT, compute_features
from libs.production import BatchWriter, load_production
from tests import fixtures
from workflows.drift import skipped_note


def test_the_batch_files_of_another_contract_are_counted_and_a_few_named(tmp_path: Path) -> None:
    reviews = fixtures.kindle_sample().head(40)
    features = compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    old = pa.Table.from_pandas(features[CONTRACT.numeric_names].iloc[:5], preserve_index=False)
    for n in range(5):
        pq.write_table(
            old.replace_schema_metadata({b"kindle_contract_hash": b"feedface"}),
            tmp_path / f"batch-20230101T00000{n}000000-old-1-00000{n}-00000000.parquet",
        )
    with BatchWriter(tmp_path, clock=lambda: 1_700_000_000.0) as writer:
        writer.write(features, [5] * len(features), "v2")
    data = load_production(tmp_path, datetime(2023, 6, 1, tzinfo=UTC))
    assert len(data.features) == 40
    note = skipped_note(data.skipped_files)
    assert note.startswith("5 batch file(s) of another feature contract skipped, not checked: ")
    assert "batch-20230101T000000000000-old-1-000000-00000000.parquet" in note
    assert "batch-20230101T000002000000-old-1-000002-00000000.parquet and 2 more" in note
    assert "000003-00000000" not in note
    assert skipped_note(()) == ""
