"""A sweep's persisted contract: its spec, its events on `<prefix>.sweep.<sweep_id>.<kind>`.

A sweep is a search over strategy keys (issue 18): each trial is one configuration, trained as
one ordinary job per seed. The coordinator (`trainbus sweep`, libs/events/sweep_coordinator.py)
is the only writer of a sweep's events; the sweep's state is their pure fold
(libs/events/sweep_fold.py). Same rules as libs/events/schema.py: tags and field names are
stored for ever, new fields get defaults, decoding is lenient (unknown fields skipped).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from libs.events.schema import (
    MAX_EVENT_DEPTH,
    MAX_MESSAGE_BYTES,
    JobId,
    Name,
    PoolName,
    Text,
    decode_untrusted,
)
from libs.pipeline.types import Seed, StrategyName

SweepId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$(?!\n)",
                              description="1-64 of [A-Za-z0-9_-]")]
Direction = Literal["maximize", "minimize"]
SamplerName = Literal["tpe", "random", "grid"]
PrunerName = Literal["median", "none"]
TrialStatus = Literal["running", "complete", "pruned", "failed"]
# A strategy key: dotted path of mapping keys (`training.learning_rate`).
StrategyKey = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                                  max_length=256)]
MAX_SWEEP_TRIALS: Final = 10_000
MAX_SWEEP_SEEDS: Final = 100


# --- distributions --------------------------------------------------------------------------


class Distribution(Struct, frozen=True, kw_only=True, tag_field="dist"):
    """Base of a parameter's distribution (the tag `dist` is stored)."""


class LogUniform(Distribution, tag="loguniform", frozen=True, kw_only=True):
    low: float
    high: float


class Uniform(Distribution, tag="uniform", frozen=True, kw_only=True):
    low: float
    high: float


class IntRange(Distribution, tag="int", frozen=True, kw_only=True):
    """An integer from `low` to `high`, both included."""

    low: int
    high: int


class Choice(Distribution, tag="choice", frozen=True, kw_only=True):
    """One of `options` (any JSON value: a number, a string, a list such as `[64, 32]`)."""

    options: tuple[Any, ...]


AnyDistribution = LogUniform | Uniform | IntRange | Choice


class Param(Struct, frozen=True, kw_only=True):
    """One strategy key searched and its distribution."""

    key: StrategyKey
    dist: AnyDistribution


class SweepSpec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to search: the base strategy (inline, so a resumed sweep never depends on a file
    that changed), the parameters, the budget and the objective. `objective` is
    `test.<metric>` (a key of the job's test metrics, libs/pipeline/headline.py) or
    `walkforward.<metric>` (the mean over the walk-forward folds, from the model's
    metrics.json). Trials are pruned on `prune_on` of the epoch events (`val_accuracy` or
    `val_loss`), in the objective's direction."""

    strategy: StrategyName  # the base strategy's name (trials train `<strategy>-<sweep id>`)
    strategy_yaml: Annotated[str, Meta(min_length=1, max_length=200 * 1024)]
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    params: Annotated[tuple[Param, ...], Meta(min_length=1, max_length=64)]
    trials: Annotated[int, Meta(ge=1, le=MAX_SWEEP_TRIALS)]
    parallel: Annotated[int, Meta(ge=1, le=256)] = 1
    objective: Annotated[str, Meta(min_length=1, max_length=128)]
    direction: Direction = "maximize"
    seeds: Annotated[int, Meta(ge=1, le=MAX_SWEEP_SEEDS)] = 1
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "median"
    prune_on: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    pool: PoolName | Literal["auto"] = "auto"
    epochs: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    start: str | None = None
    end: str | None = None


# --- events ---------------------------------------------------------------------------------


class SweepEvent(Struct, frozen=True, kw_only=True, tag_field="kind", gc=False):
    """Base of what happened to a sweep. `time` is Unix epoch seconds."""

    sweep_id: SweepId
    time: float
    by: Name = "anonymous"
    v: int = 1


class SweepStarted(SweepEvent, tag="started", frozen=True, kw_only=True):
    """The sweep exists: its spec and the seed of its sampler and of its trials' seeds."""

    spec: SweepSpec
    seed: Seed


class TrialAsked(SweepEvent, tag="asked", frozen=True, kw_only=True):
    """Trial `n` (0-based, in ask order) was sampled: its parameter values, and the job of each
    seed (`job_ids[k]` trains with `seeds[k]`)."""

    n: Annotated[int, Meta(ge=0)]
    params: dict[str, Any]
    job_ids: tuple[JobId, ...]
    seeds: tuple[int, ...]


class TrialTold(SweepEvent, tag="told", frozen=True, kw_only=True):
    """Trial `n` ended: `value` is the mean objective over its seeds (`values`, None where a
    seed reported none), `state` what Optuna was told; `intermediate` the pruning reports
    (step -> value) given before, so a rebuilt study is told the very same."""

    n: Annotated[int, Meta(ge=0)]
    state: Literal["complete", "pruned", "failed"]
    value: float | None = None
    values: tuple[float | None, ...] = ()
    intermediate: dict[int, float] = {}
    reason: Text | None = None


class SweepCancelled(SweepEvent, tag="cancelled", frozen=True, kw_only=True):
    reason: Text | None = None


class SweepFinished(SweepEvent, tag="finished", frozen=True, kw_only=True):
    """Every trial was told. `best` is the best trial's `n` (None: no trial completed)."""

    best: int | None = None


AnySweepEvent = SweepStarted | TrialAsked | TrialTold | SweepCancelled | SweepFinished
SWEEP_EVENT_TYPES: Final = (SweepStarted, TrialAsked, TrialTold, SweepCancelled, SweepFinished)
_decoder: Final = msgspec.json.Decoder(AnySweepEvent)


def sweep_kind(cls: type[SweepEvent]) -> str:
    return str(cls.__struct_config__.tag)


def decode_sweep_event(raw: bytes) -> AnySweepEvent:
    """Decode a stored sweep event. Raises msgspec.DecodeError / ValidationError."""
    return decode_untrusted(_decoder, raw, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_EVENT_DEPTH)
