"""Which jobs a listing shows (`trainbus jobs`, GET /api/v1/jobs, the dashboard): one filter for
every edge, pure, over projected states; and a job's headline test metric.

Every criterion given must hold (AND). `tags` entries are `key=value` (that value) or `key`
(the tag is set, any value). `since`/`until` bound the creation time (epoch seconds, until
exclusive). Symbols and timeframes match when the job trains on that one (among others).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from libs.events.errors import InvalidRequest
from libs.events.fold import JobState

# The model's own score first, in the order `libs/pipeline/evaluate.py` ranks them.
HEADLINE_METRICS: Final = ("macro_f1", "accuracy", "rmse", "direction_accuracy", "mae")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    status: str | None = None
    strategy: str | None = None
    pool: str | None = None
    experiment: str | None = None
    tags: tuple[str, ...] = ()
    symbol: str | None = None
    timeframe: str | None = None
    worker: str | None = None
    since: float | None = None
    until: float | None = None
    _tag_pairs: tuple[tuple[str, str | None], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        pairs = []
        for text in self.tags:
            key, sep, value = text.partition("=")
            if not key:
                raise InvalidRequest(f"tag filter {text!r}: use key=value or key", field="tag")
            pairs.append((key, value if sep else None))
        object.__setattr__(self, "_tag_pairs", tuple(pairs))

    def matches(self, state: JobState) -> bool:
        return (
            (self.status is None or state.status == self.status)
            and (self.strategy is None or state.strategy == self.strategy)
            and (self.pool is None or state.pool == self.pool)
            and (self.experiment is None or state.experiment == self.experiment)
            and (self.symbol is None or self.symbol in state.symbols)
            and (self.timeframe is None or self.timeframe in state.timeframes)
            and (self.worker is None or state.worker == self.worker)
            and (self.since is None or state.created_at >= self.since)
            and (self.until is None or state.created_at < self.until)
            and all(_has_tag(state.tags, key, value) for key, value in self._tag_pairs)
        )


def _has_tag(tags: Mapping[str, str], key: str, value: str | None) -> bool:
    return key in tags and (value is None or tags[key] == value)


def parse_moment(text: str | None, *, field: str) -> float | None:
    """An ISO date or date-time (naive: UTC), or epoch seconds, as epoch seconds."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"{text!r} is not an ISO date (2024-06-30, "
                             "2024-06-30T12:00:00Z) or epoch seconds", field=field) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def headline_metric(metrics: Mapping[str, float | None]) -> tuple[str, float] | None:
    """(name, value) of the first headline metric a completed job has (None: none)."""
    for name in HEADLINE_METRICS:
        value = metrics.get(name)
        if value is not None:
            return name, value
    return None
