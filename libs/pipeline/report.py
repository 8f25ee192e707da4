"""report.html: one saved model as a single self-contained page (no backend, no network).

`render_report(metadata, metrics)` is a pure function of the two JSON documents saved with the
model (metadata.json, the manifest; metrics.json, the history and test metrics): the same
inputs always give the same bytes. The page holds

- a summary (strategy, data, test metrics, training run),
- the loss, accuracy and learning-rate curves per epoch and the confusion-matrix heatmap, drawn
  in the browser by the dashboard's own chart code (`report_assets/charts.js`, inlined, with the
  data embedded as JSON), so a model reads the same here as on the live job page,
- the per-class metrics and the manifest (files and their SHA-256, versions, data window) as
  plain HTML tables, readable even with scripts off.

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
    data = {
        "history": [
            {k: h.get(k) for k in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                   "val_accuracy", "learning_rate", "duration")}
            for h in history
        ],
        # A finished run: the axis spans the epochs trained (an early stop ends the curves).
        "total_epochs": None,
        "confusion": confusion,
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


def _summary(metadata: Mapping[str, Any], metrics: Mapping[str, Any], test: Mapping[str, Any]
             ) -> str:
    cards: list[tuple[str, str]] = []
    for key, label in (("accuracy", "test accuracy"), ("f1_score", "test F1 (weighted)"),
                       ("macro_f1", "test F1 (macro)"), ("direction_accuracy",
                                                         "direction accuracy"),
                       ("rmse", "test RMSE"), ("loss", "test loss")):
        value = test.get(key)
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
            f'<td class="num">{_pct(m.get("f1_score"))}</td>'
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
