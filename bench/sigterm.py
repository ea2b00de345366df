"""What a rollout sees: ``python bench/sigterm.py [--rounds N] [--without-helper] [--kill]``.

Runs the README's first program (extracted from README.md, as the test suite runs it) as three
replicas, real processes, against the standalone emulator (``python -m aioleader.testing``), and
stops the leader ``--rounds`` times, starting a fresh replica after each stop (as a Deployment's
rollout does). For every stop it prints:

* **handover**: signal sent → the next replica prints that it leads;
* **exit**: the stopped process's release observed (a watch from this process) → the process is
  gone, and signal → gone.

``--kill`` sends SIGKILL instead of SIGTERM (a crash: the others wait for the lease to expire);
``--without-helper`` runs the program without ``stop_on_signals()`` (how the README was before:
SIGTERM ends the process without a release, like a crash).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python bench/sigterm.py``
    sys.path.insert(0, str(ROOT))

from aioleader import observe  # noqa: E402
from aioleader.kubernetes import LeaseLock  # noqa: E402

LEADS = re.compile(r"^(?P<identity>\S+) leads \(fencing token (?P<token>\d+)\)$")
READY = "aioleader emulator listening on "


def readme_program(*, helper: bool) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert match is not None, "README.md has no python block"
    code = match.group(1)
    if not helper:
        assert "stop_on_signals(), " in code
        code = code.replace("stop_on_signals(), ", "").replace(", stop_on_signals", "")
    return code


@dataclass
class Replica:
    identity: str
    process: anyio.abc.Process
    led_at: float | None = None
    exited_at: float | None = None
    stderr: list[str] = field(default_factory=list)


async def _follow(replica: Replica) -> None:
    assert replica.process.stdout is not None
    pending = ""
    async for chunk in TextReceiveStream(replica.process.stdout):
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            m = LEADS.match(line)
            if m and m["identity"] == replica.identity and replica.led_at is None:
                replica.led_at = anyio.current_time()


async def _errors(replica: Replica) -> None:
    assert replica.process.stderr is not None
    async for chunk in TextReceiveStream(replica.process.stderr):
        replica.stderr.append(chunk)


async def _exit(replica: Replica) -> None:
    await replica.process.wait()
    replica.exited_at = anyio.current_time()


async def until(predicate: object, limit: float, what: str) -> None:
    assert callable(predicate)
    with anyio.move_on_after(limit):
        while not predicate():
            await anyio.sleep(0.002)
        return
    raise SystemExit(f"timed out after {limit:g} s waiting for {what}")


async def run(rounds: int, helper: bool, kill: bool) -> None:
    directory = Path(tempfile.mkdtemp(prefix="aioleader-sigterm-"))
    kubeconfig = directory / "kubeconfig"
    program = directory / "app.py"
    program.write_text(readme_program(helper=helper))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["KUBECONFIG"] = str(kubeconfig)
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(h for h in (env.get(name), "127.0.0.1", "localhost") if h)
    emulator = await anyio.open_process(
        [sys.executable, "-m", "aioleader.testing", "--port", "0", "--kubeconfig", str(kubeconfig)],
        env=env,
        stderr=None,
    )
    assert emulator.stdout is not None
    ready = (await emulator.stdout.receive()).decode()
    assert ready.startswith(READY), ready
    os.environ["KUBECONFIG"] = str(kubeconfig)

    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=str(kubeconfig))
    released: list[float] = []
    names = (f"pod-{i}" for i in itertools.count())
    live: list[Replica] = []
    rows: list[tuple[float, float | None, float]] = []
    signum = signal.SIGKILL if kill else signal.SIGTERM
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with observe(LeaseLock("my-lock", "default", api_client=api)) as changes:
                    async for change in changes:
                        if change.holder is None and change.previous is not None:
                            released.append(change.observed_at)

            async def start() -> Replica:
                identity = next(names)
                process = await anyio.open_process(
                    [sys.executable, str(program)], env={**env, "POD_NAME": identity}
                )
                replica = Replica(identity, process)
                for job in (_follow, _errors, _exit):
                    tg.start_soon(job, replica)
                live.append(replica)
                return replica

            tg.start_soon(watch)
            for _ in range(3):
                await start()
            await until(lambda: any(r.led_at for r in live), 30, "a first leader")
            for number in range(rounds):
                await anyio.sleep(1.0)  # every replica is up and follows the lock
                (leader,) = [r for r in live if r.led_at is not None]
                seen = len(released)
                sent = anyio.current_time()
                leader.process.send_signal(signum)
                live.remove(leader)
                await until(lambda: any(r.led_at for r in live), 60, "the next leader")
                await until(lambda r=leader: r.exited_at is not None, 30, "the old leader's exit")
                handover = max(r.led_at or 0.0 for r in live) - sent
                assert leader.exited_at is not None
                exit_after_release = None
                if not kill:
                    with anyio.move_on_after(1 if not helper else 10):
                        await until(lambda n=seen: len(released) > n, 30, "the release")
                    if len(released) > seen:
                        exit_after_release = leader.exited_at - released[seen]
                rows.append((handover, exit_after_release, leader.exited_at - sent))
                linger = (
                    "-" if exit_after_release is None else f"{exit_after_release * 1e3:6.0f} ms"
                )
                print(
                    f"round {number + 1}: {signal.Signals(signum).name} to {leader.identity} -> "
                    f"next leader after {handover * 1e3:7.0f} ms; exit {linger} after the "
                    f"release ({(leader.exited_at - sent) * 1e3:.0f} ms after the signal); "
                    f"exit code {leader.process.returncode}"
                    + (f"; stderr: {''.join(leader.stderr)[-200:]!r}" if leader.stderr else ""),
                    flush=True,
                )
                await start()
            for replica in live:
                replica.process.send_signal(signal.SIGTERM)
            await until(lambda: all(r.exited_at for r in live), 30, "the replicas' exit")
            tg.cancel_scope.cancel()
    finally:
        for replica in live:
            if replica.process.returncode is None:
                replica.process.kill()
        await api.close()
        emulator.terminate()
        await emulator.wait()
    handovers = [h for h, _, _ in rows]
    lingers = [e for _, e, _ in rows if e is not None]
    print(
        f"\nhandover after {signal.Signals(signum).name}"
        f"{'' if helper else ' (without stop_on_signals)'}: median "
        f"{statistics.median(handovers) * 1e3:.0f} ms, max {max(handovers) * 1e3:.0f} ms "
        f"over {len(rows)} rounds"
    )
    if lingers:
        print(
            f"exit after the release: median {statistics.median(lingers) * 1e3:.0f} ms, "
            f"max {max(lingers) * 1e3:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without-helper", action="store_true")
    parser.add_argument("--kill", action="store_true")
    args = parser.parse_args()
    anyio.run(run, args.rounds, not args.without_helper, args.kill)


if __name__ == "__main__":
    main()
