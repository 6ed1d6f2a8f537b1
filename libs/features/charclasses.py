"""Python's character classes, spelt for the regex engine of the kernels (Rust `regex`, in Polars).

The feature rules were written with Python's `re` and `str` methods, and their meaning
is kept: for every code point that Python 3.11 knows (Unicode 14.0) each `UNICODE`
class matches exactly the characters its Python counterpart does (`charclasses_test`
checks all 1.1 million code points); code points assigned after Unicode 14.0 follow the
newer tables of the engine. `ASCII` spells the same classes for batches of ASCII text,
where they match the same characters and compile and run several times faster (a
single review pays mostly for compiling its patterns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Classes:
    """Regex class contents (to go inside `[...]`), named after their Python meaning."""

    word: str  # `re`'s \w: str.isalnum() or "_"
    space: str  # str.isspace() / `re`'s \s
    letter: str  # str.isalpha()
    upper: str  # str.isupper() of one character
    digit: str  # `re`'s \d


UNICODE = Classes(
    word=r"\p{L}\p{N}_",
    space=r"\s\x1c-\x1f",  # Rust's \s lacks the four information separators
    letter=r"\p{L}",
    upper=r"\p{Uppercase}",  # upper-case letters and Other_Uppercase (Ⓐ, Ⅰ)
    digit=r"\d",
)
ASCII = Classes(word=r"0-9A-Za-z_", space=r"\t-\r\x1c-\x20", letter=r"A-Za-z", upper=r"A-Z", digit=r"0-9")

SPACE_CHARS = "".join(filter(str.isspace, map(chr, range(0x3001))))
"""The characters `str.strip()` removes (all of them lie below U+3001)."""


def classes_for(*arrays: pa.Array | None) -> Classes:
    """`ASCII` when no text of these string arrays has a non-ASCII byte, else `UNICODE`."""
    return (
        UNICODE
        if any(_data(array).max(initial=0) >= 0x80 for array in arrays if array is not None)
        else ASCII
    )


def has_byte(byte: bytes, *arrays: pa.Array | None) -> bool:
    """Whether any text of these string arrays may hold `byte`."""
    return any((_data(array) == byte[0]).any() for array in arrays if array is not None)


def _data(array: pa.Array) -> np.ndarray:
    """The UTF-8 bytes behind a string array (a slice's whole buffer: a superset, which is safe)."""
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.empty(0, dtype=np.uint8)


def utf8_bytes(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's own UTF-8 bytes and its offsets into them (starting at 0)."""
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=width)[array.offset : array.offset + len(array) + 1]
    return _data(array)[offsets[0] : offsets[-1]], (offsets - offsets[0]).astype(np.int64)
