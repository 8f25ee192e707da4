"""`trainbus backend`: the HTTP API in its own process (compose runs it beside NATS).

    trainbus backend [--host 0.0.0.0] [--port 8000]

Runs the projector in its lifespan unless TRAINBUS_PROJECTOR=external. Starts even when NATS is
not reachable yet (answers 503 and keeps trying). SIGINT/SIGTERM: stop taking requests, end live
streams, finish in-flight requests (bounded by TRAINBUS_SHUTDOWN_TIMEOUT), close NATS.
Configuration: docs/configuration.md. Exit codes: 0 stopped, 1 could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backend", help="run the HTTP API (and the projector)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=None,
                        help="address to bind (default $TRAINBUS_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default $TRAINBUS_API_PORT or 8000)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to start when the durability preflight warns (a cluster "
                             "below R3, servers that fsync on a timer); $TRAINBUS_DURABILITY")
    parser.set_defaults(handler=run_backend)


def run_backend(args: argparse.Namespace) -> int:
    from services.cli.client import run

    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("nats").setLevel(logging.WARNING)
    return run(lambda: _backend(args))


async def _backend(args: argparse.Namespace) -> int:
    from services.backend.app import create_app
    from services.backend.security import ApiSecurity, SecurityConfigError
    from services.backend.server import serve_until
    from services.backend.settings import BackendSettings, SettingsError
    from services.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, error
    from services.signals import drain_on_signals

    try:
        overrides: dict[str, Any] = {}
        if args.host is not None:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        if args.strict:
            overrides["durability"] = "strict"
        settings = BackendSettings.from_env(**overrides)
        security = ApiSecurity.from_env()  # auth on by default (docs/configuration.md)
    except (SettingsError, SecurityConfigError) as exc:
        error(str(exc))
        return EXIT_BAD_INPUT
    stop = asyncio.Event()
    with drain_on_signals(stop):
        started = asyncio.Event()
        app = create_app(settings, security=security)

        async def announce() -> None:
            await started.wait()
            print(f"trainbus API on http://{settings.host}:{settings.port} "
                  f"(OpenAPI: /schema, projector: {settings.projector}); {security.describe}",
                  file=sys.stderr, flush=True)

        announcer = asyncio.create_task(announce())
        try:
            await serve_until(app, host=settings.host, port=settings.port, stop=stop,
                              timeout=settings.shutdown_timeout, started=started)
        except RuntimeError as exc:
            error(str(exc))
            return EXIT_FAILED
        finally:
            announcer.cancel()
    return EXIT_OK
