"""A trainer (`serve` of services/trainers/container.py or services/host_trainer/main.py) run
as a task of the test's event loop, waited for through its `ready=` callback; and training in
the test process on one thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from tests.harness.polling import Started

if TYPE_CHECKING:
    from libs.events.config import BusConfig
    from libs.events.worker.runtime import WorkerRuntime

ServeFn = Callable[..., Coroutine[Any, Any, None]]  # an async `serve` function


@contextlib.asynccontextmanager
async def serving(serve: ServeFn, config: BusConfig, *, timeout: float = 60.0,
                  **options: Any) -> AsyncIterator[WorkerRuntime]:
    """`serve(config, stop, ready=..., **options)` until the block ends; yields the trainer's
    runtime once it is ready (within `timeout`), then stops it and waits for its drain."""
    stop = asyncio.Event()
    started: Started[WorkerRuntime] = Started()
    task = asyncio.create_task(serve(config, stop, ready=started, **options))
    try:
        runtime = await started.wait(task, timeout=timeout)
        await runtime.wait_ready(timeout)
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread for the block. The test MLPs are tiny: a second thread
    buys nothing, and on a 2-core machine shared with other work (trainer processes, other
    tests) two OpenMP threads thrash (10x slower measured). Weights are bit-identical across
    thread counts, so this changes speed only."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
