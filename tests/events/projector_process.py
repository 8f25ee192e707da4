"""A projector in its own process, so a test can SIGKILL it mid-stream.

    python -m tests.events.projector_process NATS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import sys

from libs.events.config import BusConfig
from libs.events.projector import Projector
from tests.harness.bus import STREAM_MAX_BYTES, open_bus


async def main(url: str, prefix: str) -> None:
    config = BusConfig(urls=(url,), prefix=prefix, stream_max_bytes=STREAM_MAX_BYTES)
    async with open_bus(config) as bus:
        projector = Projector(bus, flush_interval=0.005)
        await projector.start()
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
