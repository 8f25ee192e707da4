"""Small builders of commands, events and log messages for tests."""

from __future__ import annotations

from typing import Any

from libs.events.log import LogMessage, MalformedCommand
from libs.events.schema import (
    AcceptedEvent,
    AnnotatedEvent,
    CancelCommand,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    EpochEvent,
    FailedEvent,
    ModelRef,
    OperatorFailedEvent,
    PhaseEvent,
    ProgressEvent,
    RejectedEvent,
    ReleasedEvent,
    ResumedEvent,
    TrainCommand,
)

T0 = 1_700_000_000.0


def train_command(job_id: str | None = "job-a", **overrides: Any) -> TrainCommand:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "strategy": "rsi_mlp",
        "symbols": ("EURUSD",),
        "timeframes": ("1h",),
        "pool": "any",
        "requested_by": "alice",
    }
    fields.update(overrides)
    return TrainCommand(**fields)


def make_event(kind: str, job_id: str = "job-a", attempt: int = 1, **overrides: Any) -> Any:
    common: dict[str, Any] = {
        "job_id": job_id, "attempt": attempt, "worker_id": f"w{attempt}", "time": T0,
    }
    defaults: dict[str, tuple[type, dict[str, Any]]] = {
        "accepted": (AcceptedEvent, {"worker_kind": "host", "host": "box", "device": "cpu"}),
        "rejected": (RejectedEvent, {"reason": "unknown strategy", "category":
                                     "unknown_strategy"}),
        "phase": (PhaseEvent, {"phase": "training"}),
        "progress": (ProgressEvent, {"epoch": 1, "total_epochs": 3, "percent": 10.0}),
        "epoch": (EpochEvent, {"epoch": 1, "total_epochs": 3, "train_loss": 1.0,
                               "val_loss": 1.1}),
        "checkpoint": (CheckpointEvent, {"epoch": 1, "object_name": "ckpt/job-a/1"}),
        "cancelled": (CancelledEvent, {"reason": "asked"}),
        "completed": (CompletedEvent, {"model": ModelRef(strategy="rsi_mlp", version="v1"),
                                       "test_metrics": {"accuracy": 0.6}, "best_epoch": 1}),
        "failed": (FailedEvent, {"reason": "boom", "category": "code"}),
        "resumed": (ResumedEvent, {"from_epoch": 1, "checkpoint": "ckpt/job-a/1"}),
        "operator_failed": (OperatorFailedEvent, {"worker_id": "operator", "reason": "stuck"}),
        "released": (ReleasedEvent, {"reason": "drain", "checkpoint": "ckpt/job-a/1"}),
        "annotated": (AnnotatedEvent, {"worker_id": "", "attempt": 0, "tags": {"lr": "low"},
                                       "note": "baseline", "by": "alice"}),
    }
    cls, fields = defaults[kind]
    return cls(**{**common, **fields, **overrides})


def msg(seq: int, body: Any, job_id: str | None = "job-a", subject: str = "") -> LogMessage:
    return LogMessage(seq=seq, subject=subject or f"test.{seq}", time=T0 + seq, job_id=job_id,
                      body=body)


def cancel(reason: str | None = None) -> CancelCommand:
    return CancelCommand(reason=reason, requested_by="bob")


def malformed(reason: str = "not valid JSON") -> MalformedCommand:
    return MalformedCommand(reason=reason, category="malformed")


KINDS_ALL = ["accepted", "rejected", "phase", "progress", "epoch", "checkpoint", "cancelled",
             "completed", "failed", "resumed", "operator_failed", "released", "annotated"]


def scenario(names: Any, n_jobs: int, *, seed: int = 7) -> list[tuple[str, bytes, str]]:
    """A realistic interleaved log: (subject, payload, msg id) for `n_jobs` jobs, each asked,
    claimed, trained a few epochs and then completed, failed, cancelled or redelivered."""
    import random

    rng = random.Random(seed)
    per_job = [_job_story(names, f"job{j:04d}", rng) for j in range(n_jobs)]
    # Interleave jobs, keeping each job's own order.
    out: list[tuple[str, bytes, str]] = []
    cursors = [0] * n_jobs
    live = list(range(n_jobs))
    while live:
        j = rng.choice(live)
        out.append(per_job[j][cursors[j]])
        cursors[j] += 1
        if cursors[j] == len(per_job[j]):
            live.remove(j)
    return out


def _job_story(names: Any, job: str, rng: Any) -> list[tuple[str, bytes, str]]:
    from libs.events.schema import encode

    steps: list[tuple[str, bytes, str]] = [(
        names.train_subject(rng.choice(["any", "container", "host"])),
        encode(train_command(job, pool=None)), f"train:{job}",
    )]
    counter = iter(range(1, 10_000))

    def ev(kind: str, attempt: int, **kw: Any) -> tuple[str, bytes, str]:
        event = make_event(kind, job, attempt=attempt, **kw)
        return (names.event_subject(job, kind), encode(event),
                f"evt:{job}:{attempt}:{next(counter)}")

    attempts = rng.choice([1, 1, 1, 2])
    for attempt in range(1, attempts + 1):
        steps.append(ev("accepted", attempt))
        if attempt > 1:
            steps.append(ev("resumed", attempt, from_epoch=1))
        steps.append(ev("phase", attempt, phase="training"))
        for epoch in range(1, rng.randint(2, 4)):
            for batch in range(3):
                steps.append(ev("progress", attempt, epoch=epoch, batch=batch,
                                percent=min(100.0, epoch * 20.0 + batch)))
            steps.append(ev("epoch", attempt, epoch=epoch, val_loss=rng.random()))
    ending = rng.choice(["completed", "completed", "failed", "cancel"])
    if ending == "cancel":
        steps.append((names.cancel_subject(job), b'{"reason":"enough"}', f"cancel:{job}"))
        steps.append(ev("cancelled", attempts))
    else:
        steps.append(ev(ending, attempts))
    return steps


async def publish_all(js: Any, messages: list[tuple[str, bytes, str]]) -> int:
    """Publish with publish_async (pipelined); returns the last stream sequence."""
    import asyncio

    futures = [await js.publish_async(subject, payload, headers={"Nats-Msg-Id": msg_id})
               for subject, payload, msg_id in messages]
    acks = await asyncio.gather(*futures)
    return max(ack.seq for ack in acks)
