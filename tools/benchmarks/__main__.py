"""`tools/bench [--quick] [--only SUITES] [--out DIR]`: measure, print, write JSON + Markdown."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from tools.benchmarks.report import Report

SUITES = ("features", "etl", "serving", "training", "quality", "transformer")
"""Modules of tools/benchmarks, each with `run(report, quick)`; imported only when run."""
NEEDS_TORCH = frozenset({"transformer"})
"""Suites skipped, with a line saying so, where torch is not installed (docs/torch.md)."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="tools/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark (CI)")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {list(SUITES)}")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    report = Report(mode="quick" if args.quick else "full")
    for name in args.only.split(","):
        if name not in SUITES:
            parser.error(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
        if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
            print(f"== {name}: skipped, torch is not installed (docs/torch.md)", flush=True)
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(f"tools.benchmarks.{name}").run(report, args.quick)
    json_path, md_path = report.write(args.out)
    print()
    print(report.markdown())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
