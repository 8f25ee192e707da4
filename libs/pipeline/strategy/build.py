"""A normalised document to a `StrategyConfig`: each section decoded on its own (so every
problem of a file is reported in one pass), then the references between sections checked
(fuzzy set -> indicator output, nn_inputs -> fuzzy sets and timeframes, feature-name
collisions) and the model size capped."""

from __future__ import annotations

import itertools
import re
from typing import Any, NamedTuple

import msgspec

from libs.pipeline.indicator_specs import (
    IndicatorError,
    canonical_type,
    outputs_of,
    resolved_params,
)
from libs.pipeline.strategy.context import check_data_sources, context_data
from libs.pipeline.strategy.dialect import check_tree, load_yaml
from libs.pipeline.strategy.normalise import migrate_legacy, normalise_common, normalise_settings
from libs.pipeline.strategy.problems import (
    Issue,
    PathT,
    Problems,
    decode,
    did_you_mean,
    mapping,
    show,
)
from libs.pipeline.strategy.schema import (
    MLP_ARCHITECTURE_KEYS,
    PASSTHROUGH_SECTIONS,
    RECURRENT_ARCHITECTURE_KEYS,
    RECURRENT_MODELS,
    BacktestingConfig,
    DecisionsConfig,
    ForwardReturnLabels,
    FuzzySetConfig,
    IndicatorConfig,
    MembershipConfig,
    ModelConfig,
    NNInputConfig,
    RegimeLabels,
    RiskManagementConfig,
    StrategyConfig,
    StrategyError,
    StrategyName,
    TrainingConfig,
    TrainingDataConfig,
    is_recurrent,
    model_problem,
    timeframes_of,
)

# Weights between hidden layers. Each width may be up to 65536, so without a cap on the product
# one strategy (`hidden_layers: [65536, 65536]`: 17 GB of float32) exhausts every trainer it is
# handed to, one after the other. Real strategies have well under 100k.
MAX_HIDDEN_WEIGHTS = 20_000_000

# Indicator, fuzzy-set and membership ids end up in column and feature names.
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

_TOP_LEVEL = ("name", "indicators", "fuzzy_sets", "nn_inputs", "training_data", "model", "training",
              "decisions", "backtesting", "risk_management", "context_data")


_UNSUPPORTED_MODELS = ("transformer", "cnn")


def _build(raw: dict[str, Any], source: str, problems: Problems) -> StrategyConfig | None:
    """Each section on its own, so one file's problems are all reported together."""
    extras = _extras(raw, problems)
    name = _required(raw, "name", StrategyName, problems)
    indicators = _indicators(raw, problems)
    context = context_data(raw, problems)
    fuzzy_sets = _fuzzy_sets(raw, problems)
    nn_inputs = _nn_inputs(raw, problems)
    training_data = _required(raw, "training_data", TrainingDataConfig, problems)
    model = _model(raw, problems)
    training = TrainingConfig()
    if "training" in raw:
        training = decode(raw["training"], TrainingConfig, ("training",), problems) or training
    trading: dict[str, Any] = {
        key: decode(raw[key], typ, (key,), problems) or typ()
        for key, typ in (("decisions", DecisionsConfig), ("backtesting", BacktestingConfig),
                         ("risk_management", RiskManagementConfig)) if key in raw}
    if problems.items or name is None or training_data is None:
        return None
    config = StrategyConfig(
        name=name,
        indicators=indicators,
        fuzzy_sets=fuzzy_sets,
        nn_inputs=nn_inputs,
        training_data=training_data,
        model=model,
        training=training,
        extras=extras,
        context_data=context,
        **trading,
    )
    _cross_check(config, problems)
    check_data_sources(config, problems)
    return config


def _extras(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The passthrough sections, verbatim; anything else unknown is a problem."""
    extras: dict[str, Any] = {}
    for key in raw:
        if key in PASSTHROUGH_SECTIONS:
            extras[key] = raw[key]
        elif key not in _TOP_LEVEL:
            problems.add(
                (key,),
                "unknown section; expected one of: "
                + ", ".join((*_TOP_LEVEL, *PASSTHROUGH_SECTIONS)),
                did_you_mean(key, (*_TOP_LEVEL, *PASSTHROUGH_SECTIONS)),
            )
    return extras


def _required(raw: dict[str, Any], key: str, typ: Any, problems: Problems) -> Any:
    if key not in raw:
        problems.add((key,), "required key missing")
        return None
    return decode(raw[key], typ, (key,), problems)


def _indicators(raw: dict[str, Any], problems: Problems) -> dict[str, IndicatorConfig]:
    """`{id: {type, **params}}` with the type canonical and every parameter written out."""
    indicators: dict[str, IndicatorConfig] = {}
    section = mapping(raw.get("indicators", {}), ("indicators",), problems) or {}
    for ind_id, spec in section.items():
        path: PathT = ("indicators", ind_id)
        if not _ID_RE.match(ind_id):
            problems.add(path, "ids must match [A-Za-z][A-Za-z0-9_]*")
            continue
        spec = mapping(spec, path, problems)
        if spec is None:
            continue
        params = dict(spec)
        type_name = params.pop("type", None)
        data_source = params.pop("data_source", None)  # a context_data name, not a parameter
        if not isinstance(type_name, str):
            problems.add((*path, "type"), "required: the indicator type (e.g. rsi)")
            continue
        if data_source is not None and not isinstance(data_source, str):
            problems.add((*path, "data_source"), f"expected a context_data name, got "
                         f"{show(data_source)}")
            continue
        try:
            cfg = IndicatorConfig(type=canonical_type(type_name), params=params)
            # Defaults written out: the saved strategy says exactly what was computed.
            indicators[ind_id] = IndicatorConfig(type=cfg.type, params=resolved_params(cfg),
                                                 data_source=data_source)
        except IndicatorError as exc:
            problems.add(path, str(exc))
    if not indicators and "indicators" not in raw:
        problems.add(("indicators",), "required key missing")
    return indicators


def _fuzzy_sets(raw: dict[str, Any], problems: Problems) -> dict[str, FuzzySetConfig]:
    fuzzy_sets: dict[str, FuzzySetConfig] = {}
    section = mapping(raw.get("fuzzy_sets", {}), ("fuzzy_sets",), problems) or {}
    for fs_id, spec in section.items():
        path: PathT = ("fuzzy_sets", fs_id)
        if not _ID_RE.match(fs_id):
            problems.add(path, "ids must match [A-Za-z][A-Za-z0-9_]*")
            continue
        spec = mapping(spec, path, problems)
        if spec is None:
            continue
        memberships = {
            m_name: membership
            for m_name, m_spec in spec.items()
            if m_name != "indicator"
            and (membership := _membership(m_spec, (*path, m_name), problems)) is not None
        }
        indicator = spec.get("indicator")
        if not isinstance(indicator, str):
            problems.add((*path, "indicator"), "required: the indicator id it reads")
            continue
        if not spec.keys() - {"indicator"}:
            problems.add(path, "no memberships")
        fuzzy_sets[fs_id] = FuzzySetConfig(indicator=indicator, memberships=memberships)
    return fuzzy_sets


def _membership(m_spec: Any, path: PathT, problems: Problems) -> MembershipConfig | None:
    """One membership: `{type, parameters}`, or a bare list of three numbers (triangular)."""
    if not _ID_RE.match(str(path[-1])):
        problems.add(path, "membership names must match [A-Za-z][A-Za-z0-9_]*")
        return None
    if isinstance(m_spec, list):
        if len(m_spec) != 3:
            problems.add(
                path,
                f"a bare list is triangular [a, b, c], got {len(m_spec)} numbers; "
                "write {type: trapezoidal|gaussian, parameters: [...]} for the others",
            )
            return None
        m_spec = {"type": "triangular", "parameters": m_spec}
    membership: MembershipConfig | None = decode(m_spec, MembershipConfig, path, problems)
    return membership


def _nn_inputs(raw: dict[str, Any], problems: Problems) -> list[NNInputConfig]:
    raw_inputs = raw.get("nn_inputs")
    if raw_inputs is None:
        problems.add(("nn_inputs",), "required key missing")
        return []
    if not isinstance(raw_inputs, list):
        problems.add(("nn_inputs",), f"expected a list, got {show(raw_inputs)}")
        return []
    nn_inputs: list[NNInputConfig] = []
    for i, item in enumerate(raw_inputs):
        if (isinstance(item, dict) and item.get("fuzzy_set") is not None
                and item.get("raw_indicator") is None
                and item.get("normalization") not in (None, "none")):
            # Checked here, not only in NNInputConfig, so the error names the key itself.
            problems.add(("nn_inputs", i, "normalization"),
                         f"{show(item['normalization'])} applies to raw_indicator inputs only:"
                         " fuzzy memberships are already in [0, 1]; drop it or write none")
            continue
        decoded = decode(item, NNInputConfig, ("nn_inputs", i), problems)
        if decoded is not None:
            # The default written out: the saved strategy says how each input was scaled.
            if decoded.raw_indicator is not None and decoded.normalization is None:
                decoded = msgspec.structs.replace(decoded, normalization="zscore")
            nn_inputs.append(decoded)
    return nn_inputs


def _model(raw: dict[str, Any], problems: Problems) -> ModelConfig:
    if "model" not in raw:
        return ModelConfig()
    model_raw = raw["model"]
    model_type = model_raw.get("type") if isinstance(model_raw, dict) else None
    if isinstance(model_type, str) and model_type.lower() in _UNSUPPORTED_MODELS:
        problems.add(("model", "type"),
                     f"{model_type!r} is not supported yet (mlp, lstm and gru are)")
        return ModelConfig()
    if isinstance(model_type, str) and _foreign_architecture_keys(model_raw, model_type,
                                                                  problems):
        return ModelConfig()
    model: ModelConfig | None = decode(model_raw, ModelConfig, ("model",), problems)
    if model is not None and (problem := model_problem(model)) is not None:
        problems.add(("model", *problem[0]), problem[1])
        return ModelConfig()
    return model or ModelConfig()


def _foreign_architecture_keys(model_raw: dict[str, Any], model_type: str,
                               problems: Problems) -> bool:
    """A key of another model type's architecture (hidden_layers given to an lstm): an error
    naming it, since the model would silently ignore it."""
    arch = model_raw.get("architecture")
    if not isinstance(arch, dict):
        return False
    recurrent = str(model_type).lower() in RECURRENT_MODELS
    foreign = MLP_ARCHITECTURE_KEYS if recurrent else RECURRENT_ARCHITECTURE_KEYS
    reads = (", ".join(RECURRENT_ARCHITECTURE_KEYS) if recurrent
             else ", ".join(MLP_ARCHITECTURE_KEYS)) + ", dropout"
    found = [key for key in foreign if key in arch]
    for key in found:
        problems.add(("model", "architecture", key),
                     f"not a setting of a {model_type} model, which reads {reads}")
    return bool(found)


def _cross_check(config: StrategyConfig, problems: Problems) -> None:
    """References between sections: fuzzy set -> indicator output, nn_input -> fuzzy set or
    indicator output (raw_indicator) and TFs."""
    for fs_id, fs in config.fuzzy_sets.items():
        _check_indicator_ref(config, fs.indicator, ("fuzzy_sets", fs_id, "indicator"), problems)

    timeframes = timeframes_of(config)
    seen: set[str] = set()
    for i, nn in enumerate(config.nn_inputs):
        if nn.raw_indicator is not None:
            path: PathT = ("nn_inputs", i, "raw_indicator")
            _check_indicator_ref(config, nn.raw_indicator, path, problems)
            if nn.raw_indicator in seen:
                problems.add(path, f"{nn.raw_indicator!r} is listed twice")
            seen.add(nn.raw_indicator)
        elif nn.fuzzy_set not in config.fuzzy_sets:
            problems.add(
                ("nn_inputs", i, "fuzzy_set"),
                f"unknown fuzzy set {nn.fuzzy_set!r}; defined: "
                f"{', '.join(config.fuzzy_sets) or '(none)'}",
            )
        if nn.fuzzy_set is not None:
            if nn.fuzzy_set in seen:
                problems.add(("nn_inputs", i, "fuzzy_set"), f"{nn.fuzzy_set!r} is listed twice")
            seen.add(nn.fuzzy_set)
        if nn.timeframes != "all":
            missing = [tf for tf in nn.timeframes if tf not in timeframes]
            if missing:
                problems.add(
                    ("nn_inputs", i, "timeframes"),
                    f"{', '.join(missing)} not in training_data.timeframes "
                    f"({', '.join(timeframes)})",
                )
            if len(set(nn.timeframes)) != len(nn.timeframes):
                problems.add(("nn_inputs", i, "timeframes"), "duplicate timeframes")
    if not config.nn_inputs:
        problems.add(("nn_inputs",), "empty: the model needs at least one input")
    _check_decisions(config, problems)
    _check_loss(config, problems)
    if problems.items:
        return
    names = _feature_names_unlagged(config, timeframes)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.add(
            ("fuzzy_sets",),
            f"feature names collide: {', '.join(duplicates)} (rename a fuzzy set, membership "
            "or indicator)",
        )


def _check_indicator_ref(
    config: StrategyConfig, ref: str, path: PathT, problems: Problems
) -> None:
    """`ref` (`id` or `id.output`) must name a column compute_indicators makes."""
    ind_id, _, output = ref.partition(".")
    indicator = config.indicators.get(ind_id)
    if indicator is None:
        problems.add(
            path,
            f"unknown indicator {ind_id!r}; defined: {', '.join(config.indicators) or '(none)'}",
        )
        return
    outputs = outputs_of(indicator)
    if output and not outputs:
        problems.add(path, f"{ind_id} has a single output; refer to it as {ind_id!r}")
    elif output and output not in outputs:
        problems.add(path, f"{ind_id} has no output {output!r}; outputs: {', '.join(outputs)}")


_LOSSES_OF = {False: ("cross_entropy", "focal"), True: ("huber", "mse")}


def _check_loss(config: StrategyConfig, problems: Problems) -> None:
    """`training.loss` must fit the task the labels make."""
    regression = isinstance(config.training.labels, ForwardReturnLabels)
    loss = config.training.loss
    if loss is not None and loss not in _LOSSES_OF[regression]:
        task = "a regression (forward_return labels)" if regression else "a classification"
        problems.add(("training", "loss"), f"{loss} does not fit {task}: use "
                     f"{' or '.join(_LOSSES_OF[regression])}")


def _check_decisions(config: StrategyConfig, problems: Problems) -> None:
    """`decisions` must describe the model the labels make."""
    regression = isinstance(config.training.labels, ForwardReturnLabels)
    wanted = "regression" if regression else "classification"
    written = config.decisions.output_format
    if written is not None and written != wanted:
        problems.add(("decisions", "output_format"),
                     f"{written} does not fit training.labels.source "
                     f"{type(config.training.labels).__name__}: the model is a {wanted}")
    if regression and config.decisions.num_classes is not None:
        problems.add(("decisions", "num_classes"), "a regression model has no classes")
    classes = 4 if isinstance(config.training.labels, RegimeLabels) else 3
    written_classes = config.decisions.num_classes
    if not regression and written_classes is not None and written_classes != classes:
        source = type(config.training.labels).__struct_config__.tag
        problems.add(("decisions", "num_classes"),
                     f"{written_classes} does not fit training.labels.source {source}: it has "
                     f"{classes} classes")
    if regression and config.decisions.confidence_threshold:
        problems.add(("decisions", "confidence_threshold"),
                     "applies to class probabilities: a regression model trades the sign of "
                     "its predicted return")


def _feature_names_unlagged(config: StrategyConfig, timeframes: list[str]) -> list[str]:
    names: list[str] = []
    for nn in config.nn_inputs:
        tfs = timeframes if nn.timeframes == "all" else nn.timeframes
        if nn.raw_indicator is not None:
            names.extend(f"{tf}_{nn.raw_indicator}" for tf in tfs)
            continue
        assert nn.fuzzy_set is not None  # NNInputConfig holds exactly one of the two
        memberships = config.fuzzy_sets[nn.fuzzy_set].memberships
        names.extend(f"{tf}_{nn.fuzzy_set}_{m}" for tf in tfs for m in memberships)
    return names


class StrategyCheck(NamedTuple):
    """A document checked: the strategy (None when it has problems), every problem, and the
    warnings (keys accepted but ignored, each with why). Warnings are not part of the
    strategy: its hash and saved config.yaml are the same with or without them."""

    config: StrategyConfig | None
    problems: list[Issue]
    warnings: list[Issue]


def check_strategy(yaml_text: str, *, source: str = "<string>") -> StrategyCheck:
    """Every problem and warning of a YAML document in either grammar, in one pass."""
    problems = Problems()
    try:
        config = _check(yaml_text, source, problems)
    except StrategyError as exc:  # unreadable YAML, limits: nothing further can be checked
        message = str(exc).removeprefix(f"{source}: ")
        problems.add((), message)
        config = None
    if problems.issues:
        config = None
    return StrategyCheck(config, list(problems.issues), list(problems.warnings))


def _check(yaml_text: str, source: str, problems: Problems) -> StrategyConfig | None:
    raw = load_yaml(yaml_text, source)
    if not isinstance(raw, dict):
        raise StrategyError(f"{source}: a strategy is a YAML mapping, got {show(raw)}")
    check_tree(raw, source, problems)
    if problems.issues:
        return None
    if isinstance(raw.get("indicators"), list):
        raw = migrate_legacy(raw, problems)
    normalise_settings(raw, problems)
    normalise_common(raw)
    config = _build(raw, source, problems)
    if config is not None:
        _check_model_size(config, problems)
    return config


def parse_strategy(yaml_text: str, *, source: str = "<string>") -> StrategyConfig:
    """A strategy from YAML text in either grammar; StrategyError names the source and paths.
    The warnings are `check_strategy`'s."""
    problems = Problems()
    config = _check(yaml_text, source, problems)
    problems.raise_if_any(source)
    assert config is not None  # _build returns None only alongside problems
    return config


def _check_model_size(config: StrategyConfig, problems: Problems) -> None:
    if is_recurrent(config.model):
        return  # a recurrent model's size is bounded by hidden_size and num_layers' limits
    layers = config.model.architecture.hidden_layers
    weights = sum(a * b for a, b in itertools.pairwise(layers))
    if weights > MAX_HIDDEN_WEIGHTS:
        problems.add(
            ("model", "architecture", "hidden_layers"),
            f"{weights:,} weights between hidden layers, more than the limit of "
            f"{MAX_HIDDEN_WEIGHTS:,} (the model would exhaust a trainer's memory)",
        )
