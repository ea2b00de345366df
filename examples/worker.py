"""A worker that leads, loses leadership, and campaigns again: one term after another.

Each term is logged with its fencing token, and every write the worker makes carries
the token, so that the store can refuse a write from a leader that has been replaced (a paused or
partitioned process that does not know yet). Run two of them and kill or partition one::

    POD_NAME=worker-1 python examples/worker.py
    POD_NAME=worker-2 python examples/worker.py

SIGTERM or Ctrl+C stops the worker gracefully: the current write finishes or is cancelled, then the
Lease is released, so that the other worker takes over at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient

from aioleader import Leadership, Term, Timing, elect, stop_on_signals
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("worker")

LOCK_NAME = "worker"


class StaleWrite(Exception):
    """The store has accepted a write with a higher fencing token: ours is an old term."""


@dataclass(frozen=True)
class Write:
    key: str
    writer: str
    fencing_token: int


@dataclass
class FencedStore:
    """Stand-in for a store that checks fencing tokens, as a database does with
    ``UPDATE ... SET fencing_token = :token WHERE fencing_token <= :token``."""

    writes: list[Write] = field(default_factory=list)
    highest: int = -1

    async def write(self, key: str, writer: str, *, fencing_token: int) -> None:
        await anyio.lowlevel.checkpoint()
        if fencing_token < self.highest:
            raise StaleWrite(f"fencing token {fencing_token} < {self.highest}")
        self.highest = fencing_token
        self.writes.append(Write(key, writer, fencing_token))


@dataclass
class TermReport:
    """What one term of this worker did."""

    number: int
    fencing_token: int
    writes: int = 0
    end_reason: str | None = None


async def work(
    leadership: Leadership, term: Term, report: TermReport, store: FencedStore, interval: float
) -> None:
    """The leader-only work: one batch every ``interval`` seconds, each write fenced."""
    while True:
        key = f"batch-{term.fencing_token}-{report.writes}"
        try:
            await store.write(key, term.identity, fencing_token=term.fencing_token)
        except StaleWrite as exc:
            # A newer leader exists. Re-reading the Lease ends our term at once if it names
            # somebody else; either way this term writes no more.
            log.error("fencing token %d: write refused (%s)", term.fencing_token, exc)
            await leadership.is_leader(confirm=True)
            return
        report.writes += 1
        await anyio.sleep(interval)


async def main(
    *,
    api_client: ApiClient | None = None,
    identity: str | None = None,
    namespace: str | None = None,
    timing: Timing | None = None,
    store: FencedStore | None = None,
    interval: float = 1.0,
    stop: anyio.Event | None = None,
) -> list[TermReport]:
    """Campaign and work, term after term, until ``stop`` is set; return what each term did."""
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "default"
    store = store if store is not None else FencedStore()
    stop = stop if stop is not None else anyio.Event()
    reports: list[TermReport] = []
    lock = LeaseLock(LOCK_NAME, namespace, identity, api_client=api_client)

    async def terms(leadership: Leadership) -> None:
        while True:
            async with leadership.leading() as term:
                log.info("leading (fencing token %d)", term.fencing_token)
                report = TermReport(term.number, term.fencing_token)
                reports.append(report)
                await work(leadership, term, report, store, interval)
            # Out of leading(): either the term ended (its work was cancelled), or the work
            # gave up on a refused write. Wait for the end of the term before the next one.
            await term.wait_ended()
            report.end_reason = term.end_reason
            log.warning(
                "stopped leading (fencing token %d: %s) after %d writes; campaigning again",
                term.fencing_token,
                term.end_reason,
                report.writes,
            )

    async with lock, elect(lock, timing=timing) as leadership, anyio.create_task_group() as tg:
        tg.start_soon(terms, leadership)
        await stop.wait()
        tg.cancel_scope.cancel()
    # elect() has released the lock; record how the last term ended.
    if reports and leadership.term is not None and reports[-1].end_reason is None:
        reports[-1].end_reason = leadership.term.end_reason
    return reports


async def run_until_signalled() -> None:
    """Work until SIGTERM or Ctrl+C: then the current write finishes or is cancelled, and the
    Lease is released before the process exits."""
    async with stop_on_signals() as stopping:
        await main()
    log.info("stopped by %s", stopping.signal.name if stopping.signal else "nothing")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    anyio.run(run_until_signalled)
