"""Pool resolution and backend settings (no server needed)."""

from __future__ import annotations

import pytest

from libs.events.jobs import idempotent_job_id
from libs.events.routing import parse_routing_mode, resolve_pool
from services.backend.settings import BackendSettings, SettingsError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("value", "mode"), [
    (None, "auto"), ("", "auto"), ("auto", "auto"), ("AUTO", "auto"),
    ("true", "host"), ("1", "host"), ("yes", "host"),
    ("false", "container"), ("0", "container"), ("no", "container"),
])
def test_use_training_host_service(value: str | None, mode: str) -> None:
    assert parse_routing_mode(value) == mode


def test_a_bad_routing_value_is_an_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="USE_TRAINING_HOST_SERVICE"):
        BackendSettings.from_env({"USE_TRAINING_HOST_SERVICE": "sometimes"})


async def test_forced_modes_and_requested_pools_need_no_lookup() -> None:
    # No bus at all: nothing is looked up when the answer is already known.
    assert (await resolve_pool(None, None, "host")).pool == "host"  # type: ignore[arg-type]
    assert (await resolve_pool(None, "auto", "container")).pool == "container"  # type: ignore[arg-type]
    route = await resolve_pool(None, "any", "host")  # type: ignore[arg-type]
    assert (route.pool, route.reason) == ("any", "requested")


def test_settings_from_env() -> None:
    settings = BackendSettings.from_env({
        "TRAINBUS_API_HOST": "0.0.0.0", "TRAINBUS_API_PORT": "9001",
        "USE_TRAINING_HOST_SERVICE": "false", "TRAINBUS_PROJECTOR": "external",
        "TRAINBUS_MODELS_DIR": "/m", "TRAINBUS_SHUTDOWN_TIMEOUT": "3",
    })
    assert (settings.host, settings.port, settings.routing, settings.projector) == (
        "0.0.0.0", 9001, "container", "external")
    assert str(settings.models_dir) == "/m" and settings.shutdown_timeout == 3.0
    with pytest.raises(SettingsError, match="TRAINBUS_API_PORT"):
        BackendSettings.from_env({"TRAINBUS_API_PORT": "http"})
    with pytest.raises(SettingsError, match="TRAINBUS_PROJECTOR"):
        BackendSettings.from_env({"TRAINBUS_PROJECTOR": "maybe"})


def test_idempotent_job_ids_are_deterministic_valid_and_distinct() -> None:
    from libs.events.subjects import validate_job_id

    keys = ["a", "a b.c", "x" * 128, "ünïcödé"]
    ids = [idempotent_job_id(k) for k in keys]
    assert ids == [idempotent_job_id(k) for k in keys]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        assert validate_job_id(job_id) == job_id
