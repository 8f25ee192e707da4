"""`/api/v1/models/{strategy}/{version}/predict` and `.../backtest`: a saved model's signals
and backtest on a window of the data directory (TRAINBUS_DATA_DIR) or on bars in the body.

Thin: the work is services/predictor (the same service the NATS predictor runs), its refusals
become problem details in services/backend/problems.py (404 unknown model, 409 expired alias or
unusable model, 422 a bad window or bars naming the field). `version` is `<tf>_v<N>`, `latest`,
the id of the job that trained the model, or `@<alias>` (`/models/eurusd/@champion/predict`).

These POSTs are reads: they compute an answer from stored models and price files and change
nothing, so they need no write token (services/backend/security.py `READ_ONLY`); their size is
bounded by the body limit (TRAINBUS_API_MAX_BODY) and their CPU by the service's concurrency.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK

from libs.events.bus import Bus
from services.backend.runtime import Runtime
from services.backend.security import READ_ONLY
from services.predictor.messages import (
    BacktestReply,
    BacktestRequest,
    PredictReply,
    PredictRequest,
)
from services.predictor.models import ModelSource
from services.predictor.predictions import PredictionService, model_ref

_STATE_KEY = "predictions"

Strategy = Annotated[str, PathParameter(description="the strategy name")]
Version = Annotated[str, PathParameter(
    description="`<tf>_v<N>`, `latest`, the id of the job that trained the model, or "
                "`@<alias>` (e.g. `@champion`)")]


def provide_predictions(state: State, runtime: NamedDependency[Runtime]) -> PredictionService:
    """One service (and model cache) per app, made on first use. Models are read from the
    backend's models dir, else fetched from the object store (kept in memory, never written
    to the models dir: serving a prediction changes nothing on disk)."""
    service: PredictionService | None = state.get(_STATE_KEY)
    if service is None:
        async def bus() -> Bus:
            return runtime.require_bus()  # Unavailable (503) while NATS is unreachable

        models = ModelSource(runtime.settings.models_dir, bus=bus, install=False)
        service = PredictionService(models, data_dir=runtime.settings.data_dir)
        state[_STATE_KEY] = service
    return service


DEPENDENCIES: dict[str, Provide] = {
    "predictions": Provide(provide_predictions, sync_to_thread=False),
}


class PredictionController(Controller):
    path = "/api/v1/models"
    tags = ("predictions",)
    dependencies = DEPENDENCIES

    @post(
        "/{strategy:str}/{version:str}/predict",
        status_code=HTTP_200_OK,
        opt={READ_ONLY: True},
        summary="A model's predictions on a window or on bars",
        description=(
            "Either a window of the server's data directory (`start`, `end`, `symbols`: "
            "default the model's symbols) or `symbol` + `bars` (base-timeframe OHLCV, oldest "
            "first, with the model's `training_data.history_required` bars of warm-up before "
            "`start`). The features are rebuilt by the training's own code; bars after `end` "
            "are never read. Each row: the bar's time, the class probabilities (or the "
            "predicted return) and the signal after the confidence threshold. A read: no "
            "write token needed."
        ),
    )
    async def predict(
        self, strategy: Strategy, version: Version, data: JSONBody[PredictRequest],
        predictions: NamedDependency[PredictionService],
    ) -> PredictReply:
        return await predictions.predict(model_ref(strategy, version), data)

    @post(
        "/{strategy:str}/{version:str}/backtest",
        status_code=HTTP_200_OK,
        opt={READ_ONLY: True},
        summary="The costs-aware backtest of a model's signals on a window",
        description=(
            "The evaluation's backtest (next-bar fills, the strategy's decisions and risk "
            "rules, `costs` per unit of turnover or the strategy's own) beside buy-and-hold, "
            "with the bootstrap interval of the lift, per symbol and the equity curves. The "
            "window is given as for `predict`. A read: no write token needed."
        ),
    )
    async def backtest(
        self, strategy: Strategy, version: Version, data: JSONBody[BacktestRequest],
        predictions: NamedDependency[PredictionService],
    ) -> BacktestReply:
        return await predictions.backtest(model_ref(strategy, version), data)
