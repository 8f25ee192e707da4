"""Backend settings from the environment (the NATS side is `libs.events.config.BusConfig`).

    TRAINBUS_API_HOST           address the HTTP API binds (default 127.0.0.1; 0.0.0.0 in compose)
    TRAINBUS_API_PORT           its port (default 8000)
    TRAINBUS_PROJECTOR          embedded (default): the backend runs the projector in its lifespan;
                                external: something else keeps KV trainbus_jobs up to date
    TRAINBUS_SHUTDOWN_TIMEOUT   seconds a graceful shutdown may take before tasks are cancelled

and, read the same way as the CLI reads them (services/settings.py): USE_TRAINING_HOST_SERVICE
(routing of jobs that name no pool), TRAINBUS_MODELS_DIR (the local model storage read by
/api/v1/models), TRAINBUS_STRATEGIES_DIR (strategy files used to default symbols/timeframes),
TRAINBUS_DATA_DIR (the price files a prediction or backtest of a window reads).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from libs.events.routing import RoutingMode
from services.settings import SettingsError, SharedSettings, env_value

__all__ = ["DEFAULT_PORT", "BackendSettings", "ProjectorMode", "SettingsError"]

ProjectorMode = Literal["embedded", "external"]
DEFAULT_PORT: Final = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    routing: RoutingMode = "auto"
    projector: ProjectorMode = "embedded"
    models_dir: Path = field(default_factory=lambda: Path("models"))
    strategies_dir: Path = field(default_factory=lambda: Path("strategies"))
    data_dir: Path = field(default_factory=lambda: Path("data"))
    # Seconds between SSE keep-alive comments while a job is quiet (proxies drop idle streams).
    sse_keepalive: float = 15.0
    # After submitting, wait this long for the embedded projector so that an immediate
    # GET /jobs/{id} finds the job (read-your-writes); never waits for training.
    projection_wait: float = 2.0
    shutdown_timeout: float = 10.0
    # A backend that reports in an outage answers quickly; longer waits belong to workers.
    publish_retry_for: float = 5.0
    # The durability preflight at setup (libs/events/durability.py): `strict` refuses to start
    # when it warns; the monitoring URLs (`http://node:8222`) let it read each server's fsync.
    durability: Literal["warn", "strict"] = "warn"
    nats_monitor_urls: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object
                 ) -> BackendSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env_value(env, name)

        values: dict[str, object] = {}
        if (host := get("TRAINBUS_API_HOST")) is not None:
            values["host"] = host
        if (port := get("TRAINBUS_API_PORT")) is not None:
            values["port"] = _port(port)
        shared = SharedSettings.from_env(env)
        values.update(routing=shared.routing, models_dir=shared.models_dir,
                      strategies_dir=shared.strategies_dir, data_dir=shared.data_dir)
        if (projector := get("TRAINBUS_PROJECTOR")) is not None:
            if projector not in ("embedded", "external"):
                raise SettingsError(
                    f"TRAINBUS_PROJECTOR={projector!r}: use embedded or external"
                )
            values["projector"] = projector
        if (durability := get("TRAINBUS_DURABILITY")) is not None:
            if durability not in ("warn", "strict"):
                raise SettingsError(f"TRAINBUS_DURABILITY={durability!r}: use warn or strict")
            values["durability"] = durability
        if (monitors := get("TRAINBUS_NATS_MONITOR_URLS")) is not None:
            values["nats_monitor_urls"] = tuple(u.strip() for u in monitors.split(",")
                                                if u.strip())
        if (timeout := get("TRAINBUS_SHUTDOWN_TIMEOUT")) is not None:
            try:
                values["shutdown_timeout"] = float(timeout)
            except ValueError:
                raise SettingsError(
                    f"TRAINBUS_SHUTDOWN_TIMEOUT={timeout!r} is not a number"
                ) from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise SettingsError(f"TRAINBUS_API_PORT={text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"TRAINBUS_API_PORT={port} is out of range")
    return port
