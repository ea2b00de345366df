"""``stop_on_signals`` / ``cancel_on_signals``: real signals to real processes, on asyncio and trio.

Signals are process-wide, so every case that sends one runs a small program in a process of its
own; the in-process tests only check what needs no signal (arguments, exceptions, restoring).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import aioleader

ROOT = Path(__file__).resolve().parent.parent

# argv: backend, form ("block" or "task"), stop ("quick", "slow"), previous SIGTERM handler
# ("default" or "app"). Prints "ready" once the handlers are in place, then how it stopped.
PROGRAM = """
import signal, sys
import anyio
import aioleader

backend, form, stop, previous = sys.argv[1:]

def app_handler(signum, frame):
    print("the application's handler", flush=True)
    sys.exit(7)

if previous == "app":
    signal.signal(signal.SIGTERM, app_handler)

def handlers():
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

async def work():
    print("ready", flush=True)
    try:
        await anyio.sleep_forever()
    finally:
        if stop == "slow":  # a stop that takes a while: leader work finishing, a release
            print("stopping slowly", flush=True)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(5)

async def main():
    before = handlers()
    if form == "block":
        async with aioleader.stop_on_signals() as stopping:
            await work()
        received = stopping.signal
    else:
        async with anyio.create_task_group() as tg:
            await tg.start(aioleader.cancel_on_signals, tg.cancel_scope)
            await work()
        received = None
    print("left the block", received.name if received else "-", handlers() == before, flush=True)

anyio.run(main, backend=backend)
print("exited normally", flush=True)
"""

BACKENDS = ["asyncio", "trio"]


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, str(program), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def wait_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    assert process.stdout.readline() == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_leaves_the_block_gracefully_and_puts_the_handlers_back(
    tmp_path: Path, backend: str, signum: signal.Signals
) -> None:
    process = start(tmp_path, backend, "block", "quick", "default")
    process.send_signal(signum)
    status, out, err = finish(process)
    assert (status, err) == (0, "")
    assert out == f"left the block {signum.name} True\nexited normally\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_task_form_cancels_the_given_scope(tmp_path: Path, backend: str) -> None:
    process = start(tmp_path, backend, "task", "quick", "default")
    process.send_signal(signal.SIGTERM)
    status, out, err = finish(process)
    assert (status, err) == (0, "")
    assert out == "left the block - True\nexited normally\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_sigterm_during_a_slow_stop_ends_the_process_as_before(
    tmp_path: Path, backend: str
) -> None:
    process = start(tmp_path, backend, "block", "slow", "default")
    process.send_signal(signal.SIGTERM)
    wait_line(process, "stopping slowly\n")
    process.send_signal(signal.SIGTERM)  # the default disposition again: the process ends now
    status, out, _ = finish(process)
    assert (status, out) == (-signal.SIGTERM, "")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_sigterm_reaches_the_applications_own_handler(
    tmp_path: Path, backend: str
) -> None:
    process = start(tmp_path, backend, "block", "slow", "app")
    process.send_signal(signal.SIGTERM)
    wait_line(process, "stopping slowly\n")
    process.send_signal(signal.SIGTERM)
    wait_line(process, "the application's handler\n")
    process.kill()  # what sys.exit() in a handler does to an event loop is not ours to test
    finish(process)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_ctrl_c_during_a_slow_stop_interrupts_it(tmp_path: Path, backend: str) -> None:
    process = start(tmp_path, backend, "block", "slow", "default")
    process.send_signal(signal.SIGINT)
    wait_line(process, "stopping slowly\n")
    process.send_signal(signal.SIGINT)
    status, out, err = finish(process)
    assert (status, out) == (-signal.SIGINT, "")  # Python's exit on an unhandled Ctrl+C
    assert err.rstrip().endswith("KeyboardInterrupt")


@pytest.mark.parametrize("anyio_backend", BACKENDS)
async def test_the_body_exception_comes_out_as_itself_and_handlers_are_restored(
    anyio_backend: str,
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with pytest.raises(ZeroDivisionError):
        async with aioleader.stop_on_signals(signal.SIGTERM, signal.SIGUSR1) as stopping:
            assert signal.getsignal(signal.SIGTERM) is not before[0]
            raise ZeroDivisionError
    assert stopping.signal is None
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before


@pytest.mark.parametrize("anyio_backend", BACKENDS)
async def test_cancelling_its_scope_leaves_the_block_without_a_signal(anyio_backend: str) -> None:
    async with aioleader.stop_on_signals() as stopping:
        stopping.cancel_scope.cancel()
        await anyio.sleep_forever()
    assert stopping.signal is None
    assert stopping.cancel_scope.cancel_called


@pytest.mark.parametrize(
    ("signals", "error", "message"),
    [
        (
            ("SIGTERM",),
            TypeError,
            "signals must be signal numbers (e.g. signal.SIGTERM), got 'SIGTERM'",
        ),
        ((True,), TypeError, "signals must be signal numbers (e.g. signal.SIGTERM), got True"),
        ((12345,), ValueError, "12345 is not a signal number"),
    ],
)
def test_bad_signals_are_refused_by_name(
    signals: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        aioleader.stop_on_signals(*signals)  # type: ignore[arg-type]
    assert str(caught.value) == message
