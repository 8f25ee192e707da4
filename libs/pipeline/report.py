"""report.html: one saved model as a single self-contained page (no backend, no network).

`render_report(metadata, metrics)` is a pure function of the two JSON documents saved with the
model (metadata.json, the manifest; metrics.json, the history and test metrics): the same
inputs always give the same bytes. The page holds

- the warnings of the run, first;
- the headline: macro F1 and accuracy (or RMSE and direction accuracy), the naive baselines and
  the model's lift over each;
- the backtest: each strategy's net/gross return, Sharpe, drawdown, trades..., the lift over
  buy-and-hold and the others with its 95% interval, per symbol, and the net equity curves;
- the walk-forward folds with the mean ± std over folds, and the splits (boundaries, the rows
  purged and embargoed per split and symbol, the label distribution);
- a summary (strategy, data, test metrics, training run),
- the loss, accuracy and learning-rate curves per epoch and the confusion-matrix heatmap, drawn
  in the browser by the dashboard's own chart code (`report_assets/charts.js`, inlined, with the
  data embedded as JSON), so a model reads the same here as on the live job page,
- the per-class metrics and the manifest (files and their SHA-256, versions, data window) as
  plain HTML tables, readable even with scripts off.

Every section is optional: metrics.json of older models has none of the new ones (and named the
weighted F1 `f1_score`); what is missing is simply not shown.

ModelStorage writes it beside every saved version. It is a view derived from metadata.json and
metrics.json, so it is not listed in the manifest's hashes (it shows them) and not part of the
archive: whoever needs it again renders it from the verified JSON.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["REPORT_FILE", "asset_text", "render_report"]

REPORT_FILE = "report.html"
ASSETS = "report_assets"
_ASSET_NAMES = frozenset({"charts.js", "report.js", "report.css"})
_RATIO = re.compile(r"accuracy|precision|recall|f1")  # metrics shown as percentages


@cache
def asset_text(name: str) -> str:
    """A file of `libs/pipeline/report_assets/` (package data: shipped in the wheel)."""
    if name not in _ASSET_NAMES:
        raise FileNotFoundError(f"no report asset {name!r}")
    text = (resources.files("libs.pipeline") / ASSETS / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"report asset {name} cannot be inlined: it closes its own tag")
    return text


def render_report(
    metadata: Mapping[str, Any], metrics: Mapping[str, Any], *, version: str | None = None
) -> str:
    """The report page. `version` (`<tf>_v<N>`) is optional: a saved model's version is chosen
    when its directory is renamed into place, so the page reads it from its own path."""
    metadata = _clean(metadata)
    metrics = _clean(metrics)
    strategy = str(metadata.get("strategy") or "model")
    timeframe = str(metadata.get("timeframe") or "")
    history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    assert isinstance(test, dict)
    confusion = _confusion(test)
    backtest = _mapping(test.get("backtest"))
    data = {
        "history": [
            {k: h.get(k) for k in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                   "val_accuracy", "learning_rate", "duration")}
            for h in history
        ],
        # A finished run: the axis spans the epochs trained (an early stop ends the curves).
        "total_epochs": None,
        "confusion": confusion,
        "equity": _equity(backtest),
    }
    e = html.escape
    title = f"{strategy} {timeframe} · trainbus model report".strip()
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="trainbus">',
        f"<title>{e(title)}</title>",
        f"<style>{asset_text('report.css')}</style>",
        "</head><body>",
        "<header>",
        f'<h1>{e(strategy)} <span id="version">{e(version or "")}</span></h1>',
        f"<p>{e(_subtitle(metadata))}</p>",
        "</header><main>",
        _warnings_section(metrics.get("warnings")),
        _headline_section(test),
        _backtest_section(backtest),
        _walk_forward_section(_mapping(metrics.get("walk_forward"))),
        _splits_section(_mapping(metrics.get("splits"))),
        _summary(metadata, metrics, test),
        '<section><h2>Training curves</h2><div class="charts">'
        '<div id="chart-loss" class="chart"></div>'
        '<div id="chart-accuracy" class="chart"></div>'
        '<div id="chart-lr" class="chart"></div></div>'
        '<noscript><p class="muted">The charts need JavaScript; the history is in the table '
        "below.</p></noscript>"
        f"{_history_table(history)}</section>",
        _test_section(test, confusion),
        _manifest_section(metadata),
        "</main>",
        f'<script type="application/json" id="trainbus-data">{_json_for_html(data)}</script>',
        f"<script>{asset_text('charts.js')}</script>",
        f"<script>{asset_text('report.js')}</script>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


# --- pieces -----------------------------------------------------------------------------------


def _subtitle(metadata: Mapping[str, Any]) -> str:
    bits = []
    symbols = metadata.get("symbols")
    timeframes = metadata.get("timeframes")
    if isinstance(symbols, list) and symbols:
        bits.append(", ".join(map(str, symbols)))
    if isinstance(timeframes, list) and timeframes:
        bits.append(" / ".join(map(str, timeframes)))
    if metadata.get("created_at"):
        bits.append(f"saved {metadata['created_at']}")
    if metadata.get("device"):
        bits.append(f"trained on {metadata['device']}")
    return " · ".join(bits)


# --- the evaluation: warnings, baselines, backtest, walk-forward, splits ---------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _label(name: str) -> str:
    return "buy & hold" if name == "buy_and_hold" else str(name).replace("_", " ")


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]], attrs: str = "") -> str:
    """A table: the first cell of each row is its heading, the others right-aligned numbers.
    Every text is escaped here."""
    e = html.escape
    thead = "".join(f"<th>{e(h)}</th>" if i == 0 else f'<th class="num">{e(h)}</th>'
                    for i, h in enumerate(head))
    body = "".join(
        f"<tr><th>{e(row[0])}</th>" + "".join(f'<td class="num">{e(c)}</td>' for c in row[1:])
        + "</tr>"
        for row in rows
    )
    return (f'<div class="scroll"><table{attrs}><thead><tr>{thead}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _cards(cards: Sequence[tuple[str, str]]) -> str:
    body = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for label, value in cards
    )
    return f'<div class="cards">{body}</div>'


def _ordered(strategies: Mapping[str, Any]) -> list[str]:
    """The model first, then buy-and-hold, then the rest in their order."""
    first = [n for n in ("model", "buy_and_hold") if n in strategies]
    return first + [n for n in strategies if n not in first]


def _is_regression(test: Mapping[str, Any]) -> bool:
    if "rmse" in test:
        return True
    return any("rmse" in _mapping(b) for b in _mapping(test.get("baselines")).values())


def _warnings_section(warnings: Any) -> str:
    if not isinstance(warnings, list) or not warnings:
        return ""
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
    return f'<section class="warnings" id="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


_CLASSIFICATION_COLUMNS = (("macro_f1", "macro F1"), ("accuracy", "accuracy"))
_REGRESSION_COLUMNS = (("rmse", "RMSE"), ("mae", "MAE"), ("direction_accuracy", "direction"))
_REGRESSION_LIFTS = (("rmse", "lift RMSE"), ("direction_accuracy", "lift direction"))


def _headline_section(test: Mapping[str, Any]) -> str:
    """The model against the naive baselines: the lift is the model's edge over each."""
    baselines = _mapping(test.get("baselines"))
    lift = _mapping(test.get("lift"))
    if not baselines and not lift:
        return ""
    regression = _is_regression(test)
    columns = _REGRESSION_COLUMNS if regression else _CLASSIFICATION_COLUMNS
    lifts = (_REGRESSION_LIFTS if regression
             else tuple((k, f"lift {label}") for k, label in _CLASSIFICATION_COLUMNS))
    cards: list[tuple[str, str]] = [(label, _auto(key, test.get(key))) for key, label in columns]
    head_key = "rmse" if regression else "macro_f1"
    for name in lift:
        cards.append((f"{'RMSE' if regression else 'macro F1'} lift vs {_label(name)}",
                      _lift(head_key, _mapping(lift[name]).get(head_key))))
    cards += _backtest_cards(_mapping(test.get("backtest")))
    rows = [["model", *(_auto(k, test.get(k)) for k, _ in columns), *("" for _ in lifts)]]
    for name in [*baselines, *(n for n in lift if n not in baselines)]:
        scores, gains = _mapping(baselines.get(name)), _mapping(lift.get(name))
        title = _label(name) + (f" ({scores['class']})" if scores.get("class") is not None else "")
        rows.append([title, *(_auto(k, scores.get(k)) for k, _ in columns),
                     *(_lift(k, gains.get(k)) for k, _ in lifts)])
    table = _grid(["", *(label for _, label in columns), *(label for _, label in lifts)], rows,
                  ' id="baselines"')
    return (
        '<section id="headline"><h2>Against the baselines</h2>'
        f"{_cards(cards)}<h2>Baselines</h2>{table}"
        '<p class="muted">Lift: the model minus the baseline (RMSE: the baseline minus the '
        "model), so positive means the model does better.</p></section>"
    )


def _backtest_cards(backtest: Mapping[str, Any]) -> list[tuple[str, str]]:
    strategies = _mapping(backtest.get("strategies"))
    model, hold = _mapping(strategies.get("model")), _mapping(strategies.get("buy_and_hold"))
    if not model:
        return []
    versus = " vs buy & hold " if hold else ""
    return [
        ("backtest net return" + versus.rstrip(),
         _ret(model.get("net_return")) + (f" vs {_ret(hold.get('net_return'))}" if hold else "")),
        ("backtest Sharpe" + versus.rstrip(),
         _num(model.get("sharpe")) + (f" vs {_num(hold.get('sharpe'))}" if hold else "")),
    ]


_STAT_COLUMNS = (("net_return", "net return"), ("gross_return", "gross return"),
                 ("annual_return", "annual return"), ("sharpe", "Sharpe"),
                 ("sortino", "Sortino"), ("max_drawdown", "max drawdown"),
                 ("hit_rate", "hit rate"), ("turnover", "turnover"), ("trades", "trades"),
                 ("exposure", "exposure"))


def _backtest_section(backtest: Mapping[str, Any]) -> str:
    if not backtest:
        return ""
    strategies = _mapping(backtest.get("strategies"))
    if not strategies:
        note = backtest.get("note") or "No strategy was traded."
        return (f'<section id="backtest"><h2>Backtest</h2>'
                f'<p class="muted">{html.escape(str(note))}</p></section>')
    facts = []
    if backtest.get("bars") is not None:
        facts.append(f"{backtest['bars']} bars")
    symbols = backtest.get("symbols")
    if isinstance(symbols, list) and symbols:
        facts.append(", ".join(map(str, symbols)))
    stats = _grid(
        ["strategy", *(label for _, label in _STAT_COLUMNS)],
        [[_label(name), *(_auto(k, _mapping(strategies[name]).get(k)) for k, _ in _STAT_COLUMNS)]
         for name in _ordered(strategies)],
        ' id="backtest-strategies"',
    )
    return (
        '<section id="backtest"><h2>Backtest (test slice, net of costs)</h2>'
        + (f'<p class="muted">{html.escape(" · ".join(facts))}</p>' if facts else "")
        + stats + _backtest_lift(_mapping(backtest.get("lift")))
        + '<div id="chart-equity" class="chart wide"></div>'
        '<noscript><p class="muted">The equity curve needs JavaScript.</p></noscript>'
        + _backtest_per_symbol(_mapping(backtest.get("per_symbol")))
        + _settings_details(_mapping(backtest.get("settings")), _mapping(backtest.get("bootstrap")))
        + "</section>"
    )


def _backtest_lift(lift: Mapping[str, Any]) -> str:
    if not lift:
        return ""
    rows = []
    for name in _ordered(lift):
        gain = _mapping(lift[name])
        ci = gain.get("ci95")
        interval = (f"{_bp(ci[0])} … {_bp(ci[1])}" if isinstance(ci, list) and len(ci) == 2
                    else "–")
        rows.append([f"vs {_label(name)}", _bp(gain.get("mean_bar_return")), interval,
                     _ret(gain.get("annualised"))])
    return (
        "<h2>Lift of the model</h2>"
        + _grid(["", "mean per bar", "95% interval (per bar)", "annualised"], rows,
                ' id="backtest-lift"')
        + '<p class="muted">The mean per-bar difference of net returns (bp: 0.01%), its 95% '
        "interval from a block bootstrap, and that difference annualised.</p>"
    )


def _backtest_per_symbol(per_symbol: Mapping[str, Any]) -> str:
    if not per_symbol:
        return ""
    rows = []
    for symbol, entry in per_symbol.items():
        strategies = _mapping(_mapping(entry).get("strategies"))
        model, hold = _mapping(strategies.get("model")), _mapping(strategies.get("buy_and_hold"))
        rows.append([str(symbol), _num(_mapping(entry).get("bars")),
                     _ret(model.get("net_return")), _num(model.get("sharpe")),
                     _num(model.get("trades")), _ret(hold.get("net_return")),
                     _num(hold.get("sharpe"))])
    return "<h2>Per symbol</h2>" + _grid(
        ["symbol", "bars", "model net", "model Sharpe", "model trades", "buy & hold net",
         "buy & hold Sharpe"], rows, ' id="backtest-symbols"')


def _settings_details(settings: Mapping[str, Any], bootstrap: Mapping[str, Any]) -> str:
    rows = [(f"{prefix}{k}", _plain(v)) for prefix, part in (("", settings),
                                                              ("bootstrap.", bootstrap))
            for k, v in part.items()]
    if not rows:
        return ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
                   for k, v in rows)
    return (f"<details><summary>Backtest settings</summary><table><tbody>{body}</tbody>"
            "</table></details>")


def _equity(backtest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The equity curves for the chart: the time axis and each strategy's series."""
    equity = _mapping(backtest.get("equity"))
    times = equity.get("time")
    if not isinstance(times, list) or not times:
        return None
    series = {k: v for k, v in equity.items() if k != "time" and isinstance(v, list)}
    return {"time": times, **series} if series else None


def _fold_scores(metrics: Mapping[str, Any], regression: bool) -> list[str]:
    strategies = _mapping(_mapping(metrics.get("backtest")).get("strategies"))
    model = _mapping(strategies.get("model"))
    keys = ("rmse", "direction_accuracy") if regression else ("macro_f1", "accuracy")
    return [*(_auto(k, metrics.get(k)) for k in keys), _ret(model.get("net_return")),
            _num(model.get("sharpe"))]


def _walk_forward_section(wf: Mapping[str, Any]) -> str:
    folds = [f for f in wf.get("folds") or [] if isinstance(f, dict)]
    summary = _mapping(wf.get("summary"))
    if not folds and not summary:
        return ""
    regression = any(_is_regression(_mapping(f.get("metrics"))) for f in folds)
    rows = []
    for fold in folds:
        counts = _mapping(fold.get("rows"))
        rows.append([
            str(fold.get("fold", "")), _span(fold.get("train")), _span(fold.get("test")),
            *(_num(counts.get(k)) for k in ("train", "validation", "test", "purged",
                                            "embargoed")),
            _num(fold.get("best_epoch")), _num(fold.get("epochs_trained")),
            *_fold_scores(_mapping(fold.get("metrics")), regression),
        ])
    scores = (["RMSE", "direction"] if regression else ["macro F1", "accuracy"])
    table = _grid(["fold", "train", "test", "train rows", "val rows", "test rows", "purged",
                   "embargoed", "best epoch", "epochs", *scores, "net return", "Sharpe"], rows,
                  ' id="walk-forward-folds"') if rows else ""
    means = [[_summary_label(key), _summary_mean(key, _mapping(summary[key]).get("mean")),
              _summary_std(key, _mapping(summary[key]).get("std"))]
             for key in _summary_order(summary)]
    mode = f" ({wf['mode']})" if wf.get("mode") else ""
    return (
        f'<section id="walk-forward"><h2>Walk-forward{html.escape(mode)}: {len(folds)} folds'
        "</h2>" + table
        + ("<h2>Over the folds: mean ± std</h2>"
           + _grid(["metric", "mean", "± std"], means, ' id="walk-forward-summary"')
           if means else "")
        + "</section>"
    )


# The fold summary (walk_forward.summary: mean and std of each headline number over the folds):
# the model's scores and its backtest first, then the baselines, the lifts and the rest.
_SUMMARY_FIRST = ("macro_f1", "accuracy", "rmse", "direction_accuracy", "backtest_net_return",
                  "backtest_sharpe", "backtest_lift_vs_buy_and_hold")


def _summary_order(summary: Mapping[str, Any]) -> list[str]:
    first = [k for k in _SUMMARY_FIRST if k in summary]
    lifts = [k for k in summary if k.startswith("lift_") and k not in first]
    return first + lifts + [k for k in summary if k not in first and k not in lifts]


def _summary_kind(key: str) -> str:
    if "return" in key or "drawdown" in key or key.startswith("backtest_lift_"):
        return "return"
    if _RATIO.search(key):
        return "lift" if key.startswith("lift_") else "ratio"
    return "number"


def _summary_label(key: str) -> str:
    return key.replace("_", " ").replace("buy and hold", "buy & hold")


def _summary_mean(key: str, value: Any) -> str:
    kind = _summary_kind(key)
    if kind == "return":
        return _ret(value)
    if kind == "lift":
        return _lift(key, value)
    return _pct(value) if kind == "ratio" else _num(value)


def _summary_std(key: str, value: Any) -> str:
    v = _number(value)
    kind = _summary_kind(key)
    if v is None:
        return "–"
    if kind == "return":
        return f"± {v * 100:.2f}%"
    if kind == "lift":
        return f"± {v * 100:.1f} pp"
    return f"± {v * 100:.1f}%" if kind == "ratio" else f"± {_num(v)}"


_SPLITS = ("train", "validation", "test")
_SPLIT_COUNTS = ("kept", "purged", "embargoed")


def _splits_section(splits: Mapping[str, Any]) -> str:
    if not splits:
        return ""
    facts = []
    bounds = _mapping(splits.get("boundaries"))
    for key in ("validation_start", "test_start", "test_end"):
        if key in bounds:
            facts.append(f"{key.replace('_', ' ')}: {bounds[key] or '–'}")
    if splits.get("embargo") is not None:
        facts.append(f"embargo: {splits['embargo']} bars")
    per_symbol = _mapping(splits.get("per_symbol"))
    rows = []
    for symbol, entry in per_symbol.items():
        parts = _mapping(entry)
        rows.append([str(symbol), *(_num(_mapping(parts.get(split)).get(count))
                                    for split in _SPLITS for count in _SPLIT_COUNTS),
                     _num(parts.get("unconfirmed"))])
    table = _grid(["symbol", *(f"{split} {count}" for split in _SPLITS
                               for count in _SPLIT_COUNTS), "unconfirmed"], rows,
                  ' id="splits-rows"') if rows else ""
    labels = _mapping(splits.get("label_distribution"))
    classes: list[str] = []
    for split in labels.values():
        classes += [str(c) for c in _mapping(split) if str(c) not in classes]
    dist = _grid(["split", *classes],
                 [[str(name), *(_num(_mapping(counts).get(c)) for c in classes)]
                  for name, counts in labels.items()], ' id="label-distribution"'
                 ) if labels else ""
    return (
        '<section id="splits"><h2>Splits</h2>'
        + (f'<p class="muted">{html.escape(" · ".join(facts))}</p>' if facts else "")
        + table
        + ('<p class="muted">Purged: rows dropped because their label depends on bars of '
           "the next split; embargoed: rows dropped right after a boundary, so that no split "
           "learns from its neighbour. Unconfirmed: the last rows, whose label is not known yet."
           "</p>"
           if rows else "")
        + (f"<h2>Labels per split</h2>{dist}" if dist else "")
        + "</section>"
    )


def _summary(metadata: Mapping[str, Any], metrics: Mapping[str, Any], test: Mapping[str, Any]
             ) -> str:
    cards: list[tuple[str, str]] = []
    for key, label in (("macro_f1", "test F1 (macro)"), ("accuracy", "test accuracy"),
                       ("weighted_f1", "test F1 (weighted)"),
                       ("direction_accuracy", "direction accuracy"),
                       ("rmse", "test RMSE"), ("loss", "test loss")):
        value = test.get(key)
        if key == "weighted_f1" and value is None:
            value = test.get("f1_score")  # metrics.json of models saved before the rename
        if isinstance(value, int | float):
            cards.append((label, _pct(value) if "accuracy" in key or "f1" in key
                          else _num(value)))
    if isinstance(test.get("samples"), int):
        cards.append(("test samples", str(test["samples"])))
    for key, label in (("epochs_trained", "epochs trained"), ("best_epoch", "best epoch")):
        if metrics.get(key) is not None:
            cards.append((label, str(metrics[key])))
    if metrics.get("stopped_early") is not None:
        cards.append(("stopped early", "yes" if metrics["stopped_early"] else "no"))
    if isinstance(metrics.get("training_seconds"), int | float):
        cards.append(("training time", f"{metrics['training_seconds']:.1f} s"))
    if metadata.get("seed") is not None:
        cards.append(("seed", str(metadata["seed"])))
    body = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for label, value in cards
    )
    return f'<section><h2>Summary</h2><div class="cards">{body}</div></section>'


def _history_table(history: Sequence[Mapping[str, Any]]) -> str:
    if not history:
        return '<p class="muted">No epochs recorded.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="num">{html.escape(str(h.get("epoch")))}</td>'
        f'<td class="num">{_num(h.get("train_loss"))}</td>'
        f'<td class="num">{_num(h.get("val_loss"))}</td>'
        f'<td class="num">{_pct(h.get("train_accuracy"))}</td>'
        f'<td class="num">{_pct(h.get("val_accuracy"))}</td>'
        f'<td class="num">{_num(h.get("learning_rate"))}</td>'
        "</tr>"
        for h in history
    )
    return (
        "<details><summary>History per epoch</summary><table><thead><tr><th>epoch</th>"
        "<th>train loss</th><th>val loss</th><th>train acc</th><th>val acc</th>"
        f"<th>learning rate</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _test_section(test: Mapping[str, Any], confusion: dict[str, Any] | None) -> str:
    if not test:
        return '<section><h2>Test metrics</h2><p class="muted">No test metrics.</p></section>'
    scalars = "".join(
        f"<tr><th>{html.escape(str(k).replace('_', ' '))}</th>"
        f'<td class="num">{_pct(v) if _RATIO.search(str(k)) else _num(v)}</td></tr>'
        for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)
    )
    per_class = test.get("per_class")
    classes = ""
    if isinstance(per_class, dict) and per_class:
        rows = "".join(
            f"<tr><th>{html.escape(str(name))}</th>"
            f'<td class="num">{_pct(m.get("precision"))}</td>'
            f'<td class="num">{_pct(m.get("recall"))}</td>'
            f'<td class="num">{_pct(m.get("f1", m.get("f1_score")))}</td>'
            f'<td class="num">{html.escape(str(m.get("support", "")))}</td></tr>'
            for name, m in per_class.items() if isinstance(m, dict)
        )
        classes = (
            "<h2>Per class</h2><table><thead><tr><th>class</th><th>precision</th>"
            f"<th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>{rows}</tbody>"
            "</table>"
        )
    heatmap = ""
    if confusion is not None:
        heatmap = (
            '<div><h2>Confusion matrix</h2><div id="confusion" class="confusion">'
            f"{_confusion_table(confusion)}</div>"
            '<p class="muted">Rows: true class; columns: predicted. Shade: share of the row.</p>'
            "</div>"
        )
    return (
        f'<section><div class="split">{heatmap}<div><h2>Test metrics</h2>'
        f"<table><tbody>{scalars}</tbody></table>{classes}</div></div></section>"
    )


def _confusion_table(confusion: Mapping[str, Any]) -> str:
    """The matrix as a table: what shows before (or without) the script's heatmap."""
    labels = confusion["labels"]
    head = "".join(f"<th>{html.escape(str(label))}</th>" for label in labels)
    rows = "".join(
        f"<tr><th>{html.escape(str(labels[i]))}</th>"
        + "".join(f'<td class="num">{html.escape(str(v))}</td>' for v in row)
        + "</tr>"
        for i, row in enumerate(confusion["matrix"])
    )
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _manifest_section(metadata: Mapping[str, Any]) -> str:
    e = html.escape
    keys = ("strategy", "strategy_hash", "timeframe", "symbols", "timeframes", "seed", "device",
            "data_fingerprint", "weights_sha256", "created_at", "format", "format_version")
    rows = "".join(
        f"<tr><th>{e(k)}</th><td class=\"hash\"><code>{e(_plain(metadata[k]))}</code></td></tr>"
        for k in keys if k in metadata
    )
    model = metadata.get("model")
    if isinstance(model, dict):
        rows += "".join(
            f"<tr><th>model.{e(str(k))}</th><td><code>{e(_plain(v))}</code></td></tr>"
            for k, v in model.items()
        )
    files = metadata.get("files")
    file_rows = ""
    if isinstance(files, dict):
        file_rows = "".join(
            f"<tr><td><code>{e(str(name))}</code></td>"
            f'<td class="num">{e(str(entry.get("bytes", "")))}</td>'
            f'<td class="hash"><code>{e(str(entry.get("sha256", "")))}</code></td></tr>'
            for name, entry in files.items() if isinstance(entry, dict)
        )
    versions = metadata.get("versions")
    version_text = ""
    if isinstance(versions, dict):
        version_text = ", ".join(f"{k} {v}" for k, v in versions.items())
    pretty = json.dumps(metadata, indent=2, sort_keys=True, ensure_ascii=False)
    return (
        '<section id="manifest"><h2>Manifest</h2>'
        f"<table><tbody>{rows}</tbody></table>"
        "<h2>Files (SHA-256 as recorded in metadata.json)</h2>"
        "<table><thead><tr><th>file</th><th>bytes</th><th>sha256</th></tr></thead>"
        f"<tbody>{file_rows}</tbody></table>"
        + (f'<p class="muted">Software: {e(version_text)}</p>' if version_text else "")
        + f"<details><summary>metadata.json</summary><pre>{e(pretty)}</pre></details>"
        "</section>"
    )


def _confusion(test: Mapping[str, Any]) -> dict[str, Any] | None:
    matrix = test.get("confusion_matrix")
    if not isinstance(matrix, list) or not matrix:
        return None
    if not all(isinstance(row, list) and len(row) == len(matrix) for row in matrix):
        return None
    names = test.get("class_names")
    labels = ([str(n) for n in names] if isinstance(names, list) and len(names) == len(matrix)
              else [str(i) for i in range(len(matrix))])
    return {"matrix": matrix, "labels": labels}


# --- formatting -------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN; JS would choke)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _json_for_html(data: Any) -> str:
    """JSON that cannot end its <script> element early nor be read as markup."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _plain(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}"


def _pct(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value * 100:.1f}%"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ret(value: Any) -> str:
    """A return: signed percent, two decimals."""
    v = _number(value)
    return "–" if v is None else f"{v * 100:+.2f}%"


def _bp(value: Any) -> str:
    """A per-bar return in basis points."""
    v = _number(value)
    return "–" if v is None else f"{v * 1e4:+.2f} bp"


def _lift(key: str, value: Any) -> str:
    """A lift: percentage points for ratios, a signed number for errors (RMSE)."""
    v = _number(value)
    if v is None:
        return "–"
    return f"{v * 100:+.1f} pp" if _RATIO.search(key) else f"{v:+.4g}"


def _auto(key: str, value: Any) -> str:
    """A metric by its name: ratios in percent, returns and drawdowns signed, else a number."""
    if _RATIO.search(key) or key in ("exposure", "hit_rate"):
        return _pct(value)
    if "return" in key or "drawdown" in key:
        return _ret(value)
    return _num(value)


def _span(value: Any) -> str:
    """An [ISO start, ISO end] pair as two dates."""
    if isinstance(value, list) and len(value) == 2:
        return " – ".join(str(v)[:10] if v is not None else "…" for v in value)
    return "–"
