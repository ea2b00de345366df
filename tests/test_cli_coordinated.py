"""The command line in a coordinated election: ``aioleader run --binary-version …`` sidecars,
``aioleader coordinate``, and the candidates in ``status`` and ``watch``. Real processes; the
API is the in-process emulator with kube-apiserver's election controller (short window)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio
from _processes import config_for, env, stop, wait_for
from anyio.abc import Process

from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

TIMING = ["--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.25"]
CHILD = "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); time.sleep(600)"


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator(bookmark_interval=0.2, coordinated_election=True, election_window=0.4)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def sidecar(
    emu: KubeEmulator, tmp_path: Path, name: str, *flags: str
) -> tuple[Process, Path]:
    config = await config_for(emu, name, tmp_path)
    log = tmp_path / f"{name}.log"
    with log.open("w") as sink:
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "aioleader",
                "run",
                "--lock",
                "lease/default/cli",
                "--identity",
                name,
                "--kubeconfig",
                str(config),
                *TIMING,
                *flags,
                "--",
                sys.executable,
                "-c",
                CHILD,
                str(tmp_path / "ran"),
                name,
            ],
            stdin=None,
            stdout=sink,
            stderr=sink,
            env=env(),
        )
    return process, log


async def terminate(process: Process) -> int:
    """SIGTERM, as Kubernetes stops a container: the wrapper stops the command, releases the
    lock and withdraws its candidate."""
    if process.returncode is None:
        process.terminate()
    with anyio.fail_after(15):
        code = await process.wait()
    await process.aclose()
    return code


def ran(tmp_path: Path) -> list[str]:
    path = tmp_path / "ran"
    return path.read_text().split() if path.exists() else []


async def test_the_oldest_version_runs_the_command_and_status_shows_the_candidates(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    # The old version first (a sidecar whose term ends stops too: exit 3, the container restarts).
    old, _ = await sidecar(
        cluster, tmp_path, "old", "--binary-version", "1.31.0", "--emulation-version", "1.30"
    )
    await wait_for(lambda: "old" in ran(tmp_path), limit=20)
    new, _ = await sidecar(
        cluster, tmp_path, "new", "--binary-version", "1.31.0", "--emulation-version", "1.31"
    )
    try:
        await wait_for(lambda: cluster.get_object("leasecandidates", "default", "new"), limit=20)
        config = await config_for(cluster, "status", tmp_path)
        base = [sys.executable, "-m", "aioleader", "status", "--lock", "lease/default/cli"]
        base += ["--kubeconfig", str(config)]
        as_json = json.loads((await anyio.run_process([*base, "-o", "json"], env=env())).stdout)
        assert as_json["holder"] == "old"
        assert as_json["strategy"] == "OldestEmulationVersion"
        assert [
            (c["identity"], c["binaryVersion"], c["emulationVersion"], c["strategy"])
            for c in as_json["candidates"]
        ] == [
            ("new", "1.31.0", "1.31.0", "OldestEmulationVersion"),
            ("old", "1.31.0", "1.30.0", "OldestEmulationVersion"),
        ]
        text = (await anyio.run_process(base, env=env())).stdout.decode()
        assert "holder old" in text
        assert (
            "  candidate new: binary 1.31.0, emulation 1.31.0, strategy OldestEmulationVersion"
            in text
        )
        watch = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "aioleader",
                "watch",
                "--lock",
                "lease/default/cli",
                "--kubeconfig",
                str(config),
                "--poll-interval",
                "0.2",
            ],
            env=env(),
        )
        try:
            assert watch.stdout is not None
            seen = b""
            with anyio.fail_after(10):
                while b"candidate=old" not in seen or b"candidate=new" not in seen:
                    seen += await watch.stdout.receive()
            assert b"binary=1.31.0 emulation=1.30.0 strategy=OldestEmulationVersion" in seen
        finally:
            await stop(watch)
    finally:
        codes = [await terminate(new), await terminate(old)]
    assert codes == [0, 143]  # a follower; the leader's command stopped by the forwarded SIGTERM
    assert cluster.objects("leasecandidates", "default") == []


async def test_aioleader_coordinate_runs_the_highest_priority(
    cluster: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(cluster, "coordinator", tmp_path)
    coordinator = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "aioleader",
            "coordinate",
            "--namespace",
            "default",
            "--kubeconfig",
            str(config),
            "--election-window",
            "0.4",
            "--interval",
            "0.1",
        ],
        env=env(),
    )
    hp = ["--binary-version", "2.0.0", "--strategy", "aioleader.dev/HighestPriority"]
    low, _ = await sidecar(cluster, tmp_path, "low", *hp, "--priority", "1")
    high, _ = await sidecar(cluster, tmp_path, "high", *hp, "--priority", "9")
    try:
        await wait_for(lambda: "high" in ran(tmp_path), limit=20)
        lease = cluster.get_object("leases", "default", "cli")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "high"
    finally:
        for process in (high, low, coordinator):
            await stop(process)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--emulation-version", "1.30"], "need --binary-version"),
        (["--binary-version", "v1.30.0", "--emulation-version", "1.30"], "must not start with 'v'"),
        (["--binary-version", "1.30.0"], "emulation_version is required"),
        (["--binary-version", "1.30.0", "--strategy", "Mine"], "strategy must be"),
    ],
)
async def test_bad_coordinated_flags_are_one_line(flags: list[str], message: str) -> None:
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "aioleader",
            "run",
            "--lock",
            "lease/default/x",
            *flags,
            "--",
            "true",
        ],
        env=env(),
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1
