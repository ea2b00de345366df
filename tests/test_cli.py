"""``aioleader run`` gating real child processes, ``status``, and clear errors for bad input.

Wrappers and their commands are real processes; the Kubernetes API is the in-process emulator,
each wrapper on its own endpoint (so one can be partitioned) through a kubeconfig file.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
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
        "other/web-mailer: holder nobody, renewed ?, lease 15s, transitions 2",
    ]
    one = (await anyio.run_process([*base, "-n", "other", "-o", "json"], env=env())).stdout
    assert [(row["lock"], row["holder"]) for row in json.loads(one)] == [("other/web-mailer", None)]
    none = (await anyio.run_process([*base[:-1], "app=nope", "-n", "x"], env=env())).stdout
    assert none.decode() == "no Lease matches 'app=nope' in namespace 'x'\n"


def _cli(*argv: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioleader", *argv],
        capture_output=True,
        text=True,
        env={**env(), **(env_extra or {})},
        check=False,
        timeout=60,
    )


DIRECTORY = str(Path(__file__).parent)


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (
            ["run", "--lock", "lease/default/x"],
            2,
            "run: missing the command (aioleader run --lock … -- CMD ARGS…)",
        ),
        (
            ["run", "--lock", "lease/x", "--", "true"],
            2,
            "--lock 'lease/x': expected lease/NAMESPACE/NAME, configmap/NAMESPACE/NAME, "
            "endpoints/NAMESPACE/NAME or file:PATH",
        ),
        (
            ["run", "--lock", "lease/default/x", "--lease-duration", "1", "--", "true"],
            2,
            "--lease-duration (1.0) must be greater than --renew-deadline (10.0)",
        ),
        (
            ["run", "--lock", "lease/default/x", "--renew-deadline", "2", "--", "true"],
            2,
            "--renew-deadline (2.0) must be greater than max(1, jitter) × --retry-period "
            "(1.2 × 2.0 = 2.4)",
        ),
        (
            ["run", "--lock", "lease/default/x", "--lease-duration", "abc", "--", "true"],
            2,
            "argument --lease-duration: expected a number of seconds, got 'abc' "
            "(see aioleader run --help)",
        ),
        (
            ["run", "--lock", "lease/default/x", "--retry-period", "nan", "--", "true"],
            2,
            "argument --retry-period: must be greater than zero seconds, got 'nan' "
            "(see aioleader run --help)",
        ),
        (
            ["run", "--lock", "lease/default/x", "--grace-period", "3", "--", "true"],
            2,
            "--grace-period 3: must be between 0 and (lease duration - renew deadline) / 2 "
            "= 2.5, so that the command is dead before another replica may take over",
        ),
        (
            [
                *["run", "--lock", "lease/default/x", "--preset", "default"],
                *["--retry-period", "1", "--", "true"],
            ],
            2,
            "--preset cannot be combined with --lease-duration/--renew-deadline/--retry-period",
        ),
        (
            ["run", "--lock", "lease/default/x", "--healthz-addr", "nope", "--", "true"],
            2,
            "--healthz-addr 'nope': expected HOST:PORT",
        ),
        (
            ["run", "--lock", "lease/default/x", "--bogus", "--", "true"],
            2,
            "unrecognized arguments: --bogus (see aioleader --help)",
        ),
        (["run"], 2, "the following arguments are required: --lock (see aioleader run --help)"),
        (
            ["run", "--lock", "file:/tmp/x", "--", "/nonexistent-cmd"],
            127,
            "command '/nonexistent-cmd': no such file",
        ),
        (
            ["run", "--lock", "file:/tmp/x", "--", "nonexistent-cmd"],
            127,
            "command 'nonexistent-cmd': not found on PATH",
        ),
        (
            ["run", "--lock", "file:/tmp/x", "--", DIRECTORY],
            126,
            f"command {DIRECTORY!r}: is a directory",
        ),
        (
            ["run", "--lock", "file:/tmp/x", "--", __file__],
            126,
            f"command {__file__!r}: not executable",
        ),
        (
            ["watch", "--lock", "lease/default/x", "--poll-interval", "0"],
            2,
            "argument --poll-interval: must be greater than zero seconds, got '0' "
            "(see aioleader watch --help)",
        ),
        (
            ["status", "--lock", "pod/default/x"],
            2,
            "--lock 'pod/default/x': unknown lock kind 'pod'",
        ),
        (
            ["status", "--lock", "lease/default/x", "--kubeconfig", "/nonexistent/config"],
            4,
            "--kubeconfig '/nonexistent/config': no such file",
        ),
    ],
)
def test_every_failure_is_one_line_naming_the_flag_or_input(
    argv: list[str], code: int, line: str
) -> None:
    proc = _cli(*argv)
    assert (proc.returncode, proc.stderr) == (code, f"aioleader: {line}\n")
    assert proc.stdout == ""


def test_a_bad_lock_name_names_the_flag() -> None:
    proc = _cli("run", "--lock", "lease/default/Bad_Name", "--", "true")
    assert proc.returncode == 2
    assert proc.stderr.startswith("aioleader: --lock 'lease/default/Bad_Name': ")
    assert "DNS-1123" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_kubeconfig_problems_are_one_line_in_the_words_of_the_command(tmp_path: Path) -> None:
    not_yaml = tmp_path / "not-yaml"
    not_yaml.write_text("apiVersion: v1\nclusters: [\n  - {a: b\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    status = ["status", "--lock", "lease/default/x"]
    unset = {"KUBERNETES_SERVICE_HOST": ""}

    proc = _cli(*status, "--kubeconfig", str(not_yaml), env_extra=unset)
    assert (proc.returncode, proc.stderr) == (
        4,
        f"aioleader: --kubeconfig {str(not_yaml)!r}: not valid YAML: while parsing a flow node "
        f"expected the node content, but found '-' in \"{not_yaml}\", line 3, column 3\n",
    )
    proc = _cli(*status, "--kubeconfig", str(empty), env_extra=unset)
    assert (proc.returncode, proc.stderr) == (
        4,
        f"aioleader: --kubeconfig {str(empty)!r}: not a usable kubeconfig: the file is empty\n",
    )
    missing = str(tmp_path / "missing")
    proc = _cli(*status, env_extra={**unset, "KUBECONFIG": missing})
    assert (proc.returncode, proc.stderr) == (
        4,
        f"aioleader: KUBECONFIG {missing!r}: no such file (pass --kubeconfig PATH or fix "
        "KUBECONFIG)\n",
    )
    proc = _cli(*status, env_extra={**unset, "KUBECONFIG": "", "HOME": str(tmp_path)})
    assert (proc.returncode, proc.stderr) == (
        4,
        f"aioleader: kubeconfig {str(tmp_path / '.kube' / 'config')!r}: no such file (pass "
        "--kubeconfig PATH, set KUBECONFIG, or run in a pod)\n",
    )


def test_help_shows_the_defaults_and_the_words_of_the_readme() -> None:
    text = " ".join(_cli("run", "--help").stdout.split())
    assert "(default: $POD_NAME, else hostname_pid)" in text
    assert "host_pid" not in text.replace("hostname_pid", "")
    assert "(default: 15, or --preset's)" in text
    assert "(default: 10, or --preset's)" in text
    assert "(default: 2, or --preset's)" in text
    assert "(default: warning)" in text
    assert "127 the command was not found" in text
    watch = " ".join(_cli("watch", "--help").stdout.split())
    assert "while the API is unavailable (default: 2)" in watch
    status = " ".join(_cli("status", "--help").stdout.split())
    assert "5 no such lock" in status


def test_unreachable_cluster_is_one_line_and_exit_4(tmp_path: Path) -> None:

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


async def _cli_async(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        [sys.executable, "-m", "aioleader", *argv], env=env(), check=False
    )


@pytest.mark.asyncio
async def test_status_of_a_missing_lock_exits_5_and_a_free_one_is_held_by_nobody(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = str(await config_for(emu, "a", tmp_path))
    missing = await _cli_async("status", "--lock", "lease/default/nope", "--kubeconfig", config)
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        5,
        b"default/nope: no such lock\n",
        b"",
    )
    as_json = await _cli_async(
        "status", "--lock", "lease/default/nope", "--kubeconfig", config, "-o", "json"
    )
    assert as_json.returncode == 5
    assert json.loads(as_json.stdout) == {"lock": "default/nope", "exists": False, "holder": None}
    emu.put_raw(
        "leases",
        "default",
        "free",
        {
            "metadata": {"name": "free", "namespace": "default"},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 2},
        },
    )
    free = await _cli_async("status", "--lock", "lease/default/free", "--kubeconfig", config)
    assert (free.returncode, free.stdout) == (
        0,
        b"default/free: holder nobody, renewed ?, lease 1s, transitions 2\n",
    )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.asyncio
async def test_a_follower_says_who_leads_and_each_change(emu: KubeEmulator, tmp_path: Path) -> None:
    out = tmp_path / "children.log"
    child = f"{sys.executable} {tmp_path / 'child.py'} {out}"
    a, log_a = await wrapper("a", await config_for(emu, "a", tmp_path), out, tmp_path)
    try:
        await wait_for(lambda: any(e[:2] == ("started", "a") for e in events(out)))
        b, log_b = await wrapper("b", await config_for(emu, "b", tmp_path), out, tmp_path)
        try:
            await wait_for(lambda: _lines(log_b) == ["aioleader: a leads"])
            a.send_signal(signal.SIGTERM)  # a's child exits 0, a releases: b takes over
            with anyio.fail_after(10):
                assert await a.wait() == 0
            await wait_for(lambda: any(e[:2] == ("started", "b") for e in events(out)))
            assert _lines(log_a) == [
                f"aioleader: leading (fencing token 0): starting {child} a",
                "aioleader: SIGTERM: forwarding to the command's process group",
                "aioleader: command exited with code 0",
                "aioleader: lock released: nobody leads",
            ]
            assert _lines(log_b) == [
                "aioleader: a leads",
                "aioleader: nobody leads",
                f"aioleader: leading (fencing token 1): starting {child} b",
            ]
        finally:
            await stop(b)
    finally:
        await stop(a)


def _refused(port: int, verb: str = "get") -> str:
    return (
        f'cannot {verb} leases.coordination.k8s.io "cli" in namespace "default": '
        f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})"
    )


@pytest.mark.asyncio
async def test_run_reports_an_unreachable_api_at_once_and_once_then_its_return(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(emu, "a", tmp_path)
    port = (await emu.endpoint("a")).port
    emu.faults("a").partition("refuse")
    out = tmp_path / "children.log"
    a, log = await wrapper("a", config, out, tmp_path)
    try:
        await wait_for(lambda: log.read_text() != "")
        await anyio.sleep(1.0)  # four attempts at RP 0.25 s: still one line
        assert _lines(log) == [f"aioleader: API unavailable ({_refused(port)}); retrying"]
        emu.faults("a").heal()
        await wait_for(lambda: any(e[:2] == ("started", "a") for e in events(out)))
        assert _lines(log) == [
            f"aioleader: API unavailable ({_refused(port)}); retrying",
            "aioleader: API available again",
            f"aioleader: leading (fencing token 0): starting {sys.executable} "
            f"{tmp_path / 'child.py'} {out} a",
        ]
    finally:
        await stop(a)


WATCHED = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 holder=(\S+) previous=(\S+) transitions=(\d+) "
    r"renewTime=\S+"
)


@pytest.mark.asyncio
async def test_watch_reports_an_unreachable_api_and_says_nobody(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(emu, "w", tmp_path)
    port = (await emu.endpoint("w")).port
    emu.faults("w").partition("refuse")
    stdout, stderr = tmp_path / "watch.out", tmp_path / "watch.err"
    with stdout.open("w") as out_sink, stderr.open("w") as err_sink:
        process = await anyio.open_process(
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
                "0.25",
            ],
            stdout=out_sink,
            stderr=err_sink,
            env=env(),
        )
    try:
        await wait_for(lambda: stderr.read_text() != "")
        await anyio.sleep(1.0)
        assert _lines(stderr) == [f"aioleader: API unavailable ({_refused(port)}); retrying"]
        assert stdout.read_text() == ""
        emu.faults("w").heal()
        await wait_for(lambda: stdout.read_text() != "")
        assert _lines(stderr)[1:] == ["aioleader: API available again"]
        a, _ = await wrapper(
            "a", await config_for(emu, "a", tmp_path), tmp_path / "children.log", tmp_path
        )
        try:
            await wait_for(lambda: len(_lines(stdout)) == 2)
            a.send_signal(signal.SIGTERM)
            await wait_for(lambda: len(_lines(stdout)) == 3)
        finally:
            await stop(a)
        rows = [WATCHED.fullmatch(line) for line in _lines(stdout)]
        assert [m.groups() if m else None for m in rows] == [
            ("nobody", "nobody", "0"),
            ("a", "nobody", "0"),
            ("nobody", "a", "0"),
        ]
    finally:
        await stop(process)


@pytest.mark.asyncio
async def test_library_log_lines_are_prefixed_apart_from_the_wrappers(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    config = await config_for(emu, "a", tmp_path)
    argv = ["run", "--lock", "lease/default/logs", "--identity", "a", "--kubeconfig", str(config)]
    argv += [*TIMING, "--log-level", "info", "--", sys.executable, "-c", "pass"]
    proc = await _cli_async(*argv)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 0
    assert "aioleader (library) INFO: default/logs: a became leader (fencing token 0)" in lines
    assert f"aioleader: leading (fencing token 0): starting {sys.executable} -c pass" in lines
    assert all(line.startswith(("aioleader: ", "aioleader (library) INFO: ")) for line in lines), (
        lines
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status"], "status: give either --lock SPEC or -l SELECTOR"),
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
def test_bad_routing_and_selector_flags_give_one_line_and_exit_2(
    argv: list[str], message: str
) -> None:
    proc = _cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("aioleader: ")
