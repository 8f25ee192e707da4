"""Pure parts of the research loop (issue 20): how the fold applies annotations, copies a
command's experiment, tags, note and `derived_from`, keeps a failure's traceback; what a
traceback keeps and masks; which jobs a listing filter selects; how a rerun changes a
strategy; and the ids of an idempotency key's retries."""

from __future__ import annotations

from typing import Any

import pytest

from libs.events.errors import InvalidRequest
from libs.events.fold import JobState, fold, fold_all, is_foreign
from libs.events.job_query import JobQuery, headline_metric, parse_moment
from libs.events.jobs import idempotent_job_id
from libs.events.log import LogMessage
from libs.events.rerun import changed_strategy
from libs.events.roles import may_publish, roles
from libs.events.worker.failure_detail import MAX_FRAMES, redact, traceback_lines
from tests.events.builders import make_event, msg, train_command
from tests.harness.strategies import strategy_yaml


def annotated(**fields: Any) -> Any:
    values: dict[str, Any] = {"tags": {}, "note": None, **fields}
    return make_event("annotated", **values)


def completed_job() -> JobState:
    states = fold_all([
        msg(1, train_command(experiment="lr-sweep", tags={"arch": "mlp"}, note="first",
                             derived_from="run-old")),
        msg(2, make_event("accepted")),
        msg(3, make_event("completed")),
    ])
    return states["job-a"]


def test_the_command_s_experiment_tags_note_and_origin_are_in_the_state() -> None:
    state = completed_job()
    assert state.status == "completed"
    assert (state.experiment, state.tags, state.note, state.derived_from) == (
        "lr-sweep", {"arch": "mlp"}, "first", "run-old")


def test_an_annotation_changes_a_finished_job_s_tags_note_and_experiment_only() -> None:
    state = completed_job()
    event = annotated(tags={"lr": "low", "arch": "lstm"}, untag=["arch", "gone"],
                      note="baseline", experiment="lr-sweep-2")
    after = fold(state, msg(4, event))
    assert after is not None and after is not state
    # `tags` win over `untag` for the same key; untagging an absent key is no error.
    assert after.tags == {"lr": "low", "arch": "lstm"}
    assert (after.note, after.experiment, after.last_seq) == ("baseline", "lr-sweep-2", 4)
    # The outcome is untouched.
    assert (after.status, after.model, after.finished_at) == (
        state.status, state.model, state.finished_at)
    assert not is_foreign(state, msg(4, event))


def test_empty_note_and_experiment_clear_them_and_none_leaves_them() -> None:
    state = completed_job()
    kept = fold(state, msg(4, annotated(untag=["arch"])))
    assert kept is not None and (kept.note, kept.experiment, kept.tags) == ("first", "lr-sweep",
                                                                            {})
    cleared = fold(kept, msg(5, annotated(note="", experiment="")))
    assert cleared is not None and (cleared.note, cleared.experiment) == (None, None)


def test_an_annotation_is_idempotent_by_sequence_and_needs_a_known_job() -> None:
    state = completed_job()
    once = fold(state, msg(4, annotated(tags={"a": "1"})))
    assert once is not None
    assert fold(once, msg(4, annotated(tags={"b": "2"}))) is once  # replayed: nothing
    assert fold(None, msg(1, annotated(tags={"a": "1"}))) is None


def test_an_annotation_counts_on_a_signed_claim_from_any_signer() -> None:
    # A signed claim takes the attempt's events only from its key; a person's annotation is
    # nobody's attempt and carries no trainer signature.
    claim = LogMessage(seq=2, subject="s", time=2.0, job_id="job-a",
                       body=make_event("accepted"), signer="UTRAINER")
    state = fold_all([msg(1, train_command()), claim])["job-a"]
    assert state.signer == "UTRAINER"
    after = fold(state, msg(3, annotated(tags={"who": "me"})))
    assert after is not None and after.tags == {"who": "me"} and after.status == "running"
    forged = fold(after, msg(4, make_event("completed")))  # unsigned: still foreign
    assert forged is after


def test_a_failed_event_s_traceback_is_in_the_job_error() -> None:
    lines = ["libs/x.py:3 run", "ValueError: bad"]
    state = fold_all([msg(1, train_command()), msg(2, make_event("accepted")),
                      msg(3, make_event("failed", traceback=lines))])["job-a"]
    assert state.error is not None and state.error.traceback == tuple(lines)


# --- failure detail ------------------------------------------------------------------------


def _raise(depth: int, message: str) -> None:
    if depth == 0:
        raise ValueError(message)
    _raise(depth - 1, message)


def _caught(depth: int, message: str) -> BaseException:
    try:
        _raise(depth, message)
    except ValueError as exc:
        return exc
    raise AssertionError("did not raise")


def test_a_traceback_is_frames_and_the_exception_without_source_lines() -> None:
    lines = traceback_lines(_caught(1, "shape mismatch"))
    assert lines[-1] == "ValueError: shape mismatch"
    assert lines[-2] == f"tests/events/test_annotations.py:{_raise.__code__.co_firstlineno + 2}" \
                        " _raise"
    assert all(" " in line and ":" in line for line in lines)
    assert not any("raise ValueError" in line for line in lines)  # no source text


def test_a_deep_traceback_is_trimmed_to_its_outer_and_inner_frames() -> None:
    lines = traceback_lines(_caught(100, "deep"))
    assert len(lines) == MAX_FRAMES + 1
    assert any(line.startswith("... ") and line.endswith(" frames ...") for line in lines)
    assert lines[-2].endswith(" _raise") and lines[0].endswith(" _caught")


def test_a_chained_cause_follows_its_own_frames() -> None:
    try:
        try:
            _raise(0, "inner")
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        lines = traceback_lines(exc)
    assert "RuntimeError: outer" in lines and lines[-1] == "ValueError: inner"
    assert lines[lines.index("RuntimeError: outer") + 1] == "caused by:"


@pytest.mark.parametrize(("text", "secret"), [
    ("login failed: password=hunter2 for x", "hunter2"),
    ("token: abc.def.ghi", "abc.def.ghi"),
    ("nats://alice:s3cret@host:4222 refused", "s3cret"),
    ("seed SUAEL6GG2L2HIF7DUGZJGMRUFKXELGGYFMHF76UO2AYBG3K4YLWR3FKC2Q here",
     "SUAEL6GG2L2HIF7DUGZJGMRUFKXELGGYFMHF76UO2AYBG3K4YLWR3FKC2Q"),
    ("Authorization: Bearer xyz123", "xyz123"),
    ("NATS_PASSWORD=pXq12 DB_PASSWORD=zz9", "pXq12"),
    ("NATS_PASSWORD=pXq12 DB_PASSWORD=zz9", "zz9"),
    ("AWS_SECRET_ACCESS_KEY=AKIAxyz123", "AKIAxyz123"),
    ("refused: access_token=tok987 client_secret=cs654", "tok987"),
    ("refused: access_token=tok987 client_secret=cs654", "cs654"),
    ("bad config {'password': 'hunter2', 'user': 'bob'}", "hunter2"),
    ('bad config {"token": "abc123", "n": 1}', "abc123"),
    ("header was Bearer qwe456", "qwe456"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl rejected",
     "eyJzdWIiOiIxIn0"),
])
def test_credentials_in_a_message_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked and "***" in masked
    assert secret not in traceback_lines(_caught(0, text))[-1]


# --- listing filters -------------------------------------------------------------------------


def _job(**fields: object) -> JobState:
    base: dict[str, object] = {"job_id": "j", "status": "completed", "command_seq": 1,
                               "last_seq": 1, "symbols": ("EURUSD", "GBPUSD"),
                               "timeframes": ("1h",), "created_at": 1000.0}
    return JobState(**{**base, **fields})  # type: ignore[arg-type]


def test_a_query_needs_every_criterion() -> None:
    job = _job(experiment="e1", tags={"lr": "low", "arch": "mlp"}, pool="host", worker="w1")
    assert JobQuery().matches(job)
    assert JobQuery(experiment="e1", tags=("lr=low", "arch"), symbol="GBPUSD",
                    timeframe="1h", pool="host", worker="w1", since=1000.0,
                    until=1000.5).matches(job)
    for miss in (JobQuery(experiment="e2"), JobQuery(tags=("lr=high",)),
                 JobQuery(tags=("seed",)), JobQuery(symbol="USDJPY"),
                 JobQuery(timeframe="4h"), JobQuery(worker="w2"), JobQuery(since=1000.5),
                 JobQuery(until=1000.0), JobQuery(status="failed")):
        assert not miss.matches(job), miss


def test_bad_filter_values_name_the_option() -> None:
    with pytest.raises(InvalidRequest) as bad_tag:
        JobQuery(tags=("=x",))
    assert bad_tag.value.field == "tag"
    with pytest.raises(InvalidRequest) as bad_date:
        parse_moment("yesterday", field="since")
    assert bad_date.value.field == "since"
    assert parse_moment("1970-01-02", field="since") == 86400.0
    assert parse_moment("86400", field="since") == 86400.0
    assert parse_moment(None, field="since") is None


def test_the_headline_metric_is_the_model_s_own_score() -> None:
    assert headline_metric({"samples": 10.0, "accuracy": 0.6, "macro_f1": 0.5}) == (
        "macro_f1", 0.5)
    assert headline_metric({"rmse": 0.2}) == ("rmse", 0.2)
    assert headline_metric({"macro_f1": None, "samples": 3.0}) is None


# --- rerun: a changed strategy ---------------------------------------------------------------


def test_a_changed_file_strategy_is_checked_and_gets_its_own_name() -> None:
    text = changed_strategy(strategy_yaml("tiny", epochs=2),
                            {"training.learning_rate": 0.01, "model.architecture.dropout": 0.1},
                            rename="tiny")
    assert "learning_rate: 0.01" in text and "dropout: 0.1" in text
    name = next(line for line in text.splitlines() if line.startswith("name: "))
    assert name.startswith("name: tiny-") and len(name) == len("name: tiny-") + 8
    named = changed_strategy(strategy_yaml("tiny", epochs=2), {"name": "tiny_fast"},
                             rename="tiny")
    assert "name: tiny_fast" in named
    # An inline source (no file name to keep apart from) gets its own name as well: other
    # content never shares a lineage.
    inline = changed_strategy(strategy_yaml("tiny", epochs=2), {"training.epochs": 3})
    assert next(line for line in inline.splitlines()
                if line.startswith("name: ")).startswith("name: tiny-")


@pytest.mark.parametrize(("changes", "key"), [
    ({"training.learning_rate": "fast"}, "training.learning_rate"),
    ({"training.epochs": 0}, "training.epochs"),
    ({"training.nope.deeper": 1}, "training.nope.deeper"),
    ({"nn_inputs.9.fuzzy_set": "x"}, "nn_inputs.9.fuzzy_set"),
    ({"training.bogus": 1}, "training.bogus"),
])
def test_a_change_the_strategy_refuses_names_the_key(changes: dict[str, object],
                                                      key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        changed_strategy(strategy_yaml("tiny", epochs=2), changes, rename="tiny")
    assert refused.value.field == f"set.{key}" and key in refused.value.detail


def test_each_retry_of_a_key_is_a_new_job_id() -> None:
    ids = {idempotent_job_id("nightly", n) for n in range(5)}
    assert len(ids) == 5 and idempotent_job_id("nightly") == idempotent_job_id("nightly", 0)


# --- who may annotate and publish log lines (the permissions as data; the shipped file is
# their rendering: tests/events/test_roles_render.py) -------------------------------------------


def test_the_client_annotates_but_forges_nothing_and_the_trainer_logs_but_annotates_not() -> None:
    role = {r.name: r for r in roles()}
    annotate, completed, line = ("trainbus.evt.j1.annotated", "trainbus.evt.j1.completed",
                                 "trainbus.log.j1")
    assert may_publish(role["client"], annotate) and may_publish(role["backend"], annotate)
    assert not may_publish(role["trainer"], annotate)
    assert not may_publish(role["client"], completed) and may_publish(role["trainer"], completed)
    assert may_publish(role["trainer"], line)
    assert not any(may_publish(role[r], line) for r in ("client", "backend", "auditor"))
    # Everyone reads the logs stream.
    assert all(may_publish(r, "$JS.API.CONSUMER.CREATE.TRAINBUS_LOGS") for r in roles())
