"""Exports a fine-tuned transformer to ONNX (fp32 and dynamic int8) for torch-free serving.

Runs where the bundle is saved (training, with torch); what it writes is read by
`libs.models.onnx_runtime` with ONNX Runtime and `tokenizers` alone. The folder holds:

    model.onnx        fp32: input_ids, attention_mask (int64, dynamic batch and sequence) -> logits
    model.int8.onnx   the same with weights quantised to int8 (`quantize_dynamic`)
    tokenizer.json    the fast tokenizer
    serving.json      which of the two serves, max_length, pad id, batch size, and the check

The graph is fused before it is quantised (`_fuse`): the model is traced with eager
attention, whose subgraph ONNX Runtime's transformer optimizer recognises, and each
encoder layer's attention, GELU and residual layer norms become one fused operator
(`Attention`, `BiasGelu`, `SkipLayerNormalization`; int8: `QAttention`). Traced with
PyTorch's SDPA attention instead, the optimizer leaves attention as a dozen small
operators. On MiniLM-L6 with 2 threads, fused int8 scores real reviews 1.15-1.2x faster.

Which precision serves (`choose_precision`): int8 is about twice as fast on a CPU but may
move predictions, so it must earn its place.
- With a labelled check set (`LabelledCheck`, e.g. the training stage's validation
  frame): int8 if its macro-F1 stays within 0.005 of the torch model's.
- Without labels: int8 if it predicts the same star as fp32 on every check text and no
  probability moves by more than 0.05.
fp32 must match torch first (max probability difference 1e-4), or the export is refused:
a bundle whose ONNX model scores differently from the model that was evaluated is wrong.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnx import TensorProto
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
from sklearn.metrics import f1_score

from libs.models.bundle import SERVING_FILE
from libs.models.kinds import LABELS
from libs.models.onnx_runtime import OnnxClassifier

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 17
"""Within what onnxruntime 1.31 runs and what torch's TorchScript exporter writes."""
FP32_TOLERANCE = 1e-4
INT8_MAX_DIFF = 0.05
MACRO_F1_TOLERANCE = 0.005

CHECK_TEXTS: tuple[str, ...] = (
    "Great story, loved the characters",
    "Terrible. Stopped reading after two chapters.",
    "ok",
    "It was fine, nothing special, a bit long in the middle but the ending made up for it.",
    "Five stars! Could not put it down, read it in one night and bought the sequel.",
    "The formatting on my Kindle was broken and half the pages were missing.",
    "Meh.",
    "A slow start, then a wonderful, moving book about grief and friendship that I will "
    "recommend to everyone I know; the author writes with warmth and humour.",
    "Not worth the money.",
    "Decent read for a free book.",
    "I expected more from this author. The plot was predictable and the dialogue wooden.",
    "Loved it",
)
"""Review-like texts of mixed lengths the unlabelled rule compares fp32 and int8 on."""


@dataclass(frozen=True)
class LabelledCheck:
    """Texts with their true stars: the hook for the exact rule (int8 within 0.005 macro-F1).

    `torch_proba`, the torch model's probabilities on `texts` where the caller already has
    them (training scored validation at the end of the trial), saves scoring them again.
    """

    texts: Sequence[str]
    labels: Sequence[int]
    torch_proba: np.ndarray | None = None


@dataclass(frozen=True)
class Choice:
    precision: str  # "int8" or "fp32"
    rule: str
    evidence: dict[str, float]


def _macro_f1(labels: Sequence[int], proba: np.ndarray) -> float:
    predicted = np.asarray(LABELS)[np.argmax(proba, axis=1)]
    return float(f1_score(list(labels), predicted, labels=LABELS, average="macro", zero_division=0))


def choose_precision(
    torch_proba: np.ndarray,
    fp32_proba: np.ndarray,
    int8_proba: np.ndarray,
    labels: Sequence[int] | None = None,
) -> Choice:
    """int8 or fp32, by the module's rule: macro-F1 within 0.005 of torch's with labels, else
    the same argmax as fp32 everywhere and probabilities within 0.05."""
    agreement = float(np.mean(np.argmax(int8_proba, axis=1) == np.argmax(fp32_proba, axis=1)))
    max_diff = float(np.max(np.abs(int8_proba - fp32_proba))) if len(fp32_proba) else 0.0
    evidence = {"texts": float(len(fp32_proba)), "argmax_agreement": agreement, "max_abs_diff": max_diff}
    if labels is not None:
        torch_f1, int8_f1 = _macro_f1(labels, torch_proba), _macro_f1(labels, int8_proba)
        evidence |= {"macro_f1_torch": torch_f1, "macro_f1_int8": int8_f1}
        keep = int8_f1 >= torch_f1 - MACRO_F1_TOLERANCE
        return Choice("int8" if keep else "fp32", f"macro_f1_within_{MACRO_F1_TOLERANCE}", evidence)
    keep = agreement == 1.0 and max_diff <= INT8_MAX_DIFF
    return Choice("int8" if keep else "fp32", f"argmax_agrees_and_max_diff_<={INT8_MAX_DIFF}", evidence)


class _Logits(torch.nn.Module):
    """The classifier's forward pass as two tensors in, logits out: the ONNX graph's signature."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


def _export_fp32(model: torch.nn.Module, tokenizer: Any, max_length: int, path: Path) -> None:
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    cpu_model.set_attn_implementation("eager")  # the attention pattern `_fuse` recognises
    sample = tokenizer(
        list(CHECK_TEXTS[:2]), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.onnx.export(
            _Logits(cpu_model),
            (sample["input_ids"], sample["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _fuse(path: Path, config: Any) -> dict[str, int]:
    """Rewrites the fp32 graph at `path` with ONNX Runtime's fused transformer operators;
    returns {operator: count} of those it placed."""
    model = optimizer.optimize_model(
        str(path), model_type="bert", num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
    )  # fmt: skip
    model.save_model_to_file(str(path))
    return {name: count for name, count in model.get_fused_operator_statistics().items() if count}


def export_onnx(classifier: Any, folder: Path, check: LabelledCheck | None = None) -> dict[str, Any]:
    """Writes the ONNX folder of a fitted DistilBertClassifier; returns `serving.json`'s content.

    Raises ValueError when the fp32 export does not reproduce the torch model's probabilities.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = classifier.tokenizer_
    _export_fp32(classifier.model_, tokenizer, int(classifier.max_length), folder / FP32_FILE)
    fused = _fuse(folder / FP32_FILE, classifier.model_.config)
    quantize_dynamic(
        str(folder / FP32_FILE), str(folder / INT8_FILE), weight_type=QuantType.QInt8,
        # Fused operators carry no shape-inferred types; their outputs are float.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )  # fmt: skip
    tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    pad_id = int(tokenizer.pad_token_id)
    texts = list(check.texts) if check is not None else list(CHECK_TEXTS)

    def scorer(name: str) -> OnnxClassifier:
        return OnnxClassifier(
            folder / name, folder / TOKENIZER_FILE, int(classifier.max_length), pad_id,
            int(classifier.batch_size), threads=0,
        )  # fmt: skip

    known = check.torch_proba if check is not None else None
    if known is not None and np.shape(known) != (len(texts), len(LABELS)):
        shape = np.shape(known)
        raise ValueError(
            f"the check's torch probabilities have shape {shape}, not ({len(texts)}, {len(LABELS)})"
        )
    torch_proba = np.asarray(classifier.predict_proba(texts) if known is None else known, dtype=np.float64)
    fp32_proba = scorer(FP32_FILE).predict_proba(texts)
    fp32_diff = float(np.max(np.abs(fp32_proba - torch_proba))) if texts else 0.0
    if fp32_diff > FP32_TOLERANCE:
        raise ValueError(
            f"ONNX export differs from the torch model by {fp32_diff:.2e} in probability "
            f"(tolerance {FP32_TOLERANCE:.0e}): not saving a model that scores differently"
        )
    choice = choose_precision(
        torch_proba, fp32_proba, scorer(INT8_FILE).predict_proba(texts),
        list(check.labels) if check is not None else None,
    )  # fmt: skip
    settings = {
        "runtime": "onnxruntime",
        "model": INT8_FILE if choice.precision == "int8" else FP32_FILE,
        "precision": choice.precision,
        "fp32_model": FP32_FILE,
        "int8_model": INT8_FILE,
        "tokenizer": TOKENIZER_FILE,
        "max_length": int(classifier.max_length),
        "padding": "per batch of length-sorted texts, right, to the batch's longest",
        "pad_id": pad_id,
        "batch_size": int(classifier.batch_size),
        "opset": OPSET,
        "fused_operators": fused,
        "rule": choice.rule,
        "check": {**choice.evidence, "fp32_max_abs_diff_vs_torch": fp32_diff, "labelled": check is not None},
        "exported_with": {name: importlib.metadata.version(name) for name in ("torch", "transformers")},
    }
    (folder / SERVING_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True))
    return settings
