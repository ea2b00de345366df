"""bench/shards.py at a minimal size, so that it never rots (not a benchmark)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.emulator_only, pytest.mark.timeout(120)]


def test_bench_shards_prints_the_figures_and_no_overlap() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost"}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "shards.py"),
            *("--replicas", "2", "--shards", "4", "--rounds", "1", "--settle", "0.5"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(
        r"cold start \(2 replicas, 4 shards, LD 2 / RD 1\.5 / RP 0\.3\): balanced after "
        r"[0-9.]+ s \(the last replica had joined after [0-9.]+ s\), \d+ shards moved beyond "
        r"the first acquisitions",
        lines[0],
    )
    assert re.fullmatch(r"kill replica-0: balanced after [0-9.]+ s, [1-4] moved", lines[1])
    assert lines[2].startswith("add replica-2: balanced after ")
    assert re.fullmatch(r"overlapping terms: 0 \(of \d+ shard terms\)", lines[-1])
