"""Documents to the canonical grammar before decoding: the older list-style grammar migrated, and
the small spellings both grammars allow rewritten. Settings are honoured or refused, never
dropped (the rules are in libs/pipeline/strategy/__init__.py)."""

from __future__ import annotations

from typing import Any

from libs.pipeline.strategy.problems import PathT, Problems, did_you_mean, mapping, show


def migrate_legacy(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The list-style grammar (indicators as a list with `name`, fuzzy sets keyed by indicator,
    no `nn_inputs`) rewritten into the id-keyed one; the settings both grammars may write the
    reference platform's way (`model.training`, ...) are `normalise_settings`'s. Paths in
    errors raised here are the file's own; later errors use the migrated paths."""
    out = dict(raw)
    indicators: dict[str, Any] = {}
    for i, item in enumerate(raw["indicators"]):
        item = mapping(item, ("indicators", i), problems)
        if item is None:
            continue
        item = dict(item)
        name = item.pop("name", None)
        type_name = item.pop("type", None) or name
        ind_id = item.pop("feature_id", None) or name
        if not isinstance(type_name, str) or not isinstance(ind_id, str):
            problems.add(("indicators", i), "needs `name` (the indicator type)")
            continue
        if ind_id in indicators:
            problems.add(("indicators", i), f"duplicate indicator {ind_id!r}; add a feature_id")
            continue
        indicators[ind_id] = {"type": type_name, **item}
    out["indicators"] = indicators

    fuzzy = mapping(raw.get("fuzzy_sets", {}), ("fuzzy_sets",), problems) or {}
    out["fuzzy_sets"] = {
        fs_id: (
            {"indicator": fs_id, **spec}
            if isinstance(spec, dict) and "indicator" not in spec
            else spec
        )
        for fs_id, spec in fuzzy.items()
    }
    if "nn_inputs" not in raw:
        # Era A used every fuzzy set on every timeframe; we keep that, in the order written.
        out["nn_inputs"] = [{"fuzzy_set": fs_id, "timeframes": "all"} for fs_id in fuzzy]

    return out


def normalise_settings(raw: dict[str, Any], problems: Problems) -> None:
    """The reference platform's spellings, in either grammar, rewritten in place: each one is
    honoured (moved to its canonical key), refused (a problem naming its path), or accepted
    and ignored with a warning saying why; never silently dropped.

    - `model.training.*` moves to `training` (a key in both places is an error naming both);
    - `model.architecture.output_activation: softmax`: the model emits logits and the softmax
      is applied at prediction; any other value is refused;
    - `model.features.include_price_context: false` and `scale_features`: ignored (inputs are
      fuzzy memberships, already in [0, 1]; no raw price inputs, no scaler); `true` for the
      first is refused;
    - `model.training.progress_update_frequency`: ignored (the trainer sets the cadence);
    - `training.method: supervised`: the only method; others refused;
    - `training_data.date_range {start, end}`: the training window, `start_date`/`end_date`;
    - triple-barrier `profit_target_atr`, `stop_loss_atr`, `max_holding_bars`: the
      `pt_multiplier`, `sl_multiplier`, `max_holding_period` they mean (barriers in ATR
      multiples: with `vol_method: close` they are refused); `atr_period`: ignored (the
      barrier volatility is an EWMA over `vol_span` bars, not an ATR over a period).
    """
    model_training = _model_settings(raw, problems)
    _training_settings(raw, model_training, problems)
    _date_range(raw, problems)


def _model_settings(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """`model.training` taken out (returned), `output_activation` and the features' flags."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return {}
    model = raw["model"] = dict(model)
    model_training: dict[str, Any] = {}
    if "training" in model:
        model_training = dict(mapping(model.pop("training"), ("model", "training"), problems) or {})
    if "progress_update_frequency" in model_training:
        cadence = model_training.pop("progress_update_frequency")
        path: PathT = ("model", "training", "progress_update_frequency")
        if isinstance(cadence, bool) or not isinstance(cadence, int) or cadence < 1:
            problems.add(path, "expected int >= 1")
        else:
            problems.warn(path, "ignored: the trainer sets the progress cadence itself "
                          "(a few updates a second on the bus and in the CLI)")
    if isinstance(model.get("architecture"), dict):
        arch = model["architecture"] = dict(model["architecture"])
        if "output_activation" in arch:
            activation = arch.pop("output_activation")
            path = ("model", "architecture", "output_activation")
            if activation != "softmax":
                problems.add(path, "only softmax is supported (the model emits logits, "
                             f"softmax is applied at prediction), got {show(activation)}",
                             "write softmax or remove the key")
            else:
                problems.warn(path, "softmax is what is done anyway: the model emits "
                              "logits and the softmax is applied at prediction")
    if isinstance(model.get("features"), dict):
        model["features"] = _features(dict(model["features"]), problems)
    return model_training


def _features(features: dict[str, Any], problems: Problems) -> dict[str, Any]:
    path: PathT = ("model", "features", "include_price_context")
    if "include_price_context" in features:
        if features.pop("include_price_context") is not False:
            problems.add(path, "raw price inputs are not supported yet",
                         "remove it, or list a price indicator (e.g. an sma of the close) as an "
                         "nn_inputs raw_indicator with its normalization")
        else:
            problems.warn(path, "ignored: the inputs are what nn_inputs lists (fuzzy sets and "
                          "raw indicators); false is what is done")
    if "scale_features" in features:
        scale = features.pop("scale_features")
        path = ("model", "features", "scale_features")
        if not isinstance(scale, bool):
            problems.add(path, "expected true or false")
        else:
            # The platform we descend from saved scaler=None for these models too.
            problems.warn(path, "ignored: fuzzy memberships are bounded in [0, 1] and each "
                          "nn_inputs raw_indicator is scaled by its own normalization")
    return features


def _training_settings(
    raw: dict[str, Any], model_training: dict[str, Any], problems: Problems
) -> None:
    """`training.method`, `model.training` merged in, the triple-barrier options."""
    training = raw.get("training")
    if not (isinstance(training, dict) or ("training" not in raw and model_training)):
        return
    training = dict(training) if isinstance(training, dict) else {}
    if "method" in training:
        method = training.pop("method")
        if method != "supervised":
            problems.add(("training", "method"),
                         f"only supervised is supported, got {show(method)}",
                         "write supervised or remove the key")
        else:
            problems.warn(("training", "method"),
                          "supervised is the only method; the key changes nothing")
    for key, value in model_training.items():
        if key in training:
            problems.add(("model", "training", key), f"also set as training.{key}; keep one")
        training[key] = value
    labels = training.get("labels")
    if isinstance(labels, dict) and labels.get("source") == "triple_barrier":
        training["labels"] = _triple_barrier(dict(labels), problems)
    raw["training"] = training


def _date_range(raw: dict[str, Any], problems: Problems) -> None:
    """`training_data.date_range {start, end}`: the training window's start_date/end_date."""
    data = raw.get("training_data")
    if not (isinstance(data, dict) and "date_range" in data):
        return
    data = raw["training_data"] = dict(data)
    window = data.pop("date_range")
    path: PathT = ("training_data", "date_range")
    both = [k for k in ("start_date", "end_date") if k in data]
    if both:
        problems.add(path, f"also given as training_data.{both[0]}; keep one of the forms")
    elif (window := mapping(window, path, problems)) is not None:
        for key in window.keys() - {"start", "end"}:
            problems.add((*path, key), "unknown key; expected one of: end, start",
                         did_you_mean(key, ("start", "end")))
        for key in ("start", "end"):
            if key in window:
                data[f"{key}_date"] = window[key]


# Triple-barrier keys some reference strategy files write, and the key each one means.
_TRIPLE_BARRIER_ALIASES = {
    "profit_target_atr": "pt_multiplier",
    "stop_loss_atr": "sl_multiplier",
    "max_holding_bars": "max_holding_period",
}


def _triple_barrier(labels: dict[str, Any], problems: Problems) -> dict[str, Any]:
    path: PathT = ("training", "labels")
    for alias, key in _TRIPLE_BARRIER_ALIASES.items():
        if alias not in labels:
            continue
        value = labels.pop(alias)
        if key in labels:
            problems.add((*path, alias), f"also set as {key}; keep one")
        elif alias.endswith("_atr") and labels.get("vol_method") == "close":
            problems.add((*path, alias), "a multiple of the ATR, but vol_method is close "
                         "(barriers in close-to-close volatility)",
                         f"write vol_method: atr, or {key}")
        else:
            labels[key] = value
    if "atr_period" in labels:
        labels.pop("atr_period")
        problems.warn((*path, "atr_period"), "ignored: the barrier volatility is an EWMA "
                      "over vol_span bars of (high - low) / close, not an ATR over a period; "
                      "set vol_span")
    return labels


def normalise_common(raw: dict[str, Any]) -> None:
    """Small spellings both grammars allow, rewritten in place before decoding."""
    training = raw.get("training")
    if isinstance(training, dict):
        training = raw["training"] = dict(training)
        labels = training.get("labels")
        if isinstance(labels, dict) and "source" not in labels:
            training["labels"] = {"source": "zigzag", **labels}
        stopping = training.get("early_stopping")
        if isinstance(stopping, bool):
            training["early_stopping"] = {} if stopping else None
        elif isinstance(stopping, dict) and "enabled" in stopping:
            # Older files wrote `enabled:`; presence used to enable regardless. Honour it.
            stopping = dict(stopping)
            enabled = stopping.pop("enabled")
            training["early_stopping"] = (
                stopping
                if enabled is True
                else (None if enabled is False else {"enabled": enabled})
            )
    data = raw.get("training_data")
    if isinstance(data, dict):
        data = raw["training_data"] = dict(data)
        for key in ("symbols", "timeframes"):
            section = data.get(key)
            # `symbols: {symbols: [...]}` is an old alias of `list`.
            if isinstance(section, dict) and key in section and "list" not in section:
                section = dict(section)
                section["list"] = section.pop(key)
                data[key] = section
