"""The pure fold: the state machine by example, then properties over random logs."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.fold import TERMINAL, JobState, fold, fold_all
from libs.events.log import LogMessage, Unreadable
from tests.events.builders import cancel, make_event, malformed, msg, train_command


def run(*bodies: object, job_id: str = "job-a") -> JobState | None:
    state = None
    for seq, body in enumerate(bodies, start=1):
        state = fold(state, msg(seq, body, job_id=job_id))
    return state


# --- the state machine, by example ------------------------------------------------------------


def test_train_command_creates_a_queued_job() -> None:
    state = run(train_command())
    assert state is not None
    assert (state.status, state.command_seq, state.last_seq) == ("queued", 1, 1)
    assert state.strategy == "rsi_mlp" and state.symbols == ("EURUSD",)
    assert state.requested_by == "alice" and state.pool == "any"


def test_a_full_successful_run() -> None:
    state = run(
        train_command(),
        make_event("accepted"),
        make_event("phase", phase="training"),
        make_event("progress", percent=50.0, eta_seconds=3.0),
        make_event("epoch", epoch=1, val_loss=0.9),
        make_event("epoch", epoch=2, val_loss=0.7),
        make_event("epoch", epoch=3, val_loss=0.8),
        make_event("checkpoint", epoch=3),
        make_event("completed", best_epoch=2),
    )
    assert state is not None and state.status == "completed"
    assert state.worker == "w1" and state.device == "cpu" and state.attempt == 1
    assert [m.epoch for m in state.history] == [1, 2, 3]
    assert state.best is not None and state.best.epoch == 2
    assert state.latest is not None and state.latest.epoch == 3
    assert state.model is not None and state.model.version == "v1"
    assert state.percent == 100.0 and state.finished_at is not None
    assert state.phase == "training"


def test_the_state_shows_the_seed_the_worker_resolved() -> None:
    """No seed in the command means the strategy's own; the worker names it when it claims."""
    queued = run(train_command())
    assert queued is not None and queued.seed is None
    claimed = run(train_command(), make_event("accepted", seed=42))
    assert claimed is not None and claimed.seed == 42
    explicit = run(train_command(seed=7), make_event("accepted", seed=7))
    assert explicit is not None and explicit.seed == 7
    older_worker = run(train_command(seed=7), make_event("accepted"))  # an event without seed
    assert older_worker is not None and older_worker.seed == 7


def test_cancel_of_a_queued_job_cancels_it_at_once() -> None:
    state = run(train_command(), cancel("not needed"))
    assert state is not None
    assert (state.status, state.cancel_reason, state.cancel_requested_by) == (
        "cancelled", "not needed", "bob")


def test_cancel_of_a_running_job_waits_for_the_worker() -> None:
    state = run(train_command(), make_event("accepted"), cancel("stop"))
    assert state is not None and state.status == "cancelling"
    state = fold(state, msg(4, make_event("cancelled")))
    assert state is not None and state.status == "cancelled" and state.cancel_reason == "stop"


def test_completion_wins_a_race_with_cancel() -> None:
    state = run(train_command(), make_event("accepted"), cancel(), make_event("completed"))
    assert state is not None and state.status == "completed"


def test_second_start_of_a_known_job_changes_nothing() -> None:
    first = run(train_command())
    again = fold(first, msg(2, train_command(strategy="other")))
    assert again is first


def test_malformed_command_is_projected_as_rejected() -> None:
    state = run(malformed("not valid JSON: bad"))
    assert state is not None and state.status == "rejected"
    assert state.error is not None and state.error.reason == "not valid JSON: bad"


def test_rejected_event_rejects_only_the_command_it_names() -> None:
    queued = run(train_command())
    other = fold(queued, msg(2, make_event("rejected", attempt=0, command_seq=99)))
    assert other is queued
    mine = fold(queued, msg(2, make_event("rejected", attempt=0, command_seq=1)))
    assert mine is not None and mine.status == "rejected"


def test_events_of_a_superseded_attempt_are_ignored() -> None:
    state = run(train_command(), make_event("accepted", attempt=1),
                make_event("accepted", attempt=2))
    assert state is not None and (state.attempt, state.worker) == (2, "w2")
    stale = fold(state, msg(4, make_event("completed", attempt=1)))
    assert stale is state
    stale = fold(state, msg(4, make_event("progress", attempt=1)))
    assert stale is state


def test_events_of_an_attempt_that_never_claimed_are_ignored() -> None:
    state = run(train_command(), make_event("accepted", attempt=1))
    assert fold(state, msg(3, make_event("epoch", attempt=2))) is state


def test_resumed_attempt_rewrites_history_from_the_rerun_epoch() -> None:
    state = run(
        train_command(),
        make_event("accepted", attempt=1),
        make_event("epoch", attempt=1, epoch=1, val_loss=1.0),
        make_event("epoch", attempt=1, epoch=2, val_loss=0.5),
        make_event("accepted", attempt=2),
        make_event("resumed", attempt=2, from_epoch=1),
        make_event("epoch", attempt=2, epoch=2, val_loss=0.6),
    )
    assert state is not None and state.resumed_from_epoch == 1
    assert [(m.epoch, m.val_loss) for m in state.history] == [(1, 1.0), (2, 0.6)]


def test_a_worker_gives_up_on_a_queued_job_only_after_claiming_it() -> None:
    unclaimed = run(train_command(), make_event("failed", attempt=3, category="data"))
    assert unclaimed is not None and unclaimed.status == "queued"
    state = run(train_command(), make_event("accepted", attempt=3),
                make_event("failed", attempt=3, category="data"))
    assert state is not None and state.status == "failed" and state.attempt == 3
    assert state.error is not None and state.error.category == "data"


def test_events_for_unknown_jobs_and_unreadable_messages_do_nothing() -> None:
    assert fold(None, msg(1, make_event("accepted"))) is None
    assert fold(None, msg(1, cancel())) is None
    queued = run(train_command())
    assert fold(queued, msg(2, Unreadable(reason="junk"))) is queued


def test_fold_refuses_a_message_of_another_job() -> None:
    with pytest.raises(ValueError):
        fold(run(train_command()), msg(2, make_event("accepted", job_id="job-b"), job_id="job-b"))


# --- properties over random logs ----------------------------------------------------------------

KINDS = ["accepted", "phase", "progress", "epoch", "checkpoint", "cancelled", "completed",
         "failed", "resumed", "rejected", "released"]


@st.composite
def bodies(draw: st.DrawFn) -> msgspec.Struct:
    choice = draw(st.sampled_from(["train", "malformed", "cancel", "event", "event", "event",
                                   "event", "unreadable"]))
    if choice == "train":
        return train_command(seed=draw(st.integers(0, 3)))
    if choice == "malformed":
        return malformed()
    if choice == "cancel":
        return cancel(draw(st.sampled_from([None, "stop"])))
    if choice == "unreadable":
        return Unreadable(reason="junk")
    kind = draw(st.sampled_from(KINDS))
    attempt = draw(st.integers(0, 3))
    extra: dict[str, Any] = {}  # make_event's **overrides
    if kind in ("epoch", "progress"):
        extra["epoch"] = draw(st.integers(0, 4))
    if kind == "rejected":
        extra["command_seq"] = draw(st.one_of(st.none(), st.integers(1, 3)))
    return make_event(kind, attempt=attempt, **extra)


@st.composite
def logs(draw: st.DrawFn) -> list[LogMessage]:
    """A random log over two jobs: random kinds, attempts and orders (late, stale, duplicate
    and out-of-place messages included), with increasing stream sequences."""
    items = draw(st.lists(st.tuples(st.sampled_from(["job-a", "job-b"]), bodies()),
                          min_size=1, max_size=40))
    out = []
    for seq, (job_id, body) in enumerate(items, start=1):
        if hasattr(body, "job_id") and getattr(body, "job_id", None) != job_id:
            body = type(body)(**{**_fields(body), "job_id": job_id})
        out.append(msg(seq, body, job_id=job_id))
    return out


def _fields(struct: msgspec.Struct) -> dict[str, object]:
    return {f.name: getattr(struct, f.name) for f in msgspec.structs.fields(struct)}


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(logs())
def test_same_log_gives_same_state(log: list[LogMessage]) -> None:
    assert fold_all(log) == fold_all(list(log))


@PROPERTY_SETTINGS
@given(logs(), st.data())
def test_a_message_applied_twice_changes_nothing(
    log: list[LogMessage], data: st.DataObject
) -> None:
    # Duplicates (same sequence) inserted anywhere, as after a consumer reset or a restart.
    with_dups = []
    for message in log:
        with_dups.append(message)
        if data.draw(st.booleans()):
            with_dups.append(message)
    assert fold_all(with_dups) == fold_all(log)
    states: dict[str, JobState | None] = {}
    for message in log:
        once = fold(states.get(message.job_id), message)  # type: ignore[arg-type]
        assert fold(once, message) is once if once is not None else True
        states[message.job_id] = once  # type: ignore[index]


@PROPERTY_SETTINGS
@given(logs())
def test_terminal_jobs_never_change(log: list[LogMessage]) -> None:
    states: dict[str, JobState] = {}
    terminal: dict[str, JobState] = {}
    for message in log:
        assert message.job_id is not None
        new = fold(states.get(message.job_id), message)
        if message.job_id in terminal:
            assert new is terminal[message.job_id]
        if new is not None:
            states[message.job_id] = new
            if new.status in TERMINAL:
                terminal.setdefault(message.job_id, new)


@PROPERTY_SETTINGS
@given(logs())
def test_stale_attempts_never_change_a_state(log: list[LogMessage]) -> None:
    states: dict[str, JobState] = {}
    for message in log:
        assert message.job_id is not None
        before = states.get(message.job_id)
        new = fold(before, message)
        attempt = getattr(message.body, "attempt", None)
        kind = getattr(message.body, "__struct_config__", None)
        if (before is not None and attempt is not None and attempt < before.attempt
                and kind is not None and kind.tag != "rejected"):
            assert new is before
        if new is not None:
            states[message.job_id] = new


@PROPERTY_SETTINGS
@given(logs(), st.data())
def test_restart_from_any_checkpoint_equals_a_clean_replay(
    log: list[LogMessage], data: st.DataObject
) -> None:
    """What the projector does after a crash: states written at some point `k`, checkpoint
    older (`c <= k`), re-fold everything after `c` on top of the written states."""
    k = data.draw(st.integers(0, len(log)))
    c = data.draw(st.integers(0, k))
    states = fold_all(log[:k])
    for message in log[c:]:
        assert message.job_id is not None
        new = fold(states.get(message.job_id), message)
        if new is not None:
            states[message.job_id] = new
    assert states == fold_all(log)
