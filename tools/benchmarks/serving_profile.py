"""Where a request's server CPU goes: py-spy samples of a server under load, folded into stages.

py-spy samples every thread of the server's process tree (`--subprocesses`); a sample whose
innermost frame waits (a condition, the event loop's selector, gunicorn's arbiter sleeping)
is idle and left out. Each busy sample goes to the first stage of `STAGES` that one of its
frames matches, so a sample inside the model call that also passes through the ASGI
middleware counts as model time, not middleware time. A stage's share of the busy samples
times the CPU the server tree used per request (psutil, same seconds) gives its
milliseconds per request. Sampling slows a server down a little (its CPU per request is
measured under the sampler too), so the shares are what to read, not absolute speed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

IDLE_LEAVES = ("Condition.wait (", "Event.wait (", "EpollSelector.select (", "Arbiter.sleep (")
"""Innermost frames of a thread that waits: py-spy counts them busy when they hold the GIL."""

Rule = Callable[[str], bool]


def _any(*fragments: str) -> Rule:
    return lambda stack: any(fragment in stack for fragment in fragments)


STAGES: tuple[tuple[str, Rule], ...] = (
    ("batch log thread", _any("BatchLog._run (")),
    ("drift thread", _any("DriftFeed._run (")),
    ("champion reloader", _any("Reloader._run (")),
    ("features", _any("compute_features (", "features_table (")),
    ("model", _any("predict_features (", "predict_proba (")),
    ("parse + validate", _any("from_http_request (", "validate_json (", "json/decoder", "solve_depend")),
    ("encode answer", _any("to_http_response (", "json/encoder.py", "serialize_response (", "dump_json (")),
    ("metrics", _any("services/metrics.py", "prometheus_client/")),
    ("drift + batch queues", _any("RowQueue.put (")),
    ("coalescer", _any("services/batching.py")),
    ("api function", _any("_score (services/service.py", "predict (tools/benchmarks/serving_baseline.py")),
    ("gate + BentoML app", _any("services/transport.py", "services/security.py", "bentoml/")),
)
"""(stage, rule) in precedence order; a busy sample that none matches is the HTTP server's own
work (uvicorn, h11, starlette, asyncio) and counts as "http server"."""
OTHER = "http server"


def stage_of(stack: str) -> str | None:
    """The stage of one sampled stack (frames root first, `;`-separated); None when idle."""
    if stack.rsplit(";", 1)[-1].startswith(IDLE_LEAVES):
        return None
    return next((name for name, rule in STAGES if rule(stack)), OTHER)


def stage_shares(raw: Path) -> dict[str, float]:
    """{stage: share of the busy samples} of a py-spy `--format raw` file (`stack count` lines)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stage = stage_of(stack)
        if stage is not None:
            counts[stage] += int(count)
    busy = sum(counts.values())
    return {stage: counts[stage] / busy for stage in [*(name for name, _ in STAGES), OTHER]} if busy else {}


def py_spy() -> str:
    """The py-spy executable of the installed distribution: where its RECORD puts it (a virtual
    environment's bin/), the `bin/` beside its files (the Bazel repository of packages), or
    on PATH."""
    distribution = metadata.distribution("py-spy")
    recorded = [distribution.locate_file(path) for path in distribution.files or () if path.name == "py-spy"]
    for candidate in [*recorded, distribution.locate_file("bin/py-spy")]:
        if Path(str(candidate)).is_file():
            return str(candidate)
    found = shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy is not installed (third_party/python/requirements.in)")
    return found


class Sampler:
    """py-spy recording a server's process tree for `seconds` (started, then `stop()`ped)."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
        self.out = out
        command = [py_spy(), "record", "--pid", str(pid)]
        command += ["--subprocesses", "--format", "raw", "--rate", str(rate)]
        command += ["--duration", str(max(1, round(seconds))), "--output", str(out)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # attached to every process before the measured load starts

    def stop(self) -> dict[str, float]:
        _, err = self._process.communicate(timeout=120)
        if self._process.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"py-spy failed ({self._process.returncode}): {err[-2000:]}")
        return stage_shares(self.out)
