// labcron web pages: shared helpers (no framework). Every page script uses window.LC.
// Rule for all page scripts: data only ever reaches the page as text nodes or attribute values
// (LC.el / LC.svg); nothing is assigned to innerHTML, so names and logs cannot inject markup.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset;
  const zone = (function () {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  })();

  // ---------------------------------------------------------------- DOM building
  function append(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(parent, c); });
    } else if (child instanceof Node) {
      parent.appendChild(child);
    } else {
      parent.appendChild(document.createTextNode(String(child)));
    }
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (key) {
      const value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "hidden" || key === "disabled" || key === "checked" || key === "selected" || key === "required") node[key] = !!value;
      else if (key === "value") node.value = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    });
  }

  function el(tag, attrs) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  // ---------------------------------------------------------------- the JSON API
  class ServiceError extends Error {
    constructor(status, errors) {
      super(errors.map(function (e) { return e.message; }).join(" "));
      this.status = status;
      this.errors = errors;
    }
  }

  function signInAgain() {
    const here = location.pathname + location.search;
    location.assign("/ui/sign-in?next=" + encodeURIComponent(here));
  }

  // Calls the API. `path` is relative to /rest/ng unless it starts with /ui/.
  // Options: raw (return the Response), headers, signal.
  async function api(method, path, bodyValue, options) {
    const opts = options || {};
    const url = path.startsWith("/ui/") ? path : "/rest/ng" + path;
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = page.csrf || "";
    const init = { method: method, headers: headers, credentials: "same-origin", signal: opts.signal, cache: "no-store" };
    if (bodyValue !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(bodyValue);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ServiceError(0, [{ code: "NETWORK", message: "The server cannot be reached. Check the connection and try again." }]);
    }
    if (response.status === 401) {
      signInAgain();
      throw new ServiceError(401, [{ code: "AUTH_REQUIRED", message: "Please sign in again." }]);
    }
    if (!response.ok && !(opts.raw && response.status === 206)) {
      let errors;
      try {
        errors = await response.json();
        if (!Array.isArray(errors)) errors = [errors];
      } catch (e) {
        errors = [{ code: "HTTP_" + response.status, message: "The server answered " + response.status + "." }];
      }
      throw new ServiceError(response.status, errors);
    }
    if (opts.raw) return response;
    return response.json();
  }

  function query(params) {
    const parts = [];
    Object.keys(params).forEach(function (key) {
      const v = params[key];
      if (v === null || v === undefined || v === "") return;
      parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(v));
    });
    return parts.length ? "?" + parts.join("&") : "";
  }

  function randomKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  // ---------------------------------------------------------------- formatting
  function pad(n, width) {
    return String(n).padStart(width || 2, "0");
  }

  // "2025-03-30 14:05" (or with seconds) in the browser's time zone.
  function fmtDateTime(ms, withSeconds) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(ms);
    let text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (withSeconds) text += ":" + pad(d.getSeconds());
    return text;
  }

  // The UTC offset of an instant in the browser's zone, e.g. "UTC+02:00".
  function fmtOffset(ms) {
    const minutes = -new Date(ms).getTimezoneOffset();
    const sign = minutes < 0 ? "-" : "+";
    const abs = Math.abs(minutes);
    return "UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
  }

  function timeEl(ms, withSeconds) {
    if (ms === null || ms === undefined) return null;
    return el("time", { datetime: new Date(ms).toISOString(), title: fmtDateTime(ms, true) + " " + fmtOffset(ms) + (zone ? " (" + zone + ")" : "") }, fmtDateTime(ms, withSeconds));
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return Math.max(0, Math.round(ms)) + " ms";
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    const total = Math.round(s);
    if (total < 3600) return Math.floor(total / 60) + " min " + pad(total % 60) + " s";
    return Math.floor(total / 3600) + " h " + pad(Math.floor((total % 3600) / 60)) + " min";
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MiB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GiB";
  }

  const STATUS_LABELS = { QUEUED: "Queued", IN_PROGRESS: "In progress", SUCCEEDED: "Succeeded", FAILED: "Failed" };
  const TYPE_LABELS = { INTERNAL: "Internal", EXTERNAL: "External", QUERY: "Query" };
  const TRIGGER_LABELS = { MANUAL: "Manual", SCHEDULED: "Scheduled", CATCH_UP: "Catch-up", RETRY: "Retry", CHAINED: "Chained" };

  function statusLabel(status) {
    return STATUS_LABELS[status] || status || "";
  }

  function badge(status) {
    return el("span", { class: "badge", dataset: { status: status || "NONE" } }, status ? statusLabel(status) : "No runs");
  }

  // A run's badge: "Cancelled" for a FAILED run someone cancelled (the API keeps it FAILED).
  function runBadge(run) {
    if (run.cancelledBy) {
      return el("span", { class: "badge", dataset: { status: "CANCELLED" }, title: "Cancelled by " + userName(run.cancelledBy) }, "Cancelled");
    }
    return badge(run.status);
  }

  function isActiveStatus(status) {
    return status === "QUEUED" || status === "IN_PROGRESS";
  }

  function userName(user) {
    if (!user) return "";
    const name = ((user.firstName || "") + " " + (user.lastName || "")).trim();
    return name || user.loginName || "#" + user.id;
  }

  // ---------------------------------------------------------------- schedules, in OpenSpecimen's words
  function ordinal(n) {
    const mod100 = n % 100;
    if (mod100 >= 11 && mod100 <= 13) return n + "th";
    switch (n % 10) {
      case 1: return n + "st";
      case 2: return n + "nd";
      case 3: return n + "rd";
      default: return n + "th";
    }
  }

  const WEEKDAYS = { SUNDAY: "Sunday", MONDAY: "Monday", TUESDAY: "Tuesday", WEDNESDAY: "Wednesday", THURSDAY: "Thursday", FRIDAY: "Friday", SATURDAY: "Saturday" };

  // The Repeat Interval text of a job (or of the form's values): {text, cron}.
  function describeSchedule(job) {
    const hm = function () {
      return pad(Number(job.scheduledHour) || 0) + ":" + pad(Number(job.scheduledMinute) || 0);
    };
    const minute = Number(job.scheduledMinute) || 0;
    switch (job.repeatSchedule) {
      case "DAILY":
        return { text: "Every day at " + hm() + " hours." };
      case "WEEKLY":
        return { text: "Every " + (WEEKDAYS[job.scheduledDayOfWeek] || "week") + " at " + hm() + " hours." };
      case "MONTHLY":
        return { text: ordinal(Number(job.scheduledDayOfMonth) || 1) + " of every month at " + hm() + " hours." };
      case "HOURLY": {
        const every = Number(job.hourlyInterval) || 1;
        return { text: ordinal(minute) + " minute of every " + (every > 1 ? every + " hours." : "hour.") };
      }
      case "MINUTELY": {
        const every = Number(job.minutelyInterval) || 1;
        return { text: every > 1 ? "Every " + every + " minutes." : "Every minute." };
      }
      case "CRON":
        return { text: job.cronExpression || "", cron: true };
      case "ONDEMAND":
        return { text: "On demand." };
      default:
        return { text: "" };
    }
  }

  // The schedule as an element: the wording (or the cron expression in code) plus, for schedules
  // tied to the hour of day, the job's zone when it is not the browser's.
  function scheduleEl(job) {
    const d = describeSchedule(job);
    const main = d.cron
      ? el("code", { class: "cron", title: "Cron expression" }, d.text)
      : el("span", { class: "schedule" }, d.text);
    const hourBound = ["DAILY", "WEEKLY", "MONTHLY", "CRON"].indexOf(job.repeatSchedule) >= 0;
    const note = hourBound && job.timezone && job.timezone !== zone ? el("span", { class: "tz-note" }, job.timezone) : null;
    return [main, note];
  }

  // ---------------------------------------------------------------- toasts and dialogs
  function toast(message, options) {
    const opts = options || {};
    const box = byId("toasts");
    if (!box) return;
    const item = el("div", { class: "toast" + (opts.error ? " error" : "") }, el("span", {}, message), opts.link ? el("a", { href: opts.link.href }, opts.link.text) : null);
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, opts.error ? 10000 : 6000);
  }

  function showDialog(dialog, focusTarget) {
    document.body.appendChild(dialog);
    dialog.addEventListener("close", function () { dialog.remove(); });
    dialog.showModal();
    if (focusTarget) focusTarget.focus();
  }

  // A modal yes/no question. Resolves true when confirmed.
  function confirmDialog(options) {
    return new Promise(function (resolve) {
      const previous = document.activeElement;
      const dialog = el("dialog", { class: "confirm-dialog", "aria-labelledby": "confirm-title" });
      let answer = false;
      const cancel = el("button", { type: "button", id: "confirm-cancel", onclick: function () { dialog.close(); } }, options.cancelLabel || "Cancel");
      const ok = el("button", { type: "button", id: "confirm-ok", class: options.danger ? "danger solid" : "primary", onclick: function () { answer = true; dialog.close(); } }, options.confirmLabel || "OK");
      dialog.append(
        el("h2", { id: "confirm-title" }, options.title || "Please confirm"),
        el("p", { id: "confirm-message" }, options.message),
        el("div", { class: "buttons" }, cancel, ok)
      );
      dialog.addEventListener("close", function () {
        if (previous && previous.focus && document.contains(previous)) previous.focus();
        resolve(answer);
      });
      showDialog(dialog, cancel);
    });
  }

  function errorText(e) {
    if (e instanceof ServiceError) return e.errors.map(function (x) { return x.message; }).join(" ");
    return String((e && e.message) || e);
  }

  // A value as one shell-like word that `split_args` gives back unchanged.
  function shellWord(text) {
    if (/^[A-Za-z0-9_.,:\/@%+=-]+$/.test(text)) return text;
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  // `name=value` words of an argument string (quotes removed the simple way) → {name: value}.
  function namedValues(text) {
    const out = {};
    const re = /(?:^|\s)[:@$]?([A-Za-z_][A-Za-z0-9_]*)=('([^']*)'|"([^"]*)"|(\S*))/g;
    let m;
    while ((m = re.exec(text || "")) !== null) {
      out[m[1]] = m[3] !== undefined ? m[3] : m[4] !== undefined ? m[4] : m[5];
    }
    return out;
  }

  // Queues a run of `job` (OpenSpecimen's "Run Job" dialog, improved):
  // - a job that takes no runtime parameters runs at once with its fixed parameters: no dialog;
  // - otherwise a dialog asks for them, prefilled with the arguments last used (the user's own
  //   newest manual run, else anyone's); a QUERY job gets one field per parameter of its saved
  //   query, with the fixed parameters' values as defaults, and only parameters without a
  //   default must be filled; other jobs get one text field, optional when the job has fixed
  //   parameters (Run then runs with them alone).
  // Resolves to the new run, or null when cancelled.
  async function runJob(job) {
    const key = randomKey();
    const send = function (args) {
      return api("POST", "/scheduled-jobs/" + job.id + "/runs?response=run", args === null ? {} : { args: args }, { headers: { "Idempotency-Key": key } });
    };
    if (!job.rtArgsProvided) {
      try {
        const run = await send(null);
        announceRun(job, run);
        return run;
      } catch (e) {
        if (e.status !== 401) toast("Job " + job.name + " could not run: " + errorText(e), { error: true });
        return null;
      }
    }
    let facts = null;
    try {
      facts = await api("GET", "/ui/api/jobs/" + job.id + "/run-form");
    } catch (e) {
      if (e.status === 401) return null;
      // The dialog still works without the prefill and the query's parameters.
    }
    const last = facts && facts.lastArgs;
    const query = facts && facts.query;
    const params = job.type === "QUERY" && query && query.parameters && query.parameters.length ? query.parameters : null;
    const fixedValues = (facts && facts.fixedValues) || {};
    const hasFixed = !!(job.fixedArgs && job.fixedArgs.trim());
    return new Promise(function (resolve) {
      const previous = document.activeElement;
      let result = null;
      const dialog = el("dialog", { class: "run-dialog", id: "run-dialog", "aria-labelledby": "run-dialog-title" });
      const error = el("p", { class: "form-error", id: "run-error", role: "alert", hidden: true });
      const submit = el("button", { type: "submit", class: "primary", id: "run-submit" }, "Run Job");
      const help = el("p", { class: "help", id: "run-help" }, el("em", {}, job.rtArgsHelpText || ""));
      const prefill = last
        ? el("p", { class: "help", id: "run-prefill" }, "Prefilled with the arguments of run #" + last.runId + (last.byMe ? " (your last run)." : " (the last run with arguments)."))
        : null;
      const fixedNote = hasFixed
        ? el("p", { class: "help", id: "run-fixed" }, "Always passed first (fixed parameters): ", el("code", {}, job.fixedArgs))
        : null;
      let inputs = [];
      let args = null;
      let body;
      if (params) {
        const lastValues = namedValues(last ? last.args : "");
        inputs = params.map(function (name) {
          const fallback = Object.prototype.hasOwnProperty.call(fixedValues, name) ? fixedValues[name] : null;
          const input = el("input", { id: "run-param-" + name, name: name, class: "mono", autocomplete: "off", spellcheck: "false", dataset: { param: name },
            value: Object.prototype.hasOwnProperty.call(lastValues, name) ? lastValues[name] : "",
            placeholder: fallback !== null ? "default: " + fallback : "",
            required: fallback === null, "aria-describedby": "run-help" });
          return { name: name, input: input, fallback: fallback };
        });
        body = el("fieldset", { class: "field run-params", id: "run-params" },
          el("legend", {}, "Query parameters of ", el("q", {}, query.title)),
          inputs.map(function (p) {
            return el("div", { class: "field" },
              el("label", { for: p.input.id }, ":" + p.name, p.fallback === null ? el("span", { class: "req", "aria-hidden": "true" }, " *") : null),
              p.input);
          }),
          el("p", { class: "help" }, "Leave a field with a default empty to use the default."));
      } else {
        args = el("textarea", { id: "run-args", name: "args", rows: "3", required: !hasFixed, class: "mono", spellcheck: "false", "aria-describedby": "run-help" });
        args.value = last ? last.args : "";
        body = el("div", { class: "field" },
          el("label", { for: "run-args" }, "Runtime Parameters ", hasFixed ? el("span", { class: "muted" }, "(optional)") : el("span", { class: "req", "aria-hidden": "true" }, "*")),
          args);
      }
      const form = el("form", { class: "stack", id: "run-form", novalidate: true },
        el("h2", { id: "run-dialog-title" }, job.name),
        body, help, fixedNote, prefill,
        error,
        el("div", { class: "buttons" },
          el("button", { type: "button", id: "run-cancel", onclick: function () { dialog.close(); } }, "Cancel"),
          submit));
      function fail(message, target) {
        error.textContent = message;
        error.hidden = false;
        if (target) {
          target.setAttribute("aria-invalid", "true");
          target.focus();
        }
      }
      form.addEventListener("submit", async function (event) {
        event.preventDefault();
        let text;
        if (params) {
          const missing = inputs.filter(function (p) { return p.fallback === null && !p.input.value.trim(); });
          inputs.forEach(function (p) { p.input.removeAttribute("aria-invalid"); });
          if (missing.length) {
            fail("Enter a value for " + missing.map(function (p) { return ":" + p.name; }).join(", ") + ".", missing[0].input);
            return;
          }
          text = inputs.filter(function (p) { return p.input.value.trim() !== ""; })
            .map(function (p) { return p.name + "=" + shellWord(p.input.value.trim()); }).join(" ");
        } else {
          text = args.value.trim();
          if (!text && !hasFixed) {
            fail("Enter the runtime parameters.", args);
            return;
          }
        }
        submit.disabled = true;
        try {
          result = await send(text ? text : null);
          dialog.close();
        } catch (e) {
          fail(errorText(e), null);
          submit.disabled = false;
        }
      });
      dialog.appendChild(form);
      dialog.addEventListener("close", function () {
        if (previous && previous.focus && document.contains(previous)) previous.focus();
        if (result) announceRun(job, result);
        resolve(result);
      });
      showDialog(dialog, params ? inputs[0].input : args);
    });
  }

  function announceRun(job, run) {
    const where = "/ui/jobs/" + job.id + "/runs/" + run.id;
    toast("Run #" + run.id + " of " + job.name + " " + (run.status === "QUEUED" ? "queued." : "started."), { link: { href: where, text: "View run" } });
  }

  // ---------------------------------------------------------------- charts (inline SVG)
  // The last runs of a job as bars (oldest left), height = duration, colour = status.
  function sparkline(runs, now) {
    const list = (runs || []).slice(0, 20).reverse();
    const barW = 5, gap = 2, height = 26, width = 20 * (barW + gap);
    const durations = list.map(function (r) { return runDuration(r, now); });
    const max = Math.max.apply(null, [1].concat(durations.filter(function (d) { return d !== null; })));
    const counts = {};
    list.forEach(function (r) { counts[r.status] = (counts[r.status] || 0) + 1; });
    const summary = list.length
      ? "Last " + list.length + " runs: " + Object.keys(counts).map(function (k) { return counts[k] + " " + statusLabel(k).toLowerCase(); }).join(", ")
      : "No runs yet";
    const chart = svg("svg", { class: "spark", width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": summary });
    chart.appendChild(svg("title", {}, summary));
    chart.appendChild(svg("line", { class: "baseline", x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5 }));
    list.forEach(function (run, i) {
      const d = durations[i];
      // Square-root scale: a 50 ms failure next to a 5 min run still shows its colour.
      const h = d === null ? 3 : Math.max(3, Math.round(Math.sqrt(d / max) * (height - 2)));
      const x = (20 - list.length + i) * (barW + gap);
      chart.appendChild(svg("rect", { class: "bar-" + run.status, x: x, y: height - h, width: barW, height: h, rx: 1, dataset: { runId: run.id } },
        svg("title", {}, "Run #" + run.id + " · " + statusLabel(run.status) + (d !== null ? " · " + fmtDuration(d) : "") + " · " + fmtDateTime(run.queuedAt))));
    });
    return chart;
  }

  function runDuration(run, now) {
    if (run.durationMs !== null && run.durationMs !== undefined) return run.durationMs;
    if (run.status === "IN_PROGRESS" && run.startedAt) return Math.max(0, (now || Date.now()) - run.startedAt);
    return null;
  }

  // Small line icons (24×24, drawn in the text colour); decorative: the control carries the label.
  const ICONS = {
    play: { fill: "M8 5.5v13l10.5-6.5z" },
    runs: { stroke: "M4 6h16M4 12h16M4 18h10" },
    edit: { stroke: "M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4" },
    delete: { stroke: "M5 7h14M10 11v6M14 11v6M6.5 7l1 13h9l1-13M9.5 7V4h5v3" },
  };
  function icon(name) {
    const spec = ICONS[name];
    return svg("svg", { class: "icon", viewBox: "0 0 24 24", width: 16, height: 16, "aria-hidden": "true", focusable: "false" },
      spec.fill ? svg("path", { d: spec.fill, fill: "currentColor" }) : svg("path", { d: spec.stroke, fill: "none", stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" }));
  }

  function legend(statuses) {
    return statuses.map(function (s) {
      return el("span", { class: "key" }, el("span", { class: "swatch " + s, "aria-hidden": "true" }), statusLabel(s));
    });
  }

  // ---------------------------------------------------------------- CSV (RFC 4180)
  // Parses up to maxRows records. `complete` says whether `text` is the whole file; if not, the
  // last (possibly cut) record is dropped.
  function parseCsv(text, maxRows, complete) {
    const rows = [];
    let row = [], field = "", i = 0, quoted = false, fieldStarted = false;
    const n = text.length;
    if (text.charCodeAt(0) === 0xfeff) i = 1;
    while (i < n && rows.length < maxRows) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
          quoted = false; i++; continue;
        }
        field += c; i++; continue;
      }
      if (c === '"' && !fieldStarted) { quoted = true; fieldStarted = true; i++; continue; }
      if (c === ",") { row.push(field); field = ""; fieldStarted = false; i++; continue; }
      if (c === "\r" || c === "\n") {
        row.push(field); rows.push(row); row = []; field = ""; fieldStarted = false;
        i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
        continue;
      }
      field += c; fieldStarted = true; i++;
    }
    const reachedEnd = i >= n;
    if (reachedEnd && (fieldStarted || row.length) && rows.length < maxRows) {
      if (complete) { row.push(field); rows.push(row); }
    }
    return { rows: rows, truncated: !(reachedEnd && complete) };
  }

  // ---------------------------------------------------------------- date inputs
  // <input type="datetime-local"> value for an instant, in the browser's zone.
  function localInputValue(ms) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function parseLocalInput(value) {
    if (!value) return null;
    const ms = new Date(value).getTime();
    return Number.isFinite(ms) ? ms : null;
  }

  // ---------------------------------------------------------------- repeating refreshes
  // Calls `task` now and then again after the delay it returns (ms); `stop()` ends it.
  function repeat(task) {
    let timer = null, stopped = false, running = false, again = false;
    async function tick() {
      if (stopped) return;
      if (running) { again = true; return; }
      running = true;
      clearTimeout(timer);
      let delay = 5000;
      try {
        delay = await task();
      } catch (e) {
        delay = 5000;
      }
      running = false;
      if (stopped) return;
      if (again) { again = false; delay = 0; }
      timer = setTimeout(tick, document.hidden ? Math.max(delay, 15000) : delay);
    }
    tick();
    return { now: tick, stop: function () { stopped = true; clearTimeout(timer); } };
  }

  function debounce(fn, ms) {
    let t = null;
    return function () {
      const args = arguments;
      clearTimeout(t);
      t = setTimeout(function () { fn.apply(null, args); }, ms);
    };
  }

  function showError(target, e) {
    if (!target) return;
    target.textContent = errorText(e);
    target.hidden = false;
  }

  // ---------------------------------------------------------------- page setup
  // Every time on the pages is in the browser's zone; the labels the shells mark say which.
  const zoneText = zone ? zone + ", " + fmtOffset(Date.now()) : fmtOffset(Date.now());
  document.querySelectorAll("[data-zone-label]").forEach(function (n) { n.textContent = "(your time: " + zoneText + ")"; });
  document.querySelectorAll("[data-zone-note]").forEach(function (n) { n.textContent = "Times are in your browser's time zone: " + zoneText + "."; });

  const zoneNote = byId("zone-note");
  if (zoneNote && zone) zoneNote.textContent = "· times in " + zone + " (" + fmtOffset(Date.now()) + ")";

  try {
    const flash = sessionStorage.getItem("labcron-flash");
    if (flash) {
      sessionStorage.removeItem("labcron-flash");
      setTimeout(function () { toast(flash); }, 0);
    }
  } catch (e) {
    // Storage may be disabled; the message is only a courtesy.
  }

  window.LC = {
    page: page,
    zone: zone,
    me: { id: Number(page.userId), login: page.userLogin, admin: page.admin === "true" },
    el: el,
    svg: svg,
    byId: byId,
    clear: clear,
    api: api,
    ServiceError: ServiceError,
    query: query,
    randomKey: randomKey,
    pad: pad,
    fmtDateTime: fmtDateTime,
    fmtOffset: fmtOffset,
    timeEl: timeEl,
    fmtDuration: fmtDuration,
    fmtBytes: fmtBytes,
    statusLabel: statusLabel,
    typeLabel: function (t) { return TYPE_LABELS[t] || t || ""; },
    triggerLabel: function (t) { return TRIGGER_LABELS[t] || t || ""; },
    badge: badge,
    runBadge: runBadge,
    isActiveStatus: isActiveStatus,
    userName: userName,
    ordinal: ordinal,
    describeSchedule: describeSchedule,
    scheduleEl: scheduleEl,
    toast: toast,
    confirmDialog: confirmDialog,
    runJob: runJob,
    shellWord: shellWord,
    namedValues: namedValues,
    errorText: errorText,
    showError: showError,
    sparkline: sparkline,
    runDuration: runDuration,
    legend: legend,
    icon: icon,
    parseCsv: parseCsv,
    localInputValue: localInputValue,
    parseLocalInput: parseLocalInput,
    repeat: repeat,
    debounce: debounce,
  };
})();
