"""The backend's own domain error (the job and model errors are the application service's, in
libs/events/errors.py). No HTTP here: services/backend/problems.py maps each to a status."""

from __future__ import annotations

from libs.events.errors import ServiceError


class Unavailable(ServiceError):
    """Raised when NATS is not reachable (never connected, or disconnected and reconnecting):
    the API answers 503 at once instead of waiting for a reconnect."""
