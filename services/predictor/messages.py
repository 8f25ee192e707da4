"""The predictor's requests and replies, defined once.

The HTTP API validates its bodies and writes its OpenAPI schema from these Structs
(`POST /api/v1/models/{strategy}/{version}/predict` and `.../backtest`), the NATS service
(`<prefix>.svc.predict`, `<prefix>.svc.backtest`) decodes the same JSON plus `model`, and
`trainbus schema export` writes their JSON Schemas to docs/schemas/predictor.*.json. msgspec
and the domain types only: importing this module costs no pandas and no torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from libs.events.jsonschema import SCHEMA_DIALECT
from libs.events.schema import IsoDateTime
from libs.pipeline.types import Seed, Symbol

__all__ = [
    "MAX_BARS",
    "BacktestCall",
    "BacktestReply",
    "BacktestRequest",
    "Bar",
    "PredictCall",
    "PredictReply",
    "PredictRequest",
    "PredictionRow",
    "ServedModel",
    "json_schemas",
]

# A body is capped by the API's body limit (1 MiB by default) and a NATS message by the
# server's max_payload (1 MiB by default) long before this; this caps the work of one request.
MAX_BARS: Final = 100_000
MAX_SYMBOLS: Final = 64

# `<strategy>/<version>` (`1h_v3`, `latest`, `1h_latest` or a job id) or `<strategy>@<alias>`.
MODEL_REF_PATTERN: Final = (
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_-]{0,127}|@[A-Za-z0-9][A-Za-z0-9_.-]"
    r"{0,63})$(?!\n)"
)

ModelName = Annotated[
    str,
    Meta(
        pattern=MODEL_REF_PATTERN,
        description=(
            "the model: `<strategy>/<tf>_v<N>`, `<strategy>/latest` (or `<tf>_latest`), "
            "`<strategy>/<job_id>` (the job that trained it) or `<strategy>@<alias>`"
        ),
        examples=["eurusd_1h_real/1h_v3", "eurusd_1h_real/latest", "eurusd_1h_real@champion"],
    ),
]
Start = Annotated[
    IsoDateTime,
    Meta(description="first bar to predict (ISO 8601; UTC unless it carries an offset)",
         examples=["2018-01-02", "2018-01-02T09:00:00Z"]),
]
End = Annotated[
    IsoDateTime,
    Meta(description="last bar to predict (ISO 8601; a bare date includes that whole day)",
         examples=["2018-01-31"]),
]
Price = Annotated[float, Meta(description="a price")]


class Bar(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One base-timeframe OHLCV bar, stamped at its open."""

    time: Annotated[IsoDateTime, Meta(description="the bar's open time (ISO 8601, UTC unless "
                                                  "it carries an offset)")]
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, Meta(ge=0, description="traded volume (0 when absent)")] | None = None


class PredictRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to predict: a window of the server's data directory (`start`, `end`, `symbols`:
    default every symbol the model was trained on), or bars sent along (`symbol` and `bars`:
    base-timeframe OHLCV, oldest first, with their own warm-up of the model's
    `training_data.history_required` bars before `start`). Bars after `end` are never read."""

    start: Start | None = None
    end: End | None = None
    symbols: Annotated[
        list[Symbol],
        Meta(min_length=1, max_length=MAX_SYMBOLS,
             description="symbols of the data directory (default: the model's own)"),
    ] | None = None
    symbol: Annotated[Symbol, Meta(description="the symbol the `bars` are of (default: the "
                                               "model's symbol when it has one)")] | None = None
    bars: Annotated[
        list[Bar],
        Meta(min_length=1, max_length=MAX_BARS,
             description="base-timeframe bars to predict on instead of the data directory"),
    ] | None = None


class BacktestRequest(PredictRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A window (or bars) to backtest the model's signals on, with the evaluation's costs-aware
    backtest (next-bar fills, the strategy's decisions and risk rules) beside buy-and-hold."""

    costs: Annotated[
        float,
        Meta(ge=0, le=0.1, description="costs per unit of turnover, a fraction (default: the "
                                       "strategy's transaction_costs + slippage)"),
    ] | None = None
    seed: Annotated[Seed, Meta(description="seed of the bootstrap (default: the model's "
                                           "training seed)")] | None = None


class PredictCall(PredictRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A request on `<prefix>.svc.predict`: the HTTP body plus the model it is for."""

    model: ModelName


class BacktestCall(BacktestRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A request on `<prefix>.svc.backtest`: the HTTP body plus the model it is for."""

    model: ModelName


class ServedModel(Struct, frozen=True, kw_only=True):
    """The model that answered."""

    ref: Annotated[str, Meta(description="the reference asked for (`strategy/latest`, "
                                         "`strategy@champion`, ...)")]
    strategy: str
    version: Annotated[str, Meta(description="`<timeframe>_v<N>`")]
    timeframe: Annotated[str, Meta(description="the base timeframe (of the bars it reads)")]
    symbols: Annotated[list[str], Meta(description="the symbols it was trained on")]
    output: Literal["classification", "regression"]
    weights_sha256: Annotated[str | None, Meta(description="digest of the weights themselves")]
    source: Annotated[Literal["disk", "object store"],
                      Meta(description="where this server loaded it from")]
    job_id: Annotated[str | None, Meta(description="the job that trained it, when known")] = None


class PredictionRow(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One bar's prediction: class probabilities (classification) or the predicted return
    (regression), and the signal after the strategy's `decisions.confidence_threshold`; a
    regime model's rows carry its four probabilities and the likeliest `class` instead, and
    no signal (its classes describe the market, they are not trades)."""

    time: Annotated[str, Meta(description="the bar's open time (ISO 8601, UTC)")]
    symbol: str
    p_buy: float | None = None
    p_hold: float | None = None
    p_sell: float | None = None
    p_trending_up: float | None = None
    p_trending_down: float | None = None
    p_ranging: float | None = None
    p_volatile: float | None = None
    predicted_return: float | None = None
    signal: Literal["BUY", "HOLD", "SELL"] | None = None
    class_: Annotated[
        Literal["TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE"] | None,
        Meta(description="a regime model's likeliest class"),
    ] = msgspec.field(default=None, name="class")


class PredictReply(Struct, frozen=True, kw_only=True):
    """The predictions, bar by bar, symbol after symbol."""

    model: ServedModel
    predictions: list[PredictionRow]


class BacktestReply(Struct, frozen=True, kw_only=True):
    """The backtest figures (as in a model's metrics.json `test.backtest`: settings, bars,
    strategies `model` and `buy_and_hold`, lift with its bootstrap interval, per symbol, the
    equity curves)."""

    model: ServedModel
    backtest: dict[str, Any]


def json_schemas(prefix: str = "trainbus") -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document of every request and reply of the predictor."""
    subjects = {"predict": f"{prefix}.svc.predict", "backtest": f"{prefix}.svc.backtest"}
    docs = {
        "predictor.predict.request.json": _schema(
            PredictCall, "predict request",
            f"Request on {subjects['predict']} (nats req). Over HTTP the same body without "
            "`model` goes to POST /api/v1/models/{strategy}/{version}/predict."),
        "predictor.predict.reply.json": _schema(
            PredictReply, "predict reply",
            f"Reply on {subjects['predict']} and of the HTTP route."),
        "predictor.backtest.request.json": _schema(
            BacktestCall, "backtest request",
            f"Request on {subjects['backtest']} (nats req). Over HTTP the same body without "
            "`model` goes to POST /api/v1/models/{strategy}/{version}/backtest."),
        "predictor.backtest.reply.json": _schema(
            BacktestReply, "backtest reply",
            f"Reply on {subjects['backtest']} and of the HTTP route."),
    }
    return docs


def _schema(cls: type, title: str, description: str) -> dict[str, Any]:
    schema = msgspec.json.schema(cls)
    ref = schema.pop("$ref", None)
    defs = schema.pop("$defs", {})
    root = defs.pop(ref.rsplit("/", 1)[-1]) if ref else schema
    doc = " ".join((cls.__doc__ or "").split())
    out: dict[str, Any] = {**root, "$schema": SCHEMA_DIALECT, "title": title,
                           "description": f"{description} {doc}".strip()}
    if defs:
        out["$defs"] = defs
    return out
