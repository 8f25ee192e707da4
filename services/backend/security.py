"""HTTP security of the API: bearer-token auth for mutating routes, a request body limit, and
no stack traces in responses.

    TRAINBUS_API_AUTH        `token` (default of `trainbus backend`, `create_app` and the
                             secured `trainbus up`/`demo`): POST, PUT, PATCH and DELETE need
                             `Authorization: Bearer <token>`; `off`: no auth (a trusted
                             machine; `trainbus up --insecure`'s default)
    TRAINBUS_API_TOKEN       the token (or TRAINBUS_API_TOKEN_FILE: a file holding it); the
                             secured `trainbus up`/`demo` generate one when none is set
                             (<store>/credentials/api-token, printed in the dashboard link)
    TRAINBUS_API_MAX_BODY    largest request body in bytes (default 1 MiB; more is 413)
    TRAINBUS_API_IDENTITY    who a request with the valid token is (default `api-token`): the
                             `requested_by` of what it submits, whatever the body says

Writes from another site's page are 403 (Sec-Fetch-Site, else Origin against Host), even with
auth off: a page could otherwise post a bodiless cancel. Bodies of POST/PUT/PATCH/DELETE must
be JSON (`application/json` or `application/*+json`): any other declared type, or a body
without one, is 415. Browsers send `text/plain` and form posts cross-site without a CORS
preflight; refusing them stops any web page from submitting jobs to a local API with auth off.
A JSON body nested deeper than 64 levels is 400 before it is decoded (libs/events/schema.py
`check_untrusted`).

`requested_by` is the authenticated identity when the request carried the valid token; with
auth off (or on a READ_ONLY POST) nobody is authenticated and the client's value is kept.

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
from urllib.parse import urlsplit

from litestar.plugins.problem_details import ProblemDetailsException

from libs.events.schema import MAX_JSON_DEPTH, check_untrusted

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
DEFAULT_IDENTITY: Final = "api-token"
# The ASGI scope key an authenticated request's identity is kept under (Litestar's `user`).
IDENTITY_SCOPE_KEY: Final = "user"
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
    identity: str = DEFAULT_IDENTITY

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
        if not 1 <= len(self.identity) <= 128 or any(c.isspace() for c in self.identity):
            raise SecurityConfigError(
                "TRAINBUS_API_IDENTITY must be 1-128 characters without spaces"
            )

    def __repr__(self) -> str:
        return (f"ApiSecurity(auth={self.auth!r}, token={'set' if self.token else 'unset'}, "
                f"max_body_bytes={self.max_body_bytes}, identity={self.identity!r})")

    @classmethod
    def disabled(cls, **overrides: Any) -> ApiSecurity:
        """No auth (tests, and `trainbus up --insecure` without a token)."""
        return cls(auth="off", **overrides)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, default_auth: AuthMode = "token"
    ) -> ApiSecurity:
        """From TRAINBUS_API_*. `default_auth` is the mode when TRAINBUS_API_AUTH is unset;
        `trainbus up --insecure` passes "off", and a configured token turns auth on regardless
        (the secured `up` puts its generated token in when none is configured: services/
        stack.py)."""
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
        return cls(auth=auth, token=token, max_body_bytes=max_body,  # type: ignore[arg-type]
                   identity=get("TRAINBUS_API_IDENTITY") or DEFAULT_IDENTITY)

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
        """Keyword arguments for `Litestar(...)`: the guard, the body limit, the body check,
        and the 500 handler (the problem-details plugin's more specific handlers win). Litestar
        runs only the innermost layer's `before_request`: a controller that sets its own must
        call `check_write` too."""
        return {
            "guards": [self.guard],
            "before_request": self.check_write,
            "request_max_body_size": self.max_body_bytes,
            "exception_handlers": {Exception: internal_error},
        }

    async def check_write(self, request: Request[Any, Any, Any]) -> None:
        """Litestar before_request hook (after the guard, before the body is decoded): a
        write must come from this origin or a non-browser client (403), its body must be
        declared JSON (415) and be within the depth limit (400, raised as
        libs.events.schema.PayloadTooDeep and mapped in problems.py)."""
        if request.method not in MUTATING_METHODS:
            return
        if is_cross_origin(request.headers.get("sec-fetch-site"), request.headers.get("origin"),
                           request.headers.get("host")):
            raise _cross_origin()
        declared = request.headers.get("content-type")
        body = await request.body()  # cached for the handler; over the body limit it is 413
        if declared is None and not body:
            return  # a bare POST (cancel): nothing to decode
        if declared is None or not is_json_media_type(declared):
            raise _unsupported_media_type(declared)
        check_untrusted(body, max_bytes=self.max_body_bytes, max_depth=MAX_JSON_DEPTH)

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
        connection.scope[IDENTITY_SCOPE_KEY] = self.identity


def authenticated_identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """Who the guard authenticated this request as; None when nobody was (auth off, a read,
    a READ_ONLY POST)."""
    identity = connection.scope.get(IDENTITY_SCOPE_KEY)
    return identity if isinstance(identity, str) else None


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or `application/<anything>+json`, any parameters."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def is_cross_origin(fetch_site: str | None, origin: str | None, host: str | None) -> bool:
    """Whether a browser sent this request from another origin. Browsers send
    Sec-Fetch-Site (pages cannot forge it); older ones only Origin, compared with Host.
    No header at all: not a browser (curl, the CLI, httpx), so not a cross-site request."""
    if fetch_site is not None:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    if origin is None:
        return False
    if origin.strip() == "null":
        return True  # a sandboxed or file:// page
    return urlsplit(origin.strip()).netloc.lower() != (host or "").strip().lower()


def _cross_origin() -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=403, title="cross-origin request",
        detail="writes from another site's page are refused: use the dashboard served by this "
               "API, or a non-browser client",
        type_=PROBLEM_TYPE + "cross-origin-request",
    )


def _unsupported_media_type(declared: str | None) -> ProblemDetailsException:
    what = f"Content-Type {declared!r}" if declared is not None else "no Content-Type"
    return ProblemDetailsException(
        status_code=415, title="unsupported media type",
        detail=f"request bodies must be JSON: send `Content-Type: application/json` (got {what})",
        type_=PROBLEM_TYPE + "unsupported-media-type", headers={"Accept": "application/json"},
    )


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
