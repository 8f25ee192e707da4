"""CLI tests run the real console script (`.venv/bin/trainbus`) as subprocesses against a test
nats-server, with the real API (projector) and a real container trainer in the test's loop
(the shared `workspace`, `config` and `stack` fixtures of tests/harness/fixtures.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.events.config import BusConfig
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.workspace import Workspace


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def cli_env(config: BusConfig, workspace: Workspace, models_dir: Path,
            **extra: str) -> dict[str, str]:
    return clean_env(**{
        "NATS_URL": ",".join(config.urls),
        "TRAINBUS_SUBJECT_PREFIX": config.prefix,
        "TRAINBUS_STRATEGIES_DIR": str(workspace.strategies_dir),
        "TRAINBUS_DATA_DIR": str(workspace.data_dir),
        "TRAINBUS_MODELS_DIR": str(models_dir),
        "TRAINBUS_STREAM_MAX_BYTES": str(config.stream_max_bytes),
        **extra,
    })


class CliProcess:
    """A running `trainbus` whose output the test reads as it comes (see `start_cli`)."""

    def __init__(self, args: tuple[str, ...], proc: asyncio.subprocess.Process) -> None:
        self.args, self.proc = args, proc
        self.seen = b""  # stdout read so far

    async def read_until(self, marker: bytes = b"\n", timeout: float = 60.0) -> bytes:
        """Read stdout line by line until `marker` is in what was read (default: the first
        line); returns all stdout read so far."""
        assert self.proc.stdout is not None
        while marker not in self.seen:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"trainbus {' '.join(self.args)} ended before printing "
                                     f"{marker!r}:\n{self.seen.decode()}")
            self.seen += line
        return self.seen

    async def result(self, timeout: float = 120.0) -> Result:
        """Wait for the exit; stdout is everything it printed, including what was read."""
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            out, err = await self.proc.communicate()
            raise AssertionError(f"trainbus {' '.join(self.args)} timed out:\n"
                                 f"{(self.seen + out).decode()}\n{err.decode()}") from None
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, (self.seen + out).decode(), err.decode())


@contextlib.asynccontextmanager
async def start_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None
                    ) -> AsyncIterator[CliProcess]:
    """`trainbus ARGS` as a child of the test's loop (the trainer runs in it), killed at the
    end of the block if it still runs."""
    proc = await asyncio.create_subprocess_exec(
        TRAINBUS, *args, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield CliProcess(args, proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None,
                  timeout: float = 120.0) -> Result:
    """Run `trainbus ARGS` to its end without blocking the loop."""
    async with start_cli(*args, env=env, cwd=cwd) as cli:
        return await cli.result(timeout)


@pytest.fixture
def env(config: BusConfig, workspace: Workspace, tmp_path: Path) -> dict[str, str]:
    return cli_env(config, workspace, tmp_path / "models")
