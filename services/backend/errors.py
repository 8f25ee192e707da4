"""Domain errors of the backend's operations (no HTTP here: `problems.py` maps them at the edge).

The same operations serve the HTTP API and the CLI, so each error carries what both need: a
human message, the offending field when there is one, and the HTTP status it becomes.
"""

from __future__ import annotations


class BackendError(Exception):
    """Root of the backend's domain errors. `status` is the HTTP status at the edge; `field`
    names the request field at fault (None when the whole request is)."""

    status: int = 500
    title: str = "internal error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidRequest(BackendError):
    """Raised when a request is well-formed JSON but cannot become a command: both or neither of
    strategy/strategy_yaml, a start not before its end, symbols that cannot be defaulted."""

    status = 422
    title = "invalid request"


class JobNotFound(BackendError):
    """Raised when no job with the id exists in the projection."""

    status = 404
    title = "job not found"


class JobAlreadyFinished(BackendError):
    """Raised when cancelling a job that is already terminal (completed, failed, cancelled,
    rejected): nothing is published."""

    status = 409
    title = "job already finished"


class ModelNotFound(BackendError):
    """Raised when no model with the strategy and version exists on disk, in the object store,
    or among completed jobs."""

    status = 404
    title = "model not found"


class Unavailable(BackendError):
    """Raised when NATS is not reachable (never connected, or disconnected and reconnecting):
    the API answers 503 at once instead of waiting for a reconnect."""

    status = 503
    title = "NATS unavailable"
