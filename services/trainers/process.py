"""Process edge shared by the trainer entry points: options, signals, connect, serve, exit.

A trainer service is `serve(config, stop, ...)` (usable in-process by `trainbus up`/`demo`)
plus `main(argv)`; both trainers get their options and their process lifecycle from here, so
neither holds anything but its configuration.

Signals only set flags: the first SIGTERM/SIGINT sets `stop` (drain: stop pulling, hand the
running job back with a checkpoint, exit), a second one sets `force` (abandon the drain). The
previous handlers are restored on the way out (services/signals.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from libs import worker_defaults as defaults
from libs.events.bus import connect
from libs.events.config import BusConfig
from libs.events.errors import BusConfigError, BusUnavailable, TrainbusBusError
from libs.events.schema import WorkerKind
from libs.events.signing import load_worker_key
from libs.events.worker.runtime import WorkerObserver, WorkerRuntime, WorkerSettings
from services.signals import drain_on_signals

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

ServeFn = Callable[..., Awaitable[None]]


def config_from_args(args: argparse.Namespace) -> BusConfig:
    overrides: dict[str, Any] = {"client_name": f"trainbus-{args.kind}-trainer"}
    if args.nats_url:
        overrides["urls"] = tuple(u.strip() for u in args.nats_url.split(",") if u.strip())
    if args.ack_wait is not None:
        overrides["ack_wait"] = args.ack_wait
    if args.max_deliver is not None:
        overrides["max_deliver"] = args.max_deliver
    return BusConfig.from_env(**overrides)


async def serve_runtime(
    config: BusConfig,
    stop: asyncio.Event,
    settings: WorkerSettings,
    make_runner: Callable[[WorkerSettings], Any],
    *,
    observer: WorkerObserver | None = None,
    force: asyncio.Event | None = None,
    ready: Callable[[WorkerRuntime], None] | None = None,
    worker_key: Path | None = None,
) -> None:
    """Connect, serve until `stop` (the runtime sets up JetStream first), drain, close.
    Raises BusUnavailable when NATS does not answer at start. The trainer signs every event
    with its key (libs/events/signing.py: $TRAINBUS_WORKER_KEY, else created on first start in
    the state directory; `worker_key` names the file instead) and announces the public key in
    its heartbeat."""
    key = await asyncio.to_thread(load_worker_key, settings.kind, worker_key)
    bus = await connect(config)
    bus.signer = key
    try:
        runner = await asyncio.to_thread(make_runner, settings)  # imports torch: off the loop
        runtime = WorkerRuntime(bus, settings, runner, observer=observer)
        if ready is not None:
            ready(runtime)
        await runtime.run(stop, force=force)
    finally:
        await bus.close()


def pipeline_runner(settings: WorkerSettings) -> Any:  # -> PipelineRunner (imports torch)
    """The real pipeline behind the runtime's port; DeviceManager picks CUDA > MPS > CPU."""
    from services.trainers.pipeline_runner import PipelineRunner

    return PipelineRunner(
        data_dir=settings.data_dir, models_dir=settings.models_dir,
        strategies_dir=settings.strategies_dir, checkpoint_every=settings.checkpoint_every,
        checkpoint_interval=settings.checkpoint_interval,
    )


async def serve_kind(
    kind: WorkerKind,
    config: BusConfig,
    stop: asyncio.Event,
    *,
    worker_id: str | None = None,
    capacity: int = defaults.CAPACITY,
    data_dir: Path | str | None = None,
    models_dir: Path | str | None = None,
    strategies_dir: Path | str | None = None,
    checkpoint_every: int = defaults.CHECKPOINT_EVERY,
    checkpoint_interval: float = defaults.CHECKPOINT_INTERVAL,
    drain_timeout: float = defaults.DRAIN_TIMEOUT,
    force: asyncio.Event | None = None,
    ready: Callable[[WorkerRuntime], None] | None = None,
    observer: WorkerObserver | None = None,
    worker_key: Path | None = None,
) -> None:
    """Serve pools `(<kind>, any)` with the real pipeline until `stop` is set, then drain."""
    settings = WorkerSettings.for_kind(
        kind, worker_id=worker_id, capacity=capacity, checkpoint_every=checkpoint_every,
        checkpoint_interval=checkpoint_interval, drain_timeout=drain_timeout,
        data_dir=Path(data_dir) if data_dir is not None else None,
        models_dir=Path(models_dir) if models_dir is not None else None,
        strategies_dir=Path(strategies_dir) if strategies_dir is not None else None,
    )
    await serve_runtime(config, stop, settings, pipeline_runner, observer=observer, force=force,
                        ready=ready, worker_key=worker_key)


def run_process(args: argparse.Namespace, serve: ServeFn) -> int:
    """`asyncio.run` a trainer's `serve` with drain-on-signal; returns the exit code."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    try:
        config = config_from_args(args)
    except BusConfigError as exc:
        print(f"trainbus: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asyncio.run(_serve_with_signals(args, config, serve))
    except BusUnavailable as exc:
        print(f"trainbus: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TrainbusBusError as exc:
        print(f"trainbus: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _serve_with_signals(args: argparse.Namespace, config: BusConfig, serve: ServeFn) -> None:
    stop, force = asyncio.Event(), asyncio.Event()
    with drain_on_signals(
        stop, force,
        on_stop=lambda sig: log.info("%s: draining (again to force)", sig.name),
        on_force=lambda sig: log.warning("second %s: abandoning the drain", sig.name),
    ):
        await serve(
            config, stop, worker_id=args.worker_id, capacity=args.capacity,
            data_dir=args.data_dir, models_dir=args.models_dir,
            strategies_dir=args.strategies_dir, checkpoint_every=args.checkpoint_every,
            checkpoint_interval=args.checkpoint_interval, drain_timeout=args.drain_timeout,
            force=force,
        )
