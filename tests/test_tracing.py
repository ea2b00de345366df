"""OpenTelemetry spans for acquire, renew and release (opentelemetry-api + the SDK's in-memory
exporter)."""

from __future__ import annotations

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aioleader import LockError, elect
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock("asyncio")]

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracer_provider() -> None:
    # Installed when these tests run, not at collection, so the rest of the suite is not traced.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


async def test_spans_for_acquire_renew_release() -> None:
    EXPORTER.clear()
    lock = FaultyLock(MemoryLock("a"))
    async with elect(lock) as leadership:
        await leadership.wait_term()
        lock.fail_next(LockError("503"))
        await anyio.sleep(5)
    spans = EXPORTER.get_finished_spans()
    names = [s.name for s in spans]
    assert names == ["aioleader.acquire", "aioleader.renew", "aioleader.renew", "aioleader.release"]
    assert all(s.attributes is not None for s in spans)
    assert spans[0].attributes == {
        "aioleader.lock": "memory/memory-lock",
        "aioleader.identity": "a",
    }
    failed = spans[1]
    assert failed.status.status_code == trace.StatusCode.ERROR  # the 503
    assert spans[2].status.status_code == trace.StatusCode.UNSET
    assert spans[3].attributes is not None
    assert spans[3].attributes["term"] == 1
