"""The native host trainer: the shared worker runtime on pool `host` (then `any`).

Runs natively on the workstation so DeviceManager can pick CUDA or Apple MPS
(`TRAINBUS_DEVICE` overrides), and reports a session view (current job, status, epoch,
metrics) in its heartbeat. Nothing here but configuration and that bookkeeping; pulling,
leases, cancel, events, checkpoints and model transfer are `libs.events.worker.WorkerRuntime`.

    trainbus host-trainer [--nats-url URL] [--worker-id ID] [--data-dir DIR] ...

In-process (`trainbus up`/`demo`): `await serve(config, stop)` until `stop` is set.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from libs.events.config import BusConfig
from libs.events.worker import WorkerRuntime, WorkerSettings
from libs.events.worker_options import add_worker_arguments
from libs.events.worker_process import run_process, serve_runtime
from services.host_trainer.session import HostSession

KIND = "host"


async def serve(
    config: BusConfig,
    stop: asyncio.Event,
    *,
    worker_id: str | None = None,
    capacity: int = 1,
    data_dir: Path | str | None = None,
    models_dir: Path | str | None = None,
    strategies_dir: Path | str | None = None,
    checkpoint_every: int = 1,
    drain_timeout: float = 30.0,
    force: asyncio.Event | None = None,
    ready: Callable[[WorkerRuntime], None] | None = None,
) -> None:
    """Serve `host` and `any` train commands until `stop` is set, then drain."""
    settings = WorkerSettings.for_kind(
        KIND, worker_id=worker_id, capacity=capacity, checkpoint_every=checkpoint_every,
        drain_timeout=drain_timeout,
        data_dir=Path(data_dir) if data_dir is not None else None,
        models_dir=Path(models_dir) if models_dir is not None else None,
        strategies_dir=Path(strategies_dir) if strategies_dir is not None else None,
    )
    await serve_runtime(config, stop, settings, _runner, observer=HostSession(), force=force,
                        ready=ready)


def _runner(settings: WorkerSettings):  # -> PipelineRunner (imports torch)
    from libs.events.worker_pipeline import PipelineRunner
    from libs.pipeline.device import DeviceManager

    return PipelineRunner(
        data_dir=settings.data_dir, models_dir=settings.models_dir,
        strategies_dir=settings.strategies_dir, checkpoint_every=settings.checkpoint_every,
        device_manager=DeviceManager(),  # CUDA > MPS > CPU, TRAINBUS_DEVICE overrides
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="trainbus host-trainer")
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_worker_arguments(parser)
    parser.set_defaults(kind=KIND, handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_process(args, serve)


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
