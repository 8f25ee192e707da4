"""Response bodies only the HTTP API has (workers, health). The job requests and results are the
application service's (libs/events/job_types.py), the models the catalog's
(libs/events/catalog.py)."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct


class WorkerList(Struct, frozen=True, kw_only=True):
    items: list[dict[str, Any]]


class Health(Struct, frozen=True, kw_only=True):
    status: Literal["ok", "unavailable"]
    nats: dict[str, Any]
    stream: dict[str, Any]
    projector: dict[str, Any]
    # The durability preflight of the last connect (libs/events/durability.py): cluster,
    # servers, replicas per stream, warnings. Empty before the first connect.
    durability: dict[str, Any] = {}
