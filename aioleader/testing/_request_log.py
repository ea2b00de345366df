"""The request log: what each simulated client asked and what it got."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import final

__all__ = ["RequestLog", "RequestRecord"]


@final
@dataclass(frozen=True)
class RequestRecord:
    """One request, recorded when its outcome is known.

    ``verb`` is named as in the Kubernetes audit log (``get``, ``list``, ``watch``, ``create``,
    ``update``, ``patch``, ``delete``, ``deletecollection``); ``group``/``resource`` are empty
    for discovery paths. ``status`` is the HTTP status sent, or 0 when no response was sent
    (dropped, or abandoned by the client while hung). ``started`` is the event loop's clock at
    arrival (``anyio.current_time()``), ``duration`` the time to the outcome (for a watch, to the
    start of the stream), ``wall`` the server clock at arrival. ``fault`` names the injected
    fault that shaped the outcome: ``"fail"``, ``"error_rate"``, ``"drop"``,
    ``"apply_then_drop"``, ``"watch_expire"``, or None.
    """

    client: str
    verb: str
    group: str
    resource: str
    namespace: str
    name: str
    status: int
    started: float
    duration: float
    wall: datetime
    fault: str | None = None


class RequestLog:
    """An append-only list of [`RequestRecord`][RequestRecord]."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        self._records.append(record)

    def records(self) -> list[RequestRecord]:
        return list(self._records)

    def counters(self, client: str | None = None) -> Counter[str]:
        return Counter(r.verb for r in self._records if client is None or r.client == client)

    def clear(self) -> None:
        self._records.clear()
