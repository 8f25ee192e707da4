"""The container trainer: the shared worker runtime on pool `container` (then `any`).

Runs inside the backend's container or beside it, on whatever device DeviceManager picks
(normally CPU). Nothing here but configuration: pulling, leases, heartbeats, cancel, events,
checkpoints and model transfer are all `libs.events.worker.runtime.WorkerRuntime`, and the process
edge (options, signals, drain) is `services.trainers.process`.

    trainbus container-trainer [--nats-url URL] [--worker-id ID] [--data-dir DIR] ...

In-process (`trainbus up`/`demo`): `await serve(config, stop)` until `stop` is set.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Final

from libs.events.config import BusConfig
from services.trainers.process import run_process, serve_kind

KIND: Final = "container"


async def serve(config: BusConfig, stop: asyncio.Event, **options: Any) -> None:
    """Serve `container` and `any` train commands until `stop` is set, then drain.
    Options: those of `services.trainers.process.serve_kind`."""
    await serve_kind(KIND, config, stop, **options)


def run(args: argparse.Namespace) -> int:
    """`trainbus container-trainer` (services/cli/trainers.py parses the options)."""
    return run_process(args, serve)
