"""The predictor process: connect, attach to the model store, serve `trainbus-predictor` until
`stop`, then drain (the requests in hand are answered) and close.

    await serve(BusConfig.from_env(client_name="trainbus-predictor"), stop,
                models_dir=Path("models"), data_dir=Path("data"))

It creates nothing on the bus (under roles it may not): the stream, the jobs bucket and the
object store are attached when they exist, and looked for again when a request needs a model
this machine's disk does not hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors

from libs.events.bus import Bus, connect
from libs.events.errors import ModelNotFound, SetupMissing
from libs.events.setup import open_jetstream
from services.predictor.models import DEFAULT_CACHE_SIZE, ModelSource
from services.predictor.predictions import DEFAULT_CONCURRENCY, PredictionService
from services.predictor.service import start_service, subjects

if TYPE_CHECKING:
    from nats.micro.service import Service

    from libs.events.config import BusConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """What `serve` hands its `ready` callback once the endpoints listen."""

    bus: Bus
    service: Service
    predictions: PredictionService
    subjects: dict[str, str]


async def serve(
    config: BusConfig,
    stop: asyncio.Event,
    *,
    models_dir: Path,
    data_dir: Path,
    cache_size: int = DEFAULT_CACHE_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    install: bool = True,
    ready: Callable[[Running], None] | None = None,
) -> None:
    """Serve until `stop` is set. Raises BusUnavailable when NATS does not answer at start."""
    bus = await connect(config)
    try:
        await _attach(bus, quiet=False)

        async def provide_bus() -> Bus:
            if bus.jobs is None or bus.models is None:
                await _attach(bus, quiet=True)
                if bus.jobs is None or bus.models is None:
                    raise ModelNotFound("this NATS has no trainbus model store yet (no job ever "
                                        "completed here)", field="model")
            return bus

        models = ModelSource(models_dir, bus=provide_bus, install=install,
                             cache_size=cache_size)
        predictions = PredictionService(models, data_dir=data_dir, concurrency=concurrency)
        service = await start_service(bus.nc, predictions, prefix=config.prefix)
        names = subjects(config.prefix)
        log.info("trainbus-predictor %s on %s: %s", service.id, config.display_urls,
                 ", ".join(names.values()))
        if ready is not None:
            ready(Running(bus=bus, service=service, predictions=predictions, subjects=names))
        await stop.wait()
        log.info("trainbus-predictor stopping: answering the requests in hand")
    finally:
        await bus.close()  # drains: subscriptions stop, pending requests are answered


async def _attach(bus: Bus, *, quiet: bool) -> None:
    try:
        await open_jetstream(bus)
    except (SetupMissing, nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        if not quiet:
            log.warning("%s: serving this machine's models only until the model store exists",
                        str(exc) or type(exc).__name__)
