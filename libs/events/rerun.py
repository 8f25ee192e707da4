"""Re-running a job with changes (`trainbus rerun`, POST /api/v1/jobs/<id>/rerun): the old job's
train command, read back from the log, becomes a new `TrainingRequest` with the changes and
`derived_from` the old job's id; `JobService.submit` stores it like any other.

`set` changes strategy keys by dotted path (`training.learning_rate=0.01`, list items by
index: `nn_inputs.0.timeframes`). The new job then trains an inline strategy (`strategy_yaml`):
the old one's (its inline YAML, or the strategy file of its name, read from the strategies
directory here), changed and checked by the strategy checker before anything is submitted, so
an error names the key. A strategy file's name belongs to that file's model lineage (a trainer
refuses an inline strategy of that name with other content: libs/pipeline/pipeline.py
`check_lineage`), so a changed file strategy is renamed `<name>-<8 hex of the new YAML>` unless
`set` gives `name` itself. Symbols, timeframes and the window are the old command's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from libs.events.commands import validate_train_command
from libs.events.errors import CommandRejected, InvalidRequest
from libs.events.fold import JobState
from libs.events.job_types import RerunRequest, TrainingRequest
from libs.events.schema import TrainCommand

if TYPE_CHECKING:
    from libs.events.bus import Bus

MAX_NAME: Final = 128
_HASH_CHARS: Final = 8

# The text of a strategy file by name (None: not known here).
StrategyText = Callable[[str], str | None]


async def source_command(bus: Bus, state: JobState) -> TrainCommand:
    """The train command that created the job, as stored in the log."""
    raw = await bus.js.get_msg(bus.names.stream, state.command_seq)
    try:
        return validate_train_command(raw.data or b"", str(raw.subject), names=bus.names)
    except CommandRejected as exc:
        raise InvalidRequest(f"job {state.job_id} was never runnable ({exc.reason}): "
                             "nothing to re-run", field="job") from None


def strategy_file_text(strategies_dir: Path | None) -> StrategyText:
    """The StrategyText of the strategy files in `strategies_dir` (None: the default)."""

    def read(name: str) -> str | None:
        from libs.pipeline import strategy as strategy_config

        try:
            path = strategy_config.resolve_strategy_path(
                name, strategies_dir or strategy_config.strategies_dir())
            return path.read_text(encoding="utf-8")
        except (strategy_config.StrategyError, OSError, UnicodeDecodeError):
            return None

    return read


def rerun_request(command: TrainCommand, source_job: str, request: RerunRequest, *,
                  strategy_text: StrategyText) -> TrainingRequest:
    """The new job's request: `command` (of `source_job`) with `request`'s changes."""
    strategy, strategy_yaml = command.strategy, command.strategy_yaml
    if request.set:
        if strategy_yaml is None:
            assert strategy is not None
            strategy_yaml = strategy_text(strategy)
            if strategy_yaml is None:
                raise InvalidRequest(
                    f"strategy {strategy!r} is not among the strategy files here: --set needs "
                    "its YAML (set TRAINBUS_STRATEGIES_DIR)", field="set")
        strategy_yaml = changed_strategy(strategy_yaml, request.set,
                                         rename=strategy if strategy is not None else None)
        strategy = None
    values: dict[str, Any] = {
        "strategy": strategy, "strategy_yaml": strategy_yaml,
        "symbols": list(command.symbols), "timeframes": list(command.timeframes),
        "start": command.start, "end": command.end,
        "seed": request.seed if request.seed is not None else command.seed,
        "epochs": request.epochs if request.epochs is not None else command.epochs,
        "pool": request.pool, "idempotency_key": request.idempotency_key,
        "requested_by": request.requested_by,
        "experiment": request.experiment or command.experiment,
        "tags": {**command.tags, **request.tags}, "note": request.note,
        "derived_from": source_job,
    }
    try:
        return msgspec.convert({k: v for k, v in values.items() if v is not None},
                               TrainingRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


def changed_strategy(yaml_text: str, changes: Mapping[str, Any], *,
                     rename: str | None = None) -> str:
    """`yaml_text` with each dotted key set to its value, checked; `rename`: the file
    strategy's name, replaced by `<name>-<hash>` unless `changes` set `name`."""
    import yaml

    from libs.pipeline.strategy import StrategyError, check_strategy
    from libs.pipeline.strategy.dialect import Dumper, load_yaml

    try:
        data = load_yaml(yaml_text, "the source strategy")
    except StrategyError as exc:
        raise InvalidRequest(str(exc), field="set") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the source strategy is not a YAML mapping", field="set")
    for key, value in changes.items():
        _set_path(data, key, value)
    text = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)
    # An inline source is renamed too: other content must not share its model lineage.
    base = rename if rename is not None else data.get("name")
    if isinstance(base, str) and "name" not in changes and data.get("name") == base:
        digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]
        data["name"] = f"{base[: MAX_NAME - _HASH_CHARS - 1]}-{digest}"
        text = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)
    checked = check_strategy(text, source="rerun")
    if checked.problems:
        issue = checked.problems[0]
        key = next((k for k in changes if issue.path == k or issue.path.startswith(f"{k}.")
                    or k.startswith(f"{issue.path}.")), "")
        # `--set a.b: <what is wrong>`, the key's own path said once.
        what = (issue.message + (f" ({issue.hint})" if issue.hint else "")
                if issue.path == key else str(issue))
        raise InvalidRequest(f"--set {key}: {what}" if key else str(issue),
                             field=f"set.{key}" if key else "set")
    return text


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise InvalidRequest(f"--set {key}: not a dotted key path (training.learning_rate)",
                             field=f"set.{key}")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, key, ".".join(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, key, key)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise InvalidRequest(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping",
                             field=f"set.{key}")


def _child(node: Any, part: str, key: str, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise InvalidRequest(f"--set {key}: the strategy has no {path}", field=f"set.{key}")
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, key, path)]
    raise InvalidRequest(f"--set {key}: {path} is not a mapping or list", field=f"set.{key}")


def _index(node: list[Any], part: str, key: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise InvalidRequest(f"--set {key}: {path}: a list of {len(node)} item(s) takes an "
                             f"index 0..{len(node) - 1}", field=f"set.{key}")
    return int(part)
