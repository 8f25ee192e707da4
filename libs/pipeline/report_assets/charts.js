/* trainbus charts: small hand-written SVG builders, no dependencies.
 *
 * One file, two users: the live dashboard (served by the backend at /static/charts.js) and the
 * self-contained report.html written beside every saved model (this file is inlined there).
 * Everything is built with the DOM (createElementNS), colours are SVG attributes, so a chart
 * looks the same with or without the page's stylesheet and under a strict CSP.
 *
 *   TrainbusCharts.lineChart({title, series: [{label, color, values: [[x, y], ...]}], ...})
 *   TrainbusCharts.confusionMatrix({matrix: [[...]], labels: ["BUY", ...]})
 *   TrainbusCharts.historyCharts(history, {totalEpochs})   -> {loss, accuracy, learningRate}
 *   TrainbusCharts.equityChart({time: [iso, ...], model: [...], buy_and_hold: [...], ...})
 */
(function (root) {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var COLORS = { train: "#2563eb", validation: "#ea580c", rate: "#7c3aed" };
  // The backtest's strategies: the model stands out, buy-and-hold is the dashed benchmark.
  var STRATEGY_COLORS = { model: "#2563eb", buy_and_hold: "#111827", majority: "#ea580c",
                          last_confirmed: "#7c3aed", zero: "#ea580c", train_mean: "#0d9488" };
  var SPARE_COLORS = ["#0d9488", "#db2777", "#ca8a04", "#64748b"];
  var INK = "#1f2937";
  var MUTED = "#6b7280";
  var GRID = "#e5e7eb";

  function node(tag, attrs, parent) {
    var el = document.createElementNS(NS, tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== undefined && attrs[k] !== null) el.setAttribute(k, String(attrs[k]));
      });
    }
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, attrs) {
    var t = node("text", Object.assign({ x: x, y: y, fill: INK, "font-size": 11 }, attrs || {}),
                 parent);
    t.textContent = content;
    return t;
  }

  function finite(v) {
    return typeof v === "number" && isFinite(v);
  }

  /* Round numbers for axis ticks (1, 2, 5 x 10^n steps). */
  function niceTicks(lo, hi, count) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var raw = span / Math.max(1, count);
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var step;
    if (norm < 1.5) step = mag;
    else if (norm < 3) step = 2 * mag;
    else if (norm < 7) step = 5 * mag;
    else step = 10 * mag;
    var ticks = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  function fmtNumber(v) {
    if (!finite(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return String(Number(v.toPrecision(3)));
  }

  /* Tick labels with as many decimals as the step needs (0.0005 0.0010 0.0015, not 5e-4 0.001). */
  function stepFormat(step) {
    var decimals = step > 0 ? Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) : 2;
    if (decimals > 5) return function (v) { return v === 0 ? "0" : v.toExponential(1); };
    return function (v) {
      if (Math.abs(v) >= 1e5) return v.toExponential(1);
      return v.toFixed(decimals);
    };
  }

  function fmtPercent(v) {
    return finite(v) ? (v * 100).toFixed(v >= 0.9995 || v === 0 ? 0 : 1) + "%" : "–";
  }

  /* A line chart. opts: title, series [{label, color, values: [[x, y|null], ...], dashed}],
   * xMax (planned last x, e.g. total epochs: the axis shows the whole run while it grows),
   * xLabel, xFormat (function: tick labels and tips, e.g. a bar index -> its date), yFormat
   * (function), yMin/yMax (fixed bounds), width, height. */
  function lineChart(opts) {
    var W = opts.width || 460;
    var H = opts.height || 250;
    var m = { l: 54, r: 14, t: 34, b: 38 };
    var series = (opts.series || []).map(function (s) {
      var values = (s.values || []).filter(function (p) { return finite(p[0]); })
        .slice().sort(function (a, b) { return a[0] - b[0]; });
      return Object.assign({}, s, { values: values });
    });
    var fmtY = opts.yFormat || null;  // default: decimals fitted to the tick step, below
    var fmtX = opts.xFormat || String;
    var svg = node("svg", {
      viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
      "class": "tb-chart", "aria-label": opts.title || "chart",
      "font-family": "system-ui, -apple-system, 'Segoe UI', sans-serif",
      preserveAspectRatio: "xMidYMid meet"
    });
    node("rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" }, svg);
    if (opts.title) text(svg, m.l, 18, opts.title, { "font-size": 13, "font-weight": 600 });

    var xs = [], ys = [], total = 0;
    series.forEach(function (s) {
      s.values.forEach(function (p) {
        xs.push(p[0]);
        if (finite(p[1])) { ys.push(p[1]); total += 1; }
      });
    });
    svg.setAttribute("data-points", String(total));
    svg.setAttribute("data-series", String(series.length));
    if (!ys.length) {
      text(svg, W / 2, H / 2, opts.empty || "no data yet",
           { "text-anchor": "middle", fill: MUTED, "font-size": 12 });
      return svg;
    }
    var x0 = Math.min.apply(null, xs.concat([opts.xMin === undefined ? Infinity : opts.xMin]));
    var x1 = Math.max.apply(null, xs.concat([finite(opts.xMax) ? opts.xMax : -Infinity]));
    if (x1 <= x0) x1 = x0 + 1;
    var y0 = finite(opts.yMin) ? opts.yMin : Math.min.apply(null, ys);
    var y1 = finite(opts.yMax) ? opts.yMax : Math.max.apply(null, ys);
    if (y1 <= y0) {
      var pad0 = Math.abs(y0) * 0.5 || 1;
      y0 -= pad0; y1 += pad0;
    } else if (!finite(opts.yMin) || !finite(opts.yMax)) {
      var pad = (y1 - y0) * 0.08;
      if (!finite(opts.yMin)) y0 -= pad;
      if (!finite(opts.yMax)) y1 += pad;
    }
    var pw = W - m.l - m.r, ph = H - m.t - m.b;
    function sx(x) { return m.l + (x - x0) / (x1 - x0) * pw; }
    function sy(y) { return m.t + (1 - (y - y0) / (y1 - y0)) * ph; }

    var grid = node("g", { "class": "tb-grid" }, svg);
    var yticks = niceTicks(y0, y1, 4);
    if (!fmtY) fmtY = stepFormat(yticks.length > 1 ? yticks[1] - yticks[0] : Math.abs(y1 - y0));
    yticks.forEach(function (v) {
      var y = sy(v);
      node("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, stroke: GRID, "stroke-width": 1 }, grid);
      text(grid, m.l - 6, y + 4, fmtY(v), { "text-anchor": "end", fill: MUTED, "font-size": 10 });
    });
    var xticks = niceTicks(x0, x1, Math.min(8, Math.max(1, Math.round(x1 - x0))))
      .filter(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; });
    xticks.forEach(function (v) {
      var x = sx(v);
      node("line", { x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 4, stroke: MUTED }, grid);
      text(grid, x, m.t + ph + 16, fmtX(v), { "text-anchor": "middle", fill: MUTED,
                                              "font-size": 10 });
    });
    node("line", { x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph, stroke: MUTED }, grid);
    node("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph, stroke: MUTED }, grid);
    if (opts.xLabel) {
      text(svg, m.l + pw / 2, H - 6, opts.xLabel, { "text-anchor": "middle", fill: MUTED,
                                                   "font-size": 10 });
    }

    var legendX = W - m.r;
    series.slice().reverse().forEach(function (s) {
      var label = text(svg, legendX, 18, s.label, { "text-anchor": "end", "font-size": 11 });
      var width = (s.label || "").length * 6.2;
      node("line", { x1: legendX - width - 22, x2: legendX - width - 6, y1: 14, y2: 14,
                     stroke: s.color || INK, "stroke-width": 2.5,
                     "stroke-dasharray": s.dashed ? "5 3" : null }, svg);
      legendX -= width + 34;
      return label;
    });

    series.forEach(function (s) {
      var g = node("g", { "class": "tb-series", "data-label": s.label }, svg);
      var d = "", pen = false, shown = 0;
      s.values.forEach(function (p) {
        if (!finite(p[1])) { pen = false; return; }
        d += (pen ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1);
        pen = true;
        shown += 1;
      });
      g.setAttribute("data-points", String(shown));
      if (d) {
        node("path", { d: d, fill: "none", stroke: s.color || INK, "stroke-width": 2,
                       "stroke-linejoin": "round", "stroke-linecap": "round",
                       "stroke-dasharray": s.dashed ? "5 3" : null }, g);
      }
      var pts = s.values.filter(function (p) { return finite(p[1]); });
      var marks = pts.length <= 40 ? pts : pts.slice(-1);
      marks.forEach(function (p) {
        var c = node("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.8,
                                 fill: s.color || INK }, g);
        var tip = node("title", null, c);
        tip.textContent = (opts.xLabel || "x") + " " + fmtX(p[0]) + " · " + s.label + " " +
          fmtY(p[1]);
      });
    });
    return svg;
  }

  function mix(a, b, t) {
    function ch(hex, i) { return parseInt(hex.substr(1 + 2 * i, 2), 16); }
    var out = "#";
    for (var i = 0; i < 3; i++) {
      var v = Math.round(ch(a, i) + (ch(b, i) - ch(a, i)) * t);
      out += (v < 16 ? "0" : "") + v.toString(16);
    }
    return out;
  }

  /* A confusion matrix heatmap: rows are the true class, columns the predicted one; each
   * cell is shaded by its share of the row (recall), and shows the count and that share. */
  function confusionMatrix(opts) {
    var matrix = opts.matrix || [];
    var n = matrix.length;
    var labels = opts.labels && opts.labels.length === n ? opts.labels
      : matrix.map(function (_, i) { return String(i); });
    var cell = opts.cell || 66;
    var m = { l: 86, t: 58, r: 12, b: 12 };
    var W = m.l + n * cell + m.r, H = m.t + n * cell + m.b;
    var svg = node("svg", {
      viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
      "class": "tb-confusion", "aria-label": opts.title || "confusion matrix",
      "data-cells": String(n * n),
      "font-family": "system-ui, -apple-system, 'Segoe UI', sans-serif"
    });
    node("rect", { x: 0, y: 0, width: W, height: H, fill: "#ffffff" }, svg);
    if (!n) {
      text(svg, W / 2, H / 2, "no test metrics", { "text-anchor": "middle", fill: MUTED });
      return svg;
    }
    text(svg, m.l + n * cell / 2, 16, "predicted", { "text-anchor": "middle", fill: MUTED,
                                                    "font-size": 11 });
    var rowLabel = text(svg, 14, m.t + n * cell / 2, "true", {
      "text-anchor": "middle", fill: MUTED, "font-size": 11,
      transform: "rotate(-90 14 " + (m.t + n * cell / 2) + ")"
    });
    rowLabel.setAttribute("class", "tb-axis");
    labels.forEach(function (label, j) {
      text(svg, m.l + j * cell + cell / 2, m.t - 10, label, { "text-anchor": "middle",
                                                             "font-weight": 600 });
      text(svg, m.l - 8, m.t + j * cell + cell / 2 + 4, label, { "text-anchor": "end",
                                                                 "font-weight": 600 });
    });
    matrix.forEach(function (row, i) {
      var sum = row.reduce(function (a, b) { return a + (finite(b) ? b : 0); }, 0);
      row.forEach(function (v, j) {
        var share = sum > 0 ? v / sum : 0;
        var x = m.l + j * cell, y = m.t + i * cell;
        var rect = node("rect", {
          x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, rx: 3,
          fill: mix("#f1f5f9", "#1e40af", share), "class": "tb-cell",
          stroke: i === j ? "#0f172a" : "none", "stroke-width": i === j ? 1.5 : 0,
          "data-count": v
        }, svg);
        var tip = node("title", null, rect);
        tip.textContent = "true " + labels[i] + ", predicted " + labels[j] + ": " + v +
          " (" + fmtPercent(share) + " of " + labels[i] + ")";
        var ink = share > 0.5 ? "#ffffff" : INK;
        text(svg, x + cell / 2, y + cell / 2 - 1, String(v), {
          "text-anchor": "middle", "font-size": 14, "font-weight": 600, fill: ink
        });
        text(svg, x + cell / 2, y + cell / 2 + 15, fmtPercent(share), {
          "text-anchor": "middle", "font-size": 10, fill: ink
        });
      });
    });
    return svg;
  }

  /* The three charts of a training history (JobState.history or metrics.json "history"). */
  function historyCharts(history, opts) {
    opts = opts || {};
    var rows = history || [];
    function pick(key) {
      return rows.map(function (h) { return [h.epoch, finite(h[key]) ? h[key] : null]; });
    }
    // The x axis shows the whole planned run while it is short next to what is done, else a
    // window a bit past the last epoch (400 planned epochs would squash the first ten).
    var last = rows.length ? rows[rows.length - 1].epoch : 0;
    var xMax = finite(opts.totalEpochs)
      ? Math.min(opts.totalEpochs, Math.max(10, Math.ceil(last * 1.3))) : undefined;
    var common = { xMax: xMax, xMin: 1, xLabel: "epoch", width: opts.width,
                   height: opts.height };
    return {
      loss: lineChart(Object.assign({}, common, {
        title: "Loss",
        series: [
          { label: "train", color: COLORS.train, values: pick("train_loss") },
          { label: "validation", color: COLORS.validation, values: pick("val_loss") }
        ]
      })),
      accuracy: lineChart(Object.assign({}, common, {
        title: "Accuracy",
        yFormat: fmtPercent,
        series: [
          { label: "train", color: COLORS.train, values: pick("train_accuracy") },
          { label: "validation", color: COLORS.validation, values: pick("val_accuracy") }
        ]
      })),
      learningRate: lineChart(Object.assign({}, common, {
        title: "Learning rate",
        series: [{ label: "learning rate", color: COLORS.rate, values: pick("learning_rate") }]
      }))
    };
  }

  function strategyLabel(name) {
    return name === "buy_and_hold" ? "buy & hold" : String(name).replace(/_/g, " ");
  }

  /* The backtest's net equity curves (metrics.json test.backtest.equity): one series per
   * strategy, each divided by its first value (start = 1: the curves compare whatever the
   * capital), x the bar's position (bars are evenly spaced in trading time, not in calendar
   * time), labelled with the bar's date. Model first, buy-and-hold dashed. */
  function equityChart(equity, opts) {
    opts = opts || {};
    var e = equity || {};
    var times = Array.isArray(e.time) ? e.time : [];
    var names = Object.keys(e).filter(function (k) { return k !== "time" && Array.isArray(e[k]); });
    names.sort(function (a, b) {
      function rank(n) { return n === "model" ? 0 : n === "buy_and_hold" ? 1 : 2; }
      return rank(a) - rank(b);  // stable: the others keep their order
    });
    var spare = 0;
    var series = names.map(function (name) {
      var color = STRATEGY_COLORS[name] || SPARE_COLORS[spare++ % SPARE_COLORS.length];
      var start = e[name].filter(function (v) { return finite(v) && v !== 0; })[0];
      var scale = finite(start) ? start : 1;
      return {
        label: strategyLabel(name), color: color, dashed: name === "buy_and_hold",
        values: e[name].map(function (v, i) { return [i, finite(v) ? v / scale : null]; })
      };
    });
    // Dates, or day and time where the curve spans less than ten days.
    var spanMs = Date.parse(times[times.length - 1]) - Date.parse(times[0]);
    var short = finite(spanMs) && spanMs < 10 * 86400 * 1000;
    function date(i) {
      var t = times[Math.round(i)];
      if (typeof t !== "string") return String(i);
      return short ? t.slice(5, 16).replace("T", " ") : t.slice(0, 10);
    }
    return lineChart({
      title: opts.title || "Net equity (start = 1)", series: series, xMin: 0,
      xFormat: date, xLabel: "date", width: opts.width || 920, height: opts.height || 280,
      empty: "no backtest bars"
    });
  }

  root.TrainbusCharts = {
    lineChart: lineChart,
    equityChart: equityChart,
    strategyLabel: strategyLabel,
    confusionMatrix: confusionMatrix,
    historyCharts: historyCharts,
    fmtNumber: fmtNumber,
    fmtPercent: fmtPercent,
    colors: COLORS
  };
})(typeof window !== "undefined" ? window : this);
