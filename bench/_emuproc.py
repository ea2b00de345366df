"""The emulator in a process of its own, driven over stdin/stdout: ``python -m bench._emuproc``.

The benchmark runs :class:`~aioleader.testing.KubeEmulator` here rather than in its own process
so that the CPU time it measures is the electors' and not the API server's (the two can also be
pinned to different cores). It is the standalone mode of ``python -m aioleader.testing`` plus a
control channel, which the benchmark needs for the emulator's request log and CPU time:

* the first line on stdout is ``{"url": ..., "pid": ...}`` once the default endpoint serves;
* then one JSON command a line on stdin, one JSON reply a line on stdout:

  - ``{"op": "endpoint", "client": NAME}`` → ``{"url": ...}`` (the client's own port);
  - ``{"op": "requests", "since": T, "clients": [NAME, ...]}`` →
    ``{"records": [[client, verb, resource, status, start, end], ...]}`` for requests of those
    clients (all clients without ``clients``) that ended at or after ``T`` (CLOCK_MONOTONIC, the clock of every process on a
    Linux machine, so comparable with the benchmark's ``anyio.current_time()``);
  - ``{"op": "aggregate", "on": bool}``: when on, the log is folded into counters every second
    and then forgotten (for the scale runs, whose thousands of requests a second would otherwise
    fill the memory);
  - ``{"op": "stats"}`` → ``{"cpu": process CPU seconds, "requests": {verb: n}, "errors": n,
    "objects": n, "watches": n}`` (``requests``/``errors``: all so far, folded or not);
  - ``{"op": "quit"}`` → stops the emulator and exits.

End of input (the benchmark died) and SIGTERM stop it as well: it never outlives its parent's
pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from aioleader.testing import KubeEmulator, RequestRecord


def _row(record: RequestRecord) -> list[Any]:
    return [
        record.client,
        record.verb,
        record.resource,
        record.status,
        record.started,
        record.started + record.duration,
    ]


class _Control:
    def __init__(self, emu: KubeEmulator) -> None:
        self.emu = emu
        self.folded: Counter[str] = Counter()
        self.folded_errors = 0
        self.aggregate = False

    def fold(self) -> None:
        records = self.emu.requests
        self.emu.reset_log()
        self.folded.update(r.verb for r in records)
        self.folded_errors += sum(1 for r in records if not 200 <= r.status < 300)

    async def folding(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.aggregate:
                self.fold()

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "endpoint":
            endpoint = await self.emu.endpoint(str(command["client"]))
            return {"url": endpoint.url}
        if op == "requests":
            since = float(command.get("since", 0.0))
            clients = command.get("clients")
            wanted = None if clients is None else set(clients)
            rows = [
                _row(r)
                for r in self.emu.requests
                if r.started + r.duration >= since and (wanted is None or r.client in wanted)
            ]
            return {"records": rows}
        if op == "aggregate":
            self.aggregate = bool(command["on"])
            if self.aggregate:
                self.fold()
            return {"ok": True}
        if op == "stats":
            records = self.emu.requests
            counts = self.folded + Counter(r.verb for r in records)
            errors = self.folded_errors + sum(1 for r in records if not 200 <= r.status < 300)
            stats = self.emu.statistics()
            return {
                "cpu": time.process_time(),
                "requests": dict(counts),
                "errors": errors,
                "objects": stats.objects,
                "watches": stats.watches,
            }
        return {"error": f"unknown command {op!r}"}


async def _serve(cpus: set[int] | None, bookmark_interval: float) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(document: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async with KubeEmulator(bookmark_interval=bookmark_interval) as emu:
        control = _Control(emu)
        folding = asyncio.create_task(control.folding())
        reply({"url": emu.url, "pid": os.getpid()})

        async def commands() -> None:
            while True:
                line = await reader.readline()
                if not line:
                    return  # the benchmark went away
                command = json.loads(line)
                if command.get("op") == "quit":
                    reply({"ok": True})
                    return
                reply(await control.handle(command))

        serving = asyncio.create_task(commands())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (serving, stopping, folding):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 1 or 1,2")
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=60.0,
        help="seconds between watch BOOKMARKs (60, as kube-apiserver's watch cache)",
    )
    args = parser.parse_args()
    cpus = {int(c) for c in args.cpus.split(",") if c.strip()} or None
    asyncio.run(_serve(cpus, args.bookmark_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
