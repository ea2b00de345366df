"""Long chaos run on a fake clock: ``python bench/chaos.py [--failovers 1000] [--seed N]``.

Prints the figures (failovers, overlapping terms, work past deadline, time to a leader after each
heal) and exits non-zero if safety or the recovery bound was violated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import anyio
import looptime

from aioleader.testing import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--failovers", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    report = anyio.run(
        lambda: run_chaos(seed=args.seed, candidates=args.candidates, failovers=args.failovers),
        backend="asyncio",
        backend_options={"loop_factory": lambda: looptime.new_event_loop(start=0, _enabled=True)},
    )
    elapsed = time.perf_counter() - started
    recoveries = sorted(report.recoveries)
    print(report.summary())
    print(
        f"recovery after heal: p50 {statistics.median(recoveries):.2f} s, "
        f"p99 {recoveries[int(0.99 * (len(recoveries) - 1))]:.2f} s, max {recoveries[-1]:.2f} s; "
        f"{elapsed:.1f} s of real time"
    )
    ok = not report.overlaps and not report.late_work and report.max_recovery <= report.bound
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
