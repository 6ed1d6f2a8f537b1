"""How much faster this CPU multiplies matrices in int8 than torch does in fp32: the ceiling
on what int8 serving can gain over plain torch.

A transformer's forward pass is mostly its dense layers' matrix products, so ONNX Runtime
int8 cannot run a model faster than plain torch by more than its int8 GEMM outruns torch's
fp32 GEMM. That factor depends on the CPU: with AVX-512 VNNI one instruction (`vpdpbusd`) does four
times the multiply-adds in int8 that an fp32 FMA does; AVX2 alone needs three
(`vpmaddubsw`, `vpmaddwd`, `vpaddd`) for the same work.

Measured on one of the model's own shapes, its feed-forward input layer (tokens x hidden
times hidden x intermediate), with random weights (speed does not depend on values), each
product timed as the mean of `REPEATS` after one warm-up:
- torch fp32: `x @ w` with torch's threads set to `threads`;
- ONNX Runtime fp32: a one-node `MatMul` graph;
- ONNX Runtime int8: that graph through `quantize_dynamic`, as the export quantises the
  model (int8 weights, activations quantised per call, so the call includes that cost).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from tools.benchmarks.report import Report, Row

TOKENS = 4096
"""Rows of the product: 64 reviews of 64 tokens, a typical serving batch."""
REPEATS = 20


def _matmul_graph(weights: np.ndarray, path: Path) -> None:
    hidden, out = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", out])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _seconds(product: Callable[[], object]) -> float:
    product()
    started = time.perf_counter()
    for _ in range(REPEATS):
        product()
    return (time.perf_counter() - started) / REPEATS


def gemm_seconds(hidden: int, intermediate: int, threads: int) -> dict[str, float]:
    """{engine: seconds per product} of (TOKENS x hidden) @ (hidden x intermediate)."""
    rng = np.random.default_rng(0)
    weights = (0.05 * rng.standard_normal((hidden, intermediate))).astype(np.float32)
    tokens = rng.standard_normal((TOKENS, hidden)).astype(np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="int8-ceiling-") as tmp:
        fp32, int8 = Path(tmp) / "dense.onnx", Path(tmp) / "dense.int8.onnx"
        _matmul_graph(weights, fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        sessions = {
            name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("onnx fp32", fp32), ("onnx int8", int8))
        }
        x, w = torch.from_numpy(tokens), torch.from_numpy(weights)
        result = {"torch fp32": _seconds(lambda: x @ w)}
        for name, session in sessions.items():
            result[name] = _seconds(lambda session=session: session.run(None, {"x": tokens}))
    return result


def ceiling_rows(
    report: Report, benchmark: str, hidden: int, intermediate: int, threads: int
) -> dict[str, float]:
    """Adds a row per engine (GFLOP/s and speed over torch fp32); returns `gemm_seconds`."""
    seconds = gemm_seconds(hidden, intermediate, threads)
    flops = 2.0 * TOKENS * hidden * intermediate
    settings = {"shape": f"{TOKENS}x{hidden} @ {hidden}x{intermediate}", "threads": threads}
    for engine, spent in seconds.items():
        metrics: dict[str, float | int | str] = {
            "gflop_per_s": flops / spent / 1e9,
            "ms": 1e3 * spent,
            "vs_torch_fp32": seconds["torch fp32"] / spent,
        }
        report.add(Row(benchmark, f"GEMM {engine}", settings, metrics))
    return seconds
