"""Helpers for tests that run ``aioleader`` as real processes against the in-process emulator.

Each process gets its own emulator endpoint (so that one can be partitioned) through a kubeconfig
file, and an environment in which this checkout's ``aioleader`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.abc import Process

from aioleader.testing import KubeEmulator
from aioleader.testing.__main__ import kubeconfig

ROOT = Path(__file__).resolve().parent.parent


async def config_for(emu: KubeEmulator, client: str, tmp_path: Path) -> Path:
    """A kubeconfig for a process that is ``client`` on the emulator (its own endpoint)."""
    endpoint = await emu.endpoint(client)
    path = tmp_path / f"kubeconfig-{client}"
    path.write_text(kubeconfig(endpoint.url, "default"))
    return path


def env() -> dict[str, str]:
    """The environment of an ``aioleader`` process: this checkout first, no proxy."""
    return {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": str(ROOT)}


async def wait_for(predicate: Callable[[], object], limit: float = 15) -> None:
    """Poll until ``predicate()`` is true (fails the test after ``limit`` seconds)."""
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.01)


async def stop(process: Process) -> None:
    """SIGKILL a process that is still running, reap it and close its streams."""
    if process.returncode is None:
        process.kill()
    await process.wait()
    await process.aclose()
