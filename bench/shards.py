"""Sharded leadership with real processes: ``python bench/shards.py [--replicas 3] [--shards 32]
[--rounds 3]``.

Runs the standalone emulator (``python -m aioleader.testing``) and ``--replicas`` replica
processes, each ``elect_shards(LeaseLock, group="bench", shards=N)`` with LD 2 / RD 1.5 / RP 0.3
(``--lease-duration`` etc.), whose per-shard work prints ``START <shard> <identity> <t>`` and
``END ...`` with ``time.monotonic()`` (one clock for every process on a Linux host). Then:

* **cold start**: all replicas spawned at once → every shard led, each replica holding
  ``floor(N/M)`` or ``ceil(N/M)`` shards;
* per round, **kill** (SIGKILL a replica: its leases must expire) and **add** (start a new one):
  time from the signal / spawn to balanced again.

For each it prints the time until balanced and the shards moved (terms begun, beyond the first
acquisition of each shard at a cold start), and at the end the overlapping terms per shard
(work intervals of two processes on one shard at once; a killed process's work ends when it is
killed), which must be 0.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

ROOT = Path(__file__).resolve().parent.parent

REPLICA = r"""
import sys, time, math
import anyio
from functools import partial
from kubernetes_asyncio import config
from aioleader import Timing, elect_shards, stop_on_signals
from aioleader.kubernetes import LeaseLock

identity, shards, ld, rd, rp = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
if len(sys.argv) > 6:
    import logging
    logging.basicConfig(level=logging.INFO, filename=sys.argv[6],
                        format="%(created).3f %(message)s")

def say(*words):
    print(*words, flush=True)

async def work(group, index):
    while True:
        async with group.leading(index):
            say("START", index, identity, time.monotonic())
            try:
                await anyio.sleep(math.inf)
            finally:
                say("END", index, identity, time.monotonic())

async def main():
    api = await config.new_client_from_config()
    make_lock = partial(LeaseLock, namespace="default", identity=identity, api_client=api,
                        events=False)
    timing = Timing(lease_duration=ld, renew_deadline=rd, retry_period=rp)
    try:
        async with stop_on_signals(), elect_shards(
            make_lock, group="bench", shards=shards, timing=timing
        ) as group, anyio.create_task_group() as tg:
            for i in range(shards):
                tg.start_soon(work, group, i)
            say("READY", identity, time.monotonic())
    finally:
        await api.close()

anyio.run(main)
"""


@dataclass
class Interval:
    shard: int
    identity: str
    start: float
    end: float = math.inf


@dataclass
class World:
    shards: int
    intervals: list[Interval] = field(default_factory=list)
    open: dict[tuple[int, str], Interval] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    ready: dict[str, float] = field(default_factory=dict)

    def line(self, text: str) -> None:
        parts = text.split()
        if len(parts) == 3 and parts[0] == "READY":
            self.ready[parts[1]] = float(parts[2])
            return
        if len(parts) != 4 or parts[0] not in ("START", "END"):
            return
        shard, identity, at = int(parts[1]), parts[2], float(parts[3])
        if parts[0] == "START":
            interval = Interval(shard, identity, at)
            self.intervals.append(interval)
            self.open[shard, identity] = interval
        else:
            done = self.open.pop((shard, identity), None)
            if done is not None:
                done.end = at

    def killed(self, identity: str, at: float) -> None:
        self.live.discard(identity)
        for key in [k for k in self.open if k[1] == identity]:
            self.open.pop(key).end = at

    def holders(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {i: [] for i in range(self.shards)}
        for shard, identity in self.open:
            found[shard].append(identity)
        return found

    def balanced(self) -> bool:
        if not self.live:
            return False
        holders = self.holders()
        if any(len(h) != 1 or h[0] not in self.live for h in holders.values()):
            return False
        counts = {identity: 0 for identity in self.live}
        for (h,) in holders.values():
            counts[h] += 1
        low, high = self.shards // len(self.live), math.ceil(self.shards / len(self.live))
        return all(low <= n <= high for n in counts.values())

    def starts_since(self, t: float) -> int:
        return sum(1 for i in self.intervals if i.start >= t)

    def overlaps(self) -> int:
        count = 0
        for shard in range(self.shards):
            mine = sorted((i for i in self.intervals if i.shard == shard), key=lambda i: i.start)
            for a, b in itertools.pairwise(mine):
                if b.start < a.end:
                    count += 1
        return count


async def _emulator(tmp: Path) -> tuple[anyio.abc.Process, Path]:
    kubeconfig = tmp / "kubeconfig"
    process = await anyio.open_process(
        [sys.executable, "-m", "aioleader.testing", "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    assert process.stdout is not None
    buffer = ""
    with anyio.fail_after(30):
        async for chunk in TextReceiveStream(process.stdout):
            buffer += chunk
            if "listening on" in buffer:
                break
    return process, kubeconfig


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


async def main(args: argparse.Namespace) -> int:
    world = World(args.shards)
    processes: dict[str, anyio.abc.Process] = {}
    timing = [str(args.lease_duration), str(args.renew_deadline), str(args.retry_period)]
    with tempfile.TemporaryDirectory() as tmp_name:
        emulator, kubeconfig = await _emulator(Path(tmp_name))
        try:
            async with anyio.create_task_group() as tg:

                async def spawn(identity: str) -> None:
                    log = [str(Path(args.log) / f"{identity}.log")] if args.log else []
                    process = await anyio.open_process(
                        [sys.executable, "-c", REPLICA, identity, str(args.shards), *timing, *log],
                        stdin=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=_env(KUBECONFIG=str(kubeconfig)),
                    )
                    processes[identity] = process
                    world.live.add(identity)

                    async def read() -> None:
                        assert process.stdout is not None
                        pending = ""
                        async for chunk in TextReceiveStream(process.stdout):
                            pending += chunk
                            *lines, pending = pending.split("\n")
                            for line in lines:
                                world.line(line)

                    tg.start_soon(read)

                async def until_balanced(since: float) -> float:
                    with anyio.move_on_after(60):
                        while not world.balanced():
                            await anyio.sleep(0.005)
                    if not world.balanced():
                        raise SystemExit(
                            f"not balanced after 60 s: live {sorted(world.live)}, holders "
                            f"{world.holders()}"
                        )
                    return anyio.current_time() - since

                names = iter(f"replica-{i}" for i in range(1000))
                t0 = anyio.current_time()
                for _ in range(args.replicas):
                    await spawn(next(names))
                cold = await until_balanced(t0)
                last_ready = max(world.ready.get(n, t0) for n in world.live) - t0
                await anyio.sleep(args.settle)
                cold_moves = world.starts_since(t0) - args.shards
                print(
                    f"cold start ({args.replicas} replicas, {args.shards} shards, LD "
                    f"{args.lease_duration:g} / RD {args.renew_deadline:g} / RP "
                    f"{args.retry_period:g}): balanced after {cold:.2f} s (the last replica had joined after {last_ready:.2f} s), "
                    f"{cold_moves} shards moved beyond the first acquisitions"
                )
                kills: list[tuple[float, int]] = []
                adds: list[tuple[float, int]] = []
                for round_ in range(args.rounds):
                    victim = sorted(world.live)[round_ % len(world.live)]
                    t = anyio.current_time()
                    processes[victim].send_signal(signal.SIGKILL)
                    world.killed(victim, t)
                    took = await until_balanced(t)
                    await anyio.sleep(args.settle)
                    kills.append((took, world.starts_since(t)))
                    print(f"kill {victim}: balanced after {took:.2f} s, {kills[-1][1]} moved")
                    t = anyio.current_time()
                    newcomer = next(names)
                    await spawn(newcomer)
                    took = await until_balanced(t)
                    await anyio.sleep(args.settle)
                    adds.append((took, world.starts_since(t)))
                    joined = world.ready[newcomer] - t
                    print(
                        f"add {newcomer}: balanced after {took:.2f} s from the spawn "
                        f"({took - joined:.2f} s after it had started and joined), "
                        f"{adds[-1][1]} moved"
                    )
                for what, rows in (("kill", kills), ("add", adds)):
                    if rows:
                        times = [r[0] for r in rows]
                        moved = [r[1] for r in rows]
                        print(
                            f"{what}: balanced after median {statistics.median(times):.2f} s "
                            f"(max {max(times):.2f}), moved median {statistics.median(moved):g} "
                            f"(ideal {args.shards / args.replicas:.1f})"
                        )
                for process in processes.values():
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                with anyio.fail_after(15):
                    for process in processes.values():
                        await process.wait()
                overlaps = world.overlaps()
                print(f"overlapping terms: {overlaps} (of {len(world.intervals)} shard terms)")
                tg.cancel_scope.cancel()
        finally:
            for process in [*processes.values(), emulator]:
                if process.returncode is None:
                    process.kill()
                await process.wait()
    return 0 if overlaps == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="sharded leadership, real processes")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-duration", type=float, default=2.0)
    parser.add_argument("--renew-deadline", type=float, default=1.5)
    parser.add_argument("--retry-period", type=float, default=0.3)
    parser.add_argument("--log", help="a directory for each replica's aioleader log")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds to wait for late moves after each"
    )
    return parser


if __name__ == "__main__":
    sys.exit(anyio.run(main, _parser().parse_args()))
