"""Where outside values become text: the one place input strings are made safe.

Reviews arrive from CSV files, Spark rows and JSON requests. Whatever arrives (None,
NaN, numbers, lone surrogates from bad JSON escapes, control characters), the kernels
must get valid UTF-8, so every path turns its values into an Arrow string array here
first; the kernels bound the length (`MAX_TEXT_CHARS`) themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyarrow as pa

# Texts longer than this are cut before feature extraction: the cost of a feature call
# must be bounded whatever a client sends (the service's own limit is lower).
MAX_TEXT_CHARS = 100_000


def as_text(value: object) -> str:
    """Any value as a valid, bounded Python string (None and NaN become empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[:MAX_TEXT_CHARS]
    # Lone surrogates cannot be encoded to UTF-8 (Arrow, Parquet and JSON all need it).
    return text.encode("utf-8", "replace").decode("utf-8")


def text_array(values: Sequence[object] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Values as an Arrow string array (null for None and NaN), ready for the kernels.

    Arrow arrays pass through; strings, None and NaN are converted in one Arrow call.
    Only a batch holding something else (numbers, lone surrogates) goes through
    `as_text` value by value, so ordinary batches never run Python per row.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array) and (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        return values
    try:
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):
        return pa.array([as_text(value) for value in values], type=pa.large_string())
