"""`tools/bench [--quick] [--only SUITES] [--out DIR]`: measure, print, write JSON + Markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.benchmarks import etl, features, quality, serving, training, transformer
from tools.benchmarks.report import Report

SUITES = {
    "features": features.run,
    "etl": etl.run,
    "serving": serving.run,
    "training": training.run,
    "quality": quality.run,
    "transformer": transformer.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="tools/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark (CI)")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {list(SUITES)}")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    report = Report(mode="quick" if args.quick else "full")
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        SUITES[name](report, args.quick)
    json_path, md_path = report.write(args.out)
    print()
    print(report.markdown())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
