"""The settings both edges read from the environment: the HTTP API (services/backend/settings.py
builds on these) and the CLI's own commands (`trainbus train`, `trainbus models`), so the two
route jobs and find strategies and models the same way.

    USE_TRAINING_HOST_SERVICE   routing of jobs that name no pool: true = host, false = container,
                                auto (default) = host when a host trainer heartbeat is live
    TRAINBUS_MODELS_DIR         local model storage (default ./models)
    TRAINBUS_DATA_DIR           price files read by predictions and backtests (default ./data)
    TRAINBUS_STRATEGIES_DIR     strategy files used to default symbols/timeframes (./strategies)

Unset and empty are the same: the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.events.routing import RoutingMode, parse_routing_mode

__all__ = ["SettingsError", "SharedSettings", "env_value"]


class SettingsError(ValueError):
    """Raised when a trainbus environment variable has a value that cannot be used; the
    message names the variable."""


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value of `name`, None when unset or empty."""
    value = env.get(name, "").strip()
    return value or None


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedSettings:
    routing: RoutingMode = "auto"
    models_dir: Path = field(default_factory=lambda: Path("models"))
    strategies_dir: Path = field(default_factory=lambda: Path("strategies"))
    data_dir: Path = field(default_factory=lambda: Path("data"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SharedSettings:
        env = os.environ if environ is None else environ
        try:
            routing = parse_routing_mode(env_value(env, "USE_TRAINING_HOST_SERVICE"))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        models = env_value(env, "TRAINBUS_MODELS_DIR")
        strategies = env_value(env, "TRAINBUS_STRATEGIES_DIR")
        data = env_value(env, "TRAINBUS_DATA_DIR")
        return cls(
            routing=routing,
            models_dir=Path(models) if models is not None else Path("models"),
            strategies_dir=Path(strategies) if strategies is not None else Path("strategies"),
            data_dir=Path(data) if data is not None else Path("data"),
        )
