"""Dependencies the controllers ask for by name (Litestar `Provide`, explicit markers).

Only plain classes are injected (not the `Bus` dataclass): Litestar validates dependency values
against their annotations, and msgspec would introspect the dataclass's NATS types."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from libs.events.catalog import ModelCatalog
from libs.events.jobs import JobService
from services.backend.runtime import Runtime
from services.backend.security import authenticated_identity
from services.strategy_defaults import strategy_defaults


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def provide_jobs(runtime: NamedDependency[Runtime]) -> JobService:
    # require_bus raises Unavailable (503) when NATS is not reachable right now.
    settings = runtime.settings
    return JobService(
        runtime.require_bus(),
        routing=settings.routing,
        strategy_defaults=strategy_defaults(settings.strategies_dir),
        projector=runtime.projector,
        projection_wait=settings.projection_wait,
    )


def provide_catalog(runtime: NamedDependency[Runtime]) -> ModelCatalog:
    return ModelCatalog(runtime.require_bus(), runtime.settings.models_dir)


def provide_requester(request: Request[Any, Any, Any]) -> str | None:
    """The authenticated identity, the `requested_by` of what the request submits; None when
    nobody is authenticated (auth off): then the client's own `requested_by` is kept."""
    return authenticated_identity(request)


DEPENDENCIES: dict[str, Provide] = {
    "runtime": Provide(provide_runtime, sync_to_thread=False),
    "jobs": Provide(provide_jobs, sync_to_thread=False),
    "catalog": Provide(provide_catalog, sync_to_thread=False),
    "requester": Provide(provide_requester, sync_to_thread=False),
}
