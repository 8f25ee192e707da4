"""`trainbus-predictor`: predictions and backtests as a NATS request/reply service (`nats.micro`).

    <prefix>.svc.predict    PredictCall  -> PredictReply    (services/predictor/messages.py)
    <prefix>.svc.backtest   BacktestCall -> BacktestReply

Requests are the HTTP bodies plus `"model": "strategy/1h_v3"`; replies are what the HTTP routes
answer. A refusal is a micro error reply: headers `Nats-Service-Error-Code` (400 malformed JSON,
404 unknown model, 409 model unusable, 413 reply too large, 422 bad window or bars, 500 a bug)
and `Nats-Service-Error` (`<field>: <what is wrong>`), empty body. Every endpoint listens in the
queue group `q` (micro's default): start more predictors to share the load. One process answers
one request per endpoint at a time (the work runs in a thread); `$SRV.PING|INFO|STATS` (`nats
micro ls`, `nats micro info trainbus-predictor`) discover it.

Stopping drains the connection: no new request is taken, the ones in hand are answered, then
it closes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import ServiceVerb, control_subject

from libs.events.errors import ServiceError as Refusal
from services.predictor.errors import ReplyTooLarge, code_of
from services.predictor.messages import BacktestCall, PredictCall
from services.predictor.predictions import PredictionService

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.micro.service import Service

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "trainbus-predictor"
SERVICE_VERSION: Final = "0.1.0"
QUEUE_GROUP: Final = "q"
_MAX_HEADER: Final = 1000  # characters of an error description (one header line)

T = TypeVar("T")


def subjects(prefix: str) -> dict[str, str]:
    """Endpoint name -> subject."""
    return {"predict": f"{prefix}.svc.predict", "backtest": f"{prefix}.svc.backtest"}


async def start_service(nc: Client, predictions: PredictionService, *, prefix: str) -> Service:
    """Add `trainbus-predictor` with its two endpoints on `nc`; stop it with `service.stop()`
    or by draining the connection."""
    service = await add_service(
        nc,
        name=SERVICE_NAME,
        version=SERVICE_VERSION,
        description="Predictions and backtests of trained trainbus models",
        metadata={"prefix": prefix, "schemas": "docs/schemas/predictor.*.json"},
        queue_group=QUEUE_GROUP,
    )
    names = subjects(prefix)
    await service.add_endpoint(
        name="predict", subject=names["predict"],
        handler=_handler(PredictCall, predictions.predict_call, nc),
        metadata={"request": "predictor.predict.request.json",
                  "reply": "predictor.predict.reply.json"},
    )
    await service.add_endpoint(
        name="backtest", subject=names["backtest"],
        handler=_handler(BacktestCall, predictions.backtest_call, nc),
        metadata={"request": "predictor.backtest.request.json",
                  "reply": "predictor.backtest.reply.json"},
    )
    # nats-py's flush() writes its PING ahead of the SUBs still queued, so a PONG does not
    # prove the endpoints are subscribed (a request right after could find no responders). A
    # request to this instance's own PING subject is queued after them on this connection:
    # once it is answered, the server has every endpoint.
    await nc.request(control_subject(ServiceVerb.PING, SERVICE_NAME, service.id), b"",
                     timeout=10)
    return service


def _handler(kind: type[T], call: Callable[[T], Awaitable[Any]], nc: Client
             ) -> Callable[[Request], Awaitable[None]]:
    decoder = msgspec.json.Decoder(kind)

    async def handle(request: Request) -> None:
        try:
            try:
                message = decoder.decode(request.data)
            except msgspec.ValidationError as exc:
                raise ServiceError("422", _line(_validation(exc))) from None
            except msgspec.DecodeError as exc:
                raise ServiceError("400", _line(f"the request is not JSON: {exc}")) from None
            reply = msgspec.json.encode(await call(message))
            if len(reply) > nc.max_payload:
                raise ReplyTooLarge(
                    f"the reply is {len(reply)} bytes, more than the server's max_payload "
                    f"{nc.max_payload}: ask for a shorter window or fewer symbols", field="end")
        except ServiceError:
            raise
        except Refusal as exc:
            code, _title = code_of(exc)
            detail = f"{exc.field}: {exc.detail}" if exc.field else exc.detail
            raise ServiceError(str(code), _line(detail)) from None
        except Exception as exc:  # a bug: logged with an incident id, never sent as a trace
            incident = secrets.token_hex(6)
            log.error("incident %s: %s on %s raised %s", incident, kind.__name__,
                      request.subject, type(exc).__name__, exc_info=exc)
            raise ServiceError("500", f"internal error (incident {incident}; details are in "
                                      "the predictor's log)") from None
        await request.respond(reply, headers={"Content-Type": "application/json"})

    return handle


def _validation(exc: msgspec.ValidationError) -> str:
    """`field: message` from msgspec's "... - at `$.bars[3].close`" (the first key named)."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        # "Object missing required field `model`" has no location: the field is in the text.
        start = text.find("`")
        field = text[start + 1:text.find("`", start + 1)] if start >= 0 else None
        return f"{field}: {text}" if field else text
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    field = path.split(".", 1)[0].split("[", 1)[0]
    return f"{field}: {message} (at {path})" if field else message


def _line(text: str) -> str:
    """One header line: no CR/LF, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_HEADER else flat[: _MAX_HEADER - 3] + "..."
