"""Scores a transformer bundle on ONNX Runtime with the `tokenizers` library: no torch, no transformers.

A transformer champion served through torch drags torch and transformers (about a
gigabyte, and seconds of import) into every serving container, though serving only runs
the forward pass. The bundle therefore carries its fine-tuned model exported to ONNX
(`libs.models.onnx_export`) and the fast tokenizer's `tokenizer.json`; this module is all
that serving needs to turn texts into 5-star probabilities from them.

Texts are tokenised once, sorted by length and cut into batches padded to their own
longest text (`length_groups`): a batch closes when it is full or when the next text
would pad its shortest by more than `PADDING_SLACK`. A large batch of reviews still runs
in full batches of near-equal length; a handful of requests the service coalesced, of
lengths from a line to a page, mostly run one by one, which is faster than padding them
all to the longest (1.4x for fp32 and 1.7x for int8 on groups of 8 real reviews, one
thread). Probabilities come back in the input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd
from tokenizers import Tokenizer

from libs.models.bundle import SERVING_FILE  # the export's settings: which file serves, padding
from libs.models.components import review_texts
from libs.models.kinds import LABELS

THREADS_ENV = "KINDLE_ONNX_THREADS"
"""ONNX Runtime's intra-op threads per process: 1 by default, since the service runs one API
worker per CPU (more threads per worker would oversubscribe the cores); 0 lets ONNX Runtime
use every core, for a lone process scoring large batches."""


PADDING_SLACK = 0.25
"""How much longer than a batch's shortest text its longest may be (padding is wasted work)."""


def length_groups(lengths: Sequence[int], batch_size: int, slack: float = PADDING_SLACK) -> list[list[int]]:
    """Row indices in batches of at most `batch_size`, sorted by length, where no text is
    padded beyond (1 + `slack`) times the batch's shortest."""
    groups: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if groups and len(groups[-1]) < batch_size and lengths[row] <= lengths[groups[-1][0]] * (1 + slack):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


@dataclass(frozen=True)
class ServingSettings:
    """What `serving.json` holds: the file that serves and how texts become model inputs."""

    model: str
    tokenizer: str
    max_length: int
    pad_id: int
    batch_size: int

    @classmethod
    def read(cls, folder: Path) -> ServingSettings:
        data = json.loads((folder / SERVING_FILE).read_text())
        return cls(
            model=str(data["model"]),
            tokenizer=str(data["tokenizer"]),
            max_length=int(data["max_length"]),
            pad_id=int(data["pad_id"]),
            batch_size=int(data["batch_size"]),
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def _threads() -> int:
    value = os.environ.get(THREADS_ENV, "1").strip() or "1"
    threads = int(value)
    if threads < 0:
        raise ValueError(f"{THREADS_ENV} must be 0 (all cores) or a positive count, got {value!r}")
    return threads


class OnnxClassifier:
    """`predict_proba`/`predict` of a transformer bundle's ONNX export, like DistilBertClassifier's."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        max_length: int,
        pad_id: int,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.max_length = max_length
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.classes_ = np.array(LABELS)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The saved tokenizer may remember a caller's padding or truncation: set both here.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _threads() if threads is None else threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, folder: Path, threads: int | None = None) -> OnnxClassifier:
        """The classifier `serving.json` in `folder` describes (the file it names serves)."""
        folder = Path(folder)
        settings = ServingSettings.read(folder)
        return cls(
            folder / settings.model,
            folder / settings.tokenizer,
            settings.max_length,
            settings.pad_id,
            settings.batch_size,
            threads,
        )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 5) logits in input order; batches of similar length (`length_groups`), each
        padded to its longest."""
        if not texts:
            return np.empty((0, len(LABELS)), dtype=np.float32)
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        result = np.empty((len(ids), len(LABELS)), dtype=np.float32)
        for rows in length_groups([len(row) for row in ids], self.batch_size):
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for line, row in enumerate(rows):
                input_ids[line, : len(ids[row])] = ids[row]
                mask[line, : len(ids[row])] = 1
            outputs: list[Any] = self.session.run(
                ["logits"], {"input_ids": input_ids, "attention_mask": mask}
            )
            result[rows] = outputs[0]
        return result

    def predict_proba(self, X: pd.DataFrame | Sequence[str]) -> np.ndarray:
        return _softmax(self.logits(review_texts(X)).astype(np.float64))

    def predict(self, X: pd.DataFrame | Sequence[str]) -> np.ndarray:
        result: np.ndarray = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return result
