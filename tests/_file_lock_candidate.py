"""One candidate on a FileLock, as a real process, for tests/test_file_lock.py.

Usage: ``python tests/_file_lock_candidate.py PATH IDENTITY [asyncio|trio]`` (with aioleader
importable, e.g. ``PYTHONPATH=.``). Prints one line per event on stdout, flushed at once, with
``time.monotonic()`` (system-wide on Linux, so lines of different processes compare)::

    READY <identity>
    LEADER <identity> <holder or "-">           # on_new_leader
    LEADING <identity> <fencing_token> <t>      # leader work started
    WORK <identity> <fencing_token> <t>         # leader work done at t (every 50 ms, term active)
    STOPPED <identity> <fencing_token> <t>      # leader work finished (before any release)
    FREEZE <identity> <step> <t>                # about to stop or kill itself inside a write

SIGTERM or SIGINT stops the election cleanly: leader work is cancelled, the lock released, exit 0.

SIGUSR1 arms FileLock's private test hook: the next write stops the process (SIGSTOP) or kills it
(SIGKILL) at the step named by ``$FILELOCK_FREEZE`` (``written:STOP``, ``linked:KILL``, ...).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio

from aioleader import Timing, elect
from aioleader.locks import FileLock

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)


def emit(*fields: object) -> None:
    print(*fields, flush=True)


def freeze_hook(identity: str, lock: FileLock) -> None:
    """Make ``lock``'s next write stop or kill this process at the step ``$FILELOCK_FREEZE``
    names."""
    step, how = os.environ["FILELOCK_FREEZE"].split(":")
    sig = {"STOP": signal.SIGSTOP, "KILL": signal.SIGKILL}[how]

    def hook(current: str) -> None:
        if current == step:
            lock._test_hook = None
            emit("FREEZE", identity, step, repr(time.monotonic()))
            os.kill(os.getpid(), sig)

    lock._test_hook = hook


async def run(path: str, identity: str) -> None:
    lock = FileLock(path, identity=identity)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for received in signals:
                    if received == signal.SIGUSR1:
                        freeze_hook(identity, lock)
                        continue
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
                            while True:
                                # The time first, then the check: work reported at t was done
                                # while the term was active at t or later.
                                t = time.monotonic()
                                if term.active:
                                    emit("WORK", identity, term.fencing_token, repr(t))
                                await anyio.sleep(0.05)
                        finally:
                            # Leader work is over here; the lock is released only after this.
                            emit("STOPPED", identity, term.fencing_token, repr(time.monotonic()))


def main() -> None:
    path, identity = sys.argv[1], sys.argv[2]
    backend = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    anyio.run(run, path, identity, backend=backend)


if __name__ == "__main__":
    main()
