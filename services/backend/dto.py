"""Response bodies only the HTTP API has (models, workers, health). The job requests and results
are the application service's (libs/events/job_types.py)."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct


class ModelInfo(Struct, frozen=True, kw_only=True):
    """One trained model. `version` is `<timeframe>_v<N>` as in the model storage layout."""

    strategy: str
    version: str
    timeframe: str | None = None
    job_id: str | None = None
    local: bool = False
    local_path: str | None = None
    object_name: str | None = None
    sha256: str | None = None
    created_at: float | None = None
    test_metrics: dict[str, Any] = {}
    download: str = ""


class ModelDetail(Struct, frozen=True, kw_only=True):
    model: ModelInfo
    metadata: dict[str, Any] = {}
    metrics: dict[str, Any] = {}


class WorkerList(Struct, frozen=True, kw_only=True):
    items: list[dict[str, Any]]


class Health(Struct, frozen=True, kw_only=True):
    status: Literal["ok", "unavailable"]
    nats: dict[str, Any]
    stream: dict[str, Any]
    projector: dict[str, Any]
