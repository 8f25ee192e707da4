"""Documents to the canonical grammar before decoding: the older list-style grammar migrated, and
the small spellings both grammars allow rewritten. Settings are honoured or refused, never
dropped (the rules are in libs/pipeline/strategy/__init__.py)."""

from __future__ import annotations

from typing import Any

from libs.pipeline.strategy.problems import Problems, mapping, show


def migrate_legacy(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The list-style grammar (indicators as a list with `name`, fuzzy sets keyed by indicator,
    settings under `model.training`) rewritten into the id-keyed one. Paths in errors raised
    here are the file's own; later errors use the migrated paths."""
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

    model = dict(mapping(raw.get("model", {}), ("model",), problems) or {})
    model_training = mapping(model.pop("training", {}), ("model", "training"), problems) or {}
    model_training = dict(model_training)
    # Progress is reported every batch; throttling is the caller's business, so the old cadence
    # setting has nothing to change. Accepted (validated) so old files load.
    cadence = model_training.pop("progress_update_frequency", 1)
    if isinstance(cadence, bool) or not isinstance(cadence, int) or cadence < 1:
        problems.add(("model", "training", "progress_update_frequency"), "expected int >= 1")
    if isinstance(model.get("architecture"), dict):
        arch = dict(model["architecture"])
        # Logits out, softmax only at inference: `softmax` is what we do anyway.
        activation = arch.pop("output_activation", "softmax")
        if activation != "softmax":
            problems.add(
                ("model", "architecture", "output_activation"),
                f"only softmax is supported (applied at inference), got {show(activation)}",
            )
        model["architecture"] = arch
    if isinstance(model.get("features"), dict):
        features = dict(model["features"])
        if features.pop("include_price_context", False) is not False:
            problems.add(
                ("model", "features", "include_price_context"),
                "raw price inputs are not supported yet; remove it or set it to false",
            )
        # Fuzzy memberships are already bounded in [0, 1]; no scaler is fitted (the platform we
        # descend from saved scaler=None for these models too), so true and false both hold.
        scale = features.pop("scale_features", False)
        if not isinstance(scale, bool):
            problems.add(("model", "features", "scale_features"), "expected true or false")
        model["features"] = features
    out["model"] = model

    training = dict(mapping(raw.get("training", {}), ("training",), problems) or {})
    method = training.pop("method", "supervised")
    if method != "supervised":
        problems.add(("training", "method"), f"only supervised is supported, got {show(method)}")
    for key, value in model_training.items():
        if key in training:
            problems.add(("model", "training", key), f"also set as training.{key}; keep one")
        training[key] = value
    out["training"] = training
    return out


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
