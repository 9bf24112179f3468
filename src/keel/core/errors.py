"""Domain errors raised by services and mapped once, here, to HTTP status and error code."""

from __future__ import annotations

from typing import Any


class StartupError(Exception):
    """A setting or dependency that makes start-up impossible. Its message is the one line the
    operator reads: what is wrong and how to fix it, no traceback."""


class AppError(Exception):
    """An error with a stable machine-readable code and the HTTP status it maps to."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class QuotaExceeded(AppError):
    """A per-user or per-resource quota is used up: waiting does not help, freeing room does."""

    status_code = 409
    code = "quota_exceeded"


class Gone(AppError):
    status_code = 410
    code = "gone"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class RangeNotSatisfiable(AppError):
    status_code = 416
    code = "range_not_satisfiable"


class Unprocessable(AppError):
    status_code = 422
    code = "validation_error"


class TooManyRequests(AppError):
    status_code = 429
    code = "rate_limited"


class DependencyUnavailable(AppError):
    status_code = 503
    code = "dependency_unavailable"


# Codes for the statuses Starlette raises itself (404 route, 405, 413 from the body limit...).
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "dependency_unavailable",
    504: "timeout",
}


def code_for_status(status: int) -> str:
    return STATUS_CODES.get(status, "client_error" if status < 500 else "server_error")
