"""Schemas, subjects and command validation: pure, no server."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from libs.events.commands import read_cancel_command, validate_train_command
from libs.events.errors import CommandRejected, InvalidJobId
from libs.events.jsonschema import encode_schema, json_schemas
from libs.events.log import MalformedCommand, Unreadable, to_log_message
from libs.events.schema import (
    EVENT_TYPES,
    MAX_COMMAND_BYTES,
    CancelCommand,
    EpochEvent,
    ProgressEvent,
    TrainCommand,
    decode_event,
    encode,
)
from libs.events.subjects import (
    CANCEL,
    EVENT,
    TRAIN,
    UNKNOWN,
    Names,
    derive_job_id,
    validate_job_id,
)
from tests.events.builders import KINDS_ALL, make_event

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "trainbus.cmd.train.any"
GOOD = b'{"job_id":"demo-1","strategy":"rsi_mlp","symbols":["EURUSD"],"timeframes":["1h"]}'


# --- subjects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["demo-1", "a", "A_b-9", "x" * 128])
def test_valid_job_ids(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id",
    ["", "a.b", "a*", "a>", "a b", " a", "-a", "_a", "x" * 129, "a\n", "ü", "job-12", "a:b"],
)
def test_hostile_or_reserved_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(InvalidJobId):
        validate_job_id(job_id)


def test_names_derive_from_the_prefix() -> None:
    names = Names("trainbus")
    assert names.stream == "TRAINBUS"
    assert names.jobs_bucket == "trainbus_jobs" and names.models_bucket == "trainbus_models"
    assert names.stream_subjects == [
        "trainbus.cmd.train.any", "trainbus.cmd.train.container", "trainbus.cmd.train.host",
        "trainbus.cmd.cancel.*", "trainbus.evt.*.*", "trainbus.alias.*.*", "trainbus.sweep.*.*",
    ]
    assert names.aliases_bucket == "trainbus_aliases"
    assert names.alias_subject("rsi_macd_zigzag", "champion") == (
        "trainbus.alias.rsi_macd_zigzag.champion")
    assert names.job_events("j1") == "trainbus.evt.j1.>"
    assert Names("t-2").stream == "T_2"
    with pytest.raises(ValueError):
        Names("Bad.Prefix")
    with pytest.raises(InvalidJobId):
        names.cancel_subject("a.>")


def test_parse_classifies_subjects() -> None:
    names = Names()
    assert names.parse("trainbus.cmd.train.host").kind == TRAIN
    assert names.parse("trainbus.cmd.train.gpu").pool is None
    assert names.parse("trainbus.cmd.cancel.j1").job_id == "j1"
    assert names.parse("trainbus.evt.j1.epoch").event_kind == "epoch"
    assert names.parse("trainbus.cmd.cancel.a:b").kind == CANCEL
    assert names.parse("trainbus.cmd.cancel.a:b").job_id is None
    assert names.parse("other.evt.j1.epoch").kind == UNKNOWN
    assert names.parse("trainbus.evt.j1.epoch.extra").kind == UNKNOWN
    assert names.parse("trainbus.evt.j1.epoch").kind == EVENT


def test_job_id_derivation() -> None:
    assert derive_job_id("mine", "train:other", 7) == "mine"
    assert derive_job_id(None, "train:other", 7) == "other"
    assert derive_job_id(None, "plain-id", 7) == "plain-id"
    assert derive_job_id(None, "train:has.dot", 7) == "job-7"
    assert derive_job_id(None, "train:job-3", 7) == "job-7"  # reserved form
    assert derive_job_id(None, None, 7) == "job-7"


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_ALL)
def test_every_event_round_trips(kind: str) -> None:
    event = make_event(kind)
    assert decode_event(encode(event)) == event
    assert b'"kind":"%s"' % kind.encode() in encode(event)


def test_every_event_type_has_a_builder() -> None:
    tags: list[str] = []
    for t in EVENT_TYPES:
        tag = t.__struct_config__.tag
        assert isinstance(tag, str), t
        tags.append(tag)
    assert sorted(tags) == sorted(KINDS_ALL)


def test_a_stored_v1_progress_event_is_upcast_on_read() -> None:
    # Exactly what a v1 writer stored: a 0-1 fraction and `eta`.
    stored_v1 = (b'{"kind":"progress","job_id":"old-1","attempt":1,"worker_id":"w",'
                 b'"time":1700000000.5,"v":1,"epoch":2,"total_epochs":10,"fraction":0.425,'
                 b'"eta":31.5}')
    event = decode_event(stored_v1)
    assert isinstance(event, ProgressEvent)
    assert (event.v, event.percent, event.eta_seconds, event.epoch) == (2, 42.5, 31.5, 2)


def test_unknown_event_fields_are_skipped_leniently() -> None:
    raw = encode(make_event("phase"))[:-1] + b',"added_later":{"x":1}}'
    assert decode_event(raw) == make_event("phase")


def test_nan_losses_do_not_make_events_unreadable() -> None:
    event = make_event("epoch", train_loss=float("nan"))
    decoded = decode_event(encode(event))
    assert isinstance(decoded, EpochEvent)
    assert decoded.train_loss is None


# --- commands ---------------------------------------------------------------------------------


def test_a_good_command_from_the_cli_decodes_with_its_pool_from_the_subject() -> None:
    command = validate_train_command(GOOD, "trainbus.cmd.train.host")
    assert command.job_id == "demo-1" and command.pool == "host"
    assert command.symbols == ("EURUSD",) and command.strategy == "rsi_mlp"


def test_a_stored_v1_train_command_is_upcast() -> None:
    stored_v1 = b'{"v":1,"strategy":"rsi_mlp","symbol":"EURUSD","timeframe":"4h"}'
    command = validate_train_command(stored_v1, SUBJECT)
    assert (command.v, command.symbols, command.timeframes) == (2, ("EURUSD",), ("4h",))


@pytest.mark.parametrize(
    ("raw", "field", "category", "words"),
    [
        (b"not json", None, "malformed", "not valid JSON"),
        (b'["a"]', None, "malformed", "Expected `object`"),
        (b'{"strategy":"s","symbols":"EURUSD","timeframes":["1h"]}', "symbols", "malformed",
         "Expected `array`"),
        (b'{"strategy":"s","symbols":[1],"timeframes":["1h"]}', "symbols[0]", "malformed",
         "Expected `str`"),
        (b'{"strategy":"s","symbolz":["E"],"symbols":["E"],"timeframes":["1h"]}', "symbolz",
         "malformed", "unknown field"),
        (b'{"strategy":"s","timeframes":["1h"]}', "symbols", "malformed", "missing required"),
        (b'{"symbols":["E"],"timeframes":["1h"]}', "strategy", "invalid", "exactly one"),
        (b'{"strategy":"s","strategy_yaml":"x: 1","symbols":["E"],"timeframes":["1h"]}',
         "strategy", "invalid", "exactly one"),
        (b'{"job_id":"a.b>","strategy":"s","symbols":["E"],"timeframes":["1h"]}', "job_id",
         "malformed", "regex"),
        (b'{"job_id":"job-5","strategy":"s","symbols":["E"],"timeframes":["1h"]}', "job_id",
         "invalid", "reserved"),
        (b'{"strategy":"s","symbols":["E"],"timeframes":["1h"],"pool":"host"}', "pool",
         "invalid", "contradicts"),
        (b'{"strategy":"s","symbols":["E"],"timeframes":["1h"],"start":"2024-05-01",'
         b'"end":"2024-01-01"}', "end", "invalid", "not before"),
        (b'{"strategy":"s","symbols":["E"],"timeframes":["1h"],"start":"2024-13-45"}', "start",
         "invalid", "not a valid date"),
        # The trainer's own rules (libs/pipeline/types.py), so nothing it refuses is stored.
        (b'{"strategy":"my.strat","symbols":["E"],"timeframes":["1h"]}', "strategy",
         "malformed", "regex"),
        (b'{"strategy":"s\\n","symbols":["E"],"timeframes":["1h"]}', "strategy",
         "malformed", "regex"),
        (b'{"strategy":"s","symbols":["EUR/USD"],"timeframes":["1h"]}', "symbols[0]",
         "malformed", "regex"),
        (b'{"strategy":"s","symbols":["E"],"timeframes":["2h"]}', "timeframes[0]",
         "malformed", "enum value"),
    ],
)
def test_bad_commands_are_rejected_naming_the_field(
    raw: bytes, field: str | None, category: str, words: str
) -> None:
    with pytest.raises(CommandRejected) as caught:
        validate_train_command(raw, SUBJECT)
    assert caught.value.field == field
    assert caught.value.category == category
    assert words in caught.value.reason


def test_an_oversized_command_is_rejected_but_keeps_its_job() -> None:
    raw = b'{"job_id":"big-1","strategy_yaml":"' + b"x" * MAX_COMMAND_BYTES + b'"}'
    with pytest.raises(CommandRejected) as caught:
        validate_train_command(raw, SUBJECT)
    assert caught.value.category == "too_large" and caught.value.job_id == "big-1"


def test_a_command_to_an_unknown_pool_is_rejected() -> None:
    with pytest.raises(CommandRejected) as caught:
        validate_train_command(GOOD, "trainbus.cmd.train.gpu")
    assert caught.value.field == "pool"


def test_cancel_bodies() -> None:
    assert read_cancel_command(b"") == CancelCommand()
    assert read_cancel_command(b'{"reason":"x","requested_by":"bob"}').reason == "x"
    # Lenient by design: the subject carries the intent; the problem becomes the reason.
    odd = read_cancel_command(b'{"reasn":"typo"}')
    assert odd.reason is not None and "reasn" in odd.reason
    assert "not understood" in (read_cancel_command(b"stop it").reason or "")


# --- raw stored messages -> LogMessage --------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "data", "headers", "job_id", "body_type"),
    [
        (SUBJECT, GOOD, None, "demo-1", TrainCommand),
        (SUBJECT, b"garbage", None, "job-9", MalformedCommand),
        (SUBJECT, b"garbage", {"Nats-Msg-Id": "train:mine"}, "mine", MalformedCommand),
        (SUBJECT, b'{"job_id":"a.b","strategy":"s"}', None, "job-9", MalformedCommand),
        (SUBJECT, b'{"job_id":"ok-1","symbols":5}', None, "ok-1", MalformedCommand),
        ("trainbus.cmd.train.gpu", GOOD, None, "demo-1", MalformedCommand),
        ("trainbus.cmd.cancel.j1", b"", None, "j1", CancelCommand),
        ("trainbus.cmd.cancel.a:b", b"", None, None, Unreadable),
        ("trainbus.evt.j1.phase", b"{", None, "j1", Unreadable),
        ("trainbus.evt.other.phase", encode(make_event("phase", job_id="j1")), None, "other",
         Unreadable),
        ("trainbus.evt.j1.epoch", encode(make_event("phase", job_id="j1")), None, "j1",
         Unreadable),
        ("trainbus.cmd.explode.now", b"{}", None, None, Unreadable),
    ],
)
def test_stored_messages_are_classified_without_raising(
    subject: str, data: bytes, headers: dict[str, str] | None, job_id: str | None,
    body_type: type,
) -> None:
    message = to_log_message(Names(), 9, subject, data, headers, 1.0)
    assert message.job_id == job_id
    assert isinstance(message.body, body_type)


# --- exported JSON Schemas --------------------------------------------------------------------


def test_docs_schemas_are_up_to_date() -> None:
    """docs/schemas/ is generated by `trainbus schema export docs/schemas`: regenerate it when
    a message changes."""
    directory = ROOT / "docs" / "schemas"
    for name, schema in json_schemas().items():
        assert (directory / name).read_bytes() == encode_schema(schema), name


def test_the_bus_and_the_strategy_config_share_one_definition_of_each_name() -> None:
    """The exported schema tells `nats` CLI users exactly what the trainer accepts."""
    from libs.pipeline import types
    from libs.pipeline.strategy import schema as strategy_schema

    train = json_schemas()["command.train.json"]
    defs = train["properties"]
    assert sorted(defs["timeframes"]["items"]["enum"]) == sorted(types.TIMEFRAMES)
    assert defs["symbols"]["items"]["pattern"] == types.SYMBOL_PATTERN
    strategy = next(s for s in defs["strategy"]["anyOf"] if s.get("type") == "string")
    assert strategy["pattern"] == types.STRATEGY_NAME_PATTERN
    assert strategy_schema.StrategyName is types.StrategyName
    assert strategy_schema.Symbol is types.Symbol
    assert strategy_schema.Timeframe is types.Timeframe


def test_command_schemas_do_not_require_the_tag() -> None:
    train = json_schemas()["command.train.json"]
    assert "type" not in train["required"]
    assert train["additionalProperties"] is False
    assert msgspec.json.decode(GOOD)["job_id"] == "demo-1"


def test_the_replay_path_upcasts_stored_v1_events_too() -> None:
    stored_v1 = (b'{"kind":"progress","job_id":"old-1","attempt":1,"worker_id":"w",'
                 b'"time":1700000000.5,"v":1,"epoch":2,"total_epochs":10,"fraction":0.5}')
    message = to_log_message(Names(), 3, "trainbus.evt.old-1.progress", stored_v1, None, 1.0)
    assert isinstance(message.body, ProgressEvent)
    assert (message.body.v, message.body.percent) == (2, 50.0)


def test_the_events_lib_stays_light() -> None:
    """libs/events must not pull in torch, pandas or the pipeline beyond its light domain types
    (libs/pipeline/types.py: msgspec and the standard library)."""
    import subprocess
    import sys

    code = (
        "import sys, libs.events, libs.events.audit, libs.events.jsonschema, "
        "services.cli.audit, services.cli.schema; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas') "
        "or (m.startswith('libs.pipeline') and m not in ('libs.pipeline', 'libs.pipeline.types')));"
        " print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
