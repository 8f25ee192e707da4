"""Predictions and backtests over HTTP, against the real app on a real nats-server, with a real
model (the real-EURUSD strategy, trained once for the module) and the real hourly EURUSD bars as
the backend's data directory: what the routes answer is what libs/pipeline/predict.py gives when
called directly, bars in the body work, and every refusal is a problem detail naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

from libs.events import registry
from libs.events.config import BusConfig
from libs.pipeline.predict import backtest_window, predict_symbol, predict_window
from libs.pipeline.storage.layout import ModelRef
from libs.pipeline.storage.models import LoadedModel, ModelStorage
from services.backend.security import ApiSecurity
from tests.harness.api import ApiStack, api_stack
from tests.harness.bus import bus_config, open_bus
from tests.harness.market import load_real
from tests.harness.nats_server import NatsServer
from tests.harness.polling import eventually
from tests.harness.real_model import HISTORY, STRATEGY, real_workspace, train_real_model
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
TOKEN = "predictions-test-token-0123456789"
WINDOW = {"start": "2018-01-02", "end": "2018-01-31"}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path, ModelRef]:
    base = tmp_path_factory.mktemp("predictions")
    workspace = real_workspace(base / "ws")
    models_dir = base / "models"
    return workspace, models_dir, train_real_model(workspace, models_dir)


@pytest.fixture(scope="module")
def loaded(real: tuple[Workspace, Path, ModelRef]) -> LoadedModel:
    _, models_dir, ref = real
    return ModelStorage(models_dir).load(ref.strategy, ref.version, ref.timeframe)


@pytest.fixture
async def api(config: BusConfig, real: tuple[Workspace, Path, ModelRef]
              ) -> AsyncIterator[ApiStack]:
    workspace, models_dir, _ = real
    async with api_stack(config, workspace, models_dir, trainer=False,
                         data_dir=workspace.data_dir) as stack:
        yield stack


def url(version: str = "1h_v1", action: str = "predict", strategy: str = STRATEGY) -> str:
    return f"/api/v1/models/{strategy}/{version}/{action}"


def normalised(value: Any) -> Any:
    """As the JSON of a reply reads (NaN/inf as null)."""
    return msgspec.json.decode(msgspec.json.encode(value))


def bars_json(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"time": t.isoformat(), "open": r.open, "high": r.high, "low": r.low,
             "close": r.close, "volume": r.volume} for t, r in zip(frame.index,
                                                                    frame.itertuples(),
                                                                    strict=True)]


async def problem(stack: ApiStack, path: str, body: Any, status: int, **kwargs: Any
                  ) -> dict[str, Any]:
    response = await stack.client.post(path, json=body, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    found: dict[str, Any] = response.json()
    assert found["status"] == status and found["detail"], found
    assert "Traceback" not in response.text
    return found


async def test_a_window_is_what_predict_window_gives_and_the_backtest_what_backtest_window_gives(
    api: ApiStack, real: tuple[Workspace, Path, ModelRef], loaded: LoadedModel
) -> None:
    workspace = real[0]
    response = await api.client.post(url(), json=WINDOW)
    assert response.status_code == 200, response.text
    reply = response.json()
    direct = predict_window(loaded, data_dir=workspace.data_dir, **WINDOW)
    assert reply["predictions"] == [row for p in direct for row in p.rows()]
    assert len(reply["predictions"]) == 528
    assert reply["model"] == {
        "ref": f"{STRATEGY}/1h_v1", "strategy": STRATEGY, "version": "1h_v1", "timeframe": "1h",
        "symbols": ["EURUSD"], "output": "classification",
        "weights_sha256": loaded.metadata["weights_sha256"], "source": "disk", "job_id": None,
    }
    # The same model by `latest` and with the symbols named; the loaded model is reused.
    again = await api.client.post(url("latest"), json={**WINDOW, "symbols": ["EURUSD"]})
    assert again.status_code == 200, again.text
    assert again.json()["predictions"] == reply["predictions"]
    assert again.json()["model"]["ref"] == f"{STRATEGY}/latest"

    backtest = await api.client.post(url(action="backtest"), json={**WINDOW, "costs": 0.0002})
    assert backtest.status_code == 200, backtest.text
    figures = backtest.json()["backtest"]
    assert figures == normalised(backtest_window(loaded, direct, costs=0.0002))
    assert figures["settings"]["cost_per_turnover"] == 0.0002
    assert {"model", "buy_and_hold"} <= set(figures["strategies"])
    assert figures["bars"] > 0


async def test_bars_in_the_body_are_predicted_as_predict_symbol_predicts_them(
    api: ApiStack, loaded: LoadedModel
) -> None:
    prices = load_real("EURUSD", "1h")
    start = pd.Timestamp("2018-01-08", tz="UTC")
    first = int(prices.index.searchsorted(start)) - 150  # warm-up beyond history_required
    frame = prices.iloc[first:int(prices.index.searchsorted(pd.Timestamp("2018-01-13",
                                                                         tz="UTC")))]
    body = {"symbol": "EURUSD", "bars": bars_json(frame), "start": start.isoformat()}
    response = await api.client.post(url(), json=body)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    direct = predict_symbol(loaded, "EURUSD", bars=frame, start=start)
    assert rows == direct.rows()
    assert rows[0]["time"] == start.isoformat() and rows[-1]["time"] == frame.index[-1].isoformat()
    # The symbol defaults to the model's only one; `end` cuts the bars.
    cut = await api.client.post(url(), json={"bars": body["bars"], "start": body["start"],
                                             "end": "2018-01-09T23:00:00Z"})
    assert cut.status_code == 200, cut.text
    end = pd.Timestamp("2018-01-09T23:00:00Z")
    assert cut.json()["predictions"] == [r for r in rows if pd.Timestamp(r["time"]) <= end]
    # A backtest of bars works the same way.
    backtest = await api.client.post(url(action="backtest"), json=body)
    assert backtest.status_code == 200, backtest.text
    assert backtest.json()["backtest"] == normalised(backtest_window(loaded, [direct]))


async def test_refusals_are_problem_details_naming_the_problem(api: ApiStack) -> None:
    prices = load_real("EURUSD", "1h")
    start = pd.Timestamp("2018-01-08", tz="UTC")
    at = int(prices.index.searchsorted(start))
    bars = bars_json(prices.iloc[at - 150:at + 24])
    # Unknown models: 404 naming the version.
    for path in (url("1h_v9"), url(strategy="no_such_strategy"), url("run-nope")):
        assert (await problem(api, path, WINDOW, 404))["field"] == "version", path
    # A window the data directory has no bar in: 422 naming start, the detail both bounds.
    empty = await problem(api, url(), {"start": "2019-01-01", "end": "2019-02-01"}, 422)
    assert empty["field"] == "start"
    assert "start=2019-01-01" in empty["detail"] and "end=2019-02-01" in empty["detail"]
    # A bar without a column: 422 naming the column and where.
    broken = [dict(b) for b in bars]
    del broken[3]["close"]
    missing = await problem(api, url(), {"symbol": "EURUSD", "bars": broken}, 422)
    assert missing["field"] == "bars[3]" and "field `close`" in missing["detail"]
    # Too little warm-up before start in the bars sent: 422 naming bars and the requirement.
    short = await problem(api, url(), {"symbol": "EURUSD", "bars": bars[100:],
                                       "start": start.isoformat()}, 422)
    assert short["field"] == "bars"
    assert f"history_required = {HISTORY}" in short["detail"] and "50 bars before" in \
        short["detail"]
    # More refusals, each naming its field.
    four_hourly = bars[::4]
    for body, field, words in (
        ({"start": "2018-02-01", "end": "2018-01-01"}, "end", "after end"),
        ({**WINDOW, "symbols": ["GBPUSD"]}, "symbols", "no price data for GBPUSD 1h"),
        ({**WINDOW, "start": "2018-13-45"}, "start", "not a date"),
        ({"symbol": "EURUSD", "bars": bars, "symbols": ["EURUSD"]}, "symbols", "`symbol`"),
        ({"symbol": "EURUSD", "bars": four_hourly}, "bars", "not 1h"),
        ({"symbol": "EURUSD", "bars": bars[::-1]}, "bars", "oldest first"),
        ({**WINDOW, "when": "now"}, "when", "unknown field"),
        ({**WINDOW, "symbols": []}, "symbols", "length"),
    ):
        found = await problem(api, url(), body, 422)
        assert found["field"] == field and words in found["detail"], (body, found)
    # A backtest's costs are bounded.
    assert (await problem(api, url(action="backtest"), {**WINDOW, "costs": -1}, 422)
            )["field"] == "costs"
    # Not JSON at all: 400.
    response = await api.client.post(url(), content=b"{nope",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


async def test_aliases_resolve_and_an_expired_alias_is_409(
    api: ApiStack, real: tuple[Workspace, Path, ModelRef]
) -> None:
    models_dir = real[1]
    async with open_bus(api.config) as bus:
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v1", by="test",
                                 expires_after=None, reason=None, models_dir=models_dir)
        await registry.set_alias(bus, STRATEGY, "stale", "1h_v1", by="test",
                                 expires_after=0.2, reason=None, models_dir=models_dir)
    response = await api.client.post(url("@champion"), json=WINDOW)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["ref"] == f"{STRATEGY}@champion"
    assert response.json()["model"]["version"] == "1h_v1"
    await asyncio.sleep(0.3)
    expired = await problem(api, url("@stale"), WINDOW, 409)
    assert "expired" in expired["detail"]
    assert (await problem(api, url("@nobody"), WINDOW, 404))["field"] == "alias"


async def test_predictions_are_reads_no_token_needed_while_writes_still_need_it(
    config: BusConfig, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    async with api_stack(config, workspace, models_dir, trainer=False, data_dir=workspace.data_dir,
                         security=ApiSecurity(token=TOKEN, max_body_bytes=64 * 1024)) as stack:
        assert (await stack.client.post(url(), json=WINDOW)).status_code == 200
        assert (await stack.client.post(url(action="backtest"), json=WINDOW)).status_code == 200
        await problem(stack, "/api/v1/trainings", {"strategy": STRATEGY}, 401)
        # The body limit bounds what a prediction may send.
        prices = load_real("EURUSD", "1h")
        response = await stack.client.post(url(), json={"bars": bars_json(prices.iloc[:2000])})
        assert response.status_code == 413, response.text
        # Both routes are in the OpenAPI document, with their documented bodies.
        document = (await stack.client.get("/schema/openapi.json")).json()
    for action in ("predict", "backtest"):
        operation = document["paths"][f"/api/v1/models/{{strategy}}/{{version}}/{action}"]["post"]
        assert operation["tags"] == ["predictions"]
    schemas = document["components"]["schemas"]
    request = next(v for k, v in schemas.items() if k.endswith("PredictRequest"))
    assert set(request["properties"]) == {"start", "end", "symbols", "symbol", "bars"}
    assert "instead of the data directory" in request["properties"]["bars"]["description"]
    assert "a bare date includes that whole day" in request["properties"]["end"]["description"]
    version = next(p for p in operation["parameters"] if p["name"] == "version")
    assert "@<alias>" in version["description"]
    reply = next(v for k, v in schemas.items() if k.endswith("PredictionRow"))
    assert {"time", "symbol", "p_buy", "signal"} <= set(reply["properties"])


async def test_with_nats_down_a_model_on_disk_is_still_served_and_others_are_503(
    nats_server: NatsServer, unique_prefix: str, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    config = bus_config(nats_server, unique_prefix, publish_retry_for=3.0)
    async with api_stack(config, workspace, models_dir, trainer=False,
                         data_dir=workspace.data_dir) as stack:
        assert (await stack.client.post(url("latest"), json=WINDOW)).status_code == 200
        nats_server.stop()

        async def unknown() -> int:
            return (await stack.client.post(url("1h_v9"), json=WINDOW)).status_code

        await eventually(unknown, lambda status: status == 503, timeout=15,
                         what="503 while NATS is down")
        for version in ("1h_v1", "latest"):  # this disk answers without the bus
            response = await stack.client.post(url(version), json=WINDOW)
            assert response.status_code == 200, (version, response.text)
        assert (await problem(stack, url("@champion"), WINDOW, 503))["title"] == \
            "NATS unavailable"
