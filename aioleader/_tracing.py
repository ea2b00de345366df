"""OpenTelemetry spans for acquire, renew and release, when ``opentelemetry-api`` is installed.

The library only uses the API (``pip install 'aioleader[otel]'``): without an SDK configured by
the application the spans are no-ops, and without the package nothing is imported at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["span"]

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on the environment
    _trace = None  # type: ignore[assignment]

# A proxy tracer: it follows a provider the application installs later.
_tracer = _trace.get_tracer("aioleader") if _trace is not None else None


def _no_sdk() -> bool:
    """Whether no tracer provider is installed yet (the API's default proxy, or its no-op one):
    then every span is a no-op, and making one costs a renewal more than building its request."""
    assert _trace is not None
    provider = _trace.get_tracer_provider()
    return isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span named ``aioleader.<name>`` with ``attributes`` (lock, identity, ...)."""
    if _tracer is None or _no_sdk():
        yield
        return
    with _tracer.start_as_current_span(f"aioleader.{name}", attributes=attributes):
        yield
