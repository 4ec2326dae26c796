"""`python -m benchmarks [--quick] [--only NAME ...] [--repeat N] [--json PATH]`

Runs each scenario and its baseline alternately, `--repeat` times (default 5), and reports medians
and ratios (asyncflow / baseline) as a table and as JSON. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from .scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repeats")
    parser.add_argument("--only", nargs="*", help="scenario names (substring match)")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/latest.json")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 5)
    rows = []
    for scenario in SCENARIOS:
        if args.only and not any(s in scenario.name for s in args.only):
            continue
        for row in scenario.run(repeat=repeat, quick=args.quick):
            rows.append(row)
            print(_format(row), flush=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": repeat,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nJSON report: {args.json}")
    return 0


def _format(row: dict) -> str:
    extra = f"  {row['note']}" if row.get("note") else ""
    return (
        f"{row['name']:<44} asyncflow {row['asyncflow_s']:8.3f}s  baseline {row['baseline_s']:8.3f}s  "
        f"ratio {row['ratio']:5.2f}x  {row['per_node_us']:7.1f} µs/node{extra}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
