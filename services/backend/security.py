"""HTTP security of the API: bearer-token auth for mutating routes, a request body limit, and
no stack traces in responses.

    TRAINBUS_API_AUTH        `token` (default of `trainbus backend` and `create_app`): POST, PUT,
                             PATCH and DELETE need `Authorization: Bearer <token>`; `off`: no
                             auth (`trainbus up`/`demo` default, for a trusted machine)
    TRAINBUS_API_TOKEN       the token (or TRAINBUS_API_TOKEN_FILE: a file holding it); setting
                             it turns auth on under `trainbus up`/`demo` as well
    TRAINBUS_API_MAX_BODY    largest request body in bytes (default 1 MiB; more is 413)

Auth is on by default and fails closed: with `token` auth and no token configured, every
mutating request is refused with 401 and a problem detail that says how to set one (no token is
generated: it would have to be printed, and secrets are never logged). Reads (GET, HEAD, the
SSE stream, the dashboard) stay open, and so do the POSTs whose handler is marked
`opt={READ_ONLY: True}`: predictions and backtests compute an answer and store nothing (they are
bounded by the body limit). Bind the API to a trusted interface (TRAINBUS_API_HOST) or put it
behind a proxy when reads must be private too.

The token is compared in constant time and never logged; `repr(ApiSecurity)` hides it.

Unexpected exceptions become a 500 problem detail with an incident id; the traceback goes to
the server log under the same id, never into the response.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from litestar.plugins.problem_details import ProblemDetailsException

if TYPE_CHECKING:
    from litestar import Request, Response
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

log = logging.getLogger(__name__)

AuthMode = Literal["token", "off"]
MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A handler's `opt` key marking a POST that only reads (computes an answer, stores nothing).
READ_ONLY: Final = "read_only"
DEFAULT_MAX_BODY: Final = 1024 * 1024
PROBLEM_TYPE: Final = "https://trainbus.dev/problems/"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="trainbus"'}


class SecurityConfigError(ValueError):
    """Raised when TRAINBUS_API_AUTH / _TOKEN / _TOKEN_FILE / _MAX_BODY cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSecurity:
    """How the API protects itself. `auth="token"` with `token=None` refuses every write."""

    auth: AuthMode = "token"
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY

    def __post_init__(self) -> None:
        if self.auth not in ("token", "off"):
            raise SecurityConfigError(f"TRAINBUS_API_AUTH={self.auth!r}: use token or off")
        if self.token is not None and (len(self.token) < 16 or any(c.isspace()
                                                                    for c in self.token)):
            raise SecurityConfigError(
                "TRAINBUS_API_TOKEN must be at least 16 characters without spaces "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.max_body_bytes < 1024:
            raise SecurityConfigError("TRAINBUS_API_MAX_BODY must be at least 1024 bytes")

    def __repr__(self) -> str:
        return (f"ApiSecurity(auth={self.auth!r}, token={'set' if self.token else 'unset'}, "
                f"max_body_bytes={self.max_body_bytes})")

    @classmethod
    def disabled(cls, **overrides: Any) -> ApiSecurity:
        """No auth (tests, and `trainbus up`/`demo` without a token)."""
        return cls(auth="off", **overrides)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, default_auth: AuthMode = "token"
    ) -> ApiSecurity:
        """From TRAINBUS_API_*. `default_auth` is the mode when TRAINBUS_API_AUTH is unset;
        `trainbus up`/`demo` pass "off", and a configured token turns auth on regardless."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        token = get("TRAINBUS_API_TOKEN")
        token_file = get("TRAINBUS_API_TOKEN_FILE")
        if token is not None and token_file is not None:
            raise SecurityConfigError("set TRAINBUS_API_TOKEN or TRAINBUS_API_TOKEN_FILE, not both")
        if token_file is not None:
            try:
                token = Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise SecurityConfigError(
                    f"TRAINBUS_API_TOKEN_FILE {token_file!r} cannot be read: {exc.strerror}"
                ) from None
            if token is None:
                raise SecurityConfigError(f"TRAINBUS_API_TOKEN_FILE {token_file!r} is empty")
        mode = get("TRAINBUS_API_AUTH")
        if mode is None:
            auth: str = "token" if token is not None else default_auth
        else:
            auth = mode.lower()
        max_body = DEFAULT_MAX_BODY
        if (text := get("TRAINBUS_API_MAX_BODY")) is not None:
            try:
                max_body = int(text)
            except ValueError:
                raise SecurityConfigError(
                    f"TRAINBUS_API_MAX_BODY={text!r} is not a number of bytes"
                ) from None
        return cls(auth=auth, token=token, max_body_bytes=max_body)  # type: ignore[arg-type]

    @property
    def describe(self) -> str:
        """One line for the startup log (never the token)."""
        if self.auth == "off":
            return "API auth off: anyone who reaches the API can submit and cancel jobs"
        if self.token is None:
            return ("API auth on but no TRAINBUS_API_TOKEN set: every POST is refused (401) "
                    "until one is")
        return "API auth on: POST/PUT/PATCH/DELETE need the bearer token"

    # --- Litestar wiring ------------------------------------------------------------------

    def app_options(self) -> dict[str, Any]:
        """Keyword arguments for `Litestar(...)`: the guard, the body limit, and the 500
        handler (the problem-details plugin's more specific handlers win)."""
        return {
            "guards": [self.guard],
            "request_max_body_size": self.max_body_bytes,
            "exception_handlers": {Exception: internal_error},
        }

    def guard(self, connection: ASGIConnection[Any, Any, Any, Any],
              _handler: BaseRouteHandler) -> None:
        """Litestar guard: runs after routing, before the body is read."""
        if self.auth == "off" or connection.scope.get("method") not in MUTATING_METHODS:
            return
        if _handler.opt.get(READ_ONLY):
            return
        if self.token is None:
            raise _unauthorized(
                "this API accepts writes only with a bearer token, and none is configured: set "
                "TRAINBUS_API_TOKEN (or TRAINBUS_API_TOKEN_FILE) on the backend and send "
                "`Authorization: Bearer <token>`, or set TRAINBUS_API_AUTH=off on a trusted "
                "network", slug="api-token-not-configured",
            )
        header = connection.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _unauthorized(
                "send `Authorization: Bearer <token>` (the backend's TRAINBUS_API_TOKEN)",
                slug="missing-token",
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise _unauthorized("the bearer token is not valid", slug="invalid-token")


def _unauthorized(detail: str, *, slug: str) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=401, title="unauthorized", detail=detail, type_=PROBLEM_TYPE + slug,
        headers=dict(_CHALLENGE),
    )


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any exception no other handler claims: a 500 problem detail with an incident id; the
    traceback is logged under that id, never sent."""
    incident = secrets.token_hex(6)
    log.error("incident %s: %s %s raised %s", incident, request.method, request.url.path,
              type(exc).__name__, exc_info=exc)
    return ProblemDetailsException(
        status_code=500, title="internal error",
        detail=f"the server could not handle this request (incident {incident}; details are "
               "in the server log)",
        type_=PROBLEM_TYPE + "internal-error", extra={"incident": incident},
    ).to_response(request)
