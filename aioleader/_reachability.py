"""Whether the lock's API answers, told as one line per change (``aioleader run`` and ``watch``).

The elector and the observer retry transient failures for ever, silently: right for a library,
wrong for a command whose user stares at an empty terminal. The CLI reports the state of the API
instead of every attempt: ``API unavailable (…); retrying`` when requests start failing,
``API available again`` when they succeed again.

What counts as an answer differs by source, and [`ApiState`][ApiState] takes each as it comes:

* [`ApiState.failed()`][ApiState.failed]: a request failed (the elector's ``api_error`` metrics hook with a
  ``transient`` or ``timeout`` kind; a failed probe).
* [`ApiState.answered()`][ApiState.answered]: a sure sign that the API answered: a renewal, a new term, a new
  leader observed, a lost compare-and-swap (the server said 409), a read of the lock.
* [`ApiState.probed()`][ApiState.probed]: the CLI's own read of the lock (through a second lock instance, so the
  elector's cached version is never touched) succeeded. It proves that the API server answers a
  GET, not that the election's own requests succeed (a server may fail only writes); so it counts
  only once the election has been quiet (no failure) for ``quiet`` seconds, longer than the
  longest gap between two failures of an election whose requests keep failing.

Decisions take ``now`` as an argument and return the line to print (or ``None``); I/O is around.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import anyio

from ._exceptions import ElectionError, LockError
from ._lock import Lock
from ._metrics import ElectionMetrics

__all__ = ["ApiMonitor", "ApiState", "Reachability", "error_text"]


class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


class ApiState:
    """The API's state as the CLI reports it; see the module docstring."""

    def __init__(self, *, quiet: float = 0.0) -> None:
        self.quiet = quiet
        self.state = Reachability.UNKNOWN
        self.last_failure_at: float | None = None

    @property
    def unavailable(self) -> bool:
        return self.state is Reachability.UNAVAILABLE

    def failed(self, now: float, error: str) -> str | None:
        """A request failed with ``error`` (one line)."""
        self.last_failure_at = now
        if self.state is Reachability.UNAVAILABLE:
            return None
        self.state = Reachability.UNAVAILABLE
        return self.unavailable_line(error)

    @staticmethod
    def unavailable_line(error: str) -> str:
        return f"API unavailable ({error}); retrying"

    def answered(self, now: float) -> str | None:
        """A sure sign that the API answers the election's requests."""
        was = self.state
        self.state = Reachability.AVAILABLE
        return "API available again" if was is Reachability.UNAVAILABLE else None

    def probed(self, now: float) -> str | None:
        """The CLI's own read of the lock succeeded."""
        if self.last_failure_at is not None and now - self.last_failure_at < self.quiet:
            return None  # the election's requests may still be failing
        return self.answered(now)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_text(error: BaseException | str) -> str:
    """An error as the one line the CLI prints: the message, without the Python type's name
    that ``LeadershipStatistics.last_error`` starts with."""
    if isinstance(error, BaseException):
        return _one_line(str(error) or type(error).__name__)
    name, sep, rest = error.partition(": ")
    if sep and name.isidentifier() and rest:
        return _one_line(rest)
    return _one_line(error)


class ApiMonitor:
    """Feeds [`ApiState`][ApiState] from an election and from probes, and prints its changes.

    ``aioleader run`` passes it as ``metrics=`` of [`campaign()`][aioleader.campaign] (it forwards
    every call to ``inner``), calls [`answered()`][answered] from ``on_new_leader`` and runs
    [`probe()`][probe] in a task, with a lock of its own (``probe_lock`` a factory: the elector's
    lock caches the version it writes against). ``aioleader watch`` calls [`answered()`][answered] for
    every record it observes and probes, through the observed lock itself, at once and after
    ``idle`` seconds without an answer. A fatal error ([`ElectionError`][aioleader.ElectionError]) of a
    probe is raised with ``raise_fatal``, else reported like any failure (the election, not its
    observer, decides what is fatal).
    """

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        probe_lock: Lock | Callable[[], Lock],
        interval: float,
        timeout: float,
        quiet: float = 0.0,
        idle: float | None = None,
        raise_fatal: bool = False,
        inner: ElectionMetrics | None = None,
    ) -> None:
        self.state = ApiState(quiet=quiet)
        self._say = say
        self._probe_lock = probe_lock
        self._interval = interval
        self._timeout = timeout
        self._idle = idle
        self._raise_fatal = raise_fatal
        self._inner = inner
        self._wake = anyio.Event()
        self._last_answer_at = -math.inf
        self._last_error: Callable[[], str | None] | None = None
        self._deferred = False

    def bind(self, last_error: Callable[[], str | None]) -> None:
        """Read the election's errors through ``last_error`` (``LeadershipStatistics.last_error``
        of the handle ``campaign`` started with). A failure reported before (the first request
        can fail before the caller holds the handle) is told now."""
        self._last_error = last_error
        if self._deferred:
            self._deferred = False
            if self.state.unavailable:
                self._say(self.state.unavailable_line(error_text(last_error() or "an error")))

    def _show(self, line: str | None) -> None:
        if line is not None:
            self._say(line)

    def failed(self, error: str) -> None:
        was_unavailable = self.state.unavailable
        self._show(self.state.failed(anyio.current_time(), error))
        if not was_unavailable:
            self._wake.set()

    def answered(self) -> None:
        self._last_answer_at = anyio.current_time()
        self._show(self.state.answered(anyio.current_time()))

    # -- ElectionMetrics ---------------------------------------------------------------------------

    def leading(self, name: str, leading: bool) -> None:
        if self._inner is not None:
            self._inner.leading(name, leading)

    def term_started(self, name: str) -> None:
        if self._inner is not None:
            self._inner.term_started(name)
        self.answered()

    def renewed(self, name: str, seconds: float) -> None:
        if self._inner is not None:
            self._inner.renewed(name, seconds)
        self.answered()

    def slow_path(self, name: str) -> None:
        if self._inner is not None:
            self._inner.slow_path(name)

    def hook_failed(self, name: str, hook: str) -> None:
        if self._inner is not None:
            self._inner.hook_failed(name, hook)

    def api_error(self, name: str, kind: str) -> None:
        if self._inner is not None:
            self._inner.api_error(name, kind)
        if kind == "conflict":  # the server answered 409
            self.answered()
        elif kind in ("transient", "timeout"):
            if self._last_error is None:  # told by bind()
                self._deferred = self._deferred or not self.state.unavailable
                self.state.failed(anyio.current_time(), "")
                self._wake.set()
            else:
                self.failed(error_text(self._last_error() or f"a {kind} error"))

    # -- probing -------------------------------------------------------------------------------------

    async def probe(self) -> None:
        """Read the lock through the probe lock, each read bounded by ``timeout``: every
        ``interval`` seconds while the API is unavailable; with ``idle``, also at once and then
        whenever nothing answered for ``idle`` seconds. Forever."""
        lock: Lock | None = None
        owned = not isinstance(self._probe_lock, Lock)
        try:
            while True:
                if not self.state.unavailable:
                    self._wake = anyio.Event()
                    if self._idle is None:
                        await self._wake.wait()
                    elif self.state.state is not Reachability.UNKNOWN:
                        # Until nothing answered for idle seconds (answers push it back).
                        while not self._wake.is_set():
                            due = self._last_answer_at + self._idle
                            if anyio.current_time() >= due:
                                break
                            with anyio.move_on_after(due - anyio.current_time()):
                                await self._wake.wait()
                if lock is None:
                    if isinstance(self._probe_lock, Lock):
                        lock = self._probe_lock
                    else:
                        lock = self._probe_lock()
                        await lock.__aenter__()
                started = anyio.current_time()
                try:
                    with anyio.fail_after(self._timeout):
                        await lock.get(timeout=self._timeout)
                except (LockError, TimeoutError) as exc:
                    self.failed(error_text(exc))
                except ElectionError as exc:
                    if self._raise_fatal:
                        raise
                    self.failed(error_text(exc))
                else:
                    self._last_answer_at = anyio.current_time()
                    self._show(self.state.probed(self._last_answer_at))
                await anyio.sleep_until(started + self._interval)
        finally:
            if lock is not None and owned:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                    await lock.__aexit__(None, None, None)
