"""Errors at the HTTP edge: every failure becomes RFC 9457 problem details
(`application/problem+json`) with `status`, `title`, `detail` and, when one field is at fault,
`field`.

- the application service's refusals (libs/events/errors.py, `ServiceError`) get their status
  and title from `SERVICE_ERRORS`, the only place that knows HTTP codes for them;
- a body or query that does not validate is 422 naming the field (Litestar says 400; a body
  that is not JSON at all stays 400, and so does JSON nested past the depth limit; a body not
  declared JSON is 415, services/backend/security.py);
- NATS down (never connected, reconnecting, publish not acknowledged) is 503: the API answers
  at once and the client retries later.
"""

from __future__ import annotations

import re
from typing import Any, Final

import nats.errors
import nats.js.errors
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from libs.events.errors import (
    AliasNotFound,
    BusClosed,
    BusUnavailable,
    InvalidAlias,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    ModelAmbiguous,
    ModelExpired,
    ModelInUse,
    ModelNotFound,
    ModelUntrusted,
    PublishRefused,
    PublishTimeout,
    ServiceError,
    SweepNotFound,
)
from libs.events.schema import PayloadTooLarge, UnsafePayload
from services.backend.errors import Unavailable
from services.predictor.errors import ModelUnusable

PROBLEM_TYPE: Final = "https://trainbus.dev/problems/"
_FIELD_IN_MESSAGE: Final = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _problem(status: int, title: str, detail: str, *, field: str | None = None,
             extra: dict[str, Any] | None = None, slug: str | None = None
             ) -> ProblemDetailsException:
    body: dict[str, Any] = dict(extra or {})
    if field is not None:
        body["field"] = field
    return ProblemDetailsException(
        status_code=status,
        title=title,
        detail=detail,
        type_=PROBLEM_TYPE + (slug or title).lower().replace(" ", "-"),
        extra=body or None,
    )


# (status, title) of each refusal; a subclass not listed is a 500 (a bug: list it here).
SERVICE_ERRORS: Final[dict[type[ServiceError], tuple[int, str]]] = {
    InvalidRequest: (422, "invalid request"),
    JobNotFound: (404, "job not found"),
    SweepNotFound: (404, "sweep not found"),
    ModelNotFound: (404, "model not found"),
    JobAlreadyFinished: (409, "job already finished"),
    InvalidAlias: (422, "invalid alias"),
    AliasNotFound: (404, "alias not found"),
    ModelInUse: (409, "model in use"),
    ModelExpired: (409, "model expired"),
    ModelUntrusted: (403, "model untrusted"),
    ModelAmbiguous: (409, "model ambiguous"),
    ModelUnusable: (409, "model unusable"),
    Unavailable: (503, "NATS unavailable"),
}


def from_service_error(exc: ServiceError) -> ProblemDetailsException:
    status, title = SERVICE_ERRORS.get(type(exc), (500, "internal error"))
    return _problem(status, title, exc.detail, field=exc.field)


def from_validation(exc: ValidationException) -> ProblemDetailsException:
    errors = exc.extra if isinstance(exc.extra, list) else []
    if not errors:
        # Not JSON at all (or an empty body): a syntax problem, not a semantic one.
        return _problem(400, "malformed request", str(exc.detail))
    problems = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = str(error.get("message", ""))
        key = error.get("key")
        # Litestar names unknown/missing body fields as key "data"; msgspec's message has it.
        match = _FIELD_IN_MESSAGE.search(message)
        field = match.group(1) if match and key in (None, "data") else key
        problems.append({"field": field, "message": message, "source": error.get("source")})
    first = problems[0] if problems else {"field": None, "message": str(exc.detail)}
    return _problem(422, "invalid request", f"{first['field']}: {first['message']}",
                    field=first["field"], extra={"errors": problems})


def from_unsafe_payload(exc: UnsafePayload) -> ProblemDetailsException:
    """Bytes refused before decoding (libs/events/schema.py): too big is 413, too deep 400."""
    if isinstance(exc, PayloadTooLarge):
        return _problem(413, "request body too large", str(exc), slug="payload-too-large")
    return _problem(400, "malformed request", f"the body is refused: {exc}",
                    slug="payload-too-deep")


def from_nats(exc: Exception) -> ProblemDetailsException:
    reason = str(exc).strip() or type(exc).__name__
    return _problem(503, "NATS unavailable", f"the event bus is not reachable: {reason}",
                    extra={"retry": True}, slug="nats-unavailable")


def from_refused(exc: PublishRefused) -> ProblemDetailsException:
    return _problem(502, "refused by NATS", str(exc), slug="refused-by-nats")


def from_http(exc: HTTPException) -> ProblemDetailsException:
    return _problem(exc.status_code, str(exc.detail), str(exc.detail),
                    extra=exc.extra if isinstance(exc.extra, dict) else None)


def problem_details_plugin() -> ProblemDetailsPlugin:
    mapping: dict[type[Exception], Any] = {
        ServiceError: from_service_error,
        ValidationException: from_validation,
        UnsafePayload: from_unsafe_payload,
        HTTPException: from_http,
        BusUnavailable: from_nats,
        BusClosed: from_nats,
        PublishTimeout: from_nats,
        PublishRefused: from_refused,
        nats.errors.Error: from_nats,
        nats.js.errors.ServiceUnavailableError: from_nats,
        TimeoutError: from_nats,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))
