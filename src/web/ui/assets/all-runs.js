// The Runs page: the runs of every job the user may see (GET /scheduled-job-runs), newest first,
// with the filters of a job's runs page plus trigger and "Cancelled" (FAILED runs with
// cancelledBy), a message column, and a banner "N runs failed in the last 24 hours" linking to that
// filter. Rows of queued or running runs update by themselves (the list is fetched again every
// 2 s while any is active). Times are in the browser's zone, which the filter labels name.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const PAGE_SIZE = 25;
  const DAY_MS = 24 * 3600 * 1000;
  const fromInput = LC.byId("filter-from");
  const toInput = LC.byId("filter-to");
  const statusSelect = LC.byId("filter-status");
  const triggerSelect = LC.byId("filter-trigger");
  const tbody = LC.byId("runs-body");
  const state = { from: "", to: "", status: "", trigger: "", page: 0, runs: [], more: false };
  let generation = 0;

  // A datetime-local value for an instant, in the browser's zone.
  function localInput(ms) {
    const d = new Date(ms);
    return d.getFullYear() + "-" + LC.pad(d.getMonth() + 1) + "-" + LC.pad(d.getDate()) + "T" + LC.pad(d.getHours()) + ":" + LC.pad(d.getMinutes());
  }

  function readAddress() {
    const p = new URLSearchParams(location.search);
    state.from = p.get("from") || "";
    state.to = p.get("to") || "";
    state.status = p.get("status") || "";
    state.trigger = p.get("trigger") || "";
    state.page = Math.max(0, (Number(p.get("page")) || 1) - 1);
    fromInput.value = state.from;
    toInput.value = state.to;
    statusSelect.value = state.status;
    triggerSelect.value = state.trigger;
  }

  function writeAddress() {
    history.replaceState(null, "", location.pathname + LC.query({ from: state.from, to: state.to, status: state.status, trigger: state.trigger, page: state.page > 0 ? state.page + 1 : "" }));
  }

  function filterParams() {
    const from = LC.parseLocalInput(state.from);
    const to = LC.parseLocalInput(state.to);
    const cancelled = state.status === "CANCELLED";
    return {
      fromDate: from === null ? "" : from,
      toDate: to === null ? "" : to + 59999,
      status: cancelled ? "FAILED" : state.status,
      cancelled: cancelled ? "true" : "",
      trigger: state.trigger,
    };
  }

  async function loadBanner() {
    const since = Date.now() - DAY_MS;
    const answer = await LC.api("GET", "/scheduled-job-runs/count" + LC.query({ status: "FAILED", fromDate: since }));
    const banner = LC.byId("failed-banner");
    banner.hidden = answer.count === 0;
    const link = LC.byId("failed-link");
    link.textContent = answer.count + (answer.count === 1 ? " run" : " runs") + " failed in the last 24 hours";
    link.href = "/ui/runs" + LC.query({ status: "FAILED", from: localInput(since) });
  }

  async function load() {
    const mine = ++generation;
    const runs = await LC.api("GET", "/scheduled-job-runs" + LC.query(Object.assign({ startAt: state.page * PAGE_SIZE, maxResults: PAGE_SIZE + 1 }, filterParams())));
    if (mine !== generation) return null;
    state.more = runs.length > PAGE_SIZE;
    state.runs = runs.slice(0, PAGE_SIZE);
    LC.byId("load-error").hidden = true;
    render();
    return state.runs;
  }

  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  function runRow(run, now) {
    const link = "/ui/jobs/" + run.jobId + "/runs/" + run.id;
    const duration = LC.runDuration(run, now);
    const status = el("a", { href: link, "aria-label": "Run #" + run.id + ": " + (run.cancelledBy ? "Cancelled" : LC.statusLabel(run.status)) }, LC.runBadge(run));
    let trigger = LC.triggerLabel(run.trigger);
    if (run.attempt > 1) trigger += " (attempt " + run.attempt + ")";
    return el("tr", { dataset: { runId: run.id, status: run.status } },
      cell("Run ID", "title", el("a", { href: link, class: "run-link" }, el("span", { class: "job-id" }, "#" + run.id))),
      cell("Job", null, el("a", { href: "/ui/jobs/" + run.jobId, class: "job-link" }, run.jobName)),
      cell("Run By", null, LC.userName(run.runBy)),
      cell("Trigger", null, trigger),
      cell("Queued", "nowrap", LC.timeEl(run.queuedAt, true)),
      cell("Duration", "nowrap duration", duration === null ? el("span", { class: "muted" }, "—") : LC.fmtDuration(duration)),
      cell("Status", "status", status),
      cell("Message", "message", run.message || ""));
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
    LC.clear(tbody);
    state.runs.forEach(function (run) { tbody.append(runRow(run, now)); });
  }

  const zoneText = "(" + (LC.zone || LC.fmtOffset(Date.now())) + ")";
  LC.byId("from-zone").textContent = zoneText;
  LC.byId("to-zone").textContent = zoneText;
  readAddress();
  const refresher = LC.repeat(async function () {
    try {
      await loadBanner();
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
    state.trigger = triggerSelect.value;
    state.page = 0;
    writeAddress();
    refresher.now();
  }
  [fromInput, toInput, statusSelect, triggerSelect].forEach(function (input) { input.addEventListener("change", applyFilters); });
  LC.byId("run-filters").addEventListener("submit", function (e) { e.preventDefault(); applyFilters(); });
  LC.byId("clear-filters").addEventListener("click", function () {
    fromInput.value = "";
    toInput.value = "";
    statusSelect.value = "";
    triggerSelect.value = "";
    applyFilters();
  });
  LC.byId("newer-page").addEventListener("click", function () { state.page = Math.max(0, state.page - 1); writeAddress(); refresher.now(); });
  LC.byId("older-page").addEventListener("click", function () { state.page += 1; writeAddress(); refresher.now(); });
})();
