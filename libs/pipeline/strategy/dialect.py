"""The YAML dialect of strategy files: PyYAML's SafeLoader with limits against bombs, duplicate
keys refused, dates kept as strings, `1e-3` read as a float; its dumper writes what it reads."""

from __future__ import annotations

import io
import math
import re
from typing import Any

import msgspec
import yaml

from libs.pipeline.strategy.problems import PathT, Problems, fmt_path, show
from libs.pipeline.strategy.schema import StrategyConfig, StrategyError, model_builtins

# --- loading: limits and the YAML dialect ----------------------------------------------------

MAX_STRATEGY_BYTES = 1 << 20  # a real strategy is a few KiB
MAX_YAML_ALIASES = 32  # anchors are handy for shared memberships; bombs need many more
MAX_YAML_NODES = 100_000  # counted with aliases expanded: what every later step would walk
MAX_YAML_DEPTH = 32

_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# YAML 1.1 (PyYAML) reads `1e-3` as a string because it wants a dot; strategy authors write
# learning rates that way, so accept exponents without a dot.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class YamlLimitError(Exception):
    pass


class Loader(yaml.SafeLoader):
    """SafeLoader with: no timestamp typing (dates stay strings), `1e-3` floats, duplicate keys
    refused (PyYAML silently keeps the last), and a cap on aliases against expansion bombs."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML's class-level registry)
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_FLOAT_TAG, _TIMESTAMP_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YamlLimitError(f"more than {MAX_YAML_ALIASES} YAML aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode
                ):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


class Dumper(yaml.SafeDumper):
    """Quotes every string our loader would read as a float (`"1e-3"`), and dates as usual."""

    yaml_implicit_resolvers = {  # noqa: RUF012
        first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
    }


Dumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def load_yaml(text: str, source: str) -> Any:
    if len(text) > MAX_STRATEGY_BYTES:
        raise StrategyError(f"{source}: larger than {MAX_STRATEGY_BYTES} bytes")
    try:
        stream = io.StringIO(text)
        stream.name = source  # PyYAML names it in error marks
        # Our SafeLoader subclass (limits, duplicate keys): it builds no objects.
        return yaml.load(stream, Loader=Loader)  # noqa: TID251
    except YamlLimitError as exc:
        raise StrategyError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise StrategyError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise StrategyError(f"{source}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: an int of 4300+ digits
        raise StrategyError(f"{source}: a YAML value cannot be read: {str(exc)[:200]}") from None


def check_tree(data: Any, source: str, problems: Problems) -> None:
    """Bounded walk (aliases expanded) that refuses bombs, NaN/inf and non-plain values."""
    stack: list[tuple[Any, PathT]] = [(data, ())]
    nodes = 0
    while stack:
        value, path = stack.pop()
        nodes += 1
        if nodes > MAX_YAML_NODES:
            raise StrategyError(f"{source}: more than {MAX_YAML_NODES} YAML nodes (alias bomb?)")
        if len(path) > MAX_YAML_DEPTH:
            raise StrategyError(
                f"{source}: {fmt_path(path[:4])}...: nested deeper than {MAX_YAML_DEPTH}"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.add((*path, str(key)), f"keys must be strings, got {show(key)}")
                    continue
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.add(path, f"numbers must be finite, got {value!r}")
        elif value is not None and not isinstance(value, str | int | bool):
            problems.add(path, f"unsupported YAML value of type {type(value).__name__}")


def to_yaml_data(config: StrategyConfig) -> dict[str, Any]:
    """The resolved strategy in the id-keyed YAML grammar (params and memberships inline)."""
    data: dict[str, Any] = {
        "name": config.name,
        "indicators": {
            ind_id: {"type": ind.type, **ind.params,
                     **({"data_source": ind.data_source} if ind.data_source is not None else {})}
            for ind_id, ind in config.indicators.items()
        },
        "fuzzy_sets": {
            fs_id: {
                "indicator": fs.indicator,
                **{
                    m_name: {"type": m.type, "parameters": list(m.parameters)}
                    for m_name, m in fs.memberships.items()
                },
            }
            for fs_id, fs in config.fuzzy_sets.items()
        },
        "nn_inputs": msgspec.to_builtins(config.nn_inputs),
        "training_data": msgspec.to_builtins(config.training_data),
        "model": model_builtins(config.model),
        "training": msgspec.to_builtins(config.training),
        "decisions": msgspec.to_builtins(config.decisions),
        "backtesting": msgspec.to_builtins(config.backtesting),
        "risk_management": msgspec.to_builtins(config.risk_management),
    }
    if config.context_data:  # absent when empty: strategies without it dump as they did
        data["context_data"] = msgspec.to_builtins(config.context_data)
    data.update(config.extras)
    return data


def dump_yaml(config: StrategyConfig) -> str:
    """The resolved strategy, extras included, as YAML that `parse_strategy` reads back equal."""
    return yaml.dump(
        to_yaml_data(config),
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
    )
