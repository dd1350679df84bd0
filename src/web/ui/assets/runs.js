// Runs of one job ("<job> run logs"): Run ID, Run By, Trigger, Queued/Start/End time, Duration,
// Status, Download; filters Start Time / End Time (the run's creation time, as the API bounds it)
// and Status; a chart of durations over time. Rows of queued or running runs update by themselves
// (the list is fetched again every 2 s while any is active).
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const jobId = LC.page.jobId;
  const PAGE_SIZE = 25;
  const CHART_RUNS = 200;
  const fromInput = LC.byId("filter-from");
  const toInput = LC.byId("filter-to");
  const statusSelect = LC.byId("filter-status");
  const tbody = LC.byId("runs-body");
  const state = { from: "", to: "", status: "", page: 0, job: null, runs: [], chartRuns: [], more: false };
  let chartSignature = "";
  let generation = 0;

  function readAddress() {
    const p = new URLSearchParams(location.search);
    state.from = p.get("from") || "";
    state.to = p.get("to") || "";
    state.status = p.get("status") || "";
    state.page = Math.max(0, (Number(p.get("page")) || 1) - 1);
    fromInput.value = state.from;
    toInput.value = state.to;
    statusSelect.value = state.status;
  }

  function writeAddress() {
    history.replaceState(null, "", location.pathname + LC.query({ from: state.from, to: state.to, status: state.status, page: state.page > 0 ? state.page + 1 : "" }));
  }

  function filterParams() {
    const from = LC.parseLocalInput(state.from);
    const to = LC.parseLocalInput(state.to);
    return {
      fromDate: from === null ? "" : from,
      // The end minute is included whole.
      toDate: to === null ? "" : to + 59999,
      status: state.status,
    };
  }

  async function loadJob() {
    const job = await LC.api("GET", "/scheduled-jobs/" + jobId);
    state.job = job;
    const label = "#" + job.id + " " + job.name;
    document.title = job.name + " run logs · labcron";
    LC.byId("page-title").textContent = job.name + " run logs";
    LC.byId("crumb-job").textContent = label;
    LC.byId("crumb-job").href = "/ui/jobs/" + job.id;
    const summary = LC.clear(LC.byId("job-summary"));
    summary.append(el("span", { class: "job-id" }, "#" + job.id), " · ", LC.typeLabel(job.type), " · ", LC.scheduleEl(job)[0]);
    if (job.repeatSchedule !== "ONDEMAND") summary.append(" ", el("span", { class: "muted" }, "(" + job.timezone + ")"));
    if (job.nextRunOn) summary.append(" · next run ", LC.timeEl(job.nextRunOn), " ", el("span", { class: "muted" }, "(your time)"));
    if (job.activityStatus === "Closed") summary.append(" · paused");
    const runButton = LC.byId("run-job");
    runButton.hidden = false;
    runButton.disabled = !job.isActiveJob;
    const mine = job.createdBy && job.createdBy.id === LC.me.id;
    const edit = LC.byId("edit-job");
    edit.href = "/ui/jobs/" + job.id + "/edit";
    edit.hidden = !(LC.me.admin || (mine && job.type === "QUERY"));
  }

  async function load() {
    const mine = ++generation;
    const filters = filterParams();
    const [runs, chartRuns] = await Promise.all([
      LC.api("GET", "/scheduled-jobs/" + jobId + "/runs" + LC.query(Object.assign({ startAt: state.page * PAGE_SIZE, maxResults: PAGE_SIZE + 1 }, filters))),
      LC.api("GET", "/scheduled-jobs/" + jobId + "/runs" + LC.query(Object.assign({ maxResults: CHART_RUNS }, filters))),
    ]);
    if (mine !== generation) return null;
    state.more = runs.length > PAGE_SIZE;
    state.runs = runs.slice(0, PAGE_SIZE);
    state.chartRuns = chartRuns;
    LC.byId("load-error").hidden = true;
    render();
    return state.runs.concat(chartRuns);
  }

  function render() {
    const n = state.runs.length;
    const first = state.page * PAGE_SIZE + 1;
    LC.byId("runs-size").textContent = n ? "Showing runs " + first + "–" + (first + n - 1) + (state.more ? " (more are older)" : "") : "Showing 0 runs";
    LC.byId("page-info").textContent = "Page " + (state.page + 1);
    LC.byId("newer-page").disabled = state.page === 0;
    LC.byId("older-page").disabled = !state.more;
    LC.byId("runs-empty").hidden = n > 0;
    LC.byId("runs-table").hidden = n === 0;

    const now = Date.now();
    const existing = new Map();
    Array.from(tbody.rows).forEach(function (row) { existing.set(row.dataset.runId, row); });
    let previous = null;
    state.runs.forEach(function (run) {
      const signature = JSON.stringify(run);
      let row = existing.get(String(run.id));
      if (row && row.dataset.signature === signature && run.status !== "IN_PROGRESS") {
        existing.delete(String(run.id));
      } else {
        const fresh = runRow(run, now);
        fresh.dataset.signature = signature;
        if (row) {
          row.replaceWith(fresh);
          existing.delete(String(run.id));
        }
        row = fresh;
      }
      const anchor = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== anchor) tbody.insertBefore(row, anchor);
      previous = row;
    });
    existing.forEach(function (row) { row.remove(); });
    renderChart();
  }

  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  function runRow(run, now) {
    const link = "/ui/jobs/" + jobId + "/runs/" + run.id;
    const duration = LC.runDuration(run, now);
    const finished = !LC.isActiveStatus(run.status);
    const download = finished && run.logFilePath
      ? el("a", { class: "button small", href: "/rest/ng/scheduled-jobs/" + jobId + "/runs/" + run.id + "/result-file", download: run.logFilePath, "aria-label": "Download the result of run #" + run.id, dataset: { action: "download" } }, "Download")
      : el("span", { class: "muted" }, "");
    return el("tr", { dataset: { runId: run.id, status: run.status } },
      cell("Run ID", "title", el("a", { href: link, class: "run-link" }, el("span", { class: "job-id" }, "#" + run.id))),
      cell("Run By", null, LC.userName(run.runBy)),
      cell("Trigger", null, LC.triggerLabel(run.trigger)),
      cell("Queued", "nowrap", LC.timeEl(run.queuedAt, true)),
      cell("Start Time", "nowrap", run.startedAt ? LC.timeEl(run.startedAt, true) : el("span", { class: "muted" }, "—")),
      cell("End Time", "nowrap", run.finishedAt ? LC.timeEl(run.finishedAt, true) : el("span", { class: "muted" }, "—")),
      cell("Duration", "nowrap duration", duration === null ? el("span", { class: "muted" }, "—") : LC.fmtDuration(duration)),
      cell("Status", "status", el("a", { href: link, "aria-label": "Run #" + run.id + ": " + LC.statusLabel(run.status) }, LC.runBadge(run))),
      cell("Result", "actions", download));
  }

  // Durations over time: one dot per run (colour = status), a line through them.
  function renderChart() {
    const box = LC.byId("runs-chart");
    const now = Date.now();
    const points = state.chartRuns
      .map(function (r) { return { run: r, t: r.startedAt || r.queuedAt, d: LC.runDuration(r, now) }; })
      .filter(function (p) { return p.d !== null; })
      .sort(function (a, b) { return a.t - b.t; });
    const width = Math.max(280, Math.floor(box.clientWidth || 600));
    const signature = JSON.stringify([width, points.map(function (p) { return [p.run.id, p.run.status, p.d]; })]);
    if (signature === chartSignature) return;
    chartSignature = signature;
    LC.clear(box);
    const legend = LC.clear(LC.byId("chart-legend"));
    LC.legend(["SUCCEEDED", "FAILED", "IN_PROGRESS"]).forEach(function (key) { legend.append(key); });
    if (!points.length) {
      box.append(el("p", { class: "chart-empty" }, "No finished runs to chart yet."));
      return;
    }
    const height = 160, left = 62, right = 12, top = 10, bottom = 24;
    const minT = points[0].t, maxT = points[points.length - 1].t;
    const maxD = Math.max.apply(null, points.map(function (p) { return p.d; })) || 1;
    const x = function (t) { return maxT === minT ? left + (width - left - right) / 2 : left + ((t - minT) / (maxT - minT)) * (width - left - right); };
    const y = function (d) { return top + (1 - d / maxD) * (height - top - bottom); };
    const failed = points.filter(function (p) { return p.run.status === "FAILED"; }).length;
    const chart = LC.svg("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img", "aria-label": points.length + " runs charted, longest " + LC.fmtDuration(maxD) + ", " + failed + " failed" });
    [0, 0.5, 1].forEach(function (f) {
      const yy = y(maxD * f);
      chart.append(LC.svg("line", { class: f === 0 ? "baseline" : "grid", x1: left, x2: width - right, y1: yy, y2: yy }));
      chart.append(LC.svg("text", { class: "axis-label", x: left - 6, y: yy + 4, "text-anchor": "end" }, LC.fmtDuration(maxD * f)));
    });
    chart.append(LC.svg("text", { class: "axis-label", x: left, y: height - 6, "text-anchor": "start" }, LC.fmtDateTime(minT)));
    if (maxT !== minT) chart.append(LC.svg("text", { class: "axis-label", x: width - right, y: height - 6, "text-anchor": "end" }, LC.fmtDateTime(maxT)));
    if (points.length > 1) {
      chart.append(LC.svg("polyline", { class: "trend", points: points.map(function (p) { return x(p.t).toFixed(1) + "," + y(p.d).toFixed(1); }).join(" ") }));
    }
    points.forEach(function (p) {
      chart.append(LC.svg("circle", { class: "dot-" + p.run.status, cx: x(p.t).toFixed(1), cy: y(p.d).toFixed(1), r: 4, dataset: { runId: p.run.id } },
        LC.svg("title", {}, "Run #" + p.run.id + " · " + LC.statusLabel(p.run.status) + " · " + LC.fmtDuration(p.d) + " · " + LC.fmtDateTime(p.t, true))));
    });
    box.append(chart);
  }

  readAddress();
  const refresher = LC.repeat(async function () {
    try {
      if (!state.job) await loadJob();
      const runs = await load();
      if (runs === null) return 2000;
      return runs.some(function (r) { return LC.isActiveStatus(r.status); }) ? 2000 : 15000;
    } catch (e) {
      if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
      return 10000;
    }
  });

  function applyFilters() {
    state.from = fromInput.value;
    state.to = toInput.value;
    state.status = statusSelect.value;
    state.page = 0;
    writeAddress();
    refresher.now();
  }
  fromInput.addEventListener("change", applyFilters);
  toInput.addEventListener("change", applyFilters);
  statusSelect.addEventListener("change", applyFilters);
  LC.byId("run-filters").addEventListener("submit", function (e) { e.preventDefault(); applyFilters(); });
  LC.byId("clear-filters").addEventListener("click", function () {
    fromInput.value = "";
    toInput.value = "";
    statusSelect.value = "";
    applyFilters();
  });
  LC.byId("newer-page").addEventListener("click", function () { state.page = Math.max(0, state.page - 1); writeAddress(); refresher.now(); });
  LC.byId("older-page").addEventListener("click", function () { state.page += 1; writeAddress(); refresher.now(); });
  LC.byId("run-job").addEventListener("click", async function () {
    if (!state.job) return;
    const run = await LC.runJob(state.job);
    if (run) refresher.now();
  });
  window.addEventListener("resize", LC.debounce(renderChart, 200));
})();
