/* trainbus dashboard: jobs, one job, workers, models. Plain JavaScript, no build step.
 *
 * Live updates come from server-sent events, never from a polling loop:
 *   - /api/v1/stream            every job's row (the projected state without its history, as
 *                               the jobs table shows it) and the live workers: one stream for
 *                               the whole page, opened once, reconnected with backoff;
 *   - /api/v1/jobs/{id}/events  one job (the job page): a `state` frame, then each new entry of
 *                               the job's log with the job's state after it, then `end`.
 * The server folds the log (attempt fencing included); the page never re-derives a job's state
 * from events: it shows the newest state the server sent (by `last_seq`) and appends the entries
 * to the event log. Updates touch only what changed: one row of the jobs table, new rows of the
 * event log.
 * Streams are read by the browser's EventSource, or by fetch() when a token is kept in this
 * browser (EventSource cannot send an Authorization header).
 */
(function () {
  "use strict";

  var Charts = window.TrainbusCharts;
  var TERMINAL = ["completed", "failed", "cancelled", "rejected"];
  var CANCELLABLE = ["queued", "running"];
  var STATUSES = ["queued", "running", "cancelling", "completed", "failed", "cancelled", "rejected"];
  var PHASES = ["data", "indicators", "fuzzy", "features", "labels", "split", "model", "training",
                "evaluation", "save", "publish"];
  var TOKEN_KEY = "trainbus.token";
  // The kinds of the job log's entries, each the name of its frame on the job's stream
  // (EventSource delivers only the names it listens for; tests/dashboard checks this list
  // against libs/events/schema.py).
  var LOG_KINDS = ["accepted", "rejected", "phase", "progress", "epoch", "checkpoint", "resumed",
                   "completed", "failed", "cancelled", "cancel", "unreadable"];

  // --- small DOM helpers ---------------------------------------------------------------------

  function h(tag, attrs) {
    var el = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      var v = a[k];
      if (v === undefined || v === null || v === false) return;
      if (k === "text") el.textContent = String(v);
      else if (k === "class") el.className = v;
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.keys(v).forEach(function (d) { el.dataset[d] = v[d]; });
      else el.setAttribute(k, v === true ? "" : String(v));
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function pct(v) { return finite(v) ? (v * 100).toFixed(1) + "%" : "–"; }

  function num(v) { return Charts.fmtNumber(v); }

  function duration(seconds) {
    if (!finite(seconds)) return "–";
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }

  /* Short spans with their fractions (phase timings are often well under a second). */
  function span(seconds) {
    if (!finite(seconds)) return "–";
    if (seconds < 0.01) return "<0.01s";
    if (seconds < 1) return seconds.toFixed(2) + "s";
    if (seconds < 10) return seconds.toFixed(1) + "s";
    return duration(seconds);
  }

  function ago(ts) {
    if (!finite(ts) || ts <= 0) return "–";
    var d = Date.now() / 1000 - ts;
    if (d < 5) return "just now";
    return duration(d) + " ago";
  }

  function when(ts) {
    return finite(ts) && ts > 0 ? new Date(ts * 1000).toLocaleString() : "–";
  }

  function clock(ts) {
    if (!finite(ts)) return "";
    var d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." +
      String(d.getMilliseconds()).padStart(3, "0");
  }

  /* An element whose text says how long ago `ts` was, kept fresh by the clock below. */
  function agoEl(ts, tag) {
    return h(tag || "span", { "class": "ago", dataset: { ts: String(ts || 0) }, title: when(ts),
                              text: ago(ts) });
  }

  function badge(status) {
    return h("span", { "class": "badge s-" + status, text: status });
  }

  function shortId(id) { return id.length > 18 ? id.slice(0, 8) + "…" + id.slice(-6) : id; }

  function toast(message, error) {
    var box = document.getElementById("toasts");
    var t = h("div", { "class": "toast" + (error ? " error" : ""), role: error ? "alert" : null,
                       text: message });
    box.appendChild(t);
    setTimeout(function () { t.remove(); }, error ? 8000 : 4000);
  }

  // --- the API -------------------------------------------------------------------------------

  function storedToken() {
    try { return window.localStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function authHeaders(extra) {
    var out = Object.assign({}, extra || {});
    var token = storedToken();
    if (token) out.Authorization = "Bearer " + token;
    return out;
  }

  function problemText(body, res) {
    if (body && typeof body === "object") {
      var text = body.detail || body.title || res.statusText;
      if (Array.isArray(body.errors) && body.errors.length && !body.detail) {
        text = body.errors.map(function (e) { return e.message || JSON.stringify(e); }).join("; ");
      }
      return text + (body.field ? " (field: " + body.field + ")" : "");
    }
    return (body && String(body).slice(0, 300)) || res.status + " " + res.statusText;
  }

  function api(path, opts) {
    opts = opts || {};
    var hdrs = { Accept: "application/json" };
    if (opts.body !== undefined) hdrs["Content-Type"] = "application/json";
    return fetch(path, {
      method: opts.method || "GET", headers: authHeaders(hdrs), cache: "no-store",
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined
    }).then(function (res) {
      var type = res.headers.get("content-type") || "";
      var read = type.indexOf("json") >= 0 ? res.json() : res.text();
      return read.then(function (body) {
        if (res.status === 401) needToken();
        if (!res.ok) {
          var err = new Error(problemText(body, res));
          err.status = res.status;
          throw err;
        }
        return body;
      });
    });
  }

  function needToken() {
    var banner = document.getElementById("banner");
    if (!banner.hidden) return;
    var input = h("input", { type: "password", id: "token-input", placeholder: "API token",
                             "aria-label": "API token", autocomplete: "off" });
    var form = h("form", { id: "token-form" }, "Submitting and cancelling need the API's token " +
                 "(TRAINBUS_API_TOKEN). ", input, h("button", { "class": "small", type: "submit",
                                                                 text: "Use it" }));
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      try { window.localStorage.setItem(TOKEN_KEY, input.value.trim()); } catch (err) { /* */ }
      banner.hidden = true;
      toast("Token saved in this browser: try again.");
    });
    clear(banner);
    append(banner, form);
    banner.hidden = false;
    input.focus();
  }

  function frameOf(event, data) {
    var frame = { event: event, data: data || "", json: null };
    try { frame.json = frame.data ? JSON.parse(frame.data) : null; } catch (e) { frame.json = null; }
    return frame;
  }

  /* Follow a server-sent event stream: handlers.onFrame({event, data, json}) for each frame
   * named in handlers.events, handlers.onOpen() on each connect, handlers.onClose(ended) when a
   * connection ends. It reconnects with backoff unless the server sent `end` (the job is over)
   * or close() ran. Reads are open to everyone, so the browser's own EventSource does it; with a
   * token kept in this browser, fetch() does, since only fetch can send the token as a header. */
  function sse(url, handlers) {
    if (storedToken() || typeof window.EventSource !== "function") return fetchStream(url, handlers);
    return nativeStream(url, handlers);
  }

  function nativeStream(url, handlers) {
    var source = null;
    var closed = false;
    var ended = false;
    var delay = 1000;

    function deliver(name, data) {
      if (closed || ended) return;
      if (name === "end") { ended = true; source.close(); }
      handlers.onFrame(frameOf(name, data));
      if (ended && handlers.onClose) handlers.onClose(true);
    }

    function open() {
      source = new EventSource(url);
      source.onopen = function () { delay = 1000; if (handlers.onOpen) handlers.onOpen(); };
      handlers.events.forEach(function (name) {
        if (name !== "error") source.addEventListener(name, function (e) { deliver(name, e.data); });
      });
      source.addEventListener("error", function (e) {
        // A frame named `error` (NATS failed) carries data; a failed connection does not.
        if (typeof e.data === "string") { deliver("error", e.data); return; }
        if (closed || ended) return;
        if (handlers.onClose) handlers.onClose(false);
        // CONNECTING: the browser retries by itself. CLOSED: it gave up (an HTTP error such as
        // a 503 while NATS is down), so retry here, with backoff.
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(function () { if (!closed) open(); }, delay);
          delay = Math.min(delay * 2, 15000);
        }
      });
    }

    open();
    return { close: function () { closed = true; if (source) source.close(); } };
  }

  function fetchStream(url, handlers) {
    var controller = new AbortController();
    var closed = false;
    var delay = 1000;
    var wanted = new Set(handlers.events);

    function dispatch(block) {
      var event = "message";
      var data = [];
      block.split("\n").forEach(function (line) {
        if (!line || line.charAt(0) === ":") return;
        var i = line.indexOf(":");
        var key = i < 0 ? line : line.slice(0, i);
        var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (key === "event") event = value;
        else if (key === "data") data.push(value);
      });
      if (!data.length || !wanted.has(event)) return null;
      var frame = frameOf(event, data.join("\n"));
      handlers.onFrame(frame);
      return frame;
    }

    function run() {
      var ended = false;
      fetch(url, {
        headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store",
        signal: controller.signal
      }).then(function (res) {
        if (res.status === 401) needToken();
        if (!res.ok || !res.body) throw new Error("stream " + url + ": " + res.status);
        delay = 1000;
        if (handlers.onOpen) handlers.onOpen();
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done || closed) return;
            // Lines end in CRLF, LF or CR; a CR at the very end may be half of a CRLF.
            buffer = (buffer + decoder.decode(chunk.value, { stream: true }))
              .replace(/\r\n/g, "\n").replace(/\r(?!$)/g, "\n");
            var cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              var frame = dispatch(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
              if (frame && frame.event === "end") { ended = true; controller.abort(); return; }
            }
            return pump();
          });
        }
        return pump();
      }).catch(function () {
        /* network error or aborted: handled below */
      }).then(function () {
        if (closed) return;
        if (handlers.onClose) handlers.onClose(ended);
        if (ended) return;
        setTimeout(function () { if (!closed) run(); }, delay);
        delay = Math.min(delay * 2, 15000);
      });
    }

    run();
    return { close: function () { closed = true; controller.abort(); } };
  }

  // --- the store: what the live feed says ---------------------------------------------------

  var store = {
    jobs: new Map(),   // job_id -> row (JobRow: the projected state without its history)
    counts: {},        // status -> how many of store.jobs have it
    total: 0,
    workers: [],
    live: false
  };
  var subscribers = new Set();

  function notify(kind, payload) {
    subscribers.forEach(function (fn) {
      try { fn(kind, payload); } catch (e) { window.setTimeout(function () { throw e; }); }
    });
    updateNav();
  }

  function countStatus(status, delta) { store.counts[status] = (store.counts[status] || 0) + delta; }

  /* Keep the newer of two rows of a job (a change can be both in the snapshot and a frame). */
  function putRow(row) {
    var old = store.jobs.get(row.job_id);
    if (old && old.last_seq > row.last_seq) return null;
    store.jobs.set(row.job_id, row);
    if (old) countStatus(old.status, -1); else store.total += 1;
    countStatus(row.status, 1);
    return old || null;
  }

  function startLive() {
    var el = document.getElementById("live");
    function show(state, text) { el.dataset.state = state; el.textContent = text; }
    sse("/api/v1/stream", {
      events: ["snapshot", "job", "workers", "error", "shutdown"],
      onOpen: function () { show("connecting", "connecting…"); },
      onClose: function () { store.live = false; show("down", "reconnecting…"); },
      onFrame: function (frame) {
        var body = frame.json;
        if (frame.event === "snapshot" && body) {
          store.jobs = new Map();
          store.counts = {};
          body.jobs.forEach(function (row) { store.jobs.set(row.job_id, row); countStatus(row.status, 1); });
          store.total = body.total;
          store.workers = body.workers || [];
          store.live = true;
          show("live", "live");
          notify("snapshot");
        } else if (frame.event === "job" && body) {
          var old = putRow(body);
          if (store.jobs.get(body.job_id) === body) notify("job", { row: body, old: old });
        } else if (frame.event === "workers" && body) {
          store.workers = body;
          notify("workers");
        } else if (frame.event === "error") {
          show("down", "NATS unavailable");
        } else if (frame.event === "shutdown") {
          show("down", "backend stopping");
        }
      }
    });
  }

  function updateNav() {
    var c = store.counts;
    var running = (c.queued || 0) + (c.running || 0) + (c.cancelling || 0);
    var pill = document.getElementById("nav-running");
    pill.hidden = running === 0;
    pill.textContent = String(running);
    pill.title = running + " queued or running";
    document.getElementById("nav-workers").textContent = String(store.workers.length);
  }

  // --- shared pieces of the views -----------------------------------------------------------

  /* A progress bar and its caption, made once and updated in place by setProgress (a bar that
   * is replaced on every frame restarts its width transition and flickers). */
  function progressView(extraClass) {
    var bar = h("div", { "class": "bar" });
    var box = h("div", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, bar);
    return { box: box, bar: bar, text: h("div", { "class": "progress-text" }),
             extra: extraClass ? " " + extraClass : "" };
  }

  function setProgress(p, job) {
    var pctDone = finite(job.percent) ? job.percent : (job.status === "completed" ? 100 : 0);
    p.bar.style.width = Math.max(0, Math.min(100, pctDone)).toFixed(1) + "%";
    p.box.className = "progress" + p.extra + (job.status === "completed" ? " done" : "") +
      (["failed", "cancelled", "rejected"].indexOf(job.status) >= 0 ? " stopped" : "");
    p.box.setAttribute("aria-valuenow", pctDone.toFixed(0));
    var parts = [];
    if (job.status === "running" && job.phase === "walk_forward" && job.fold) {
      parts.push("walk-forward fold " + job.fold + "/" + job.folds);
    }
    if (job.total_epochs) parts.push("epoch " + (job.epoch || 0) + "/" + job.total_epochs);
    if (job.status === "running" && finite(job.eta_seconds)) parts.push("ETA " + duration(job.eta_seconds));
    if (job.status === "running" && job.phase && job.phase !== "training") parts.push(job.phase);
    if (!parts.length) {
      parts.push(job.status === "queued" ? "waiting for a trainer"
        : job.status === "running" ? (job.phase || "starting") : pctDone.toFixed(0) + "%");
    }
    p.text.textContent = parts.join(" · ");
  }

  function confirmCancel(job) {
    var dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent =
      "Cancel job " + job.job_id + " (" + (job.strategy || "inline strategy") + ", " +
      job.status + ")? A running job stops at the next batch and keeps no model.";
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function onClose() {
        dialog.removeEventListener("close", onClose);
        resolve(dialog.returnValue === "yes");
      });
      dialog.returnValue = "";
      dialog.showModal();
      document.getElementById("confirm-no").focus();
    });
  }

  function cancelJob(job, button) {
    return confirmCancel(job).then(function (yes) {
      if (!yes) return null;
      if (button) button.disabled = true;
      return api("/api/v1/jobs/" + encodeURIComponent(job.job_id) + "/cancel", {
        method: "POST", body: { reason: "cancelled from the dashboard", requested_by: "dashboard" }
      }).then(function (res) {
        toast("Job " + shortId(job.job_id) + ": " + res.status);
        return res;
      }, function (err) {
        if (button) button.disabled = false;
        toast("Cancel failed: " + err.message, true);
        return null;
      });
    });
  }

  function cancelButton(job) {
    if (CANCELLABLE.indexOf(job.status) < 0) return null;
    var button = h("button", { "class": "small link-danger cancel", type: "button", text: "Cancel",
                               "aria-label": "cancel job " + job.job_id });
    button.addEventListener("click", function (e) {
      e.preventDefault();
      cancelJob(job, button);
    });
    return button;
  }

  /* Why a job ended (or is ending), in plain words. */
  function reasonText(job) {
    var e = job.error || {};
    var failed = {
      bad_input: "The job's input cannot be trained on.",
      data: "The price data could not be used.",
      code: "The trainer hit an internal error (a bug).",
      infrastructure: "The infrastructure failed (NATS, disk, or the trainer stopped) and the retries ran out."
    };
    var rejected = {
      malformed: "The training command could not be read.",
      invalid: "The training command is not valid.",
      too_large: "The training command is too large.",
      unknown_strategy: "No trainer knows this strategy.",
      unsupported: "The trainer cannot run this command."
    };
    if (job.status === "failed") {
      return { title: failed[e.category] || "The job failed.",
               detail: (e.reason || "") + (e.retryable ? " (it could succeed if retried)" : "") };
    }
    if (job.status === "rejected") {
      return { title: rejected[e.category] || "The job was rejected before it ran.",
               detail: (e.reason || "") + (e.field ? " — field: " + e.field : "") };
    }
    if (job.status === "cancelled" || job.status === "cancelling") {
      var by = job.cancel_requested_by ? " by " + job.cancel_requested_by : "";
      return { title: job.status === "cancelled" ? "The job was cancelled" + by + "."
                                                 : "Cancelling" + by + ": the trainer stops at the next batch.",
               detail: job.cancel_reason || "" };
    }
    return null;
  }

  // --- the jobs view ---------------------------------------------------------------------------

  function jobsView(root, params) {
    var filter = params.get("status") || "all";
    var rows = new Map();   // job_id -> the cells of its row (makeRow), for the rows shown
    var strategies = [];

    var form = h("form", { novalidate: true, "aria-label": "submit a training job" });
    var fStrategy = h("select", { name: "strategy", id: "f-strategy", required: true });
    var fSymbols = h("input", { name: "symbols", id: "f-symbols", placeholder: "EURUSD, GBPUSD",
                                autocomplete: "off" });
    var fTimeframes = h("input", { name: "timeframes", id: "f-timeframes", placeholder: "1h",
                                   autocomplete: "off" });
    var fPool = h("select", { name: "pool", id: "f-pool" },
                  ["auto", "any", "container", "host"].map(function (p) {
                    return h("option", { value: p, text: p }); }));
    var fSeed = h("input", { name: "seed", id: "f-seed", type: "number", min: "0", value: "0" });
    var fSubmit = h("button", { type: "submit", id: "f-submit", text: "Train" });
    var hint = h("p", { "class": "hint" });
    var message = h("p", { "class": "form-msg", role: "status" });
    append(form, [
      h("label", { "class": "wide" }, "Strategy", fStrategy),
      h("label", { "class": "wide" }, "Symbols", fSymbols),
      h("label", null, "Timeframes", fTimeframes),
      h("label", null, "Pool", fPool),
      h("label", null, "Seed", fSeed),
      fSubmit, hint
    ]);
    var details = h("details", { "class": "submit", open: true },
                    h("summary", { text: "New training job" }), form, message);

    var filterBar = h("div", { "class": "filters", role: "group", "aria-label": "filter by status" });
    var count = h("span", { "class": "count" });
    var tbody = h("tbody");
    var table = h("table", { "class": "jobs cards", id: "jobs-table" },
      h("thead", null, h("tr", null, ["Job", "Status", "Strategy", "Symbols / TF", "Pool",
        "Worker", "Progress", "Best val acc", "Age", ""].map(function (t) {
          return h("th", { text: t }); }))), tbody);
    var empty = h("p", { "class": "empty", text: "No jobs yet: submit one above." });
    append(root, [
      h("section", { "class": "panel" }, details),
      h("section", { "class": "panel" }, h("div", { "class": "toolbar" }, filterBar, count),
        h("div", { "class": "table-wrap" }, table), empty)
    ]);

    // Strategies for the form.
    api("/api/v1/strategies").then(function (list) {
      strategies = list;
      clear(fStrategy);
      if (!list.length) append(fStrategy, h("option", { value: "", text: "no strategies found" }));
      list.forEach(function (s) {
        append(fStrategy, h("option", { value: s.name, disabled: !!s.error,
          text: s.name + (s.error ? " (does not load)" : "") }));
      });
      var first = list.filter(function (s) { return !s.error; })[0];
      if (first) fStrategy.value = first.name;
      strategyChanged();
    }, function (err) {
      message.className = "form-msg error";
      message.textContent = "Could not list strategies: " + err.message;
    });

    function strategyChanged() {
      var s = strategies.filter(function (x) { return x.name === fStrategy.value; })[0];
      if (!s) return;
      fSymbols.value = (s.symbols || []).join(", ");
      fTimeframes.value = (s.timeframes || []).join(", ");
      hint.textContent = (s.description ? s.description + " " : "") +
        (s.epochs ? "(" + s.epochs + " epochs)" : "");
    }
    fStrategy.addEventListener("change", strategyChanged);

    function list(text) {
      return text.split(/[\s,]+/).map(function (x) { return x.trim(); }).filter(Boolean);
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var body = { strategy: fStrategy.value, pool: fPool.value, requested_by: "dashboard",
                   seed: Number(fSeed.value || 0) };
      var symbols = list(fSymbols.value), timeframes = list(fTimeframes.value);
      if (symbols.length) body.symbols = symbols;
      if (timeframes.length) body.timeframes = timeframes;
      fSubmit.disabled = true;
      message.className = "form-msg";
      message.textContent = "Submitting…";
      api("/api/v1/trainings", { method: "POST", body: body }).then(function (res) {
        clear(message);
        append(message, ["Job ", h("a", { href: "#/jobs/" + encodeURIComponent(res.job_id),
          text: res.job_id }), " submitted to pool " + res.pool + " (" + res.routing + ")."]);
        // Its row comes from the live feed: the 202 is sent once the projection has the job.
      }).catch(function (err) {
        message.className = "form-msg error";
        message.textContent = "Not submitted: " + err.message;
      }).then(function () { fSubmit.disabled = false; });
    });

    function matches(job) {
      if (filter === "all") return true;
      if (filter === "running") return job.status === "running" || job.status === "cancelling";
      return job.status === filter;
    }

    // The filter buttons are made once; their counts come from store.counts.
    var FILTERS = ["all", "queued", "running", "completed", "failed", "cancelled", "rejected"];
    var buttons = {};
    FILTERS.forEach(function (s) {
      var n = h("span", { "class": "n" });
      var button = h("button", { type: "button", dataset: { status: s },
        onclick: function () {
          filter = s;
          window.history.replaceState(null, "", s === "all" ? "#/jobs" : "#/jobs?status=" + s);
          render();
        } }, s, n);
      buttons[s] = { button: button, n: n };
      append(filterBar, button);
    });

    function renderCounts() {
      var c = store.counts;
      FILTERS.forEach(function (s) {
        var n = s === "all" ? store.jobs.size
          : s === "running" ? (c.running || 0) + (c.cancelling || 0) : (c[s] || 0);
        buttons[s].n.textContent = String(n);
        buttons[s].button.setAttribute("aria-pressed", String(filter === s));
      });
      count.textContent = store.total > store.jobs.size
        ? "showing the newest " + store.jobs.size + " of " + store.total + " jobs" : rows.size + " shown";
      empty.hidden = rows.size > 0;
      empty.textContent = store.jobs.size ? "No " + filter + " jobs." : "No jobs yet: submit one above.";
    }

    function setText(el, text) {
      var value = text === null || text === undefined ? "" : String(text);
      if (el.textContent !== value) el.textContent = value;
    }

    /* A row's cells, made once per job; fillRow updates them in place. */
    function makeRow(job) {
      var r = {
        tr: h("tr", { dataset: { job: job.job_id } }),
        status: h("td", { "data-label": "Status", "class": "status" }),
        strategy: h("td", { "data-label": "Strategy" }),
        symbols: h("span"), timeframes: h("span", { "class": "sub" }),
        pool: h("td", { "data-label": "Pool" }),
        worker: h("td", { "data-label": "Worker" }),
        progress: progressView(),
        best: h("td", { "data-label": "Best val acc", "class": "num best" }),
        actions: h("td", { "data-label": "", "class": "actions" })
      };
      append(r.tr, [
        h("td", { "data-label": "Job" }, h("a", { href: "#/jobs/" + encodeURIComponent(job.job_id),
          "class": "job-link mono", text: shortId(job.job_id), title: job.job_id }),
          h("span", { "class": "sub", text: job.requested_by })),
        r.status, r.strategy,
        h("td", { "data-label": "Symbols / TF" }, r.symbols, r.timeframes),
        r.pool, r.worker,
        h("td", { "data-label": "Progress", "class": "wide progress-cell" }, r.progress.box,
          r.progress.text),
        r.best,
        h("td", { "data-label": "Age", "class": "nowrap" }, agoEl(job.created_at)),
        r.actions
      ]);
      return r;
    }

    function fillRow(r, job) {
      if (r.tr.dataset.status !== job.status || r.tr.dataset.phase !== (job.phase || "")) {
        clear(r.status);
        append(r.status, [badge(job.status), job.status === "running" && job.phase
          ? h("span", { "class": "sub", text: job.phase }) : null]);
        r.tr.dataset.phase = job.phase || "";
      }
      setText(r.strategy, job.strategy || (job.inline_strategy ? "inline" : "–"));
      setText(r.symbols, (job.symbols || []).join(", ") || "–");
      setText(r.timeframes, (job.timeframes || []).join(", "));
      setText(r.pool, job.pool || "–");
      var worker = (job.worker_kind || "–") + "\n" + (job.device || "") + "\n" + (job.worker || "");
      if (r.worker.dataset.shown !== worker) {
        r.worker.dataset.shown = worker;
        clear(r.worker);
        append(r.worker, [job.worker_kind || "–", job.device
          ? h("span", { "class": "sub", text: job.device, title: job.worker || "" }) : null]);
      }
      setProgress(r.progress, job);
      setText(r.best, pct(job.best_val_accuracy));
      // The cancel button is replaced only when the status changes: one replaced under the
      // pointer (progress changes several times a second) swallows the click.
      if (r.tr.dataset.status !== job.status) {
        clear(r.actions);
        append(r.actions, cancelButton(job));
      }
      r.tr.dataset.seq = String(job.last_seq);
      r.tr.dataset.status = job.status;
    }

    /* Newest first, as the server lists them. */
    function before(a, b) {
      return a.created_at !== b.created_at ? a.created_at > b.created_at : a.job_id < b.job_id;
    }

    /* Put a new row in its place: walk from the top (a new job is usually the newest). */
    function place(tr, job) {
      var next = tbody.firstElementChild;
      while (next) {
        var other = store.jobs.get(next.dataset.job);
        if (!other || before(job, other)) break;
        next = next.nextElementSibling;
      }
      tbody.insertBefore(tr, next);
    }

    /* One job changed: update its row, add it, or drop it from the filtered table. */
    function update(job, fresh) {
      var r = rows.get(job.job_id);
      if (!matches(job)) {
        if (r) { r.tr.remove(); rows.delete(job.job_id); }
        return;
      }
      if (!r) {
        r = makeRow(job);
        if (fresh) r.tr.className = "fresh";
        rows.set(job.job_id, r);
        place(r.tr, job);
      }
      fillRow(r, job);
    }

    /* The whole table: on a snapshot (connect, reconnect) and a change of filter only. Rows of
     * jobs still shown are kept (and updated), not rebuilt. */
    function render() {
      var visible = [];
      store.jobs.forEach(function (j) { if (matches(j)) visible.push(j); });
      visible.sort(function (a, b) { return before(a, b) ? -1 : 1; });
      var keep = new Set();
      visible.forEach(function (job, i) {
        keep.add(job.job_id);
        var r = rows.get(job.job_id);
        if (!r) { r = makeRow(job); rows.set(job.job_id, r); }
        fillRow(r, job);
        if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null);
      });
      rows.forEach(function (r, id) {
        if (!keep.has(id)) { r.tr.remove(); rows.delete(id); }
      });
      renderCounts();
    }

    render();
    return {
      update: function (kind, payload) {
        if (kind === "snapshot") render();
        else if (kind === "job") { update(payload.row, !payload.old); renderCounts(); }
      }
    };
  }

  // --- a model's evaluation: headline, baselines, backtest ---------------------------------

  function obj(v) { return v && typeof v === "object" && !Array.isArray(v) ? v : {}; }

  var SCORE_KEYS = ["accuracy", "macro_f1", "rmse", "direction_accuracy"];

  /* The flat headline numbers of metrics.json's test section, named as a completed job's
   * test_metrics are (libs/pipeline/evaluate.py `headline`): one view for both sources. */
  function headlineOf(test) {
    var out = {};
    function put(k, v) { if (finite(v)) out[k] = v; }
    ["samples", "loss", "accuracy", "macro_f1", "weighted_f1", "rmse", "mae",
     "direction_accuracy"].forEach(function (k) { put(k, test[k]); });
    var baselines = obj(test.baselines), lift = obj(test.lift);
    Object.keys(baselines).forEach(function (name) {
      SCORE_KEYS.forEach(function (k) { put("baseline_" + name + "_" + k, obj(baselines[name])[k]); });
    });
    Object.keys(lift).forEach(function (name) {
      SCORE_KEYS.forEach(function (k) { put("lift_" + k + "_vs_" + name, obj(lift[name])[k]); });
    });
    var backtest = obj(test.backtest), strategies = obj(backtest.strategies);
    ["net_return", "sharpe", "max_drawdown", "trades"].forEach(function (k) {
      put("backtest_" + k, obj(strategies.model)[k]);
    });
    ["net_return", "sharpe"].forEach(function (k) { put("buy_and_hold_" + k, obj(strategies.buy_and_hold)[k]); });
    put("backtest_lift_vs_buy_and_hold", obj(obj(backtest.lift).buy_and_hold).annualised);
    return out;
  }

  function signedPct(v, digits) {
    return finite(v) ? (v >= 0 ? "+" : "") + (v * 100).toFixed(digits === undefined ? 2 : digits) + "%" : "–";
  }

  function count(v) { return finite(v) ? String(Math.round(v)) : "–"; }

  function signedNum(v) { return finite(v) ? (v >= 0 ? "+" : "") + num(v) : "–"; }

  function bp(v) { return finite(v) ? (v >= 0 ? "+" : "") + (v * 1e4).toFixed(2) + " bp" : "–"; }

  function card(label, value, sub, id) {
    return h("div", { "class": "card", id: id }, h("div", { "class": "label", text: label }),
      h("div", { "class": "value", text: value }), sub ? h("div", { "class": "sub", text: sub }) : null);
  }

  /* The cards: the model's score, its lift over each baseline, the backtest vs buy-and-hold. */
  function headlineCards(flat, test) {
    var cards = [];
    var regression = finite(flat.rmse);
    var key = regression ? "rmse" : "macro_f1";
    if (regression) {
      cards.push(card("RMSE", num(flat.rmse), null, "headline-rmse"));
      if (finite(flat.direction_accuracy)) cards.push(card("direction accuracy", pct(flat.direction_accuracy)));
    } else {
      if (finite(flat.macro_f1)) {
        cards.push(card("macro F1", pct(flat.macro_f1),
          finite(flat.weighted_f1) ? "weighted " + pct(flat.weighted_f1) : null, "headline-macro-f1"));
      }
      if (finite(flat.accuracy)) cards.push(card("accuracy", pct(flat.accuracy), null, "headline-accuracy"));
    }
    var prefix = "lift_" + key + "_vs_";
    Object.keys(flat).forEach(function (k) {
      if (k.indexOf(prefix) !== 0) return;
      var name = k.slice(prefix.length);
      var base = flat["baseline_" + name + "_" + key];
      cards.push(card((regression ? "RMSE" : "macro F1") + " lift vs " + Charts.strategyLabel(name),
        regression ? signedNum(flat[k]) : (flat[k] >= 0 ? "+" : "") + (flat[k] * 100).toFixed(1) + " pp",
        finite(base) ? Charts.strategyLabel(name) + ": " + (regression ? num(base) : pct(base)) : null,
        "headline-lift-" + name));
    });
    if (finite(flat.backtest_net_return)) {
      cards.push(card("backtest net return", signedPct(flat.backtest_net_return),
        finite(flat.buy_and_hold_net_return) ? "buy & hold " + signedPct(flat.buy_and_hold_net_return) : null,
        "headline-net-return"));
    }
    if (finite(flat.backtest_sharpe)) {
      cards.push(card("backtest Sharpe", num(flat.backtest_sharpe),
        finite(flat.buy_and_hold_sharpe) ? "buy & hold " + num(flat.buy_and_hold_sharpe) : null,
        "headline-sharpe"));
    }
    if (finite(flat.backtest_lift_vs_buy_and_hold)) {
      var gain = obj(obj(obj(test.backtest).lift).buy_and_hold);
      var ci = Array.isArray(gain.ci95) && gain.ci95.length === 2 ? gain.ci95 : null;
      cards.push(card("lift vs buy & hold", signedPct(flat.backtest_lift_vs_buy_and_hold) + "/yr",
        ci ? "per bar " + bp(gain.mean_bar_return) + ", 95% " + bp(ci[0]) + " … " + bp(ci[1]) : "annualised",
        "headline-lift-buy-and-hold"));
    }
    return cards;
  }

  function backtestTable(backtest) {
    var strategies = obj(backtest.strategies);
    var names = Object.keys(strategies);
    var first = ["model", "buy_and_hold"].filter(function (n) { return names.indexOf(n) >= 0; });
    names = first.concat(names.filter(function (n) { return first.indexOf(n) < 0; }));
    if (!names.length) return null;
    var cols = [["net_return", "Net return", signedPct], ["sharpe", "Sharpe", num],
                ["max_drawdown", "Max drawdown", signedPct], ["trades", "Trades", count],
                ["hit_rate", "Hit rate", pct], ["exposure", "Exposure", pct]];
    return h("div", { "class": "table-wrap" }, h("table", { "class": "cards metrics-wide", id: "backtest-table" },
      h("thead", null, h("tr", null, h("th", { text: "Strategy" }), cols.map(function (c) {
        return h("th", { "class": "num", text: c[1] }); }))),
      h("tbody", null, names.map(function (name) {
        var st = obj(strategies[name]);
        return h("tr", { dataset: { strategy: name } },
          h("td", { "data-label": "Strategy", "class": "wide" }, h("strong", { text: Charts.strategyLabel(name) })),
          cols.map(function (c) { return h("td", { "data-label": c[1], "class": "num", text: c[2](st[c[0]]) }); }));
      }))));
  }

  function walkForwardLine(wf) {
    var summary = obj(wf.summary);
    var folds = Array.isArray(wf.folds) ? wf.folds.length : 0;
    var parts = [["macro_f1", "macro F1", pct], ["accuracy", "accuracy", pct], ["rmse", "RMSE", num],
                 ["backtest_net_return", "net return", signedPct], ["backtest_sharpe", "Sharpe", num]]
      .filter(function (p) { return finite(obj(summary[p[0]]).mean); })
      .map(function (p) {
        var s = obj(summary[p[0]]);
        var std = finite(s.std) ? (p[2] === num ? num(s.std) : (s.std * 100).toFixed(p[2] === pct ? 1 : 2) + "%") : "–";
        return p[1] + " " + p[2](s.mean) + " ± " + std;
      });
    if (!folds && !parts.length) return null;
    return h("p", { id: "walk-forward", "class": "small" }, h("strong", { text: "Walk-forward" }),
      " (" + (wf.mode || "?") + ", " + folds + " folds): " + (parts.join(" · ") || "no summary"));
  }

  /* The evaluation panel of a completed job: warnings, headline cards, equity curve, the
   * backtest table and the walk-forward mean ± std. `detail`: the model (GET /api/v1/models/..)
   * or null while it loads; without it, the job's own headline numbers. */
  function renderEvaluation(panel, detail, state) {
    var metrics = obj(detail && detail.metrics);
    var test = obj(metrics.test);
    var flat = Object.keys(test).length ? headlineOf(test) : obj(state.test_metrics);
    var warnings = Array.isArray(metrics.warnings) ? metrics.warnings : (state.warnings || []);
    var cards = headlineCards(flat, test);
    var backtest = obj(test.backtest);
    var equity = obj(backtest.equity);
    var wf = walkForwardLine(obj(metrics.walk_forward));
    clear(panel);
    panel.hidden = !(cards.length || warnings.length);
    if (panel.hidden) return;
    append(panel, [
      h("h2", { text: "Evaluation" }),
      warnings.length ? h("div", { "class": "reason warning", id: "job-warnings" }, h("strong", { text: "Warnings" }),
        h("ul", null, warnings.map(function (w) { return h("li", { text: String(w) }); }))) : null,
      cards.length ? h("div", { "class": "cards-grid", id: "headline" }, cards) : null,
      Array.isArray(equity.time) && equity.time.length
        ? h("div", { id: "chart-equity", "class": "equity" }, Charts.equityChart(equity)) : null,
      backtest.note ? h("p", { "class": "muted", text: "Backtest: " + backtest.note }) : backtestTable(backtest),
      wf
    ]);
  }

  // --- the job view ---------------------------------------------------------------------------

  function jobView(root, params, jobId) {
    var state = null;             // the newest JobState the server sent (by last_seq)
    var entries = new Map();      // seq -> log entry (as GET .../events lists them)
    var progressEntries = 0;
    var phaseSeen = new Map();    // phase -> its first entry {seq, time}
    var firstClaim = null;        // the first `accepted` entry {seq, time}
    var stream = null;
    var modelLoaded = false;
    var showProgress = false;
    var chartKey = "";

    var title = h("h1", { text: jobId });
    var statusSlot = h("span");
    var actions = h("div", { "class": "actions" });
    var facts = h("dl", { "class": "facts" });
    var reason = h("div", { "class": "reason", id: "reason", hidden: true });
    var progress = progressView("big");
    var progressSlot = h("div", { id: "job-progress" }, progress.box, progress.text);
    var phases = h("ol", { "class": "phases", id: "phases" });
    var chartLoss = h("div", { id: "chart-loss" });
    var chartAcc = h("div", { id: "chart-accuracy" });
    var chartLr = h("div", { id: "chart-lr" });
    var confusion = h("div", { "class": "confusion", id: "confusion" });
    var testTable = h("table", { "class": "metrics", id: "test-metrics" });
    var testPanel = h("section", { "class": "panel", id: "test-panel", hidden: true },
      h("h2", { text: "Test metrics" }), h("div", { "class": "split" }, confusion,
        h("div", null, testTable)));
    var modelPanel = h("section", { "class": "panel", id: "model-panel", hidden: true });
    var evalPanel = h("section", { "class": "panel", id: "evaluation-panel", hidden: true });
    var logBody = h("tbody");
    var logToggle = h("input", { type: "checkbox", id: "log-progress" });
    var logCount = h("span", { "class": "muted" });
    logToggle.addEventListener("change", function () { showProgress = logToggle.checked; rebuildLog(); });

    append(root, [
      h("nav", { "class": "crumbs" }, h("a", { href: "#/jobs", text: "Jobs" }), " / ",
        h("span", { "class": "mono", text: jobId })),
      h("section", { "class": "panel job-head" },
        h("div", { "class": "title-row" }, title, statusSlot, actions), facts, reason, progressSlot),
      h("section", { "class": "panel" }, h("h2", { text: "Phases" }), phases),
      h("section", { "class": "panel" }, h("h2", { text: "Training curves" }),
        h("div", { "class": "charts", id: "charts" }, chartLoss, chartAcc, chartLr)),
      evalPanel, testPanel, modelPanel,
      h("section", { "class": "panel" }, h("h2", { text: "Event log" }),
        h("div", { "class": "log-controls" }, h("label", null, logToggle, "show progress events"),
          logCount),
        h("div", { "class": "log-wrap" }, h("table", { "class": "log", id: "event-log" },
          h("thead", null, h("tr", null, ["seq", "time", "kind", "what happened"].map(function (t) {
            return h("th", { text: t }); }))), logBody)))
    ]);

    function fact(label, value) {
      return h("div", null, h("dt", { text: label }), h("dd", null, value));
    }

    function renderHead() {
      var s = state;
      title.textContent = s.strategy || (s.inline_strategy ? "inline strategy" : jobId);
      clear(statusSlot).appendChild(badge(s.status));
      statusSlot.id = "job-status";
      statusSlot.dataset.status = s.status;
      // Rebuild the button only when the status changes: progress re-renders the head several
      // times a second, and a button replaced under the pointer swallows the click.
      if (actions.dataset.status !== s.status) {
        actions.dataset.status = s.status;
        clear(actions);
        append(actions, cancelButton(s));
      }
      clear(facts);
      append(facts, [
        fact("job", h("span", { "class": "mono", text: s.job_id })),
        fact("symbols", (s.symbols || []).join(", ") || "–"),
        fact("timeframes", (s.timeframes || []).join(", ") || "–"),
        fact("pool", s.pool || "–"),
        fact("worker", s.worker ? (s.worker_kind || "") + " · " + s.worker : "–"),
        fact("device", s.device || "–"),
        fact("host", s.host || "–"),
        fact("seed", String(s.seed === undefined ? "–" : s.seed)),
        fact("requested by", s.requested_by || "–"),
        fact("submitted", agoEl(s.created_at)),
        fact("ran for", s.started_at ? duration((s.finished_at || Date.now() / 1000) - s.started_at) : "–"),
        fact("attempt", String(s.attempt || 0) + (s.resumed_from_epoch ? " (resumed from epoch " + s.resumed_from_epoch + ")" : ""))
      ]);
      var why = reasonText(s);
      reason.hidden = !why;
      if (why) {
        reason.className = "reason " + s.status;
        clear(reason);
        append(reason, [h("strong", { text: why.title }), why.detail ? h("span", { text: why.detail }) : null]);
      }
      setProgress(progress, s);
    }

    function renderCharts() {
      var history = state.history || [];
      var key = history.length + ":" + (history.length ? history[history.length - 1].epoch : 0) +
        ":" + state.total_epochs;
      if (key === chartKey) return;
      chartKey = key;
      var drawn = Charts.historyCharts(history, { totalEpochs: state.total_epochs });
      clear(chartLoss).appendChild(drawn.loss);
      clear(chartAcc).appendChild(drawn.accuracy);
      clear(chartLr).appendChild(drawn.learningRate);
    }

    /* When each phase was first reached, kept as entries arrive (in any order: the JSON log
     * may come after the stream's first entries), so a render never walks the whole log.
     * Returns whether the timeline changed. */
    function notePhase(e) {
      var mark = { seq: e.seq, time: e.time };
      if (e.kind === "accepted" && (!firstClaim || e.seq < firstClaim.seq)) {
        firstClaim = mark;
        return true;
      }
      if (e.kind !== "phase" || !e.body) return false;
      var seen = phaseSeen.get(e.body.phase);
      if (seen && seen.seq < e.seq) return false;
      phaseSeen.set(e.body.phase, mark);
      return true;
    }

    function renderPhases() {
      var seen = new Map();
      var extra = [];
      phaseSeen.forEach(function (mark, name) {
        seen.set(name, mark.time);
        if (PHASES.indexOf(name) < 0) extra.push(name);
      });
      extra.sort(function (a, b) { return phaseSeen.get(a).seq - phaseSeen.get(b).seq; });
      var t = { seen: seen, start: firstClaim ? firstClaim.time : null };
      var names = PHASES.concat(extra);
      var current = state.phase;
      var terminal = TERMINAL.indexOf(state.status) >= 0;
      var reached = -1;
      names.forEach(function (n, i) { if (t.seen.has(n) || n === current) reached = i; });
      clear(phases);
      names.forEach(function (name, i) {
        var cls = "";
        if (state.status === "completed") cls = t.seen.has(name) || i <= reached ? "done" : "";
        else if (i < reached) cls = "done";
        else if (i === reached) cls = terminal ? "stopped" : "current";
        var at = t.seen.get(name);
        var next = null;
        for (var j = i + 1; j < names.length; j++) {
          if (t.seen.has(names[j])) { next = t.seen.get(names[j]); break; }
        }
        if (next === null && at !== undefined && terminal) next = state.finished_at;
        var info = at === undefined ? "" :
          (at - (t.start || at) < 0.01 ? "+0s" : "+" + span(at - (t.start || at))) +
          (next ? " · took " + span(next - at) : "");
        append(phases, h("li", { "class": cls, dataset: { phase: name } },
          h("span", { "class": "name", text: name }), info));
      });
    }

    function summary(e) {
      var b = e.body || {};
      switch (e.kind) {
        case "train":
          return "train " + (b.strategy || "inline strategy") + " on " + (b.symbols || []).join(", ") +
            " " + (b.timeframes || []).join(", ") + " (seed " + (b.seed || 0) + ", by " +
            (b.requested_by || "?") + ")";
        case "cancel": return "cancel requested by " + (b.requested_by || "?") + (b.reason ? ": " + b.reason : "");
        case "accepted":
          return "claimed by " + b.worker_kind + " trainer " + b.worker_id + " on " + b.device +
            " (attempt " + b.attempt + ")";
        case "phase": return b.phase;
        case "progress":
          return "epoch " + b.epoch + "/" + b.total_epochs + ", batch " + b.batch + "/" +
            b.total_batches + " · " + (b.percent || 0).toFixed(1) + "% · loss " + num(b.train_loss);
        case "epoch":
          return "epoch " + b.epoch + "/" + b.total_epochs + ": loss " + num(b.train_loss) + " / val " +
            num(b.val_loss) + ", accuracy " + pct(b.train_accuracy) + " / val " + pct(b.val_accuracy) +
            ", lr " + num(b.learning_rate);
        case "checkpoint": return "checkpoint after epoch " + b.epoch;
        case "resumed": return "resumed from epoch " + b.from_epoch;
        case "completed":
          return "model " + (b.model ? b.model.strategy + "/" + b.model.version : "?") +
            (b.test_metrics && finite(b.test_metrics.macro_f1) ? ", test macro F1 " + pct(b.test_metrics.macro_f1) : "") +
            (b.test_metrics && finite(b.test_metrics.accuracy) ? ", test accuracy " + pct(b.test_metrics.accuracy) : "");
        case "failed": return "[" + b.category + "] " + b.reason;
        case "rejected": return "[" + b.category + "] " + b.reason;
        case "cancelled": return b.reason || "cancelled";
        default: return JSON.stringify(b).slice(0, 200);
      }
    }

    function logRow(e) {
      return h("tr", { dataset: { kind: e.kind, seq: String(e.seq) } },
        h("td", { "class": "num mono", text: e.seq }),
        h("td", { "class": "mono nowrap", text: clock(e.time), title: when(e.time) }),
        h("td", { "class": "kind" }, h("span", { "class": "kind-tag " + e.type, text: e.kind })),
        h("td", { text: summary(e) }));
    }

    function shown(e) { return e.kind !== "progress" || showProgress; }

    function renderCount() {
      var hidden = showProgress ? 0 : progressEntries;
      logCount.textContent = entries.size + " entries" + (hidden ? ", " + hidden + " progress hidden" : "");
    }

    /* Put one entry's row in seq order: entries come in log order, so this is an append, except
     * for the JSON log's entries loaded beside the stream (a short walk back from the end). */
    function insertRow(e) {
      var after = logBody.lastElementChild;
      while (after && Number(after.dataset.seq) > e.seq) after = after.previousElementSibling;
      logBody.insertBefore(logRow(e), after ? after.nextElementSibling : logBody.firstElementChild);
    }

    /* A new entry of the log: a row more (never a re-render of the log). */
    function addEntry(e) {
      if (entries.has(e.seq)) return false;
      entries.set(e.seq, e);
      if (e.kind === "progress") progressEntries++;
      if (shown(e)) insertRow(e);
      renderCount();
      return notePhase(e);
    }

    /* The whole log again: only when progress events are shown or hidden. */
    function rebuildLog() {
      clear(logBody);
      Array.from(entries.values()).sort(function (a, b) { return a.seq - b.seq; }).forEach(function (e) {
        if (shown(e)) logBody.appendChild(logRow(e));
      });
      renderCount();
    }

    function renderTest(detail) {
      renderEvaluation(evalPanel, detail, state);
      var test = (detail && detail.metrics && detail.metrics.test) || null;
      var flat = test || state.test_metrics || {};
      var keys = Object.keys(flat).filter(function (k) { return finite(flat[k]); });
      if (!keys.length) return;
      testPanel.hidden = false;
      clear(testTable);
      append(testTable, h("tbody", null, keys.map(function (k) {
        var v = flat[k];
        var text = /accuracy|precision|recall|f1/.test(k) ? pct(v) : (Number.isInteger(v) ? String(v) : num(v));
        return h("tr", null, h("th", { text: k.replace(/_/g, " ") }), h("td", { "class": "num", text: text }));
      })));
      clear(confusion);
      if (test && Array.isArray(test.confusion_matrix) && test.confusion_matrix.length) {
        confusion.appendChild(Charts.confusionMatrix({ matrix: test.confusion_matrix,
                                                      labels: test.class_names }));
        append(confusion, h("p", { "class": "muted small",
          text: "Rows: true class, columns: predicted; shade: share of the row." }));
      } else {
        append(confusion, h("p", { "class": "muted", text: detail ? "No confusion matrix (regression target)."
                                                                   : "Loading the model's metrics…" }));
      }
    }

    function renderModel(detail) {
      var m = state.model;
      if (!m) return;
      modelPanel.hidden = false;
      var base = "/api/v1/models/" + encodeURIComponent(m.strategy) + "/" + encodeURIComponent(state.job_id);
      var reportUrl = "/reports/" + encodeURIComponent(m.strategy) + "/" + encodeURIComponent(state.job_id);
      clear(modelPanel);
      append(modelPanel, [
        h("h2", { text: "Model" }),
        h("dl", { "class": "kv" },
          h("dt", { text: "version" }), h("dd", { text: m.strategy + "/" + m.version }),
          h("dt", { text: "path" }), h("dd", { "class": "mono", id: "model-path", text: m.local_path || "–" }),
          h("dt", { text: "object" }), h("dd", { "class": "mono", text: m.object_name || "–" }),
          h("dt", { text: "sha256" }), h("dd", { "class": "mono", text: m.sha256 || "–" }),
          h("dt", { text: "best epoch" }), h("dd", { text: state.best_epoch || "–" })),
        h("p", null, h("a", { "class": "button", id: "model-download", href: base + "/download",
                              download: "" }, "Download model (.tar.gz)"), " ",
          h("a", { href: reportUrl, target: "_blank", rel: "noopener", id: "model-report" },
            "Open the report"))
      ]);
      if (detail && detail.metadata && Object.keys(detail.metadata).length) {
        append(modelPanel, h("details", { "class": "manifest" }, h("summary", { text: "Manifest (metadata.json)" }),
          h("pre", { text: JSON.stringify(detail.metadata, null, 2) })));
      }
    }

    function loadModel() {
      if (modelLoaded || state.status !== "completed" || !state.model) return;
      modelLoaded = true;
      renderModel(null);
      renderTest(null);
      api("/api/v1/models/" + encodeURIComponent(state.model.strategy) + "/" +
          encodeURIComponent(state.job_id)).then(function (detail) {
        renderModel(detail);
        renderTest(detail);
      }, function (err) {
        renderTest({ metrics: {} });
        toast("Model metrics: " + err.message, true);
      });
    }

    function renderAll() {
      renderHead();
      renderCharts();
      renderPhases();
      if (state.status === "completed") loadModel();
    }

    function loadLog() {
      return api("/api/v1/jobs/" + encodeURIComponent(jobId) + "/events").then(function (log) {
        var phasesChanged = false;
        log.entries.forEach(function (e) { if (addEntry(e)) phasesChanged = true; });
        if (phasesChanged && state) renderPhases();
      }, function (err) {
        toast("Event log: " + err.message, true);
      });
    }

    /* Show a state the server sent, unless the page already shows a newer one. Equal `last_seq`
     * means the same state: every source folds the same log with the same fold. */
    function show(s) {
      if (!s || (state && s.last_seq <= state.last_seq)) return;
      state = s;
      renderAll();
    }

    function follow() {
      stream = sse("/api/v1/jobs/" + encodeURIComponent(jobId) + "/events", {
        events: ["state", "end", "shutdown", "error"].concat(LOG_KINDS),
        onFrame: function (frame) {
          var body = frame.json;
          if (!body || frame.event === "error") return;
          if (frame.event === "state") {
            show(body);
            // On each (re)connect: the log up to this state comes from the JSON log, what
            // follows from this stream; entries in both are kept once.
            loadLog();
          } else if (frame.event === "end" || frame.event === "shutdown") {
            show(body);
          } else if (body.entry && body.state) {
            var phasesChanged = addEntry(body.entry);
            if (body.state.last_seq > state.last_seq) show(body.state);
            else if (phasesChanged) renderPhases();
          }
        }
      });
    }

    api("/api/v1/jobs/" + encodeURIComponent(jobId)).then(function (s) {
      show(s);
      if (TERMINAL.indexOf(s.status) >= 0) loadLog(); else follow();
    }, function (err) {
      clear(root);
      append(root, [h("nav", { "class": "crumbs" }, h("a", { href: "#/jobs", text: "Jobs" })),
        h("section", { "class": "panel" }, h("h1", { text: "Job " + jobId }),
          h("p", { "class": "form-msg error", text: err.message }))]);
    });

    return {
      destroy: function () { if (stream) stream.close(); }
    };
  }

  // --- the workers view ---------------------------------------------------------------------

  function workersView(root) {
    var tbody = h("tbody");
    var empty = h("p", { "class": "empty", text: "No live trainers: start one with `trainbus up`, " +
                                                   "`trainbus container-trainer` or `trainbus host-trainer`." });
    append(root, h("section", { "class": "panel" }, h("h2", { text: "Live workers" }),
      h("div", { "class": "table-wrap" }, h("table", { "class": "cards", id: "workers-table" },
        h("thead", null, h("tr", null, ["Worker", "Kind", "Pools", "Device", "Capabilities",
          "Current job", "Last heartbeat", "Up since"].map(function (t) { return h("th", { text: t }); }))),
        tbody)), empty));

    function caps(c) {
      var keys = Object.keys(c || {});
      return h("div", { "class": "chips" }, keys.slice(0, 12).map(function (k) {
        var v = c[k];
        var text = typeof v === "object" ? JSON.stringify(v) : String(v);
        return h("span", { "class": "chip", title: k + ": " + text,
                           text: k + ": " + (text.length > 28 ? text.slice(0, 27) + "…" : text) });
      }));
    }

    function render() {
      clear(tbody);
      store.workers.forEach(function (w) {
        var jobs = (w.running || []).map(function (id) {
          return h("a", { href: "#/jobs/" + encodeURIComponent(id), "class": "mono", text: shortId(id) });
        });
        append(tbody, h("tr", { dataset: { worker: w.worker_id } },
          h("td", { "data-label": "Worker", "class": "wide" }, h("span", { "class": "mono", text: w.worker_id }),
            h("span", { "class": "sub", text: w.host + " · pid " + w.pid })),
          h("td", { "data-label": "Kind", text: w.kind }),
          h("td", { "data-label": "Pools", text: (w.pools || []).join(", ") }),
          h("td", { "data-label": "Device", text: w.device }),
          h("td", { "data-label": "Capabilities", "class": "wide" }, caps(w.capabilities)),
          h("td", { "data-label": "Current job" }, jobs.length ? jobs : "idle"),
          h("td", { "data-label": "Last heartbeat" }, agoEl(w.updated_at)),
          h("td", { "data-label": "Up since" }, agoEl(w.started_at))));
      });
      empty.hidden = store.workers.length > 0;
    }

    render();
    return { update: function (kind) { if (kind === "workers" || kind === "snapshot") render(); } };
  }

  // --- the models view ----------------------------------------------------------------------

  function modelsView(root) {
    var body = h("div", { id: "models" }, h("p", { "class": "muted", text: "Loading models…" }));
    append(root, body);

    function load() {
      api("/api/v1/models").then(render, function (err) {
        clear(body);
        append(body, h("section", { "class": "panel" }, h("p", { "class": "form-msg error",
                                                               text: "Could not list models: " + err.message })));
      });
    }

    function manifestRow(model, cols) {
      var cell = h("td", { colspan: String(cols), "class": "wide" }, h("p", { "class": "muted", text: "Loading…" }));
      var tr = h("tr", { "class": "manifest-row" }, cell);
      var version = model.job_id || model.version;
      api("/api/v1/models/" + encodeURIComponent(model.strategy) + "/" + encodeURIComponent(version)).then(function (d) {
        clear(cell);
        var files = (d.metadata && d.metadata.files) || {};
        append(cell, [
          h("dl", { "class": "kv" }, ["strategy_hash", "seed", "device", "data_fingerprint", "weights_sha256",
            "created_at"].filter(function (k) { return d.metadata && d.metadata[k] !== undefined; }).map(function (k) {
              return [h("dt", { text: k }), h("dd", { "class": "mono", text: String(d.metadata[k]) })];
            })),
          h("table", null, h("thead", null, h("tr", null, h("th", { text: "file" }), h("th", { text: "bytes" }),
            h("th", { text: "sha256" }))), h("tbody", null, Object.keys(files).map(function (f) {
              return h("tr", null, h("td", { "class": "mono", text: f }), h("td", { "class": "num", text: files[f].bytes }),
                h("td", { "class": "mono", text: files[f].sha256 }));
            }))),
          h("details", { "class": "manifest" }, h("summary", { text: "metadata.json" }),
            h("pre", { text: JSON.stringify(d.metadata, null, 2) }))
        ]);
      }, function (err) {
        clear(cell);
        append(cell, h("p", { "class": "form-msg error", text: err.message }));
      });
      return tr;
    }

    function render(models) {
      clear(body);
      if (!models.length) {
        append(body, h("section", { "class": "panel" }, h("p", { "class": "empty", text: "No trained models yet." })));
        return;
      }
      var groups = new Map();
      models.forEach(function (m) {
        if (!groups.has(m.strategy)) groups.set(m.strategy, []);
        groups.get(m.strategy).push(m);
      });
      groups.forEach(function (list, strategy) {
        var tbody = h("tbody");
        var heads = ["Version", "Job", "Saved", "Test macro F1", "Test accuracy", "Backtest net", "Where", ""];
        list.forEach(function (m) {
          var t = m.test_metrics || {};
          var version = m.job_id || m.version;
          var base = "/api/v1/models/" + encodeURIComponent(m.strategy) + "/" + encodeURIComponent(version);
          var toggle = h("button", { type: "button", "class": "small secondary", text: "Manifest" });
          var tr = h("tr", { dataset: { model: m.strategy + "/" + m.version } },
            h("td", { "data-label": "Version", "class": "mono", text: m.version }),
            h("td", { "data-label": "Job" }, m.job_id ? h("a", { href: "#/jobs/" + encodeURIComponent(m.job_id),
                                                                "class": "mono", text: shortId(m.job_id) }) : "–"),
            h("td", { "data-label": "Saved" }, agoEl(m.created_at)),
            h("td", { "data-label": "Test macro F1", "class": "num", text: pct(t.macro_f1) }),
            h("td", { "data-label": "Test accuracy", "class": "num", text: pct(t.accuracy) }),
            h("td", { "data-label": "Backtest net", "class": "num", text: signedPct(t.backtest_net_return),
                      title: finite(t.buy_and_hold_net_return) ? "buy & hold " + signedPct(t.buy_and_hold_net_return) : null }),
            h("td", { "data-label": "Where", text: [m.local ? "disk" : null, m.object_name ? "object store" : null]
              .filter(Boolean).join(" + ") || "–", title: m.local_path || "" }),
            h("td", { "data-label": "", "class": "wide nowrap" }, toggle, " ",
              h("a", { href: base + "/download", download: "", text: "download" }), " · ",
              h("a", { href: "/reports/" + encodeURIComponent(m.strategy) + "/" + encodeURIComponent(version),
                       target: "_blank", rel: "noopener", text: "report" })));
          var open = null;
          toggle.addEventListener("click", function () {
            if (open) { open.remove(); open = null; return; }
            open = manifestRow(m, heads.length);
            tr.after(open);
          });
          append(tbody, tr);
        });
        append(body, h("section", { "class": "panel", dataset: { strategy: strategy } },
          h("h2", null, strategy, h("span", { "class": "muted small", text: " · " + list.length + " version" +
                                                                            (list.length === 1 ? "" : "s") })),
          h("div", { "class": "table-wrap" }, h("table", { "class": "cards models" },
            h("thead", null, h("tr", null, heads.map(function (t) { return h("th", { text: t }); }))), tbody))));
      });
    }

    load();
    return {
      update: function (kind, payload) {
        if (kind === "job" && payload.row.status === "completed" &&
            (!payload.old || payload.old.status !== "completed")) load();
      }
    };
  }

  // --- routing --------------------------------------------------------------------------------

  var current = null;

  function route() {
    var hash = window.location.hash.replace(/^#/, "") || "/jobs";
    var q = hash.indexOf("?");
    var path = q >= 0 ? hash.slice(0, q) : hash;
    var params = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
    var parts = path.split("/").filter(Boolean);
    if (current && current.destroy) current.destroy();
    if (current) subscribers.delete(current.listener);
    var root = clear(document.getElementById("view"));
    var tab = parts[0] || "jobs";
    var view;
    if (tab === "jobs" && parts[1]) { view = jobView(root, params, decodeURIComponent(parts[1])); }
    else if (tab === "workers") { view = workersView(root, params); }
    else if (tab === "models") { view = modelsView(root, params); }
    else { tab = "jobs"; view = jobsView(root, params); }
    document.querySelectorAll(".tabs a").forEach(function (a) {
      a.classList.toggle("active", a.dataset.tab === tab);
      if (a.dataset.tab === tab) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    document.title = (tab === "jobs" && parts[1] ? "job " + decodeURIComponent(parts[1]) : tab) + " · trainbus";
    current = { destroy: view.destroy, listener: view.update };
    if (view.update) subscribers.add(view.update);
  }

  // Relative times ("12s ago") tick on a local clock: no request involved.
  function tick() {
    document.querySelectorAll(".ago").forEach(function (el) { el.textContent = ago(Number(el.dataset.ts)); });
  }

  var started = false;
  function init() {
    if (started) return;
    started = true;
    window.addEventListener("hashchange", route);
    startLive();
    route();
    window.setInterval(tick, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
