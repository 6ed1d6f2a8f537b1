"""Serving: the BentoML service over HTTP and gRPC vs a plain FastAPI app, one at a time.

One champion (logistic regression trained on the real Kindle reviews) is packed into a
Bento and served three ways, each measured alone on loopback: `bentoml serve` and
`bentoml serve-grpc` with the product's default configuration, and the FastAPI + uvicorn
baseline (`serving_baseline.py`) with as many workers and no access log. Load:

- wrk (`serving_wrk.lua`): single-review `predict` requests drawn from real reviews at
  concurrency 1, 16 and 64, and batches of 100 and 1,000 reviews (texts/s);
- the Python asyncio client (`serving_client.py`) at the same concurrencies, over gRPC
  and over HTTP, so the two protocols are compared with the same kind of client.

Each point is warmed up first; server CPU (% of the machine) and peak RSS cover the
server's whole process tree during the measured seconds only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

from services.packaging import REPO_ROOT
from services.settings import ServiceSettings
from tests import fixtures
from tests.fixtures.models import train_small_bundle
from tests.fixtures.servers import ServerProcess, started
from tests.fixtures.service import Server, python_path
from tools.benchmarks.report import PeakRss, Report, Row
from tools.benchmarks.serving_profile import Sampler
from workflows.bento import build

HERE = Path(__file__).parent
WRK_SCRIPT = HERE / "serving_wrk.lua"
CONFIGURATION = REPO_ROOT / "services" / "configuration.yaml"
CONCURRENCY = (1, 16, 64)
BATCHES = (100, 1_000)
BATCH_CONCURRENCY = 4  # batch clients: enough to keep every worker busy, not a crowd


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup: float
    train_rows: int | None  # None: every labelled review of the sample
    concurrency: tuple[int, ...]
    batches: tuple[int, ...]


FULL = Plan(seconds=12.0, warmup=3.0, train_rows=None, concurrency=CONCURRENCY, batches=BATCHES)
# Smoke: every server and every load type once, in well under a minute.
QUICK = Plan(seconds=2.0, warmup=1.0, train_rows=400, concurrency=(64,), batches=(100,))


def api_workers() -> int:
    """The service's API worker count under the product's configuration (null: one per CPU)."""
    configured = yaml.safe_load(CONFIGURATION.read_text())["api_server"]["workers"]
    return int(configured) if configured else os.cpu_count() or 1


# --------------------------------------------------------------------------- request bodies


def write_bodies(
    reviews: pd.DataFrame, folder: Path, batches: tuple[int, ...], seed: int = 11
) -> dict[int, Path]:
    """{reviews per request: file of pre-encoded `predict` bodies, one per line}."""
    texts = reviews["reviewText"].tolist()
    summaries = [None if isinstance(s, float) else s for s in reviews["summary"]]
    rng = np.random.default_rng(seed)
    files = {}
    for size, count in [(1, 2_000), *((b, max(4, 4_000 // b)) for b in batches)]:
        lines = []
        for _ in range(count):
            rows = rng.choice(len(texts), size=size, replace=False)
            body = {"texts": [texts[i] for i in rows], "summaries": [summaries[i] for i in rows]}
            lines.append(json.dumps(body))
        files[size] = folder / f"bodies_{size}.jsonl"
        files[size].write_text("\n".join(lines) + "\n")
    return files


# --------------------------------------------------------------------------- server-side meters


@dataclass
class ServerUsage:
    cpu_s: float  # CPU seconds of the whole process tree
    cpu_pct: float  # of the whole machine (100 = every core busy)
    peak_rss_mb: float
    worker_cpu_pct: list[float]  # the busiest processes, one per worker (100 = one core)

    @property
    def balance(self) -> float:
        """Least over most busy worker: near 1 when the connections are spread over the
        workers, near 0 when one worker got them all."""
        busiest = max(self.worker_cpu_pct, default=0.0)
        return min(self.worker_cpu_pct) / busiest if busiest else float("nan")

    def metrics(self, requests: int) -> dict[str, float | str]:
        """CPU per request compares servers even when the load generator, not the server, is
        the bottleneck (the Python clients at high concurrency)."""
        return {
            "server_cpu_pct": self.cpu_pct,
            "server_cpu_ms_per_req": 1e3 * self.cpu_s / requests if requests else float("nan"),
            "worker_cpu_pct": "/".join(f"{pct:.0f}" for pct in self.worker_cpu_pct),
            "server_peak_rss_mb": self.peak_rss_mb,
        }


def _cpu_seconds(pid: int) -> dict[int, float]:
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for process in tree:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


@contextmanager
def metered(server: ServerProcess, workers: int) -> Iterator[list[ServerUsage]]:
    """CPU (all told and per worker) and peak RSS of the server's process tree while the
    block runs."""
    usage: list[ServerUsage] = []
    before, started = _cpu_seconds(server.process.pid), time.perf_counter()
    rss = PeakRss(server.process.pid)
    yield usage
    after, wall = _cpu_seconds(server.process.pid), time.perf_counter() - started
    used = {pid: value - before.get(pid, 0.0) for pid, value in after.items()}
    per_worker = sorted((100 * seconds / wall for seconds in used.values()), reverse=True)[:workers]
    total = sum(used.values())
    usage.append(
        ServerUsage(total, 100 * total / (wall * (os.cpu_count() or 1)), rss.stop() / 2**20, per_worker)
    )


# --------------------------------------------------------------------------- load generators


RECONNECT_REVIEWS = 50
"""wrk closes a connection (`Connection: close`) about once per this many reviews sent, at
least every request, and opens a new one. Keep-alive connections stay with the worker that
accepted them, and the worker that wakes first can accept all 64 at once; a new connection
goes to a worker that is free to accept it, so the load spreads over the workers the same
way in every system. A connection costs both systems the same, and little next to 50 reviews."""


def run_wrk(url: str, bodies: Path, size: int, concurrency: int, seconds: float) -> dict[str, float]:
    threads = min(2, concurrency)
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, math.ceil(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(WRK_SCRIPT), url, "--", str(bodies)]
    command.append(str(max(1, RECONNECT_REVIEWS // size)))
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


BALANCE_ATTEMPTS = 3
"""A loaded run whose connections landed mostly on one worker is run again, on new
connections, at most this many times (the attempts are reported)."""
BALANCED = 0.7


def wrk_points(
    report: Report,
    system: str,
    server: ServerProcess,
    bodies: dict[int, Path],
    plan: Plan,
    workers: int,
    benchmark: str = "serving",
) -> dict[tuple[int, int], dict]:
    """Single reviews at each concurrency, then batches; {(reviews, concurrency): metrics}.

    wrk's new connections (RECONNECT_REVIEWS) spread the load over the workers; a run
    whose busiest worker still worked more than 1 / BALANCED times its least busy one is
    repeated, and the attempts are reported."""
    points = [(1, c) for c in plan.concurrency] + [(size, BATCH_CONCURRENCY) for size in plan.batches]
    results = {}
    for size, concurrency in points:
        url = f"{server.url}/predict"
        run_wrk(url, bodies[size], size, concurrency, plan.warmup)
        attempts = 0
        while True:
            attempts += 1
            with metered(server, workers) as usage:
                measured = run_wrk(url, bodies[size], size, concurrency, plan.seconds)
            unbalanced = concurrency >= 2 * workers and usage[0].balance < BALANCED
            if not unbalanced or attempts == BALANCE_ATTEMPTS:
                break
        seconds = measured["duration_us"] / 1e6
        metrics = {
            "req_per_s": measured["requests"] / seconds,
            "texts_per_s": measured["requests"] * size / seconds,
            "p50_ms": measured["p50_us"] / 1e3,
            "p95_ms": measured["p95_us"] / 1e3,
            "p99_ms": measured["p99_us"] / 1e3,
            "errors": measured["status_errors"] + measured["socket_errors"] + measured["timeouts"],
            "requests": measured["requests"],
            **usage[0].metrics(measured["requests"]),
            "attempts": attempts,
        }
        settings = {"load": "wrk", "concurrency": concurrency, "reviews_per_request": size}
        settings |= {"workers": workers, "seconds": plan.seconds}
        report.add(Row(benchmark, system, settings, metrics))
        results[(size, concurrency)] = metrics
    return results


def client_points(
    report: Report, system: str, server: ServerProcess, bodies: Path, plan: Plan, workers: int
) -> dict[int, dict]:
    """The Python asyncio client (own process) at each concurrency; {concurrency: metrics}.

    The client announces each measured phase on stdout, so the server meters cover exactly
    the measured seconds, not the client's start-up or warm-up."""
    command = [sys.executable, "-m", "tools.benchmarks.serving_client", server.protocol, str(server.port)]
    command += [str(bodies), "--concurrency", ",".join(map(str, plan.concurrency))]
    command += ["--seconds", str(plan.seconds), "--warmup", str(plan.warmup)]
    # BentoML's generated gRPC stubs import a deprecated protobuf module: not our output.
    env = {**os.environ, "PYTHONPATH": python_path(), "PYTHONWARNINGS": "ignore::UserWarning"}
    tool = "grpc.aio" if server.protocol == "grpc" else "aiohttp"
    results = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as client:
        assert client.stdout is not None
        meter = None
        for line in client.stdout:
            message = json.loads(line)
            if message.get("phase") == "start":
                meter = metered(server, workers)
                usage = meter.__enter__()
                continue
            assert meter is not None
            meter.__exit__(None, None, None)
            concurrency = message["concurrency"]
            metrics = {
                "req_per_s": message["requests"] / message["duration_s"],
                "texts_per_s": message["requests"] / message["duration_s"],
                "p50_ms": message["p50_s"] * 1e3,
                "p95_ms": message["p95_s"] * 1e3,
                "p99_ms": message["p99_s"] * 1e3,
                "errors": message["errors"],
                "requests": message["requests"],
                **usage[0].metrics(message["requests"]),
            }
            settings = {"load": tool, "concurrency": concurrency, "reviews_per_request": 1}
            settings |= {"workers": workers, "seconds": plan.seconds}
            report.add(Row("serving", system, settings, metrics))
            results[concurrency] = metrics
    if client.returncode != 0:
        raise RuntimeError(f"load client failed ({client.returncode})")
    return results


def profile_points(
    report: Report, system: str, server: ServerProcess, bodies: dict[int, Path], plan: Plan, workers: int
) -> None:
    """The server's CPU per request split into stages (`serving_profile`), for its largest
    batches and for lone requests at concurrency 1, measured under py-spy."""
    for size, concurrency in ((max(plan.batches), BATCH_CONCURRENCY), (1, 1)):
        url = f"{server.url}/predict"
        run_wrk(url, bodies[size], size, concurrency, plan.warmup)
        with tempfile.TemporaryDirectory(prefix="serving-profile-") as tmp:
            sampler = Sampler(server.process.pid, plan.seconds, Path(tmp) / "samples.txt")
            with metered(server, workers) as usage:
                measured = run_wrk(url, bodies[size], size, concurrency, plan.seconds - 1)
            shares = sampler.stop()
        cpu_ms = 1e3 * usage[0].cpu_s / measured["requests"]
        metrics: dict[str, float | int | str] = {"cpu_ms_per_req": cpu_ms}
        metrics |= {f"{stage} ms": share * cpu_ms for stage, share in shares.items()}
        settings = {"load": "wrk + py-spy", "concurrency": concurrency, "reviews_per_request": size}
        report.add(Row("serving profile", system, settings, metrics))


# --------------------------------------------------------------------------- servers


def baseline_server(bundle: Path, work: Path, workers: int) -> ServerProcess:
    """FastAPI in its best configuration here: gunicorn's uvicorn workers (plain
    `uvicorn --workers` answers a lone request tens of milliseconds late), one Polars thread
    per worker like the service."""
    command = [sys.executable, "-m", "gunicorn", "tools.benchmarks.serving_baseline:app"]
    command += ["-k", "uvicorn.workers.UvicornWorker", "-w", str(workers), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": python_path(), "KINDLE_BASELINE_BUNDLE": str(bundle)}
    env["POLARS_MAX_THREADS"] = "1"
    return ServerProcess(
        "fastapi", lambda ports: ([*command, "--bind", f"127.0.0.1:{ports[0]}"], env), work / "fastapi.log"
    )


def product_env() -> dict[str, str]:
    """What a benchmarked `Server` needs to run with the product's defaults: its drift
    cadence (the test kit's servers recompute more often)."""
    return {"KINDLE_DRIFT_RECOMPUTE_ROWS": str(ServiceSettings.model_fields["drift_recompute_rows"].default)}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def run(report: Report, quick: bool) -> None:
    plan = QUICK if quick else FULL
    workers = api_workers()
    reviews = fixtures.kindle_reviews()
    limit = ServiceSettings.model_fields["max_text_chars"].default
    servable = reviews[reviews["reviewText"].str.len() <= limit]
    env = product_env()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        work = Path(tmp)
        training = reviews if plan.train_rows is None else reviews.head(plan.train_rows)
        bundle = train_small_bundle(training, work / "bundle")
        home = work / "bentoml_home"
        home.mkdir()
        tag = build(bundle, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
        bodies = write_bodies(servable, work, plan.batches)
        print(f"  serving: champion and Bento ready in {time.perf_counter() - began:.0f} s", flush=True)

        with started(Server("http", "http", tag, home, work, env, api_workers=None)) as http:
            http_wrk = wrk_points(report, "bentoml http", http, bodies, plan, workers)
            http_py = client_points(report, "bentoml http", http, bodies[1], plan, workers)
            profile_points(report, "bentoml http", http, bodies, plan, workers)
        with started(Server("grpc", "grpc", tag, home, work, env, api_workers=None)) as grpc_server:
            grpc_py = client_points(report, "bentoml grpc", grpc_server, bodies[1], plan, workers)
        with started(baseline_server(bundle, work, workers)) as fastapi:
            base_wrk = wrk_points(report, "fastapi baseline", fastapi, bodies, plan, workers)
            profile_points(report, "fastapi baseline", fastapi, bodies, plan, workers)

    for (size, concurrency), ours in http_wrk.items():
        theirs = base_wrk[(size, concurrency)]
        load = f"c{concurrency}" if size == 1 else f"batches of {size:,}"
        report.add(
            Row(
                "serving",
                f"http / fastapi, {load} (wrk)",
                {"concurrency": concurrency, "reviews_per_request": size},
                {
                    "throughput_ratio": ratio(ours["texts_per_s"], theirs["texts_per_s"]),
                    "p99_ratio": ratio(ours["p99_ms"], theirs["p99_ms"]),
                    "cpu_per_req_ratio": ratio(
                        ours["server_cpu_ms_per_req"], theirs["server_cpu_ms_per_req"]
                    ),
                    "errors": ours["errors"] + theirs["errors"],
                },
            )
        )
    peak = {  # over every measured point of the system (profiled points run under the sampler)
        system: max(
            float(row.metrics["server_peak_rss_mb"])
            for row in report.rows
            if row.benchmark == "serving" and row.system == system
        )
        for system in ("bentoml http", "fastapi baseline")
    }
    report.add(
        Row(
            "serving",
            "peak rss http / fastapi (all points)",
            {"workers": workers},
            {"rss_ratio": ratio(peak["bentoml http"], peak["fastapi baseline"])},
        )
    )
    for concurrency in plan.concurrency:
        report.add(
            Row(
                "serving",
                f"grpc / http at c{concurrency} (python clients)",
                {"concurrency": concurrency},
                {
                    "throughput_ratio": ratio(
                        grpc_py[concurrency]["req_per_s"], http_py[concurrency]["req_per_s"]
                    ),
                    "p99_ratio": ratio(grpc_py[concurrency]["p99_ms"], http_py[concurrency]["p99_ms"]),
                    "errors": grpc_py[concurrency]["errors"] + http_py[concurrency]["errors"],
                },
            )
        )
