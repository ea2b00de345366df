"""Logging: stdlib ``logging`` on the ``aioleader`` logger, structured extras, no handlers.

A library must leave logging configuration to the application: no handlers, no levels, records
that propagate. What it owes the application are records a structured formatter (JSON logs) can
use without parsing messages: every record of the elector carries ``lock`` and ``identity``;
a change of leader carries ``holder``; the start and end of a term carry ``term``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from aioleader import Timing, elect
from aioleader.kubernetes import LeaseLock
from aioleader.locks import MemoryLock
from aioleader.testing import KubeEmulator

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)


class Collector(logging.Handler):
    """Every record of the ``aioleader`` logger and its children, as emitted."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, name: str = "aioleader") -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name]

    def matching(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self.of() if text in r.getMessage()]


@pytest.fixture
def collector() -> Iterator[Collector]:
    # On the root logger, as an application would configure it: records reach it only if the
    # library's loggers propagate (and have no level of their own that filters them).
    root = logging.getLogger()
    handler = Collector()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def library_handlers() -> dict[str, list[logging.Handler]]:
    """Handlers on the ``aioleader`` logger and every child logger created so far."""
    names = ["aioleader"] + [
        n for n in logging.Logger.manager.loggerDict if n.startswith("aioleader.")
    ]
    found: dict[str, list[logging.Handler]] = {}
    for name in names:
        logger = logging.getLogger(name)
        if logger.handlers:
            found[name] = list(logger.handlers)
    return found


def test_importing_installs_no_handler_and_sets_no_level() -> None:
    # A fresh interpreter: what importing every public module does to logging, and nothing else.
    code = """
import json, logging
import aioleader, aioleader.kubernetes, aioleader.locks, aioleader.testing
names = ["aioleader"] + [n for n in logging.Logger.manager.loggerDict if n.startswith("aioleader.")]
loggers = {n: logging.getLogger(n) for n in names}
print(json.dumps({
    "handlers": {n: len(l.handlers) for n, l in loggers.items()},
    "levels": {n: l.level for n, l in loggers.items()},
    "propagate": {n: l.propagate for n, l in loggers.items()},
    "root_handlers": len(logging.getLogger().handlers),
}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    state = json.loads(result.stdout)
    assert state["handlers"]["aioleader"] == 0
    assert set(state["handlers"].values()) == {0}
    assert set(state["levels"].values()) == {logging.NOTSET}
    assert set(state["propagate"].values()) == {True}
    assert state["root_handlers"] == 0  # no basicConfig() either
    assert logging.getLogger("aioleader").handlers == []  # and in this process


@pytest.mark.asyncio
async def test_election_records_carry_lock_identity_holder_and_term(
    collector: Collector,
) -> None:
    a = MemoryLock("a", name="logged")
    b = a.sibling("b")
    async with elect(a, timing=TIMING) as leading_a:
        await leading_a.wait_term()
        async with elect(b, timing=TIMING) as leading_b:
            with anyio.fail_after(5):
                while leading_b.leader != "a":
                    await anyio.sleep(0.01)
            await anyio.sleep(2 * TIMING.retry_period)  # a renews; b follows
        # b stopped without leading; a goes on
    # a stopped: it released the lock

    records = collector.of()
    assert records, "the elector logged nothing"
    for record in records:
        assert record.__dict__.get("lock") == "memory/logged", record.getMessage()
        assert record.__dict__.get("identity") in ("a", "b"), record.getMessage()

    became = collector.matching("became leader")
    assert [(r.__dict__["identity"], r.__dict__["term"]) for r in became] == [("a", 1)]
    assert became[0].levelno == logging.INFO
    stopped = collector.matching("stopped leading")
    assert [(r.__dict__["identity"], r.__dict__["term"]) for r in stopped] == [("a", 1)]
    assert stopped[0].levelno == logging.INFO  # a shutdown is routine, not a warning

    changes = collector.matching("leader is now")
    assert changes
    for record in changes:
        assert isinstance(record.__dict__["holder"], str)
    # b saw a lead; a saw itself lead, then its own release ("" = free).
    seen = {(r.__dict__["identity"], r.__dict__["holder"]) for r in changes}
    assert ("b", "a") in seen
    assert ("a", "a") in seen
    assert ("a", "") in seen

    released = collector.matching("released by")
    assert [r.__dict__["identity"] for r in released] == ["a"]
    assert library_handlers() == {}


@pytest.mark.asyncio
async def test_lost_term_is_a_warning_with_the_term(collector: Collector) -> None:
    a = MemoryLock("a", name="lost")
    b = a.sibling("b")
    async with elect(a, timing=TIMING, release_on_cancel=False) as leading_a:
        term = await leading_a.wait_term()
        # Another writer takes the lock over: a's next renewal finds it gone.
        observed = await b.get()
        assert observed is not None
        await b.update(observed.record.with_changes(holder_identity="b", leader_transitions=7))
        with anyio.fail_after(5):
            await term.wait_ended()
        assert term.end_reason == "lost"
    (stopped,) = collector.matching("stopped leading")
    assert stopped.levelno == logging.WARNING
    assert stopped.__dict__["term"] == 1
    assert stopped.__dict__["identity"] == "a"
    assert stopped.__dict__["lock"] == "memory/lost"
    assert library_handlers() == {}


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_kubernetes_lock_records_carry_the_extras(
    emu: KubeEmulator, collector: Collector
) -> None:
    # RBAC without events: the dropped Event is a DEBUG record with the same extras.
    emu.put_raw("leases", "default", "logged", {"spec": {"holderIdentity": ""}})
    faults = emu.faults("pod-a")
    faults.error_rate = 1.0
    faults.error_status = 403
    faults.error_verbs = {"create", "patch"}
    lock = LeaseLock(
        "logged", "default", identity="pod-a", api_client=await emu.api_client("pod-a")
    )
    async with elect(lock, timing=TIMING) as leadership:
        await leadership.wait_term()
        with anyio.fail_after(5):
            while not collector.matching("not recorded"):
                await anyio.sleep(0.01)
    records = collector.of()
    for record in records:
        assert record.__dict__.get("lock") == "default/logged", record.getMessage()
        assert record.__dict__.get("identity") == "pod-a", record.getMessage()
    (became,) = collector.matching("became leader (fencing token")
    assert (became.__dict__["term"], became.__dict__["fencing_token"]) == (
        1,
        1,
    )  # taken from a free record at 0
    dropped = collector.matching("not recorded")
    assert dropped
    assert {r.levelno for r in dropped} == {logging.DEBUG}
    assert library_handlers() == {}
