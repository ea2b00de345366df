"""Failures as kube-apiserver reports them: a ``Status`` body and an HTTP code.

The constructors mirror ``k8s.io/apimachinery/pkg/api/errors`` (``NewNotFound``,
``NewConflict``, ``NewInvalid``…), so messages, reasons and ``details`` match a real cluster
byte for byte: clients such as kubectl and client-go branch on ``reason`` and show ``message``.
Empty fields are omitted as Go's ``omitempty`` does (``group`` for the core API, ``details`` for
a BadRequest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._resources import ResourceType
from ._validation import FieldError, aggregate

__all__ = ["ApiError", "status_object"]

OPTIMISTIC_LOCK_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def status_object(
    *,
    status: str,
    code: int = 0,
    reason: str = "",
    message: str = "",
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``metav1.Status`` in Go's field order, empty fields omitted."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = {k: v for k, v in details.items() if v not in ("", None, [], 0)}
    if code:
        body["code"] = code
    return body


def _details(
    rt: ResourceType | None = None,
    name: str = "",
    *,
    kind: str | None = None,
    causes: Sequence[Mapping[str, str]] = (),
    retry_after: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "group": rt.group if rt else "",
        "kind": kind if kind is not None else (rt.plural if rt else ""),
        "causes": list(causes),
        "retryAfterSeconds": retry_after,
    }


class ApiError(Exception):
    """A failed request: raise it anywhere below the HTTP handler to answer with a Status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> dict[str, Any]:
        """The ``Status`` object to send (and to put in a watch ``ERROR`` event)."""
        return status_object(
            status="Failure",
            code=self.code,
            reason=self.reason,
            message=self.message,
            details=self.details,
        )

    # -- apimachinery/pkg/api/errors ------------------------------------------------------------

    @classmethod
    def not_found(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))

    @classmethod
    def already_exists(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(
            409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name)
        )

    @classmethod
    def conflict(
        cls,
        rt: ResourceType,
        name: str,
        cause: str = OPTIMISTIC_LOCK_MESSAGE,
        *,
        kind: str | None = None,
    ) -> ApiError:
        """``NewConflict``; ``kind`` replaces the plural where kube passes a Kind instead."""
        qualified = rt.qualified if kind is None else f"{kind}.{rt.group}" if rt.group else kind
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qualified} "{name}": {cause}',
            _details(rt, name, kind=kind),
        )

    @classmethod
    def invalid(
        cls, rt: ResourceType, name: str, errors: list[FieldError], *, kind: str | None = None
    ) -> ApiError:
        """``NewInvalid`` for the type's Kind (or, as the update path does, for ``kind``)."""
        kind = rt.kind if kind is None else kind
        qualified = f"{kind}.{rt.group}" if rt.group else kind
        return cls(
            422,
            "Invalid",
            f'{qualified} "{name}" is invalid: {aggregate(errors)}',
            _details(rt, name, kind=kind, causes=[e.cause() for e in errors]),
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def expired(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)

    @classmethod
    def unknown(cls, message: str, code: int = 500) -> ApiError:
        """A plain Go error reaching the handler: ``ErrorToAPIStatus`` leaves ``reason`` empty."""
        return cls(code, "", message)

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            {},
        )

    @classmethod
    def path_not_found(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def unsupported_media_type(cls, content_type: str, accepted: Sequence[str]) -> ApiError:
        return cls(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(accepted)}",
        )

    @classmethod
    def too_large_resource_version(cls, requested: int, current: int) -> ApiError:
        """What the watch cache answers for a resourceVersion from the future."""
        return cls(
            504,
            "Timeout",
            f"Timeout: Too large resource version: {requested}, current: {current}",
            {
                "causes": [
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ],
                "retryAfterSeconds": 1,
            },
        )

    # -- what a loaded or broken server answers (used by fault injection) -----------------------

    @classmethod
    def injected(cls, code: int, retry_after: float | None = None) -> ApiError:
        """The Status a real control plane sends for ``code`` under load or failure."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, round(retry_after)))
        seconds = max(0, round(retry_after or 0))
        if code == 429:
            return cls(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
                {"retryAfterSeconds": seconds or 1},
                headers={"Retry-After": str(seconds or 1)},
            )
        if code == 500:
            return cls(
                500,
                "InternalError",
                "Internal error occurred: injected by aioleader emulator",
                {"causes": [{"message": "injected by aioleader emulator"}]},
                headers=headers,
            )
        if code == 503:
            return cls(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
                {"retryAfterSeconds": seconds} if seconds else None,
                headers=headers,
            )
        if code == 504:
            return cls(
                504,
                "Timeout",
                "Timeout: request did not complete within the allowed duration",
                {"retryAfterSeconds": seconds} if seconds else None,
                headers=headers,
            )
        return cls(code, "", f"injected failure {code}", headers=headers)
