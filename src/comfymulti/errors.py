"""The one error tree. Every error ComfyMulti raises on purpose is one of these.

    ComfyMultiError                500, exit 1
    ├── ConfigError                 -, exit 2   (bad or missing configuration)
    ├── InvalidInput               400, exit 2
    │   └── PayloadTooLarge        413
    ├── Unauthorized               401
    ├── Forbidden                  403
    ├── NotFound                   404
    ├── Conflict                   409
    │   └── LeaseLost              409   (a worker acted under a lease it no longer holds)
    ├── QuotaExceeded              429
    ├── Unavailable                503   (database busy: try again; answered with Retry-After)
    ├── StorageError               500
    │   ├── RemoteUnavailable             (the object store cannot be reached or refuses us)
    │   └── IntegrityError                (a copy does not match the SHA-256 it was stored with)
    ├── ComfyUIError               500   (the worker's local ComfyUI failed or refused)
    └── NodeError                    -, exit 1   (a GPU machine's bootstrap step failed)

Each class's docstring is its default message; callers catch families, never match strings.
"""

from __future__ import annotations


class ComfyMultiError(Exception):
    """Something went wrong."""

    status_code = 500
    exit_code = 1
    error_type = "internal_error"

    def __init__(self, message: str | None = None, **details: object) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.details = details
        super().__init__(self.message)


class ConfigError(ComfyMultiError):
    """The configuration is invalid."""

    exit_code = 2
    error_type = "config_error"


class InvalidInput(ComfyMultiError):
    """The request is malformed."""

    status_code = 400
    exit_code = 2
    error_type = "invalid_input"


class PayloadTooLarge(InvalidInput):
    """The request body is larger than allowed."""

    status_code = 413
    error_type = "payload_too_large"


class Unauthorized(ComfyMultiError):
    """Authentication is required."""

    status_code = 401
    error_type = "unauthorized"


class Forbidden(ComfyMultiError):
    """You may not do this."""

    status_code = 403
    error_type = "forbidden"


class NotFound(ComfyMultiError):
    """No such thing."""

    status_code = 404
    error_type = "not_found"


class Conflict(ComfyMultiError):
    """The thing is not in a state that allows this."""

    status_code = 409
    error_type = "conflict"


class LeaseLost(Conflict):
    """The job's lease is no longer held by this worker."""

    error_type = "lease_lost"


class QuotaExceeded(ComfyMultiError):
    """Too many queued jobs."""

    status_code = 429
    error_type = "quota_exceeded"


class Unavailable(ComfyMultiError):
    """The hub is busy; try again in a few seconds."""

    status_code = 503
    error_type = "unavailable"


class StorageError(ComfyMultiError):
    """A file could not be stored or read."""

    error_type = "storage_error"


class RemoteUnavailable(StorageError):
    """The backup storage cannot be reached or refused the request."""

    error_type = "remote_unavailable"


class IntegrityError(StorageError):
    """A copy does not match the SHA-256 recorded for it."""

    error_type = "integrity_error"


class ComfyUIError(ComfyMultiError):
    """ComfyUI did not answer or answered with an error."""

    error_type = "comfyui_error"


class NodeError(ComfyMultiError):
    """A step of setting up the GPU machine failed."""

    error_type = "node_error"


def error_shape(type_: str, message: str, details: object = None) -> dict[str, object]:
    """The single JSON error shape of the hub's own routes."""
    body: dict[str, object] = {"type": type_, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def error_body(exc: ComfyMultiError) -> dict[str, object]:
    return error_shape(exc.error_type, exc.message, exc.details)
