"""CLI tests run the real console script (`.venv/bin/trainbus`) as subprocesses against a test
nats-server, with the real API (projector) and a real container trainer in the test's loop."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.events.config import BusConfig
from tests.backend.stack import ApiStack, Workspace, api_stack, make_workspace
from tests.events.conftest import bus_config
from tests.harness.nats_server import NatsServer

TRAINBUS = str(Path(sys.executable).parent / "trainbus")


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def cli_env(config: BusConfig, workspace: Workspace, models_dir: Path,
            **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "TRAINBUS_", "USE_TRAINING"))}
    env.update({
        "NATS_URL": ",".join(config.urls),
        "TRAINBUS_SUBJECT_PREFIX": config.prefix,
        "TRAINBUS_STRATEGIES_DIR": str(workspace.strategies_dir),
        "TRAINBUS_DATA_DIR": str(workspace.data_dir),
        "TRAINBUS_MODELS_DIR": str(models_dir),
        "TRAINBUS_STREAM_MAX_BYTES": str(config.stream_max_bytes),
        "COLUMNS": "200",  # rich wraps at 80 columns without a terminal
    })
    env.update(extra)
    return env


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None,
                  timeout: float = 120.0) -> Result:
    """Run `trainbus ARGS` without blocking the loop (the trainer runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        TRAINBUS, *args, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"trainbus {' '.join(args)} timed out:\n{out.decode()}\n"
                             f"{err.decode()}") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture
def config(nats_server_module: NatsServer, unique_prefix: str) -> BusConfig:
    return bus_config(nats_server_module, unique_prefix, publish_retry_for=3.0)


@pytest.fixture
async def stack(config: BusConfig, workspace: Workspace, tmp_path: Path
                ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, workspace, tmp_path / "models") as running:
        yield running


@pytest.fixture
def env(config: BusConfig, workspace: Workspace, tmp_path: Path) -> dict[str, str]:
    return cli_env(config, workspace, tmp_path / "models")
