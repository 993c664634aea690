#!/usr/bin/env python3
"""Inclusive share of samples per function in a py-spy raw profile (``bench_gemma.py --py-spy``),
so where the scheduler's host time goes reads as a list instead of a flame graph.

  python scripts/pyspy_summary.py OUT/pyspy_ours-controlled_c32.txt [--match worker.py] [--top 60]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter


def inclusive_shares(path: str) -> tuple[int, Counter]:
    """(total samples, samples per function counted once per stack it appears in)."""
    total, incl = 0, Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            for name in {re.sub(r":\d+\)", ")", frame) for frame in stack.split(";")}:
                incl[name] += n
    return total, incl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--match", default="", help="only functions whose frame contains this")
    ap.add_argument("--top", type=int, default=60)
    a = ap.parse_args()
    total, incl = inclusive_shares(a.profile)
    print(f"{total} samples")
    rows = [(n, name) for name, n in incl.most_common() if a.match in name][: a.top]
    for n, name in rows:
        print(f"{100 * n / max(total, 1):5.1f}%  {name[:160]}")


if __name__ == "__main__":
    main()
