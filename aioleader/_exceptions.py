"""The one exception hierarchy of aioleader.

Configuration mistakes are plain `ValueError` (they are programming errors, raised at
construction). Everything that happens while talking to a lock derives from [`AioleaderError`][AioleaderError]:

* [`LockError`][LockError] is *transient*: the elector retries it within the renew deadline (5xx, 429,
  timeouts, disconnects, a body it could not parse).
* [`LockConflict`][LockConflict] is a lost compare-and-swap (HTTP 409): somebody else wrote first.
* [`ElectionError`][ElectionError] is *fatal*: retrying cannot help (403 Forbidden, the lock's resource type
  does not exist). The elector stops and re-raises it from ``elect()`` / ``campaign()``.
"""

from __future__ import annotations

__all__ = [
    "AioleaderError",
    "ClusterConfigError",
    "ElectionError",
    "ForbiddenError",
    "LockConflict",
    "LockError",
    "LockNotFound",
]


class AioleaderError(Exception):
    """Base class of every error aioleader raises at run time."""


class LockError(AioleaderError):
    """A transient failure to read or write the lock; retried until the deadline.

    ``retry_after`` carries a server's ``Retry-After`` hint (seconds) when it sent one (HTTP 429);
    the elector waits at least that long before its next acquisition attempt.
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class LockConflict(LockError):
    """The lock changed under us (stale resourceVersion, or it already exists on create)."""


class LockNotFound(LockError):
    """The lock object does not exist (only raised where absence is an error, e.g. update)."""


class ElectionError(AioleaderError):
    """A fatal error: retrying cannot succeed, the election stops."""


class ForbiddenError(ElectionError):
    """The API server refused a verb on the lock's resource (HTTP 403).

    The message names the verb and the resource so that the missing RBAC rule is obvious.
    """

    def __init__(self, verb: str, resource: str, message: str = "") -> None:
        self.verb = verb
        self.resource = resource
        detail = f": {message}" if message else ""
        super().__init__(f"forbidden: cannot {verb} {resource}{detail}")


class ClusterConfigError(ElectionError):
    """No Kubernetes client could be configured (a lock given no ``api_client``).

    ``source`` is the kubeconfig path that was read (``None``: the in-cluster service account);
    ``problem`` says what is wrong with it, in one line (``no such file``, ``not valid YAML: …``),
    so that a caller such as the ``aioleader`` command can word its own hint.
    """

    def __init__(self, message: str, *, source: str | None, problem: str) -> None:
        super().__init__(message)
        self.source = source
        self.problem = problem
