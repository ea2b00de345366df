"""The lock interface: what the elector needs from any lock object.

Modelled on client-go's ``resourcelock.Interface`` (Get / Create / Update / RecordEvent / Identity /
Describe) with two changes: every request takes a ``timeout`` that the lock must honour (the elector
bounds each request by what is left of the renew window), and errors are exceptions from
:mod:`aioleader._exceptions` rather than status codes, translated inside the lock and nowhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from ._record import LeaderElectionRecord

__all__ = ["Lock", "Observed"]

_L = TypeVar("_L", bound="Lock")


@dataclass(frozen=True)
class Observed:
    """One read of the lock.

    ``raw`` is the record exactly as stored (bytes), so that "has the lock changed since I last
    looked?" compares what the server holds rather than a lossy decoding of it. ``version`` is the
    opaque compare-and-swap token (``metadata.resourceVersion`` for Kubernetes locks).

    ``precise`` says whether ``raw`` changes with every write of the record. It does for Leases
    (``renewTime`` has microseconds); the annotation locks write whole seconds, so two renewals in
    one second are byte-identical and the elector must count a new ``version`` as a change too.
    """

    record: LeaderElectionRecord
    raw: bytes
    version: str
    precise: bool = True


class Lock(ABC):
    """A lock object that candidates compete for through compare-and-swap.

    A lock instance belongs to one candidate (``identity``) and caches the object it last read or
    wrote: :meth:`update` writes against that cached version, so a concurrent change by anybody
    else makes it fail with :class:`~aioleader.LockConflict` instead of overwriting.

    Implementations raise :class:`~aioleader.LockError` (or a subclass) for transient failures,
    :class:`~aioleader.ElectionError` for fatal ones, and must never let a request outlive
    ``timeout`` seconds.
    """

    @property
    @abstractmethod
    def identity(self) -> str:
        """The candidate's identity, written as ``holderIdentity`` when it leads."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable name such as ``default/my-lock`` (used in logs and metrics)."""

    @abstractmethod
    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the lock; ``None`` if it does not exist. Caches the object for :meth:`update`."""

    @abstractmethod
    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Create the lock holding ``record``. Raises :class:`~aioleader.LockConflict` if it exists."""

    @abstractmethod
    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Replace the record, compare-and-swap against the cached version.

        Raises :class:`~aioleader.LockConflict` if the lock changed since it was cached and
        :class:`~aioleader.LockError` if nothing is cached yet.
        """

    async def record_event(self, message: str) -> None:  # noqa: B027 - optional hook
        """Best-effort notification of a transition (Kubernetes Events); the default does nothing.

        It must never raise or block for long: the elector does not wait on it for safety.
        """

    @property
    def supports_watch(self) -> bool:
        """Whether :meth:`watch` is implemented (followers fall back to polling otherwise)."""
        return False

    def watch(self) -> AsyncGenerator[Observed | None, None]:
        """Yield the lock now and each time its record changes (``None`` while it does not exist).

        Must never touch the version cached for :meth:`update`, and must retry transient errors
        itself; an :class:`~aioleader.ElectionError` (e.g. no RBAC for list/watch) makes an
        elector fall back to polling."""
        raise NotImplementedError(f"{type(self).__name__} does not support watching")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources the lock owns (e.g. an API client it created)."""

    async def __aenter__(self: _L) -> _L:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
