"""Which pool a training job goes to.

- A request that names `container`, `host` or `any` gets exactly that pool.
- Otherwise (`auto` or nothing) the backend's mode decides: `USE_TRAINING_HOST_SERVICE=true`
  forces `host`, `false` forces `container` (the compatibility switch of the platform we
  descend from), and the default `auto` sends to `host` when a live host trainer heartbeat is in
  KV `<prefix>_workers`, else to `container`.

The answer says why, and the 202 response reports both, so nobody has to guess where a job went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from libs.events.bus import Bus

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
    from libs.events.heartbeat import has_live_host_trainer

    if await has_live_host_trainer(bus):
        return Route("host", "auto: a host trainer is live")
    return Route("container", "auto: no live host trainer")
