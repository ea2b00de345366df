"""The ``aioleader`` command line (argparse + anyio)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from ._timing import Timing

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioleader",
        description="Leader election for Python services on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo = sub.add_parser(
        "demo",
        help="run an election among three candidates on the embedded Kubernetes API emulator",
        description=(
            "Start the Kubernetes API emulator, run three candidates on one Lease, kill the "
            "leader, stop the next one gracefully, and print the failover times."
        ),
    )
    demo.add_argument("--candidates", type=int, default=3, help="number of candidates (≥ 3)")
    demo.add_argument("--lease-duration", type=float, default=4.0, metavar="S")
    demo.add_argument("--renew-deadline", type=float, default=3.0, metavar="S")
    demo.add_argument("--retry-period", type=float, default=0.5, metavar="S")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.candidates < 3:
            print("aioleader demo: --candidates must be at least 3", file=sys.stderr)
            return 2
        try:
            timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
        except ValueError as exc:
            print(f"aioleader demo: {exc}", file=sys.stderr)
            return 2
        from ._demo import run_demo

        try:
            anyio.run(lambda: run_demo(timing=timing, candidates=args.candidates))
        except KeyboardInterrupt:
            return 130
        return 0
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects unknown commands
