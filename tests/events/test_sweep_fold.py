"""The sweep's state as a pure fold of its events (libs/events/sweep_fold.py), the leaderboard
built from it (libs/events/sweep_service.py `view_of`), and the study rebuilt from a log
(libs/events/sweep_study.py): a restarted coordinator asks what the uninterrupted one would."""

from __future__ import annotations

import statistics
from typing import Any

from libs.events.sweep_fold import (
    SweepMessage,
    SweepState,
    best_trial,
    fold_sweep,
    fold_sweeps,
    ranked,
)
from libs.events.sweep_schema import (
    AnySweepEvent,
    SweepCancelled,
    SweepFinished,
    SweepSpec,
    SweepStarted,
    TrialAsked,
    TrialTold,
)
from libs.events.sweep_service import view_of
from libs.events.sweep_spec import parse_param
from libs.events.sweep_study import SweepStudy

SID = "sw-1"


def spec(**overrides: Any) -> SweepSpec:
    fields: dict[str, Any] = {
        "strategy": "tiny", "strategy_yaml": "name: tiny\n", "symbols": ("EURUSD",),
        "timeframes": ("1h",), "trials": 3, "objective": "test.accuracy",
        "params": (parse_param("training.learning_rate=loguniform(1e-4,1e-1)"),
                   parse_param("model.architecture.hidden_layers=choice([8],[16,8])")),
    }
    fields.update(overrides)
    return SweepSpec(**fields)


def started(**overrides: Any) -> SweepStarted:
    return SweepStarted(sweep_id=SID, time=1.0, spec=spec(**overrides), seed=7)


def asked(n: int, lr: float = 0.01, seeds: int = 1) -> TrialAsked:
    return TrialAsked(sweep_id=SID, time=2.0 + n, n=n,
                      params={"training.learning_rate": lr,
                              "model.architecture.hidden_layers": [8]},
                      job_ids=tuple(f"job-{n}-{k}" for k in range(seeds)),
                      seeds=tuple(range(seeds)))


def told(n: int, value: float | None, state: str = "complete",
         values: tuple[float | None, ...] | None = None) -> TrialTold:
    return TrialTold(sweep_id=SID, time=10.0 + n, n=n, state=state,  # type: ignore[arg-type]
                     value=value, values=values if values is not None else (value,))


def fold_events(*events: AnySweepEvent) -> SweepState:
    state: SweepState | None = None
    for seq, event in enumerate(events, start=1):
        state = fold_sweep(state, SweepMessage(seq=seq, event=event))
    assert state is not None
    return state


def test_a_sweep_is_its_events_folded_in_order() -> None:
    state = fold_events(started(), asked(0, 0.01), asked(1, 0.02), told(1, 0.7), told(0, 0.6),
                        asked(2, 0.03), told(2, None, "pruned"), SweepFinished(
                            sweep_id=SID, time=20.0, best=1))
    assert state.status == "finished" and state.best == 1 and state.finished_at == 20.0
    assert [(t.n, t.status, t.value) for t in state.trials] == [
        (0, "complete", 0.6), (1, "complete", 0.7), (2, "pruned", None)]
    assert (state.trials[1].asked_seq, state.trials[1].told_seq) == (3, 4)
    assert state.told == 3 and state.running == []
    assert [t.n for t in ranked(state)] == [1, 0, 2]  # maximize: best first, pruned last
    assert best_trial(state) is not None and best_trial(state).n == 1  # type: ignore[union-attr]


def test_minimize_ranks_the_smallest_first() -> None:
    state = fold_events(started(direction="minimize"), asked(0), asked(1), told(0, 0.6),
                        told(1, 0.4))
    assert [t.n for t in ranked(state)] == [1, 0]


def test_what_changes_nothing_returns_the_same_state() -> None:
    state = fold_events(started(), asked(0), told(0, 0.5))
    cases: list[tuple[AnySweepEvent, int]] = [
        (asked(0), 10),  # trial 0 asked again
        (asked(5), 11),  # out of order: trial 1 comes next
        (told(0, 0.9), 12),  # told twice
        (told(3, 0.9), 13),  # never asked
        (started(), 14),  # a second start
        (TrialAsked(sweep_id="other", time=1.0, n=1, params={}, job_ids=(), seeds=()), 15),
    ]
    for event, seq in cases:
        assert fold_sweep(state, SweepMessage(seq=seq, event=event)) is state
    # At or below the last sequence: a redelivery.
    assert fold_sweep(state, SweepMessage(seq=3, event=asked(1))) is state
    # Nothing before the start.
    assert fold_sweep(None, SweepMessage(seq=1, event=asked(0))) is None


def test_an_ended_sweep_never_changes() -> None:
    state = fold_events(started(), asked(0),
                        SweepCancelled(sweep_id=SID, time=5.0, reason="enough"))
    assert (state.status, state.cancel_reason) == ("cancelled", "enough")
    assert state.trials[0].status == "running"
    assert fold_sweep(state, SweepMessage(seq=9, event=told(0, 0.9))) is state


def test_fold_sweeps_keeps_sweeps_apart() -> None:
    other = SweepStarted(sweep_id="sw-2", time=1.0, spec=spec(), seed=1)
    states = fold_sweeps([SweepMessage(seq=1, event=started()),
                          SweepMessage(seq=2, event=other),
                          SweepMessage(seq=3, event=asked(0))])
    assert sorted(states) == ["sw-1", "sw-2"]
    assert len(states["sw-1"].trials) == 1 and states["sw-2"].trials == ()


def test_the_leaderboard_ranks_by_the_mean_over_seeds_with_its_std() -> None:
    state = fold_events(started(seeds=2), asked(0, seeds=2), asked(1, seeds=2),
                        told(0, 0.55, values=(0.5, 0.6)), told(1, 0.65, values=(0.6, 0.7)))
    view = view_of(state, {}, {"training.learning_rate": 1.0})
    assert [(r.n, r.rank) for r in view.trials] == [(1, 1), (0, 2)]
    assert view.trials[0].std == statistics.stdev([0.6, 0.7])
    assert view.best_trial == 1 and view.importance == {"training.learning_rate": 1.0}
    assert view.params["model.architecture.hidden_layers"] == "choice([8],[16,8])"
    assert [j.job_id for j in view.trials[0].jobs] == ["job-1-0", "job-1-1"]


def _run(study: SweepStudy, n: int, log: list[AnySweepEvent]) -> None:
    """Trial n asked and told at once, with a made-up objective and pruning reports."""
    params = study.ask(n)
    log.append(TrialAsked(sweep_id=SID, time=0.0, n=n, params=params, job_ids=(f"j{n}",),
                          seeds=(0,)))
    lr = float(params["training.learning_rate"])
    pruned = False
    for step in (1, 2, 3):
        if study.report(n, step, lr * step):
            pruned = True
            break
    status = "pruned" if pruned else "complete"
    value = None if pruned else lr * 10
    log.append(TrialTold(sweep_id=SID, time=0.0, n=n, state=status,  # type: ignore[arg-type]
                         value=value, values=(value,), intermediate=study.reported[n]))
    study.tell(n, status, value)


def test_a_rebuilt_study_asks_what_the_uninterrupted_one_would() -> None:
    sweep = spec(trials=14, sampler="tpe", pruner="median")
    uninterrupted = SweepStudy(sweep, seed=3)
    log: list[AnySweepEvent] = [SweepStarted(sweep_id=SID, time=0.0, spec=sweep, seed=3)]
    for n in range(12):
        _run(uninterrupted, n, log)
    expected = [uninterrupted.ask(12), uninterrupted.ask(13)]

    rebuilt = SweepStudy.rebuild(fold_events(*log))  # TPE past its 10 random startup trials
    assert rebuilt.replaced == {}  # every logged ask was sampled again, the same
    assert [rebuilt.ask(12), rebuilt.ask(13)] == expected
    assert any(isinstance(e, TrialTold) and e.state == "pruned" for e in log)
