"""One candidate on a FileLock, as a real process, for tests/test_file_lock.py.

Usage: ``python tests/_file_lock_candidate.py PATH IDENTITY [asyncio|trio]`` (with aioleader
importable, e.g. ``PYTHONPATH=.``). Prints one line per event on stdout, flushed at once, with
``time.monotonic()`` (system-wide on Linux, so lines of different processes compare)::

    READY <identity>
    LEADER <identity> <holder or "-">           # on_new_leader
    LEADING <identity> <fencing_token> <t>      # leader work started
    STOPPED <identity> <fencing_token> <t>      # leader work finished (before any release)

SIGTERM or SIGINT stops the election cleanly: leader work is cancelled, the lock released, exit 0.
"""

from __future__ import annotations

import signal
import sys
import time

import anyio

from aioleader import Timing, elect
from aioleader.locks import FileLock

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)


def emit(*fields: object) -> None:
    print(*fields, flush=True)


async def run(path: str, identity: str) -> None:
    lock = FileLock(path, identity=identity)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(stop_on_signal)
            async with elect(
                lock,
                timing=TIMING,
                on_new_leader=lambda holder: emit("LEADER", identity, holder or "-"),
            ) as leadership:
                emit("READY", identity)
                while True:
                    async with leadership.leading() as term:
                        emit("LEADING", identity, term.fencing_token, repr(time.monotonic()))
                        try:
                            await anyio.sleep_forever()
                        finally:
                            # Leader work is over here; the lock is released only after this.
                            emit("STOPPED", identity, term.fencing_token, repr(time.monotonic()))


def main() -> None:
    path, identity = sys.argv[1], sys.argv[2]
    backend = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    anyio.run(run, path, identity, backend=backend)


if __name__ == "__main__":
    main()
