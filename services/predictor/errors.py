"""What the predictor refuses, as the application service's refusals (`ServiceError`, with the
request `field` at fault): the HTTP edge maps each class to a status in
services/backend/problems.py, the NATS service to a micro error code in `CODES`.

- `InvalidRequest` (422): a window without bars, too little warm-up, bars missing a column or
  off the model's timeframe, a symbol without data, a start after its end;
- `ModelNotFound`, `AliasNotFound` (404): no such model (here, on the bus, in the object
  store), no such alias;
- `ModelExpired` (409): the alias the model was asked through has expired;
- `ModelUntrusted` (403): trust is configured and no trusted key signed the model's job;
- `ModelUnusable` (409): the model exists but cannot serve (features its code no longer builds,
  files changed since it was saved, an object-store copy whose digest differs);
- `ReplyTooLarge` (413, NATS only): the reply would not fit in one NATS message.
"""

from __future__ import annotations

from typing import Final

from libs.events.errors import (
    AliasNotFound,
    InvalidRequest,
    ModelAmbiguous,
    ModelExpired,
    ModelNotFound,
    ModelUntrusted,
    ServiceError,
)

__all__ = ["CODES", "InvalidRequest", "ModelNotFound", "ModelUnusable", "ReplyTooLarge",
           "code_of"]


class ModelUnusable(ServiceError):
    """Raised when a model exists but cannot serve predictions: its saved features differ from
    what its config builds, its files do not match their hashes, or its archive's digest is not
    the one its job recorded."""


class ReplyTooLarge(ServiceError):
    """Raised when a reply would exceed the NATS server's max_payload: ask for a shorter
    window (or use the HTTP route, which has no such limit)."""


# (code, title) of each refusal over NATS; a class not listed (InvalidAlias) is looked up by its
# bases, then 500.
CODES: Final[dict[type[ServiceError], tuple[int, str]]] = {
    InvalidRequest: (422, "invalid request"),
    ModelNotFound: (404, "model not found"),
    AliasNotFound: (404, "alias not found"),
    ModelExpired: (409, "model expired"),
    ModelUntrusted: (403, "model untrusted"),
    ModelAmbiguous: (409, "model ambiguous"),
    ModelUnusable: (409, "model unusable"),
    ReplyTooLarge: (413, "reply too large"),
}


def code_of(exc: ServiceError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return 500, "internal error"
