"""``aioleader run`` gating real child processes, ``status``, and clear errors for bad input.

Wrappers and their commands are real processes; the Kubernetes API is the in-process emulator,
each wrapper on its own endpoint (so one can be partitioned) through a kubeconfig file.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest
from _processes import config_for, env, stop, wait_for
from anyio.abc import Process

from aioleader.testing import KubeEmulator
from aioleader.testing.__main__ import kubeconfig

pytestmark = pytest.mark.emulator_only

TIMING = ["--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.25"]

CHILD = """
import signal, sys, time, os
out, name = sys.argv[1], sys.argv[2]
def log(event):
    with open(out, "a") as f:
        f.write(f"{event} {name} {time.monotonic()} {os.environ['AIOLEADER_FENCING_TOKEN']}\\n")
def stop(signum, frame):
    log("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
log("started")
while True:
    time.sleep(0.05)
"""


async def wrapper(
    name: str, config: Path, out: Path, tmp_path: Path, *extra: str
) -> tuple[Process, Path]:
    (tmp_path / "child.py").write_text(CHILD)
    log = tmp_path / f"wrapper-{name}.log"
    with log.open("w") as sink:  # the child gets its own copy of the descriptor
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
                *extra,
                "--",
                sys.executable,
                str(tmp_path / "child.py"),
                str(out),
                name,
            ],
            stdin=None,
            stdout=sink,
            stderr=sink,
            env=env(),
        )
    return process, log


def events(out: Path) -> list[tuple[str, str, float, int]]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        event, name, when, token = line.split()
        rows.append((event, name, float(when), int(token)))
    return rows


@pytest.mark.asyncio
async def test_two_wrappers_one_lock_failover_and_graceful_stop(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "children.log"
    a, log_a = await wrapper("a", await config_for(emu, "a", tmp_path), out, tmp_path)
    try:
        await wait_for(lambda: any(e[:2] == ("started", "a") for e in events(out)))
        b, log_b = await wrapper("b", await config_for(emu, "b", tmp_path), out, tmp_path)
        try:
            await anyio.sleep(1.5)  # b campaigns; a's child runs alone
            assert [e[:2] for e in events(out)] == [("started", "a")]

            # a is cut off from the API: its term ends at the renew deadline, its child is
            # stopped, a exits 3; then b's child starts.
            emu.faults("a").partition("blackhole")
            with anyio.fail_after(15):
                assert await a.wait() == 3
            await wait_for(lambda: any(e[:2] == ("started", "b") for e in events(out)))
            rows = events(out)
            assert [r[:2] for r in rows] == [("started", "a"), ("stopped", "a"), ("started", "b")]
            assert rows[1][2] < rows[2][2]  # a's child was gone before b's started
            assert rows[2][3] > rows[0][3]  # a new fencing token
            assert "leadership lost (deadline); exiting with code 3" in log_a.read_text()

            # SIGTERM to b is forwarded; its child exits 0; b releases the lock and exits 0.
            b.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await b.wait() == 0
            assert [r[:2] for r in events(out)][-1] == ("stopped", "b")
            lease = emu.get_object("leases", "default", "cli")
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == ""
            assert "forwarding to the command" in log_b.read_text()
        finally:
            await stop(b)
    finally:
        await stop(a)


@pytest.mark.asyncio
async def test_command_exit_code_is_returned_and_the_lock_released(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(emu, "a", tmp_path)
    process = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "aioleader",
            "run",
            "--lock",
            "lease/default/once",
            "--identity",
            "a",
            "--kubeconfig",
            str(config),
            *TIMING,
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(7)",
        ],
        env=env(),
    )
    async with process:
        with anyio.fail_after(15):
            assert await process.wait() == 7
    lease = emu.get_object("leases", "default", "once")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""


@pytest.mark.asyncio
async def test_status_text_and_json(emu: KubeEmulator, tmp_path: Path) -> None:
    config = await config_for(emu, "a", tmp_path)
    emu.put_raw(
        "leases",
        "default",
        "st",
        {
            "metadata": {"name": "st", "namespace": "default"},
            "spec": {
                "holderIdentity": "pod-x",
                "leaseDurationSeconds": 15,
                "renewTime": "2026-01-01T00:00:00.000000Z",
                "leaseTransitions": 4,
            },
        },
    )
    base = [
        sys.executable,
        "-m",
        "aioleader",
        "status",
        "--lock",
        "lease/default/st",
        "--kubeconfig",
        str(config),
    ]
    text = await anyio.run_process(base, env=env())
    assert text.stdout.decode().startswith("default/st: holder pod-x, renewed ")
    assert "transitions 4" in text.stdout.decode()
    as_json = await anyio.run_process([*base, "-o", "json"], env=env())
    data = json.loads(as_json.stdout)
    assert data["holder"] == "pod-x"
    assert data["transitions"] == 4
    assert data["renewAgeSeconds"] > 0


@pytest.mark.asyncio
async def test_status_lists_an_applications_leases_by_label(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(emu, "a", tmp_path)
    for namespace, name, holder, app in (
        ("default", "web-scheduler", "pod-1", "web"),
        ("other", "web-mailer", "", "web"),
        ("default", "db", "pod-9", "db"),
    ):
        emu.put_raw(
            "leases",
            namespace,
            name,
            {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": 15,
                    "leaseTransitions": 2,
                },
            },
        )
    base = [
        sys.executable,
        "-m",
        "aioleader",
        "status",
        "--kubeconfig",
        str(config),
        "-l",
        "app=web",
    ]
    text = (await anyio.run_process(base, env=env())).stdout.decode()
    assert text.splitlines() == [
        "default/web-scheduler: holder pod-1, renewed ?, lease 15s, transitions 2",
        "other/web-mailer: holder (none), renewed ?, lease 15s, transitions 2",
    ]
    one = (await anyio.run_process([*base, "-n", "other", "-o", "json"], env=env())).stdout
    assert [(row["lock"], row["holder"]) for row in json.loads(one)] == [("other/web-mailer", None)]
    none = (await anyio.run_process([*base[:-1], "app=nope", "-n", "x"], env=env())).stdout
    assert none.decode() == "no Lease matches 'app=nope' in namespace 'x'\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--lock", "lease/default/x"], "missing the command"),
        (["run", "--lock", "lease/x", "--", "true"], "expected lease/NAMESPACE/NAME"),
        (["run", "--lock", "lease/default/Bad_Name", "--", "true"], "DNS-1123"),
        (
            ["run", "--lock", "lease/default/x", "--lease-duration", "1", "--", "true"],
            "lease_duration",
        ),
        (
            [
                "run",
                "--lock",
                "lease/default/x",
                "--preset",
                "default",
                "--retry-period",
                "1",
                "--",
                "true",
            ],
            "--preset cannot be combined",
        ),
        (
            ["run", "--lock", "lease/default/x", "--healthz-addr", "nope", "--", "true"],
            "expected HOST:PORT",
        ),
        (["status", "--lock", "pod/default/x"], "unknown lock kind"),
        (["status"], "give either --lock SPEC or -l SELECTOR"),
        (["status", "--lock", "lease/default/x", "-l", "a=b"], "give either --lock"),
        (
            ["run", "--lock", "lease/default/x", "--pod-label", "role", "--", "true"],
            "expected KEY=LEADER[,STANDBY]",
        ),
        (
            ["run", "--lock", "lease/default/x", "--pod-label", "role=a b", "--", "true"],
            "invalid value 'a b'",
        ),
        (
            ["run", "--lock", "lease/default/x", "--leader-endpoints", "svc", "--", "true"],
            "expected SERVICE:PORT[,PORT…]",
        ),
        (
            ["run", "--lock", "lease/default/x", "--leader-endpoints", "svc:http", "--", "true"],
            "port 'http' is not NUMBER or NAME=NUMBER",
        ),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(argv: list[str], message: str) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "aioleader", *argv],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unreachable_cluster_is_one_line_and_exit_4(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig(f"http://127.0.0.1:{port}", "default"))
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aioleader",
            "status",
            "--lock",
            "lease/default/x",
            "--kubeconfig",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert proc.returncode == 4, proc.stderr
    assert "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 15
