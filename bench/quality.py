"""The demo's quality figures beside their targets, from the stages' own reports: run after
`make demo` (or any pipeline run) in the project root. JSON out to bench/results/quality.json.

    python bench/quality.py [--root .]
"""

import argparse
import sys
from pathlib import Path

from styleforge.core.io import atomic_write_json
from styleforge.tasks.quality import figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality.json"))
    args = parser.parse_args()
    rows = figures(args.root)
    width = max(len(row["figure"]) for row in rows)
    for row in rows:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        print(f"{row['figure']:<{width}}  {row['value']!s:>8}  target {row['target']:<8} {verdict:<12} {row['how']}")
    atomic_write_json(args.out, {"figures": rows})
    return 0 if all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
