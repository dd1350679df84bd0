// The Jobs list: OpenSpecimen's columns (Title "#id name", Created By, Type, Repeat Interval,
// Last Run On) plus Next Run, the last status and a chart of the last 20 runs. Filters and the
// page live in the address bar. The list refreshes itself: every 2 s while a run is queued or
// running, otherwise every 20 s.
"use strict";

(function () {
  const LC = window.LC;
  LC.byId("next-run-zone").textContent = "(your time: " + (LC.zone || LC.fmtOffset(Date.now())) + ")";
  const el = LC.el;
  const PAGE_SIZE = 20;
  const titleInput = LC.byId("filter-title");
  const typeSelect = LC.byId("filter-type");
  const tbody = LC.byId("jobs-body");
  const state = { query: "", type: "", page: 0, count: 0, jobs: [], recent: {} };
  let generation = 0;
  // Say which zone the times below are in (the browser's, not the server's or the job's).
  try {
    const zoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zoneName) {
      LC.byId("time-zone-hint").textContent =
        "Times are in your browser's time zone: " + zoneName + " (" + LC.fmtOffset(Date.now()) + ").";
    }
  } catch (e) {
    // The static text of the page stays.
  }

  function readAddress() {
    const params = new URLSearchParams(location.search);
    state.query = params.get("query") || "";
    state.type = params.get("type") || "";
    state.page = Math.max(0, (Number(params.get("page")) || 1) - 1);
    titleInput.value = state.query;
    typeSelect.value = state.type;
  }

  function writeAddress() {
    const q = LC.query({ query: state.query, type: state.type, page: state.page > 0 ? state.page + 1 : "" });
    history.replaceState(null, "", location.pathname + q);
  }

  function canEdit(job) {
    const mine = job.createdBy && job.createdBy.id === LC.me.id;
    return LC.me.admin || (mine && job.type === "QUERY");
  }

  function canDelete(job) {
    const mine = job.createdBy && job.createdBy.id === LC.me.id;
    return LC.me.admin || (mine && job.type !== "EXTERNAL");
  }

  async function load() {
    const mine = ++generation;
    const filter = { query: state.query, type: state.type };
    const [jobs, count] = await Promise.all([
      LC.api("GET", "/scheduled-jobs" + LC.query(Object.assign({ startAt: state.page * PAGE_SIZE, maxResults: PAGE_SIZE }, filter))),
      LC.api("GET", "/scheduled-jobs/count" + LC.query(filter)),
    ]);
    let recent = {};
    if (jobs.length) {
      recent = await LC.api("GET", "/ui/api/recent-runs" + LC.query({ jobIds: jobs.map(function (j) { return j.id; }).join(","), count: 20 }));
    }
    if (mine !== generation) return null;
    if (!jobs.length && state.page > 0 && count.count > 0) {
      state.page = Math.floor((count.count - 1) / PAGE_SIZE);
      writeAddress();
      return load();
    }
    state.jobs = jobs;
    state.count = count.count;
    state.recent = recent;
    LC.byId("load-error").hidden = true;
    render();
    return jobs;
  }

  function render() {
    const shown = state.jobs.length;
    LC.byId("list-size").textContent = "Showing " + shown + " of " + state.count;
    const pages = Math.max(1, Math.ceil(state.count / PAGE_SIZE));
    LC.byId("page-info").textContent = "Page " + (state.page + 1) + " of " + pages;
    LC.byId("prev-page").disabled = state.page === 0;
    LC.byId("next-page").disabled = state.page + 1 >= pages;
    LC.byId("jobs-empty").hidden = shown > 0;
    LC.byId("jobs-table").hidden = shown === 0;

    const now = Date.now();
    const existing = new Map();
    Array.from(tbody.rows).forEach(function (row) { existing.set(row.dataset.jobId, row); });
    let previous = null;
    state.jobs.forEach(function (job) {
      const runs = state.recent[String(job.id)] || [];
      const signature = JSON.stringify([job, runs, LC.me]);
      let row = existing.get(String(job.id));
      if (row && row.dataset.signature === signature && !runs.some(function (r) { return r.status === "IN_PROGRESS"; })) {
        existing.delete(String(job.id));
      } else {
        const fresh = jobRow(job, runs, now);
        fresh.dataset.signature = signature;
        if (row) {
          keepFocus(row, fresh);
          row.replaceWith(fresh);
          existing.delete(String(job.id));
        }
        row = fresh;
      }
      const anchor = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== anchor) tbody.insertBefore(row, anchor);
      previous = row;
    });
    existing.forEach(function (row) { row.remove(); });
  }

  // When a row is rebuilt while one of its controls has the focus, focus the same control again.
  function keepFocus(oldRow, newRow) {
    const active = document.activeElement;
    if (!active || !oldRow.contains(active) || !active.dataset.action) return;
    const same = newRow.querySelector('[data-action="' + active.dataset.action + '"]');
    if (same) setTimeout(function () { same.focus(); }, 0);
  }

  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  function jobRow(job, runs, now) {
    const title = "#" + job.id + " " + job.name;
    const edit = canEdit(job);
    const titleLink = el("a", { href: "/ui/jobs/" + job.id, class: "job-title" },
      el("span", { class: "job-id" }, "#" + job.id), " ", el("span", { class: "job-name" }, job.name));
    const last = runs[0];
    const status = last
      ? el("a", { href: "/ui/jobs/" + job.id + "/runs/" + last.id, class: "last-status", "aria-label": "Last run #" + last.id + ": " + LC.statusLabel(last.status) }, LC.badge(last.status))
      : LC.badge(null);
    const schedule = LC.scheduleEl(job);
    if (job.activityStatus === "Closed") schedule.push(el("span", { class: "tz-note paused" }, "Paused"));

    const actions = el("div", { class: "row-actions" });
    const run = el("button", { type: "button", class: "small primary", dataset: { action: "run" }, "aria-label": "Run " + title, disabled: !job.isActiveJob, title: job.isActiveJob ? "Run now" : "The job is paused or incomplete" }, LC.icon("play"), "Run");
    run.addEventListener("click", async function () {
      const queued = await LC.runJob(job);
      if (queued) refresher.now();
    });
    actions.append(run);
    actions.append(el("a", { class: "button small icon-button", href: "/ui/jobs/" + job.id + "/runs", dataset: { action: "runs" }, "aria-label": "View runs of " + title, title: "View runs" }, LC.icon("runs"), el("span", { class: "label-text" }, "Runs")));
    if (edit) actions.append(el("a", { class: "button small icon-button", href: "/ui/jobs/" + job.id + "/edit", dataset: { action: "edit" }, "aria-label": "Edit " + title, title: "Edit" }, LC.icon("edit"), el("span", { class: "label-text" }, "Edit")));
    if (canDelete(job)) {
      const del = el("button", { type: "button", class: "small danger icon-button", dataset: { action: "delete" }, "aria-label": "Delete " + title, title: "Delete" }, LC.icon("delete"), el("span", { class: "label-text" }, "Delete"));
      del.addEventListener("click", function () { deleteJob(job); });
      actions.append(del);
    }

    return el("tr", { dataset: { jobId: job.id } },
      cell("Title", "title", titleLink),
      cell("Created By", null, LC.userName(job.createdBy)),
      cell("Type", null, LC.typeLabel(job.type)),
      cell("Repeat Interval", "repeat", el("div", {}, schedule)),
      cell("Last Run On", "nowrap last-run", job.lastRunOn ? LC.timeEl(job.lastRunOn) : el("span", { class: "muted" }, "Never")),
      // In the browser's zone (the column header says which), while the schedule beside it is in
      // the job's own zone.
      cell("Next Run", "nowrap next-run", job.nextRunOn ? LC.timeEl(job.nextRunOn) : el("span", { class: "muted" }, "—")),
      cell("Last Status", "status", status),
      cell("Last 20 Runs", "chart", LC.sparkline(runs, now)),
      cell("Actions", "actions", actions));
  }

  async function deleteJob(job) {
    const ok = await LC.confirmDialog({
      title: "Delete job",
      message: "Are you sure you want to delete the job - " + job.name + "?",
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    try {
      await LC.api("DELETE", "/scheduled-jobs/" + job.id);
      LC.toast("Job " + job.name + " deleted.");
      refresher.now();
    } catch (e) {
      LC.toast("Job " + job.name + " was not deleted: " + LC.errorText(e), { error: true });
    }
  }

  readAddress();
  const refresher = LC.repeat(async function () {
    try {
      const jobs = await load();
      if (jobs === null) return 2000;
      const busy = Object.keys(state.recent).some(function (id) {
        return (state.recent[id] || []).some(function (r) { return LC.isActiveStatus(r.status); });
      });
      return busy ? 2000 : 20000;
    } catch (e) {
      if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
      return 10000;
    }
  });

  const applyFilters = LC.debounce(function () {
    state.query = titleInput.value.trim();
    state.type = typeSelect.value;
    state.page = 0;
    writeAddress();
    refresher.now();
  }, 250);
  titleInput.addEventListener("input", applyFilters);
  typeSelect.addEventListener("change", applyFilters);
  LC.byId("job-filters").addEventListener("submit", function (e) { e.preventDefault(); applyFilters(); });
  LC.byId("prev-page").addEventListener("click", function () {
    state.page = Math.max(0, state.page - 1);
    writeAddress();
    refresher.now();
  });
  LC.byId("next-page").addEventListener("click", function () {
    state.page += 1;
    writeAddress();
    refresher.now();
  });
})();
