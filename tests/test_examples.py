"""Every example and the README demo run against the emulator, so they never rot."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aioleader import Timing
from aioleader._demo import run_demo
from aioleader.testing import KubeEmulator

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.emulator_only


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_quickstart_example(emu: KubeEmulator) -> None:
    quickstart = load_example("quickstart")
    seen = await quickstart.main(await emu.api_client("quickstart"), identity="pod-q")
    assert seen["steps"] == 3
    assert seen["fencing_token"] == 0
    assert seen["is_leader"] is True
    assert seen["confirmed"] is True
    assert seen["nowait"] is True
    assert seen["leader"] == "pod-q"
    assert seen["second_fencing_token"] == 1  # a new term after the release: a new token
    assert seen["new_leaders"] == ["pod-q", ""]  # us, then free after the release
    lease = emu.get_object("leases", "default", "quickstart")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""


@pytest.mark.asyncio
async def test_demo_shows_an_election_a_crash_failover_and_a_handover() -> None:
    out = io.StringIO()
    timing = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)
    results = await run_demo(timing=timing, out=out)
    text = out.getvalue()
    lines = [line.split("] ", 1)[-1] for line in text.splitlines()]
    campaign = lines.index(
        "pod-a, pod-b, pod-c campaign for the Lease default/demo-lock (pod-a starts first)"
    )
    assert lines.index("pod-a is leading (fencing token 0)") > campaign  # said in that order
    assert "(term " not in text  # a term is named by its fencing token only
    assert "killing pod-a" in text
    assert "after the crash" in text
    assert "after the release" in text
    # crash: at least LD minus one poll after the last renewal it saw; graceful: about one poll
    assert timing.lease_duration - 2.2 * timing.retry_period <= results["crash"]
    assert results["crash"] < timing.lease_duration + 2.2 * timing.retry_period + 1
    assert results["graceful"] < 2.2 * timing.retry_period + 0.5


def test_cli_demo_rejects_bad_timing() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aioleader",
            "demo",
            "--lease-duration",
            "1",
            "--renew-deadline",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert (proc.returncode, proc.stderr) == (
        2,
        "aioleader: --lease-duration (1.0) must be greater than --renew-deadline (3.0)\n",
    )
