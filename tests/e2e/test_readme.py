"""The README's Python blocks are real programs: each is run here, as a new user would run it.

Every ```python block of README.md is either a program (run here against the API server of the
e2e session: the standalone emulator, or a real cluster with ``AIOLEADER_E2E=1``) or marked as a
fragment by an ``<!-- fragment -->`` line right before it (then it is only compiled). A program
must print a line containing ``leads (fencing token`` when it leads, and stop gracefully on
SIGTERM: exit 0, nothing on stderr, the lock released.

The first program is also the three-replica service of the README: SIGTERM to the leader's
process must hand over to another replica well under a second later (the bound asserted here is
generous; the figures are printed, see them with ``pytest -s``), and the process must be gone
promptly once its release is written.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from aioleader import observe
from aioleader.kubernetes import LeaseLock

from .conftest import ROOT, Target

README = ROOT / "README.md"
FRAGMENT = "<!-- fragment -->"
LEADS = re.compile(r"^(?P<identity>\S+) leads \(fencing token (?P<token>\d+)\)$")
# What the README's programs campaign for.
LOCK, NAMESPACE = "my-lock", "default"

# Generous bounds for a loaded CI runner; the figures this machine sees are printed.
pytestmark = pytest.mark.e2e

HANDOVER_BOUND = 3.0
EXIT_BOUND = 1.0


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    fragment: bool


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, each with whether a fragment marker precedes it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            previous = next(
                (lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), ""
            )
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise AssertionError(f"README.md:{start + 1}: unterminated ```python block")
            blocks.append(Block(start + 1, "\n".join(body) + "\n", previous == FRAGMENT))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())
PROGRAMS = [b for b in BLOCKS if not b.fragment]


def test_the_readme_has_programs_and_every_block_compiles() -> None:
    assert len(PROGRAMS) >= 2  # the elect() program and the task-group program
    for block in BLOCKS:
        compile(block.code, f"README.md:{block.line}", "exec")
    for block in PROGRAMS:
        assert 'if __name__ == "__main__":' in block.code, f"README.md:{block.line}"


def test_the_docs_quick_start_is_the_readme_program() -> None:
    """docs/index.md shows the same program (not run twice: kept identical instead)."""
    docs = python_blocks((ROOT / "docs" / "index.md").read_text())
    assert docs[0].code == PROGRAMS[0].code


@dataclass
class Replica:
    """One copy of a README program, in a process of its own, its output read as it comes."""

    identity: str
    process: anyio.abc.Process
    lines: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exited_at: float | None = None

    def led(self) -> list[tuple[float, int]]:
        return [
            (at, int(m["token"]))
            for at, line in self.lines
            if (m := LEADS.match(line)) and m["identity"] == self.identity
        ]

    def report(self) -> str:
        out = "\n".join(line for _, line in self.lines)
        return (
            f"--- {self.identity} (exit {self.process.returncode}):\n{out}\n{''.join(self.errors)}"
        )


async def _read_lines(stream: anyio.abc.ByteReceiveStream, sink: list[tuple[float, str]]) -> None:
    pending = ""
    async for chunk in TextReceiveStream(stream):
        pending += chunk
        *complete, pending = pending.split("\n")
        now = anyio.current_time()
        sink.extend((now, line) for line in complete)


async def _read_text(stream: anyio.abc.ByteReceiveStream, sink: list[str]) -> None:
    async for chunk in TextReceiveStream(stream):
        sink.append(chunk)


async def _watch_exit(replica: Replica) -> None:
    await replica.process.wait()
    replica.exited_at = anyio.current_time()


@asynccontextmanager
async def replicas(
    target: Target, program: Path, identities: list[str]
) -> AsyncIterator[dict[str, Replica]]:
    """Start one process per identity (``POD_NAME``); kill what is left on the way out."""
    started: dict[str, Replica] = {}
    async with anyio.create_task_group() as tg:
        try:
            for identity in identities:
                process = await anyio.open_process(
                    [sys.executable, str(program)],
                    env=target.cluster.env(POD_NAME=identity),
                    cwd=program.parent,
                )
                replica = Replica(identity, process)
                started[identity] = replica
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(_read_lines, process.stdout, replica.lines)
                tg.start_soon(_read_text, process.stderr, replica.errors)
                tg.start_soon(_watch_exit, replica)
            yield started
        finally:
            for replica in started.values():
                if replica.process.returncode is None:
                    replica.process.kill()
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                for replica in started.values():
                    await replica.process.wait()


async def wait_until(replicas: dict[str, Replica], predicate: object, what: str) -> None:
    assert callable(predicate)
    with anyio.move_on_after(30):
        while not predicate():
            await anyio.sleep(0.005)
        return
    pytest.fail(
        f"timed out waiting for {what}\n" + "\n".join(r.report() for r in replicas.values())
    )


def leaders(group: dict[str, Replica]) -> list[str]:
    return [name for name, r in group.items() if r.led()]


async def holder(target: Target) -> str | None:
    async with observe(LeaseLock(LOCK, NAMESPACE, api_client=target.api)) as changes:
        async for change in changes:
            return change.holder
    raise AssertionError("observe() ended without an item")  # pragma: no cover


@pytest.mark.asyncio
@pytest.mark.parametrize("block", PROGRAMS, ids=[f"line{b.line}" for b in PROGRAMS])
async def test_readme_program_leads_and_stops_gracefully_on_sigterm(
    target: Target, tmp_path: Path, block: Block
) -> None:
    program = tmp_path / "app.py"
    program.write_text(block.code)
    async with replicas(target, program, ["readme-solo"]) as group:
        solo = group["readme-solo"]
        await wait_until(group, solo.led, "the program to lead")
        solo.process.send_signal(signal.SIGTERM)
        await wait_until(group, lambda: solo.exited_at is not None, "the program to exit")
    assert solo.process.returncode == 0, solo.report()
    assert solo.errors == [], solo.report()  # no traceback, no "Unclosed client session"
    assert await holder(target) is None  # released: nobody leads


@pytest.mark.asyncio
async def test_readme_service_hands_over_on_sigterm_and_exits_at_once(
    target: Target, tmp_path: Path
) -> None:
    program = tmp_path / "app.py"
    program.write_text(PROGRAMS[0].code)
    identities = ["pod-a", "pod-b", "pod-c"]
    lock = LeaseLock(LOCK, NAMESPACE, api_client=target.api)
    released: list[float] = []

    async with anyio.create_task_group() as watchers:

        async def follow() -> None:
            async with observe(lock) as changes:
                async for change in changes:
                    if change.holder is None and change.previous is not None:
                        released.append(change.observed_at)

        watchers.start_soon(follow)
        async with replicas(target, program, identities) as group:
            await wait_until(group, lambda: len(leaders(group)) == 1, "a first leader")
            await anyio.sleep(1.0)  # every replica is up and following the lock
            (first,) = leaders(group)
            old = group[first]
            assert [n for n, r in group.items() if r.exited_at is not None] == []

            sigterm_at = anyio.current_time()
            old.process.send_signal(signal.SIGTERM)
            await wait_until(group, lambda: len(leaders(group)) == 2, "the next leader")
            await wait_until(group, lambda: old.exited_at is not None, "the old leader to exit")
            await wait_until(group, lambda: bool(released), "the release to be observed")
            (second,) = [n for n in leaders(group) if n != first]
            (led_at, token), *_ = group[second].led()
            assert token > old.led()[0][1]  # a new term, a greater fencing token

            handover = led_at - sigterm_at
            assert old.exited_at is not None
            linger = old.exited_at - released[0]
            print(
                f"\nREADME service, 3 replicas: SIGTERM to {first} -> {second} leads "
                f"{handover * 1000:.0f} ms later; {first} exited {linger * 1000:.0f} ms after "
                f"its release was observed ({(old.exited_at - sigterm_at) * 1000:.0f} ms after "
                "the SIGTERM)"
            )
            assert old.process.returncode == 0, old.report()
            assert old.errors == [], old.report()
            assert handover < HANDOVER_BOUND
            assert linger < EXIT_BOUND

            # The others stop gracefully too: the lock ends up free.
            for name in identities:
                if name != first:
                    group[name].process.send_signal(signal.SIGTERM)
            await wait_until(
                group, lambda: all(r.exited_at is not None for r in group.values()), "all to exit"
            )
            for replica in group.values():
                assert replica.process.returncode == 0, replica.report()
                assert replica.errors == [], replica.report()
        watchers.cancel_scope.cancel()
    assert await holder(target) is None
