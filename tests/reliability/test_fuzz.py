"""Property-based fuzzing (hypothesis) of everything that decodes outside input: train and
cancel command bodies, stored log messages, strategy YAML, and the HTTP bodies. The property is
the same everywhere: a result or the module's own validation error (CommandRejected,
StrategyError, a 4xx problem detail), never another exception, never a 500.

Examples are derandomized (the same inputs on every run, so CI is reproducible); raise
TRAINBUS_FUZZ_EXAMPLES for a longer hunt.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.commands import read_cancel_command, validate_train_command
from libs.events.config import BusConfig
from libs.events.errors import CommandRejected
from libs.events.log import to_log_message
from libs.events.schema import TrainCommand
from libs.events.subjects import DEFAULT_NAMES
from libs.pipeline.strategy import StrategyConfig, StrategyError, parse_strategy
from services.backend.security import ApiSecurity
from tests.harness.api import api_stack
from tests.harness.strategies import strategy_yaml
from tests.harness.workspace import Workspace, api_workspace

EXAMPLES = int(os.environ.get("TRAINBUS_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- value generators ------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=40) | st.sampled_from(["", "1h", "EURUSD", "../../etc/passwd",
                                                      "a.b.>", "*", "job-1", "\x00", "NaN"]))
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=5)
                    | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=25)

GOOD_COMMAND: dict[str, Any] = {"job_id": "fuzz-1", "strategy": "tiny", "symbols": ["EURUSD"],
                                "timeframes": ["1h"], "seed": 1}
COMMAND_FIELDS = [*GOOD_COMMAND, "strategy_yaml", "start", "end", "requested_by", "pool",
                  "idempotency_key", "v", "type", "extra"]


@st.composite
def near_commands(draw: st.DrawFn) -> dict[str, Any]:
    """A valid command with a few fields replaced, removed or added: deep in the decoder."""
    body = dict(GOOD_COMMAND)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(COMMAND_FIELDS))
        if draw(st.booleans()) and name in body:
            del body[name]
        else:
            body[name] = draw(JSON)
    return body


SUBJECTS = st.sampled_from([
    "trainbus.cmd.train.any", "trainbus.cmd.train.host", "trainbus.cmd.train.gpu",
    "trainbus.cmd.cancel.x", "trainbus.evt.x.completed", "other", "",
]) | st.text(max_size=40)


# --- commands --------------------------------------------------------------------------------


def _decode_command(raw: bytes, subject: str) -> None:
    try:
        command = validate_train_command(raw, subject)
    except CommandRejected as rejected:
        assert rejected.reason and len(rejected.reason) <= 4000
        assert rejected.field is None or isinstance(rejected.field, str)
        return
    assert isinstance(command, TrainCommand)
    assert command.pool == subject.rsplit(".", 1)[-1]


@FUZZ
@given(raw=st.binary(max_size=2048), subject=SUBJECTS)
def test_random_bytes_never_break_command_decoding(raw: bytes, subject: str) -> None:
    _decode_command(raw, subject)
    assert read_cancel_command(raw).reason is None or isinstance(read_cancel_command(raw).reason,
                                                                 str)


@FUZZ
@given(body=JSON | near_commands(), subject=SUBJECTS)
def test_random_json_never_breaks_command_decoding(body: Any, subject: str) -> None:
    raw = msgspec.json.encode(body)
    _decode_command(raw, subject)
    read_cancel_command(raw)


@FUZZ
@given(subject=SUBJECTS, data=st.binary(max_size=512) | JSON.map(msgspec.json.encode),
       headers=st.none() | st.dictionaries(st.sampled_from(["Nats-Msg-Id", "X"]),
                                           st.text(max_size=30), max_size=2),
       seq=st.integers(1, 2**40))
def test_any_stored_message_becomes_a_log_message(subject: str, data: bytes,
                                                  headers: dict[str, str] | None,
                                                  seq: int) -> None:
    """The fold's input is total: whatever is in the stream, the projector and the audit get a
    LogMessage (a bad one is Unreadable/MalformedCommand), never an exception."""
    message = to_log_message(DEFAULT_NAMES, seq, subject, data, headers, 0.0)
    assert message.seq == seq


# --- strategies ------------------------------------------------------------------------------

TINY = yaml.safe_load(strategy_yaml("tiny", epochs=2))


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.extend(_paths(value, (*prefix, i)))
    return out


PATHS = [p for p in _paths(TINY) if p]
YAML_SCALARS = SCALARS | st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -1, 0,
                                          "lstm", "sma", [0, 0, 0], {"type": "x"}])


@st.composite
def mutated_strategies(draw: st.DrawFn) -> str:
    tree = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = tree
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(YAML_SCALARS | JSON)
        except (KeyError, IndexError, TypeError):
            continue
    return yaml.safe_dump(tree, allow_unicode=True)


YAML_TEXT = st.sampled_from([
    "a: &x [1]\nb: *x\n", "*missing", "!!python/object/apply:os.system ['echo pwned']",
    "a: !!binary aGVsbG8=", "{", "- - - -", "a: b: c", "\t", "? [a]\n: b", "a: 1\na: 2",
    "x: &a [*a]", "indicators: !!set {a, b}", "%YAML 1.1\n---\na: 1",
    # numbers past what int()/float() take: PyYAML's constructors raise plain ValueError
    "seed: " + "9" * 5000, "a: 1e99999", "a: !!int 0x" + "f" * 4000,
    strategy_yaml("tiny", epochs=2).replace("period: 14", "period: " + "7" * 500),
]) | st.text(max_size=300)


def _parse(text: str) -> None:
    try:
        config = parse_strategy(text, source="fuzz")
    except StrategyError as exc:
        assert str(exc).startswith("fuzz")
        return
    assert isinstance(config, StrategyConfig)


@FUZZ
@given(text=YAML_TEXT)
def test_random_text_never_breaks_strategy_loading(text: str) -> None:
    _parse(text)


@FUZZ
@given(text=mutated_strategies())
def test_mutated_strategies_load_or_fail_with_a_strategy_error(text: str) -> None:
    _parse(text)


@FUZZ
@given(tree=JSON)
def test_random_yaml_documents_never_break_strategy_loading(tree: Any) -> None:
    _parse(yaml.safe_dump(tree))


# --- the HTTP body -------------------------------------------------------------------------------

REQUEST_FIELDS = ["strategy", "strategy_yaml", "symbols", "timeframes", "start", "end", "seed",
                  "pool", "idempotency_key", "requested_by", "extra"]


@st.composite
def near_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"strategy": "tiny", "symbols": ["EURUSD"], "timeframes": ["1h"]}
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(REQUEST_FIELDS))
        if draw(st.booleans()) and name in body:
            del body[name]
        elif name == "strategy_yaml" and draw(st.booleans()):
            body[name] = draw(mutated_strategies())
        else:
            body[name] = draw(JSON)
    return body


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return api_workspace(tmp_path_factory.mktemp("fuzz-ws"))


@pytest.mark.anyio
async def test_random_http_bodies_get_202_or_a_4xx_problem_never_a_500(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    async with api_stack(config, workspace, tmp_path / "models", trainer=False,
                         security=ApiSecurity.disabled(), projection_wait=0.0) as stack:
        seen: dict[int, int] = {}

        @FUZZ
        @given(body=JSON | near_requests(), raw=st.none() | st.binary(max_size=300))
        def post(body: Any, raw: bytes | None) -> None:
            with httpx.Client(base_url=stack.url, timeout=30) as http:
                if raw is not None:
                    response = http.post("/api/v1/trainings", content=raw,
                                         headers={"content-type": "application/json"})
                else:
                    response = http.post("/api/v1/trainings", json=body)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code in (202, 400, 413, 422), response.text
            if response.status_code != 202:
                assert response.headers["content-type"].startswith("application/problem+json")
                problem = response.json()
                assert problem["status"] == response.status_code and problem["detail"]
                assert "Traceback" not in response.text

        await asyncio.to_thread(post)
    # Check the fuzzing reached both sides of the validation.
    assert seen.get(202, 0) > 0 and seen.get(422, 0) > 0, seen
