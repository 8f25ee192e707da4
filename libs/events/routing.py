"""Which pool a training job goes to.

- A request that names `container`, `host` or `any` gets exactly that pool.
- Otherwise (`auto` or nothing) the backend's mode decides: `USE_TRAINING_HOST_SERVICE=true`
  forces `host`, `false` forces `container` (the compatibility switch of the platform we
  descend from), and the default `auto` picks a *free* trainer from the live heartbeats in KV
  `<prefix>_workers` (`choose_pool`; a heartbeat lists the jobs a worker runs and its
  capacity): a host trainer with a free slot, else a container trainer with one; when all
  are busy, `any` if both kinds pull it (each trainer serves its own pool and `any`,
  runtime.py `WorkerSettings.for_kind`), so the first to free up takes the job; else the
  pool of the one kind that is live; with no live trainer, `container`.

The answer says why, and the 202 response reports both, so nobody has to guess where a job went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.heartbeat import WorkerHeartbeat

RoutingMode = Literal["auto", "host", "container"]
RequestedPool = Literal["auto", "any", "container", "host"]

_TRUE: Final = frozenset({"true", "1", "yes", "on", "host"})
_FALSE: Final = frozenset({"false", "0", "no", "off", "container"})


def parse_routing_mode(value: str | None) -> RoutingMode:
    """USE_TRAINING_HOST_SERVICE: true|false|auto (unset or empty = auto)."""
    if value is None or value.strip().lower() in ("", "auto"):
        return "auto"
    text = value.strip().lower()
    if text in _TRUE:
        return "host"
    if text in _FALSE:
        return "container"
    raise ValueError(f"USE_TRAINING_HOST_SERVICE={value!r}: use true, false or auto")


@dataclass(frozen=True, slots=True)
class Route:
    """The chosen pool and why."""

    pool: str
    reason: str


async def resolve_pool(bus: Bus, requested: str | None, mode: RoutingMode) -> Route:
    """The pool for a job that asked for `requested` (None or "auto": no preference)."""
    if requested not in (None, "auto"):
        return Route(requested, "requested")
    if mode == "host":
        return Route("host", "USE_TRAINING_HOST_SERVICE=true")
    if mode == "container":
        return Route("container", "USE_TRAINING_HOST_SERVICE=false")
    from libs.events.heartbeat import read_workers

    return choose_pool(await read_workers(bus))


def choose_pool(beats: Sequence[WorkerHeartbeat]) -> Route:
    """The `auto` route for these live heartbeats (see the module docstring)."""
    for kind in ("host", "container"):
        free = [b for b in beats if b.kind == kind and kind in b.pools
                and len(b.running) < b.capacity]
        if free:
            names = ", ".join(b.worker_id for b in free[:3]) + (", ..." if free[3:] else "")
            return Route(kind, f"auto: a {kind} trainer is free ({names})")
    live = {kind: [b for b in beats if b.kind == kind] for kind in ("host", "container")}
    if not live["host"] and not live["container"]:
        return Route("container", "auto: no live trainer")
    if live["host"] and live["container"]:
        if all(any("any" in b.pools for b in kind_beats) for kind_beats in live.values()):
            return Route("any", "auto: every trainer is busy; both kinds pull `any`, so the "
                                "first to free up takes it")
        return Route("host", "auto: every trainer is busy and not both kinds pull `any`")
    kind, other = ("host", "container") if live["host"] else ("container", "host")
    return Route(kind, f"auto: every {kind} trainer is busy and no {other} trainer is live")
