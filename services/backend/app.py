"""The backend's Litestar app: `create_app(...)`, an app factory.

    uvicorn --factory services.backend.app:create_app     (or `trainbus backend`)

The lifespan holds the NATS connection and, by default (TRAINBUS_PROJECTOR=embedded), runs the
projector, so job state exists whenever the API does: `trainbus backend` and `trainbus up` need
nothing else. Set TRAINBUS_PROJECTOR=external when several backends share one NATS and one
dedicated process projects (two projectors are safe, both write the fold of the same log, but
wasteful).

OpenAPI: `/schema` (Swagger UI at `/schema/swagger`, the document at `/schema/openapi.json`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RapidocRenderPlugin, SwaggerRenderPlugin

from libs.events.config import BusConfig
from services.backend.controllers import CONTROLLERS
from services.backend.controllers.dashboard import DashboardController
from services.backend.controllers.live import LiveController
from services.backend.controllers.predictions import PredictionController
from services.backend.controllers.strategies import StrategyController
from services.backend.controllers.sweeps import SweepController
from services.backend.deps import DEPENDENCIES
from services.backend.problems import problem_details_plugin
from services.backend.runtime import Runtime
from services.backend.security import ApiSecurity
from services.backend.settings import BackendSettings

VERSION = "0.1.0"


def create_app(
    settings: BackendSettings | None = None,
    bus_config: BusConfig | None = None,
    *,
    stopping: asyncio.Event | None = None,
    debug: bool = False,
    security: ApiSecurity | None = None,
) -> Litestar:
    """The API. Settings and the NATS config default to the environment; `stopping` lets an
    embedding process (trainbus up) end live streams before it stops the server. `security`
    (bearer-token auth for writes, body limit) defaults to TRAINBUS_API_* with auth on
    (services/backend/security.py)."""
    settings = settings or BackendSettings.from_env()
    security = security or ApiSecurity.from_env()
    if bus_config is None:
        bus_config = BusConfig.from_env(publish_retry_for=settings.publish_retry_for,
                                        client_name="trainbus-backend")
    runtime = Runtime(settings, bus_config, stopping=stopping)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    return Litestar(
        route_handlers=[*CONTROLLERS, StrategyController, LiveController, DashboardController,
                        PredictionController, SweepController],
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        plugins=[problem_details_plugin()],
        state=State({"runtime": runtime}),
        openapi_config=OpenAPIConfig(
            title="trainbus",
            version=VERSION,
            description="Train neural trading strategies as jobs on a NATS JetStream event log.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(), RapidocRenderPlugin()],
        ),
        # Leave the root logger to the process (CLI, uvicorn): the demo's output is a bar.
        logging_config=LoggingConfig(configure_root_logger=False),
        debug=debug,
        **security.app_options(),
    )

