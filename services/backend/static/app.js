/* trainbus dashboard: jobs, one job, workers, models (the leaderboard, aliases, the comparison).
 * Plain JavaScript, no build step.
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
 * tab (EventSource cannot send an Authorization header). Writes (submit, cancel, aliases...)
 * send `Authorization: Bearer <token>`; the token comes from the `?token=` of the link
 * `trainbus up` prints, or from the form shown on the first 401.
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
                   "completed", "failed", "cancelled", "operator_failed", "released",
                   "annotated", "cancel", "unreadable"];

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

  /* The token is kept in sessionStorage (this tab only, gone when it closes); a token saved
   * in localStorage by an older page is still read. */
  function storedToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || window.localStorage.getItem(TOKEN_KEY);
    } catch (e) { return null; }
  }

  function keepToken(token) {
    try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage off */ }
  }

  /* `trainbus up` prints the dashboard link with `?token=...` (as notebook servers do): take it
   * once, keep it, and take it out of the address bar (and so out of the history and of what
   * a screenshot or a copied link shows). */
  function takeTokenFromUrl() {
    var params = new URLSearchParams(window.location.search);
    var token = params.get("token");
    if (token === null) return;
    if (token.trim()) keepToken(token.trim());
    params.delete("token");
    var query = params.toString();
    window.history.replaceState(window.history.state, "",
                                window.location.pathname + (query ? "?" + query : "") +
                                window.location.hash);
  }

  takeTokenFromUrl();

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
    var form = h("form", { id: "token-form" }, "Submitting, cancelling and changing aliases need the API's token " +
                 "(TRAINBUS_API_TOKEN). ", input, h("button", { "class": "small", type: "submit",
                                                                 text: "Use it" }));
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      keepToken(input.value.trim());
      banner.hidden = true;
      toast("Token kept in this tab: try again.");
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
   * token kept in this tab, fetch() does, since only fetch can send the token as a header. */
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

  /* Ask first, in the page's dialog: resolves true for `yes`. */
  function confirmAction(text, yes, no) {
    var dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-yes").textContent = yes;
    document.getElementById("confirm-no").textContent = no;
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

  function confirmCancel(job) {
    return confirmAction("Cancel job " + job.job_id + " (" + (job.strategy || "inline strategy") + ", " +
      job.status + ")? A running job stops at the next batch and keeps no model.", "Cancel job", "Keep running");
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
    // The same filters as `trainbus jobs` and GET /api/v1/jobs: experiment:NAME tag:k=v tag:k
    // symbol:S timeframe:TF pool:P worker:ID (all must hold).
    var queryBox = h("input", { type: "search", id: "jobs-query", "class": "query",
      placeholder: "experiment:NAME tag:k=v symbol:EURUSD timeframe:1h pool:host worker:ID",
      "aria-label": "filter jobs", value: params.get("q") || "" });
    var query = parseQuery(queryBox.value);
    queryBox.addEventListener("input", function () { query = parseQuery(queryBox.value); render(); });
    var count = h("span", { "class": "count" });
    var tbody = h("tbody");
    var table = h("table", { "class": "jobs cards", id: "jobs-table" },
      h("thead", null, h("tr", null, ["Job", "Status", "Strategy", "Symbols / TF", "Pool",
        "Worker", "Progress", "Best val acc", "Test", "Age", ""].map(function (t) {
          return h("th", { text: t }); }))), tbody);
    var empty = h("p", { "class": "empty", text: "No jobs yet: submit one above." });
    append(root, [
      h("section", { "class": "panel" }, details),
      h("section", { "class": "panel" }, h("div", { "class": "toolbar" }, filterBar, queryBox, count),
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
      if (!queryMatches(query, job)) return false;
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
        metric: h("td", { "data-label": "Test", "class": "num metric" }),
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
        r.best, r.metric,
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
      var organised = [job.experiment || "", Object.keys(job.tags || {}).sort().map(function (k) {
        return k + "=" + job.tags[k]; }).join(" ")].join(" ").trim();
      var strategyText = job.strategy || (job.inline_strategy ? "inline" : "–");
      if (r.strategy.dataset.shown !== strategyText + "\n" + organised) {
        r.strategy.dataset.shown = strategyText + "\n" + organised;
        clear(r.strategy);
        append(r.strategy, [strategyText, organised
          ? h("span", { "class": "sub tags", text: organised }) : null]);
      }
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
      setText(r.metric, job.metric && finite(job.metric_value)
        ? job.metric + " " + num(job.metric_value) : "–");
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
    var traceback = h("pre", { "class": "traceback mono", id: "traceback", hidden: true });
    var trainerLog = h("pre", { "class": "trainer-log mono", id: "trainer-log", text: "" });
    var trainerLogAfter = 0;
    var trainerLogTimer = null;
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
        h("div", { "class": "title-row" }, title, statusSlot, actions), facts, reason, traceback,
        progressSlot),
      h("section", { "class": "panel" }, h("h2", { text: "Phases" }), phases),
      h("section", { "class": "panel" }, h("h2", { text: "Training curves" }),
        h("div", { "class": "charts", id: "charts" }, chartLoss, chartAcc, chartLr)),
      evalPanel, testPanel, modelPanel,
      h("section", { "class": "panel" }, h("h2", { text: "Trainer log" }), trainerLog),
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
        fact("derived from", s.derived_from ? h("a", { id: "derived-from", "class": "mono",
          href: "#/jobs/" + encodeURIComponent(s.derived_from), text: s.derived_from }) : "–"),
        fact("experiment", s.experiment || "–"),
        fact("tags", Object.keys(s.tags || {}).sort().map(function (k) {
          return k + "=" + s.tags[k]; }).join(", ") || "–"),
        fact("note", s.note || "–"),
        fact("requested by", s.requested_by || "–"),
        fact("submitted", agoEl(s.created_at)),
        fact("ran for", s.started_at ? duration((s.finished_at || Date.now() / 1000) - s.started_at) : "–"),
        fact("attempt", String(s.attempt || 0) + (s.handed_back ? " (" + s.handed_back + " handed back, not spent)" : "") + (s.resumed_from_epoch ? " (resumed from epoch " + s.resumed_from_epoch + ")" : ""))
      ]);
      var why = reasonText(s);
      reason.hidden = !why;
      if (why) {
        reason.className = "reason " + s.status;
        clear(reason);
        append(reason, [h("strong", { text: why.title }), why.detail ? h("span", { text: why.detail }) : null]);
      }
      var frames = (s.error && s.error.traceback) || [];
      traceback.hidden = !frames.length;
      traceback.textContent = frames.join("\n");
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
        case "released": return "handed back (" + (b.reason || "drain") + "): queued again, no attempt spent";
        case "completed":
          return "model " + (b.model ? b.model.strategy + "/" + b.model.version : "?") +
            (b.test_metrics && finite(b.test_metrics.macro_f1) ? ", test macro F1 " + pct(b.test_metrics.macro_f1) : "") +
            (b.test_metrics && finite(b.test_metrics.accuracy) ? ", test accuracy " + pct(b.test_metrics.accuracy) : "");
        case "failed": return "[" + b.category + "] " + b.reason;
        case "operator_failed": return "[operator " + b.by + "] " + b.reason;
        case "rejected": return "[" + b.category + "] " + b.reason;
        case "cancelled": return b.reason || "cancelled";
        case "annotated":
          return "annotated by " + (b.by || "?") + ": " + [
            Object.keys(b.tags || {}).map(function (k) { return "+" + k + "=" + b.tags[k]; }).join(" "),
            (b.untag || []).map(function (k) { return "-" + k; }).join(" "),
            b.note !== null && b.note !== undefined ? "note: " + (b.note || "(cleared)") : "",
            b.experiment !== null && b.experiment !== undefined ? "experiment: " + (b.experiment || "(cleared)") : ""
          ].filter(Boolean).join(", ");
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

    /* The trainer's log lines (GET .../logs), polled while the job runs, once more at its end. */
    function loadTrainerLog() {
      return api("/api/v1/jobs/" + encodeURIComponent(jobId) + "/logs?after=" + trainerLogAfter)
        .then(function (page) {
          var text = page.lines.filter(function (l) { return !l.end; }).map(function (l) {
            return clock(l.time) + " " + l.level + " " + l.logger + ": " + l.message; }).join("\n");
          if (text) trainerLog.textContent += (trainerLog.textContent ? "\n" : "") + text;
          trainerLogAfter = page.next_after;
          if (!trainerLog.textContent) trainerLog.textContent = "(no lines)";
          if (TERMINAL.indexOf(page.status) >= 0 && trainerLogTimer !== null) {
            window.clearInterval(trainerLogTimer);
            trainerLogTimer = null;
          }
        }, function () { /* the next poll tries again */ });
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
      loadTrainerLog();
      if (TERMINAL.indexOf(s.status) < 0) trainerLogTimer = window.setInterval(loadTrainerLog, 2000);
    }, function (err) {
      clear(root);
      append(root, [h("nav", { "class": "crumbs" }, h("a", { href: "#/jobs", text: "Jobs" })),
        h("section", { "class": "panel" }, h("h1", { text: "Job " + jobId }),
          h("p", { "class": "form-msg error", text: err.message }))]);
    });

    return {
      destroy: function () {
        if (stream) stream.close();
        if (trainerLogTimer !== null) window.clearInterval(trainerLogTimer);
      }
    };
  }

  /* `experiment:NAME tag:k=v tag:k symbol:S timeframe:TF pool:P worker:ID` (any order; a
   * bare word matches the job id, strategy or experiment), as libs/events/job_query.py. */
  function parseQuery(text) {
    var q = { tags: [], words: [] };
    text.split(/\s+/).filter(Boolean).forEach(function (term) {
      var at = term.indexOf(":");
      var key = at > 0 ? term.slice(0, at) : "";
      var value = at > 0 ? term.slice(at + 1) : term;
      if (key === "tag") q.tags.push(value);
      else if (["experiment", "symbol", "timeframe", "pool", "worker"].indexOf(key) >= 0) q[key] = value;
      else q.words.push(term.toLowerCase());
    });
    return q;
  }

  function queryMatches(q, job) {
    var tags = job.tags || {};
    if (q.experiment && job.experiment !== q.experiment) return false;
    if (q.symbol && (job.symbols || []).indexOf(q.symbol) < 0) return false;
    if (q.timeframe && (job.timeframes || []).indexOf(q.timeframe) < 0) return false;
    if (q.pool && job.pool !== q.pool) return false;
    if (q.worker && job.worker !== q.worker) return false;
    var tagsOk = q.tags.every(function (t) {
      var eq = t.indexOf("=");
      return eq < 0 ? Object.prototype.hasOwnProperty.call(tags, t)
        : tags[t.slice(0, eq)] === t.slice(eq + 1);
    });
    if (!tagsOk) return false;
    var hay = [job.job_id, job.strategy || "", job.experiment || ""].join(" ").toLowerCase();
    return q.words.every(function (w) { return hay.indexOf(w) >= 0; });
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

  // --- the models view: the leaderboard, aliases, promote -----------------------------------
  //
  // GET /api/v1/models?sort=<metric>&order=desc|asc lists the models (each with the names of
  // the aliases pointing at it); GET /api/v1/models/{strategy}/aliases gives the aliases'
  // records (who set them, when they expire); each model's detail (GET /api/v1/models/{s}/{v})
  // brings what the list does not carry: the data window, the strategy hash, the seed and the
  // walk-forward summary. Writes (PUT/DELETE .../aliases/{alias}) go through api(), which sends
  // the token kept in this tab, like submitting and cancelling.

  var MAX_COMPARE = 12;
  // The leaderboard's sortable columns: `server` ones are the API's sort keys; the walk-forward
  // mean is not one, so the page sorts by it once every model's detail is read.
  var MODEL_SORTS = {
    macro_f1: { server: true }, accuracy: { server: true }, backtest_net_return: { server: true },
    backtest_sharpe: { server: true }, walk_forward_macro_f1: { server: false },
    created_at: { server: true }
  };

  function modelPath(strategy, version) {
    return "/api/v1/models/" + encodeURIComponent(strategy) + "/" + encodeURIComponent(version);
  }

  function aliasesPath(strategy, alias) {
    return "/api/v1/models/" + encodeURIComponent(strategy) + "/aliases" +
      (alias === undefined ? "" : "/" + encodeURIComponent(alias));
  }

  /* (strategy, version-or-@alias) of `strategy/<version>` or `strategy@<alias>`, as the
   * registry splits a reference (libs/events/registry.py split_ref). */
  function splitRef(ref) {
    var at = ref.indexOf("@"), slash = ref.indexOf("/");
    if (at > 0 && (slash < 0 || at < slash)) return { strategy: ref.slice(0, at), version: "@" + ref.slice(at + 1) };
    if (slash > 0) return { strategy: ref.slice(0, slash), version: ref.slice(slash + 1) };
    return null;
  }

  function day(text) {
    return typeof text === "string" && /^\d{4}-\d{2}-\d{2}/.test(text) ? text.slice(0, 10) : null;
  }

  /* `<first day> .. <last day>` of a model's bars, as libs/events/catalog.py data_window. */
  function dataWindow(metadata) {
    var w = obj(obj(metadata).data_window);
    var ranges = Object.keys(obj(w.time_ranges)).map(function (k) { return w.time_ranges[k]; })
      .filter(function (r) { return Array.isArray(r) && r.length === 2; });
    var starts = ranges.map(function (r) { return day(r[0]); }).filter(Boolean).sort();
    var ends = ranges.map(function (r) { return day(r[1]); }).filter(Boolean).sort();
    var start = day(w.start) || starts[0] || null;
    var end = day(w.end) || ends[ends.length - 1] || null;
    return start || end ? (start || "?") + " .. " + (end || "?") : null;
  }

  function walkForwardOf(metrics) {
    var s = obj(obj(obj(obj(metrics).walk_forward).summary).macro_f1);
    return { mean: finite(s.mean) ? s.mean : null, std: finite(s.std) ? s.std : null };
  }

  /* Seconds of `30d`, `12h`, `90m`, `45s`, `2w` or a plain number (registry.parse_duration);
   * null for an empty text, NaN for one that is not a duration. */
  function parseDuration(text) {
    var t = String(text || "").trim().toLowerCase();
    if (!t) return null;
    var m = /^(\d+(?:\.\d+)?)\s*([smhdw]?)$/.exec(t);
    if (!m || !(Number(m[1]) > 0)) return NaN;
    return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]];
  }

  function expiryText(at) {
    if (!finite(at)) return "never expires";
    var left = at - Date.now() / 1000;
    return left <= 0 ? "expired " + ago(at) : "expires in " + duration(left) + " (" + when(at) + ")";
  }

  /* Mark an alias badge expired once its time has come (the clock below calls this too). */
  function markExpiry(el) {
    var at = Number(el.dataset.expires);
    var expired = finite(at) && Date.now() / 1000 >= at;
    if (el.dataset.expired !== String(expired)) {
      el.dataset.expired = String(expired);
      el.classList.toggle("expired", expired);
      var tag = el.querySelector(".alias-state");
      if (tag) tag.hidden = !expired;
    }
    if (el.dataset.about) el.title = el.dataset.about + " · " + expiryText(at);
  }

  /* One alias as a badge; `rec` is its record (GET .../aliases) or just its name. */
  function aliasBadge(rec) {
    var name = typeof rec === "string" ? rec : rec.alias;
    var el = h("span", { "class": "badge alias", dataset: { alias: name } }, h("span", { text: name }),
      h("span", { "class": "alias-state", text: " expired", hidden: true }));
    if (typeof rec !== "string") {
      el.dataset.about = "set by " + (rec.set_by || "?") + " " + ago(rec.set_at) +
        (rec.reason ? " · " + rec.reason : "");
      if (finite(rec.expires_at)) el.dataset.expires = String(rec.expires_at);
      markExpiry(el);
    }
    return el;
  }

  function sortState(params) {
    var sort = params.get("sort");
    return { sort: MODEL_SORTS[sort] ? sort : null, order: params.get("order") === "asc" ? "asc" : "desc",
             strategy: params.get("strategy") || "" };
  }

  function modelsView(root, params) {
    var view = sortState(params);
    var entries = new Map();    // ref -> {model, ref, body (its tbody), cells, detail, ...}
    var order = [];             // the refs as shown
    var records = new Map();    // strategy -> its alias records (null while unknown)
    var details = new Map();    // detail path -> Promise of the model's detail (kept across loads)
    var selected = [];          // refs ticked for the comparison, in ticking order
    var known = new Set();      // strategies seen, for the filter
    var generation = 0;         // a newer load makes the older one's answers moot
    var destroyed = false;

    var fStrategy = h("select", { id: "models-strategy", "aria-label": "strategy" });
    // Phones show no table head: the same sorts as a menu.
    var fSort = h("select", { id: "models-sort", "aria-label": "sort by" });
    var compareButton = h("button", { type: "button", id: "compare-open", "class": "small", disabled: true });
    var counter = h("span", { "class": "count", id: "models-count" });
    var message = h("p", { "class": "form-msg error", id: "models-error", role: "alert", hidden: true });
    var columns = [
      { title: "", label: "compare", cls: "pick" },
      { title: "Model", label: "Model", cls: "wide" },
      { title: "Aliases", label: "Aliases" },
      { title: "Macro F1", label: "Test macro F1", sort: "macro_f1", num: true },
      { title: "Accuracy", label: "Test accuracy", sort: "accuracy", num: true },
      { title: "Net return", label: "Backtest net return", sort: "backtest_net_return", num: true },
      { title: "Sharpe", label: "Backtest Sharpe", sort: "backtest_sharpe", num: true },
      { title: "WF macro F1", label: "Walk-forward macro F1 (mean ± std)", sort: "walk_forward_macro_f1", num: true },
      { title: "Trained on", label: "Data window, strategy hash, seed" },
      { title: "Saved", label: "Saved", sort: "created_at" },
      { title: "", label: "", cls: "wide" }
    ];
    var headRow = h("tr");
    var table = h("table", { "class": "cards models", id: "models-table" }, h("thead", null, headRow));
    var empty = h("p", { "class": "empty", id: "models-empty", text: "Loading models…" });
    var body = h("div", { id: "models" },
      h("section", { "class": "panel" },
        h("div", { "class": "toolbar" }, h("h2", { "class": "inline", text: "Leaderboard" }),
          h("label", { "class": "inline-label" }, "Strategy", fStrategy),
          h("label", { "class": "inline-label phone-only" }, "Sort", fSort), compareButton, counter),
        message, h("div", { "class": "table-wrap" }, table), empty,
        h("p", { "class": "muted small", text: "Tick two or more models to compare them. Sorting by a " +
          "column puts the models without that number last." })));
    append(root, body);

    columns.forEach(function (c) {
      var th = h("th", { "class": (c.num ? "num " : "") + (c.cls || ""), title: c.label !== c.title ? c.label : null });
      if (c.sort) {
        th.dataset.sort = c.sort;
        append(th, h("button", { type: "button", "class": "sort", dataset: { sort: c.sort },
          text: c.title, title: "sort by " + c.label.toLowerCase() + " (again: the other way)",
          onclick: function () { sortBy(c.sort); } }));
      } else {
        append(th, c.title);
      }
      append(headRow, th);
    });

    append(fSort, h("option", { value: "", text: "newest first" }));
    columns.forEach(function (c) {
      if (!c.sort || c.sort === "created_at") return;
      append(fSort, h("option", { value: c.sort + ":desc", text: c.title + ", best first" }),
        h("option", { value: c.sort + ":asc", text: c.title + ", lowest first" }));
    });
    fSort.addEventListener("change", function () {
      var v = fSort.value.split(":");
      view.sort = v[0] || null;
      view.order = v[1] === "asc" ? "asc" : "desc";
      keepInHash();
      load();
    });

    function renderHeads() {
      var wanted = view.sort ? view.sort + ":" + view.order : "";
      fSort.value = Array.from(fSort.options).some(function (o) { return o.value === wanted; }) ? wanted : "";
      headRow.querySelectorAll("th[data-sort]").forEach(function (th) {
        var on = th.dataset.sort === view.sort;
        th.setAttribute("aria-sort", on ? (view.order === "asc" ? "ascending" : "descending") : "none");
        th.querySelector("button").dataset.dir = on ? view.order : "";
      });
    }

    function keepInHash() {
      var q = new URLSearchParams();
      if (view.strategy) q.set("strategy", view.strategy);
      if (view.sort) { q.set("sort", view.sort); q.set("order", view.order); }
      var text = q.toString();
      window.history.replaceState(null, "", "#/models" + (text ? "?" + text : ""));
    }

    function sortBy(key) {
      if (view.sort === key) view.order = view.order === "desc" ? "asc" : "desc";
      else { view.sort = key; view.order = "desc"; }
      keepInHash();
      load();
    }

    function renderStrategies() {
      var names = Array.from(known).sort();
      if (view.strategy && names.indexOf(view.strategy) < 0) names.push(view.strategy);
      var shown = Array.from(fStrategy.options).map(function (o) { return o.value; }).join(",");
      if (shown === [""].concat(names).join(",")) return;
      clear(fStrategy);
      append(fStrategy, h("option", { value: "", text: "all strategies" }));
      names.forEach(function (n) { append(fStrategy, h("option", { value: n, text: n })); });
      fStrategy.value = view.strategy;
    }
    fStrategy.addEventListener("change", function () {
      view.strategy = fStrategy.value;
      keepInHash();
      load();
    });

    function renderCompareButton() {
      var n = selected.length;
      compareButton.textContent = n ? "Compare " + n + " models" : "Compare";
      compareButton.disabled = n < 2 || n > MAX_COMPARE;
      compareButton.title = n > MAX_COMPARE ? "at most " + MAX_COMPARE + " models" : n < 2 ? "tick two or more models" : "";
    }
    compareButton.addEventListener("click", function () {
      var refs = order.filter(function (r) { return selected.indexOf(r) >= 0; });
      window.location.hash = "#/models/compare?models=" + encodeURIComponent(refs.join(","));
    });

    function showError(text) {
      message.hidden = !text;
      message.textContent = text || "";
    }

    /* The detail of a model, read once per page (a saved model does not change). */
    function detailOf(m) {
      var path = modelPath(m.strategy, m.job_id || m.version);
      if (!details.has(path)) {
        details.set(path, api(path).catch(function (err) { details.delete(path); throw err; }));
      }
      return details.get(path);
    }

    function load() {
      var mine = ++generation;
      renderHeads();
      var q = new URLSearchParams();
      if (view.strategy) q.set("strategy", view.strategy);
      if (view.sort && MODEL_SORTS[view.sort].server) { q.set("sort", view.sort); q.set("order", view.order); }
      var text = q.toString();
      return api("/api/v1/models" + (text ? "?" + text : "")).then(function (models) {
        if (mine !== generation || destroyed) return;
        showError(null);
        models.forEach(function (m) { known.add(m.strategy); });
        renderStrategies();
        render(models);
        var strategies = Array.from(new Set(models.map(function (m) { return m.strategy; })));
        strategies.forEach(function (s) { loadAliases(s); });
        loadDetails(mine);
      }, function (err) {
        if (mine !== generation || destroyed) return;
        showError("Could not list models: " + err.message);
        empty.hidden = true;
      });
    }

    /* The reference of a model in the comparison: its version, or its job's id where two
     * models of one strategy share the version (two trainers, two disks). */
    function refOf(m, models) {
      var twins = models.filter(function (o) { return o.strategy === m.strategy && o.version === m.version; });
      return m.strategy + "/" + (twins.length > 1 && m.job_id ? m.job_id : m.version);
    }

    function render(models) {
      var keep = new Map();
      order = [];
      models.forEach(function (m) {
        var ref = refOf(m, models);
        var old = entries.get(ref);
        // A row already shown for the same model is kept (its open panels with it).
        var entry = old && old.model.sha256 === m.sha256 && old.model.created_at === m.created_at
          ? Object.assign(old, { model: m }) : makeEntry(m, ref);
        keep.set(ref, entry);
        order.push(ref);
      });
      entries.forEach(function (e, ref) { if (!keep.has(ref)) e.body.remove(); });
      entries = keep;
      selected = selected.filter(function (r) { return entries.has(r); });
      placeRows();
      entries.forEach(function (e) { fillMetrics(e); fillAliases(e); });
      renderCompareButton();
      empty.hidden = models.length > 0;
      empty.textContent = view.strategy ? "No trained models of " + view.strategy + "." : "No trained models yet.";
      counter.textContent = models.length + " model" + (models.length === 1 ? "" : "s");
    }

    function placeRows() {
      if (view.sort && !MODEL_SORTS[view.sort].server) order = sortedLocally(order);
      order.forEach(function (ref, i) {
        var b = entries.get(ref).body;
        if (table.tBodies[i] !== b) table.insertBefore(b, table.tBodies[i] || null);
      });
    }

    /* By the walk-forward mean: those without one last, in their listed order. */
    function sortedLocally(refs) {
      var sign = view.order === "asc" ? 1 : -1;
      var value = function (r) { var d = entries.get(r).detail; return d ? walkForwardOf(d.metrics).mean : null; };
      var present = refs.filter(function (r) { return value(r) !== null; });
      var missing = refs.filter(function (r) { return value(r) === null; });
      present.sort(function (a, b) { return sign * (value(a) - value(b)); });
      return present.concat(missing);
    }

    function loadDetails(mine) {
      var queue = order.slice();
      function next() {
        if (mine !== generation || destroyed || !queue.length) return Promise.resolve();
        var entry = entries.get(queue.shift());
        if (!entry) return next();
        return detailOf(entry.model).then(function (d) {
          entry.detail = d;
          fillDetail(entry);
        }, function (err) {
          entry.cells.window.textContent = "–";
          entry.cells.window.title = "detail: " + err.message;
        }).then(next);
      }
      var workers = [];
      for (var i = 0; i < 4; i++) workers.push(next());
      return Promise.all(workers).then(function () {
        if (mine !== generation || destroyed) return;
        if (view.sort && !MODEL_SORTS[view.sort].server) placeRows();
        table.dataset.details = "loaded";
      });
    }

    function loadAliases(strategy) {
      return api(aliasesPath(strategy)).then(function (list) {
        if (destroyed) return;
        records.set(strategy, list);
        entries.forEach(function (e) { if (e.model.strategy === strategy) fillAliases(e); });
      }, function (err) {
        records.set(strategy, null);
        toast("Aliases of " + strategy + ": " + err.message, true);
      });
    }

    /* The alias records pointing at this model (or, before they are read, the list's names). */
    function aliasesOf(entry) {
      var m = entry.model, list = records.get(m.strategy);
      if (!list) return (m.aliases || []).slice();
      return list.filter(function (r) { return r.strategy === m.strategy && r.version === m.version; });
    }

    function makeEntry(m, ref) {
      var name = m.strategy + "/" + m.version;
      var version = m.job_id || m.version;
      var base = modelPath(m.strategy, version);
      var pick = h("input", { type: "checkbox", "class": "pick", "aria-label": "compare " + name,
                              dataset: { ref: ref } });
      var manifest = h("button", { type: "button", "class": "small secondary manifest-toggle", text: "Manifest" });
      var promote = h("button", { type: "button", "class": "small secondary promote-toggle", text: "Promote",
                                  title: "set or remove an alias of " + name });
      var entry = {
        model: m, ref: ref, detail: null, panels: {},
        body: h("tbody", { "class": "model", dataset: { ref: ref } }),
        cells: {
          aliases: h("td", { "data-label": "Aliases", "class": "aliases" }),
          macro: h("td", { "data-label": "Test macro F1", "class": "num", dataset: { metric: "macro_f1" } }),
          acc: h("td", { "data-label": "Test accuracy", "class": "num", dataset: { metric: "accuracy" } }),
          net: h("td", { "data-label": "Backtest net", "class": "num", dataset: { metric: "backtest_net_return" } }),
          sharpe: h("td", { "data-label": "Sharpe", "class": "num", dataset: { metric: "backtest_sharpe" } }),
          wf: h("td", { "data-label": "Walk-forward macro F1", "class": "num", dataset: { metric: "walk_forward_macro_f1" }, text: "…" }),
          window: h("span", { "class": "window", text: "…" }),
          hash: h("span", { "class": "mono hash", text: "…" }),
          seed: h("span", { "class": "seed", text: "…" })
        }
      };
      pick.checked = selected.indexOf(ref) >= 0;
      pick.addEventListener("change", function () {
        var i = selected.indexOf(ref);
        if (pick.checked && i < 0) selected.push(ref);
        if (!pick.checked && i >= 0) selected.splice(i, 1);
        renderCompareButton();
      });
      var c = entry.cells;
      var where = [m.local ? "disk" : null, m.object_name ? "object store" : null].filter(Boolean).join(" + ") || "–";
      entry.row = h("tr", { dataset: { model: name, ref: ref } },
        h("td", { "data-label": "Compare", "class": "pick" }, pick),
        h("td", { "data-label": "Model", "class": "wide" }, h("span", { "class": "mono model-name", text: name }),
          h("span", { "class": "sub", title: m.local_path || "" }, m.job_id
            ? h("a", { href: "#/jobs/" + encodeURIComponent(m.job_id), "class": "mono", text: shortId(m.job_id) }) : "no job",
            " · " + where)),
        c.aliases, c.macro, c.acc, c.net, c.sharpe, c.wf,
        h("td", { "data-label": "Trained on", "class": "trained small" }, c.window,
          h("span", { "class": "sub" }, "hash ", c.hash, " · seed ", c.seed)),
        h("td", { "data-label": "Saved", "class": "nowrap" }, agoEl(m.created_at)),
        h("td", { "data-label": "", "class": "wide actions" }, h("span", { "class": "nowrap" }, manifest, " ", promote),
          h("span", { "class": "sub nowrap" }, h("a", { href: base + "/download", download: "", text: "download" }), " · ",
            h("a", { href: "/reports/" + encodeURIComponent(m.strategy) + "/" + encodeURIComponent(version),
                     target: "_blank", rel: "noopener", text: "report" }))));
      append(entry.body, entry.row);
      manifest.addEventListener("click", function () { toggle(entry, "manifest", manifestRow); });
      promote.addEventListener("click", function () { toggle(entry, "promote", promoteRow); });
      return entry;
    }

    /* Open or close one of a row's panels (a row of its own under the model's row). */
    function toggle(entry, kind, make) {
      var open = entry.panels[kind];
      if (open) { open.tr.remove(); delete entry.panels[kind]; return; }
      open = make(entry);
      entry.panels[kind] = open;
      append(entry.body, open.tr);
      if (open.focus) open.focus.focus();
    }

    function fillMetrics(entry) {
      var t = entry.model.test_metrics || {}, c = entry.cells;
      c.macro.textContent = pct(t.macro_f1);
      c.acc.textContent = pct(t.accuracy);
      c.net.textContent = signedPct(t.backtest_net_return);
      c.net.title = finite(t.buy_and_hold_net_return) ? "buy & hold " + signedPct(t.buy_and_hold_net_return) : "";
      c.sharpe.textContent = num(t.backtest_sharpe);
      if (entry.detail) fillDetail(entry);
    }

    function fillDetail(entry) {
      var d = entry.detail, meta = obj(d.metadata), c = entry.cells;
      var wf = walkForwardOf(d.metrics);
      c.wf.textContent = wf.mean === null ? "–" : pct(wf.mean) + (wf.std === null ? "" : " ± " + (wf.std * 100).toFixed(1));
      c.window.textContent = dataWindow(meta) || "–";
      var hash = typeof meta.strategy_hash === "string" ? meta.strategy_hash : "";
      c.hash.textContent = hash ? hash.slice(0, 12) : "–";
      c.hash.title = hash;
      c.seed.textContent = Number.isInteger(meta.seed) ? String(meta.seed) : "–";
    }

    function fillAliases(entry) {
      var list = aliasesOf(entry);
      clear(entry.cells.aliases);
      append(entry.cells.aliases, list.length ? h("span", { "class": "chips" }, list.map(aliasBadge)) : null);
      if (entry.panels.promote) entry.panels.promote.refresh();
    }

    function manifestRow(entry) {
      var cell = h("td", { colspan: String(columns.length), "class": "wide" }, h("p", { "class": "muted", text: "Loading…" }));
      var tr = h("tr", { "class": "manifest-row" }, cell);
      detailOf(entry.model).then(function (d) {
        clear(cell);
        var meta = obj(d.metadata), files = obj(meta.files);
        append(cell, [
          h("dl", { "class": "kv" }, ["strategy_hash", "seed", "device", "data_fingerprint", "weights_sha256",
            "created_at"].filter(function (k) { return meta[k] !== undefined; }).map(function (k) {
              return [h("dt", { text: k }), h("dd", { "class": "mono", text: String(meta[k]) })];
            })),
          h("table", null, h("thead", null, h("tr", null, h("th", { text: "file" }), h("th", { text: "bytes" }),
            h("th", { text: "sha256" }))), h("tbody", null, Object.keys(files).map(function (f) {
              return h("tr", null, h("td", { "class": "mono", text: f }), h("td", { "class": "num", text: files[f].bytes }),
                h("td", { "class": "mono", text: files[f].sha256 }));
            }))),
          h("details", { "class": "manifest" }, h("summary", { text: "metadata.json" }),
            h("pre", { text: JSON.stringify(meta, null, 2) }))
        ]);
      }, function (err) {
        clear(cell);
        append(cell, h("p", { "class": "form-msg error", text: err.message }));
      });
      return { tr: tr };
    }

    /* Promote: point an alias at this model (name, optional expiry and reason), or remove one
     * of the aliases pointing at it. The API's refusals show as its problem detail text. */
    function promoteRow(entry) {
      var m = entry.model;
      var name = m.strategy + "/" + m.version;
      var fName = h("input", { name: "alias", "class": "alias-name", placeholder: "champion", autocomplete: "off",
                               maxlength: "32", "aria-label": "alias name" });
      var fExpiry = h("input", { name: "expires_after", "class": "alias-expiry", placeholder: "never (e.g. 30d, 12h)",
                                 autocomplete: "off", "aria-label": "expires after" });
      var fReason = h("input", { name: "reason", "class": "alias-reason", placeholder: "optional", autocomplete: "off",
                                 maxlength: "4096", "aria-label": "reason" });
      var submit = h("button", { type: "submit", "class": "small alias-set", text: "Set alias" });
      var msg = h("p", { "class": "form-msg alias-msg", role: "status" });
      var current = h("ul", { "class": "alias-list" });
      var form = h("form", { "class": "alias-form", novalidate: true, "aria-label": "set an alias of " + name },
        h("label", null, "Alias", fName), h("label", null, "Expires after", fExpiry),
        h("label", { "class": "wide" }, "Reason", fReason), submit);
      var cell = h("td", { colspan: String(columns.length), "class": "wide" },
        h("div", { "class": "promote" }, h("div", null, h("h3", { text: "Aliases of " + name }), current),
          h("div", null, h("h3", { text: "Point an alias at " + name }), form, msg)));
      var tr = h("tr", { "class": "promote-row", dataset: { promote: name } }, cell);

      function say(text, error) {
        msg.className = "form-msg alias-msg" + (error ? " error" : "");
        msg.textContent = text;
      }

      function refresh() {
        clear(current);
        var list = aliasesOf(entry);
        if (!list.length) append(current, h("li", { "class": "muted", text: "No alias points at this model." }));
        list.forEach(function (rec) {
          var alias = typeof rec === "string" ? rec : rec.alias;
          var remove = h("button", { type: "button", "class": "small link-danger alias-remove", text: "Remove",
                                     dataset: { alias: alias }, "aria-label": "remove alias " + alias });
          remove.addEventListener("click", function () { removeAlias(alias, remove); });
          var about = typeof rec === "string" ? null : h("span", { "class": "muted small" },
            "set by " + (rec.set_by || "?") + " ", agoEl(rec.set_at), " · ",
            h("span", { "class": "expiry", dataset: { expires: String(finite(rec.expires_at) ? rec.expires_at : "") },
                        text: expiryText(rec.expires_at) }),
            rec.reason ? " · " + rec.reason : null);
          append(current, h("li", { dataset: { alias: alias } }, aliasBadge(rec), " ", about, " ", remove));
        });
      }

      function removeAlias(alias, button) {
        var ref = m.strategy + "@" + alias;
        confirmAction("Remove alias " + ref + "? Whatever loads " + ref + " stops finding " + name + ".",
                      "Remove alias", "Keep it").then(function (yes) {
          if (!yes) return;
          button.disabled = true;
          api(aliasesPath(m.strategy, alias) + "?reason=" + encodeURIComponent("removed from the dashboard"),
              { method: "DELETE" }).then(function () {
            say("Removed " + ref + ".", false);
            toast("Alias " + ref + " removed");
            return loadAliases(m.strategy);
          }, function (err) {
            button.disabled = false;
            say("Not removed: " + err.message, true);
          });
        });
      }

      form.addEventListener("submit", function (e) {
        e.preventDefault();
        var alias = fName.value.trim();
        var seconds = parseDuration(fExpiry.value);
        if (!alias) { say("Name the alias (e.g. champion).", true); fName.focus(); return; }
        if (seconds !== seconds) {  // NaN
          say("Expires after: use a duration like 30d, 12h, 90m, 2w or a number of seconds; empty: never.", true);
          fExpiry.focus();
          return;
        }
        var payload = { version: m.job_id || m.version, expires_after: seconds, requested_by: "dashboard",
                        reason: fReason.value.trim() || null };
        submit.disabled = true;
        say("Setting " + m.strategy + "@" + alias + "…", false);
        api(aliasesPath(m.strategy, alias), { method: "PUT", body: payload }).then(function (rec) {
          say(rec.strategy + "@" + rec.alias + " now points at " + rec.version + " (" +
              (finite(rec.expires_at) ? "until " + when(rec.expires_at) : "no expiry") + ").", false);
          toast("Alias " + rec.strategy + "@" + rec.alias + " → " + rec.version);
          fName.value = "";
          return loadAliases(m.strategy);
        }, function (err) {
          say("Not set: " + err.message, true);
        }).then(function () { submit.disabled = false; });
      });

      refresh();
      return { tr: tr, refresh: refresh, focus: fName };
    }

    load();
    return {
      update: function (kind, payload) {
        if (kind === "job" && payload.row.status === "completed" &&
            (!payload.old || payload.old.status !== "completed")) load();
      },
      destroy: function () { destroyed = true; }
    };
  }

  // --- the comparison: models side by side --------------------------------------------------

  var SERIES_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#db2777", "#0d9488", "#ca8a04",
                       "#64748b", "#dc2626", "#0891b2", "#4f46e5", "#65a30d"];

  /* A value of a comparison row, in the unit its key says. */
  function compareValue(key, v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v;
    if (/^lift_rmse_vs_/.test(key)) return signedNum(v);
    if (/^lift_/.test(key)) return (v >= 0 ? "+" : "") + (v * 100).toFixed(2) + " pp";
    if (/(^|_)(accuracy|f1)$/.test(key) || key === "walk_forward_macro_f1") return finite(v) ? (v * 100).toFixed(2) + "%" : "–";
    if (/net_return$|max_drawdown$/.test(key)) return signedPct(v);
    if (/trades$/.test(key) || key === "seed") return count(v);
    return num(v);
  }

  function compareSpread(key, v) {
    if (!finite(v)) return "";
    return " ± " + (key === "walk_forward_macro_f1" || /(accuracy|f1)$/.test(key) ? (v * 100).toFixed(2) : num(v));
  }

  var BETTER_TEXT = { higher: "higher is better", lower: "lower is better",
                      smaller_magnitude: "closer to zero is better" };

  /* The models' equity curves (metrics.test.backtest.equity, each divided by its first value)
   * on one chart, x the bars of all of them in time order; buy & hold dashed when every model
   * was backtested on the same bars. */
  function compareEquity(names, detailsList) {
    var curves = [];
    detailsList.forEach(function (d, i) {
      var eq = obj(obj(obj(obj(d).metrics).test).backtest).equity;
      eq = obj(eq);
      if (Array.isArray(eq.time) && Array.isArray(eq.model) && eq.time.length) {
        curves.push({ name: names[i], color: SERIES_COLORS[i % SERIES_COLORS.length], time: eq.time,
                      values: eq.model, hold: eq.buy_and_hold });
      }
    });
    if (!curves.length) return null;
    var times = [], seen = new Set();
    curves.forEach(function (c) { c.time.forEach(function (t) { if (!seen.has(t)) { seen.add(t); times.push(t); } }); });
    times.sort(function (a, b) { return Date.parse(a) - Date.parse(b) || (a < b ? -1 : a > b ? 1 : 0); });
    var at = new Map(times.map(function (t, i) { return [t, i]; }));
    function scaled(time, values) {
      var start = values.filter(function (v) { return finite(v) && v !== 0; })[0];
      var scale = finite(start) ? start : 1;
      return time.map(function (t, i) { return [at.get(t), finite(values[i]) ? values[i] / scale : null]; });
    }
    var series = curves.map(function (c) { return { label: c.name, color: c.color, values: scaled(c.time, c.values) }; });
    var first = curves[0];
    var sameBars = curves.every(function (c) { return c.time.length === first.time.length &&
      c.time.every(function (t, i) { return t === first.time[i]; }); });
    if (sameBars && Array.isArray(first.hold)) {
      series.push({ label: "buy & hold", color: "#111827", dashed: true, values: scaled(first.time, first.hold) });
    }
    var spanMs = Date.parse(times[times.length - 1]) - Date.parse(times[0]);
    var short = finite(spanMs) && spanMs < 10 * 86400 * 1000;
    function date(i) {
      var t = times[Math.round(i)];
      if (typeof t !== "string") return String(i);
      return short ? t.slice(5, 16).replace("T", " ") : t.slice(0, 10);
    }
    return Charts.lineChart({ title: "Net equity of each model (start = 1)", series: series, xMin: 0,
      xFormat: date, xLabel: "date", width: 920, height: 300, empty: "no backtest bars" });
  }

  /* A colour chip (its colour set through the CSSOM: the page's CSP allows no inline style). */
  function swatch(color) {
    var el = h("span", { "class": "swatch", "aria-hidden": "true" });
    el.style.backgroundColor = color;
    return el;
  }

  function compareView(root, params) {
    var refs = (params.get("models") || "").split(",").map(function (r) { return r.trim(); }).filter(Boolean);
    var destroyed = false;
    var panel = h("section", { "class": "panel", id: "compare" },
      h("h1", { text: "Compare " + refs.length + " models" }),
      h("p", { "class": "muted", id: "compare-status", text: "Loading…" }));
    var chartPanel = h("section", { "class": "panel", id: "compare-equity-panel", hidden: true });
    append(root, [h("nav", { "class": "crumbs" }, h("a", { href: "#/models", text: "Models" }), " / compare"),
      panel, chartPanel]);

    function fail(text) {
      clear(panel);
      append(panel, [h("h1", { text: "Compare" }), h("p", { "class": "form-msg error", id: "compare-error", text: text }),
        h("p", null, h("a", { href: "#/models", text: "Back to the models" }))]);
    }

    if (refs.length < 2) { fail("Tick two or more models on the models page to compare them."); return {}; }

    function render(cmp) {
      var heads = cmp.models.map(function (name, i) {
        var ref = cmp.refs[i];
        return h("th", { "class": "num model-col", scope: "col", dataset: { model: name } },
          swatch(SERIES_COLORS[i % SERIES_COLORS.length]),
          h("span", { "class": "mono", text: name }),
          ref !== name ? h("span", { "class": "sub", text: ref }) : null);
      });
      var rows = cmp.rows.map(function (row) {
        var best = new Set(row.best || []);
        return h("tr", { dataset: { key: row.key, better: row.better || "" } },
          h("th", { scope: "row", title: row.better ? BETTER_TEXT[row.better] : "context, not a score" },
            row.label, row.better ? h("span", { "class": "sub", text: BETTER_TEXT[row.better] }) : null),
          row.values.map(function (v, i) {
            var spread = row.spread ? compareSpread(row.key, row.spread[i]) : "";
            var isBest = best.has(i);
            var data = { model: cmp.models[i] };
            if (isBest) data.best = "true";
            return h("td", { "class": (typeof v === "string" ? "" : "num") + (isBest ? " best" : ""),
                             dataset: data,
                             title: isBest ? "best of the row" : null },
              compareValue(row.key, v) + spread);
          }));
      });
      clear(panel);
      append(panel, [
        h("h1", { text: "Compare " + cmp.models.length + " models" }),
        h("p", { "class": "muted small", text: "Highlighted: the best value of each row (higher is better, except " +
          "RMSE, MAE and the size of the max drawdown); rows without a highlight are context." }),
        h("div", { "class": "table-wrap" }, h("table", { "class": "compare", id: "compare-table" },
          h("thead", null, h("tr", null, h("th", { text: "Metric", scope: "col" }), heads)),
          h("tbody", null, rows)))
      ]);
    }

    api("/api/v1/models/compare?models=" + encodeURIComponent(refs.join(","))).then(function (cmp) {
      if (destroyed) return;
      render(cmp);
      return Promise.all(refs.map(function (ref) {
        var parts = splitRef(ref);
        return parts ? api(modelPath(parts.strategy, parts.version)).catch(function () { return null; }) : null;
      })).then(function (list) {
        if (destroyed) return;
        var chart = compareEquity(cmp.models, list);
        if (!chart) return;
        clear(chartPanel);
        append(chartPanel, [h("h2", { text: "Backtest equity" }),
          h("div", { id: "compare-equity", "class": "equity" }, chart)]);
        chartPanel.hidden = false;
      });
    }, function (err) {
      if (!destroyed) fail("Could not compare: " + err.message);
    });

    return { destroy: function () { destroyed = true; } };
  }

  // --- the sweeps view: every sweep, and one sweep's leaderboard (live) -----------------------
  //
  // GET /api/v1/sweeps lists the sweeps; GET /api/v1/sweeps/{id} is one sweep's leaderboard
  // (libs/events/sweep_service.py): trials ranked by the objective (mean ± std over the seeds),
  // each with its parameters, jobs, mean test metrics, backtest and model; the parameter
  // importance once Optuna can compute it. A running sweep is polled, so the page follows it.

  var SWEEP_POLL_MS = 2000;

  function sweepValue(v, std, seeds) {
    if (!finite(v)) return "–";
    return num(v) + (seeds > 1 && finite(std) ? " ± " + num(std) : "");
  }

  // A sweep's or trial's status, coloured like the job status it resembles (style.css).
  var SWEEP_LOOK = { complete: "completed", finished: "completed", pruned: "cancelled" };
  function sweepBadge(status) {
    var el = badge(status);
    if (SWEEP_LOOK[status]) el.classList.add("s-" + SWEEP_LOOK[status]);
    return el;
  }

  function paramText(v) {
    return typeof v === "object" ? JSON.stringify(v) : (finite(v) ? num(v) : String(v));
  }

  function sweepsView(root, params, sweepId) {
    var destroyed = false;
    var timer = null;
    var panel = h("section", { "class": "panel", id: sweepId ? "sweep" : "sweeps" },
      h("h1", { text: sweepId ? "Sweep " + sweepId : "Sweeps" }),
      h("p", { "class": "muted", id: "sweep-status", text: "Loading…" }));
    append(root, [sweepId ? h("nav", { "class": "crumbs" }, h("a", { href: "#/sweeps", text: "Sweeps" }),
      " / " + sweepId) : null, panel]);

    function fail(err) {
      clear(panel);
      append(panel, [h("h1", { text: sweepId ? "Sweep " + sweepId : "Sweeps" }),
        h("p", { "class": "form-msg error", id: "sweep-error", text: err.message })]);
    }

    function renderList(sweeps) {
      clear(panel);
      append(panel, h("h1", { text: "Sweeps" }));
      if (!sweeps.length) {
        append(panel, h("p", { "class": "empty", text: "No sweeps yet: start one with `trainbus sweep STRATEGY " +
                                                    "--param KEY=DIST --trials N --objective test.macro_f1`." }));
        return;
      }
      append(panel, h("div", { "class": "table-wrap" }, h("table", { "class": "cards", id: "sweeps-table" },
        h("thead", null, h("tr", null, ["Sweep", "Status", "Strategy", "Objective", "Trials", "Best", "Started"]
          .map(function (t) { return h("th", { text: t }); }))),
        h("tbody", null, sweeps.map(function (s) {
          return h("tr", { dataset: { sweep: s.sweep_id } },
            h("td", { "data-label": "Sweep" }, h("a", { href: "#/sweeps/" + encodeURIComponent(s.sweep_id),
                                                         "class": "mono", text: s.sweep_id })),
            h("td", { "data-label": "Status" }, sweepBadge(s.status)),
            h("td", { "data-label": "Strategy", text: s.strategy }),
            h("td", { "data-label": "Objective", text: s.direction + " " + s.objective }),
            h("td", { "data-label": "Trials", text: s.told + "/" + s.trials + (s.running ? " (" + s.running + " running)" : "") }),
            h("td", { "data-label": "Best", text: finite(s.best_value) ? num(s.best_value) + " (trial " + s.best_trial + ")" : "–" }),
            h("td", { "data-label": "Started" }, agoEl(s.started_at)));
        })))));
    }

    function renderSweep(v) {
      clear(panel);
      var keys = Object.keys(v.params || {});
      var importance = v.importance || null;
      append(panel, [h("h1", null, "Sweep ", h("span", { "class": "mono", text: v.sweep_id }), " ", sweepBadge(v.status)),
        h("p", { "class": "muted", id: "sweep-progress",
                 text: v.told + " of " + v.trials_total + " trials told, " + v.running + " running · " +
                       v.direction + " " + v.objective + " · " + v.strategy + " · sampler " + v.sampler +
                       ", pruner " + v.pruner + ", " + v.seeds + " seed(s)" }),
        h("progress", { max: String(v.trials_total), value: String(v.told), id: "sweep-bar" }),
        h("dl", { "class": "kv", id: "sweep-params" }, keys.map(function (k) {
          return [h("dt", { text: k }), h("dd", { text: v.params[k] +
            (importance && finite(importance[k]) ? " · importance " + importance[k].toFixed(2) : "") })];
        })),
        h("div", { "class": "table-wrap" }, h("table", { "class": "cards", id: "sweep-board" },
          h("thead", null, h("tr", null, ["Rank", "Trial", "State", v.objective].concat(keys, ["Jobs", "Backtest Sharpe", "Model"])
            .map(function (t) { return h("th", { text: t }); }))),
          h("tbody", null, v.trials.map(function (t) {
            var jobs = t.jobs.map(function (j) {
              return h("div", null, h("a", { href: "#/jobs/" + encodeURIComponent(j.job_id), "class": "mono", text: shortId(j.job_id) }),
                " " + j.status + (finite(j.epoch) && j.status !== "completed" ? " · epoch " + j.epoch + "/" + (j.total_epochs || "?") : ""));
            });
            var model = t.model ? h("a", { href: "#/models?strategy=" + encodeURIComponent(t.model.strategy), "class": "mono",
                                           text: t.model.strategy + "/" + t.model.version }) : "–";
            return h("tr", { dataset: { trial: String(t.n), state: t.status } },
              h("td", { "data-label": "Rank", text: t.rank ? String(t.rank) : "–" }),
              h("td", { "data-label": "Trial", text: String(t.n) }),
              h("td", { "data-label": "State", title: t.reason || "" }, sweepBadge(t.status)),
              h("td", { "data-label": v.objective, "class": "num", text: sweepValue(t.value, t.std, v.seeds) }),
              keys.map(function (k) { return h("td", { "data-label": k, text: paramText(t.params[k]) }); }),
              h("td", { "data-label": "Jobs" }, jobs),
              h("td", { "data-label": "Backtest Sharpe", "class": "num", text: finite(t.backtest.backtest_sharpe) ? num(t.backtest.backtest_sharpe) : "–" }),
              h("td", { "data-label": "Model" }, model));
          }))))]);
    }

    function load() {
      var path = sweepId ? "/api/v1/sweeps/" + encodeURIComponent(sweepId) : "/api/v1/sweeps";
      api(path).then(function (body) {
        if (destroyed) return;
        if (sweepId) renderSweep(body); else renderList(body);
        var live = sweepId ? body.status === "running" : body.some(function (s) { return s.status === "running"; });
        if (live) timer = window.setTimeout(load, SWEEP_POLL_MS);
      }, function (err) { if (!destroyed) fail(err); });
    }

    load();
    return { destroy: function () { destroyed = true; if (timer) window.clearTimeout(timer); } };
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
    else if (tab === "models" && parts[1] === "compare") { view = compareView(root, params); }
    else if (tab === "models") { view = modelsView(root, params); }
    else if (tab === "sweeps") { view = sweepsView(root, params, parts[1] ? decodeURIComponent(parts[1]) : null); }
    else { tab = "jobs"; view = jobsView(root, params); }
    document.querySelectorAll(".tabs a").forEach(function (a) {
      a.classList.toggle("active", a.dataset.tab === tab);
      if (a.dataset.tab === tab) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    document.title = (tab === "jobs" && parts[1] ? "job " + decodeURIComponent(parts[1])
      : tab === "models" && parts[1] === "compare" ? "compare models" : tab) + " · trainbus";
    current = { destroy: view.destroy, listener: view.update };
    if (view.update) subscribers.add(view.update);
  }

  // Relative times ("12s ago") and the aliases' expiry tick on a local clock: no request involved.
  function tick() {
    document.querySelectorAll(".ago").forEach(function (el) { el.textContent = ago(Number(el.dataset.ts)); });
    document.querySelectorAll(".alias[data-expires]").forEach(markExpiry);
    document.querySelectorAll(".expiry[data-expires]").forEach(function (el) {
      el.textContent = expiryText(el.dataset.expires ? Number(el.dataset.expires) : null);
    });
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
