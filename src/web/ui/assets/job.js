// The job page: what the job runs, its schedule in words with the next five fires (computed by
// the server's scheduler and shown in the job's own zone, with the browser's beside them when it
// differs), retries, chains both ways, notifications, the last runs with a duration chart, and
// the actions the user may take. Everything comes from /ui/api/jobs/{id}/overview; the page
// fetches it again every 2 s while a run is queued or running, else every 15 s.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const jobId = LC.page.jobId;
  const CHART_RUNS = 30;
  const state = { data: null };
  let chartSignature = "";

  const NOTIFY_WORDS = {
    ALWAYS: "After every run",
    FAILURE: "Only when a run fails",
    CHANGE: "When the outcome changes (the first failure after a success, the first success after a failure)",
    NEVER: "Never",
  };

  function fact(label, value, attrs) {
    if (value === null || value === undefined || value === "") return null;
    return el("div", attrs || {}, el("dt", {}, label), el("dd", {}, value));
  }

  // Appends children as LC.el does: arrays flattened, null and undefined left out (the DOM's own
  // append would write them as text).
  function put(node) {
    const add = function (child) {
      if (child === null || child === undefined || child === false) return;
      if (Array.isArray(child)) child.forEach(add);
      else node.append(child);
    };
    for (let i = 1; i < arguments.length; i++) add(arguments[i]);
    return node;
  }

  function muted(text) {
    return el("span", { class: "muted" }, text);
  }

  function jobLink(ref) {
    return el("a", { href: "/ui/jobs/" + ref.id, class: "job-link", dataset: { jobId: ref.id } }, "#" + ref.id + " " + ref.name);
  }

  function linkList(refs, emptyText) {
    if (!refs.length) return muted(emptyText);
    return el("ul", { class: "plain-list" }, refs.map(function (r) { return el("li", {}, jobLink(r)); }));
  }

  function userList(users, emptyText) {
    if (!users || !users.length) return muted(emptyText);
    return users.map(function (u, i) { return [i ? ", " : "", LC.userName(u)]; });
  }

  // ------------------------------------------------------------ what it runs
  function renderWhat(job, form) {
    const box = LC.clear(LC.byId("job-what"));
    const items = [fact("Type", LC.typeLabel(job.type))];
    if (job.type === "EXTERNAL") {
      items.push(fact("Command", el("code", { id: "job-command" }, job.command || "")));
      if (job.resultFromStdout) items.push(fact("Result", "Standard output is the result file (CSV)"));
    } else if (job.type === "INTERNAL") {
      items.push(fact("Built-in task", el("code", { id: "job-task" }, job.taskImplFqn || "")));
    } else if (job.type === "QUERY") {
      const q = form.query;
      if (q) {
        items.push(fact("Saved query", el("a", { href: "/ui/saved-queries/" + q.id + "/edit", id: "job-query-link" }, "#" + q.id + " " + q.title)));
        items.push(fact("SQL", el("pre", { class: "sql", id: "job-query-sql" }, q.sql), { class: "wide" }));
        items.push(fact("Query parameters", q.parameters
          ? (q.parameters.length ? el("span", { id: "job-query-params" }, q.parameters.map(function (p) { return ":" + p; }).join(", ")) : el("span", { id: "job-query-params" }, "None"))
          : muted("Cannot be read: " + (q.parametersError || "unknown"))));
        items.push(fact("Data source", q.dataSource));
      } else {
        items.push(fact("Saved query", muted(job.savedQuery ? "#" + job.savedQuery.id + " (deleted)" : "None")));
      }
      items.push(fact("Run as", job.runAs ? LC.userName(job.runAs) : "System user"));
    }
    items.push(fact("Fixed parameters", job.fixedArgs ? el("code", { id: "job-fixed-args" }, job.fixedArgs) : muted("None")));
    items.push(fact("Runtime parameters", job.rtArgsProvided
      ? el("span", { id: "job-rt-args" }, "Asked for at each run", job.rtArgsHelpText ? [" — ", el("em", {}, job.rtArgsHelpText)] : null)
      : el("span", { id: "job-rt-args" }, "Not asked for (runs with the fixed parameters)")));
    items.push(fact("Time limit", LC.fmtDuration(job.timeoutSeconds * 1000)));
    items.push(fact("Waiting runs allowed", String(job.maxQueuedRuns)));
    put(box, items);
  }

  // ------------------------------------------------------------ schedule
  function renderSchedule(data) {
    const job = data.job;
    const words = LC.clear(LC.byId("schedule-words"));
    const d = LC.describeSchedule(job);
    if (d.cron) words.append("Cron: ", el("code", {}, d.text));
    else words.append(d.text);
    const onDemand = job.repeatSchedule === "ONDEMAND";
    LC.byId("schedule-zone").textContent = onDemand ? "Runs only when someone runs it (or another job's end queues it)." : "In the job's time zone: " + data.timezone + ".";
    const facts = LC.clear(LC.byId("schedule-facts"));
    put(facts,
      fact("Status", data.paused ? el("span", { class: "badge", dataset: { status: "PAUSED" } }, job.activityStatus === "Closed" ? "Paused (Closed)" : job.activityStatus) : "Active"),
      onDemand ? null : fact("From", LC.timeEl(job.startDate)),
      onDemand ? null : fact("Until", job.endDate ? LC.timeEl(job.endDate) : muted("No end")),
      fact("After downtime", job.misfirePolicy === "RUN_ONCE" ? "Runs once for the missed fires" : "Skips the missed fires"));
    LC.byId("next-runs-box").hidden = onDemand;
    if (onDemand) return;

    const jobZone = data.timezone;
    const browserZone = LC.zone;
    const differs = !!browserZone && browserZone !== jobZone;
    const head = LC.clear(LC.byId("next-runs-head"));
    head.append(el("th", { scope: "col" }, "Job's time (" + jobZone + ")"));
    if (differs) head.append(el("th", { scope: "col" }, "Your time (" + browserZone + ")"));
    const body = LC.clear(LC.byId("next-runs"));
    data.nextRuns.forEach(function (fire) {
      const row = el("tr", { dataset: { at: fire.at } },
        el("td", { class: "job-local nowrap" }, fire.text + " " + fire.abbreviation + " (UTC" + fire.offset + ")"));
      if (differs) {
        row.append(el("td", { class: "browser-local nowrap muted" }, LC.fmtDateTime(fire.at) + " " + LC.fmtOffset(fire.at)));
      }
      body.append(row);
    });
    let note = "";
    if (data.paused) note = "The job is paused: these are the times it would run.";
    else if (!data.nextRuns.length) note = "No runs are scheduled: the schedule does not fire again (check the start and end dates).";
    LC.byId("next-runs-note").textContent = note;
    LC.byId("next-runs-table").hidden = !data.nextRuns.length;
  }

  // ------------------------------------------------------------ retries, chains, notifications
  function renderChains(data) {
    const job = data.job;
    const box = LC.clear(LC.byId("job-chains"));
    const retries = job.maxRetries > 0
      ? "Up to " + job.maxRetries + (job.maxRetries === 1 ? " retry" : " retries") + ", " + LC.fmtDuration(job.retryDelaySeconds * 1000) + " after a failure"
      : "None: a failed run is not tried again";
    const upstream = data.triggeredBy.map(function (u) {
      return el("li", { dataset: { jobId: u.id, on: u.on } }, jobLink(u), " ", muted(u.on === "SUCCESS" ? "when it succeeds" : "when it fails"));
    });
    const triggeredBy = upstream.length || data.hiddenUpstream
      ? el("ul", { class: "plain-list", id: "triggered-by" }, upstream,
          data.hiddenUpstream ? el("li", { class: "muted" }, data.hiddenUpstream + (data.hiddenUpstream === 1 ? " job" : " jobs") + " you cannot see") : null)
      : el("span", { class: "muted", id: "triggered-by" }, "No job queues it");
    put(box,
      fact("Retries", el("span", { id: "job-retries" }, retries)),
      fact("Queued by", triggeredBy),
      fact("On success, queues", el("div", { id: "on-success" }, linkList(job.onSuccess || [], "Nothing"))),
      fact("On failure, queues", el("div", { id: "on-failure" }, linkList(job.onFailure || [], "Nothing"))));
  }

  function renderNotify(job) {
    const box = LC.clear(LC.byId("job-notify"));
    put(box,
      fact("Notify", el("span", { id: "job-notify-on", dataset: { notifyOn: job.notifyOn } }, NOTIFY_WORDS[job.notifyOn] || job.notifyOn)),
      fact("Recipients", el("span", { id: "job-recipients" }, userList(job.recipients, "Nobody"))),
      job.webhookUrl ? fact("Webhook", el("code", {}, job.webhookUrl)) : null,
      fact("Shared with", el("span", { id: "job-shared" }, userList(job.sharedWith, "Nobody"))),
      fact("Created by", LC.userName(job.createdBy)));
  }

  // ------------------------------------------------------------ last runs
  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  function renderRuns(runs) {
    LC.byId("last-runs").hidden = false;
    const tbody = LC.clear(LC.byId("job-runs-body"));
    const now = Date.now();
    runs.forEach(function (run) {
      const link = "/ui/jobs/" + jobId + "/runs/" + run.id;
      const duration = LC.runDuration(run, now);
      tbody.append(el("tr", { dataset: { runId: run.id, status: run.status } },
        cell("Run ID", "title", el("a", { href: link, class: "run-link" }, el("span", { class: "job-id" }, "#" + run.id))),
        cell("Trigger", null, LC.triggerLabel(run.trigger) + (run.attempt > 1 ? " (attempt " + run.attempt + ")" : "")),
        cell("Run By", null, LC.userName(run.runBy)),
        cell("Queued", "nowrap", LC.timeEl(run.queuedAt, true)),
        cell("Duration", "nowrap duration", duration === null ? muted("—") : LC.fmtDuration(duration)),
        cell("Status", "status", el("a", { href: link, "aria-label": "Run #" + run.id + ": " + (run.cancelledBy ? "Cancelled" : LC.statusLabel(run.status)) }, LC.runBadge(run))),
        cell("Message", "message", run.message || "")));
    });
    LC.byId("job-runs-empty").hidden = runs.length > 0;
    LC.byId("job-runs-table").hidden = runs.length === 0;
    renderChart(runs, now);
  }

  // Bars, oldest left: height = duration (linear, with the longest labelled), colour = status.
  function renderChart(runs, now) {
    const box = LC.byId("duration-chart");
    const list = runs.slice(0, CHART_RUNS).reverse();
    const durations = list.map(function (r) { return LC.runDuration(r, now); });
    const width = Math.max(280, Math.floor(box.clientWidth || 600));
    const signature = JSON.stringify([width, list.map(function (r, i) { return [r.id, r.status, r.cancelledBy ? 1 : 0, durations[i]]; })]);
    if (signature === chartSignature) return;
    chartSignature = signature;
    LC.clear(box);
    const legend = LC.clear(LC.byId("chart-legend"));
    LC.legend(["SUCCEEDED", "FAILED", "IN_PROGRESS", "QUEUED"]).forEach(function (key) { legend.append(key); });
    if (!list.length) {
      box.append(el("p", { class: "chart-empty" }, "No runs to chart yet."));
      return;
    }
    const height = 150, left = 62, right = 8, top = 10, bottom = 22;
    const maxD = Math.max.apply(null, [1].concat(durations.filter(function (d) { return d !== null; })));
    const slot = (width - left - right) / CHART_RUNS;
    const barW = Math.max(3, Math.min(24, slot * 0.7));
    const plotH = height - top - bottom;
    const failed = list.filter(function (r) { return r.status === "FAILED"; }).length;
    const chart = LC.svg("svg", { id: "duration-svg", viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img",
      "aria-label": list.length + " runs, longest " + LC.fmtDuration(maxD) + ", " + failed + " failed" });
    [0, 0.5, 1].forEach(function (f) {
      const yy = top + (1 - f) * plotH;
      chart.append(LC.svg("line", { class: f === 0 ? "baseline" : "grid", x1: left, x2: width - right, y1: yy, y2: yy }));
      chart.append(LC.svg("text", { class: "axis-label", x: left - 6, y: yy + 4, "text-anchor": "end" }, LC.fmtDuration(maxD * f)));
    });
    chart.append(LC.svg("text", { class: "axis-label", x: left, y: height - 6, "text-anchor": "start" }, LC.fmtDateTime(list[0].queuedAt)));
    if (list.length > 1) chart.append(LC.svg("text", { class: "axis-label", x: width - right, y: height - 6, "text-anchor": "end" }, LC.fmtDateTime(list[list.length - 1].queuedAt)));
    list.forEach(function (run, i) {
      const d = durations[i];
      const h = d === null ? 3 : Math.max(3, (d / maxD) * plotH);
      const x = left + (CHART_RUNS - list.length + i) * slot + (slot - barW) / 2;
      const status = run.cancelledBy ? "CANCELLED" : run.status;
      const bar = LC.svg("rect", { class: "bar-" + run.status, x: x.toFixed(1), y: (top + plotH - h).toFixed(1), width: barW.toFixed(1), height: h.toFixed(1), rx: 1, dataset: { runId: run.id, status: status } },
        LC.svg("title", {}, "Run #" + run.id + " · " + (run.cancelledBy ? "Cancelled" : LC.statusLabel(run.status)) + (d !== null ? " · " + LC.fmtDuration(d) : "") + " · " + LC.fmtDateTime(run.queuedAt, true)));
      chart.append(LC.svg("a", { href: "/ui/jobs/" + jobId + "/runs/" + run.id, "aria-label": "Run #" + run.id }, bar));
    });
    box.append(chart);
  }

  // ------------------------------------------------------------ header and actions
  function renderHead(data) {
    const job = data.job;
    document.title = "#" + job.id + " " + job.name + " · labcron";
    LC.byId("page-title").textContent = job.name;
    LC.byId("crumb-job").textContent = "#" + job.id + " " + job.name;
    const summary = LC.clear(LC.byId("job-summary"));
    put(summary, el("span", { class: "job-id" }, "#" + job.id), " · ", LC.typeLabel(job.type), " · ", LC.scheduleEl(job));
    if (job.nextRunOn) summary.append(" · next run ", LC.timeEl(job.nextRunOn), " ", muted("(your time)"));
    if (data.paused) summary.append(" · ", el("strong", {}, "paused"));
    const run = LC.byId("run-job");
    run.hidden = !data.may.run;
    run.disabled = !job.isActiveJob;
    run.title = job.isActiveJob ? "Run now" : "The job is paused or incomplete";
    LC.byId("job-runs-link").href = "/ui/jobs/" + job.id + "/runs";
    const edit = LC.byId("edit-job");
    edit.hidden = !data.may.edit;
    edit.href = "/ui/jobs/" + job.id + "/edit";
    // The job's History (issue 15): its audit trail, for admins.
    const history = LC.byId("job-page-history");
    history.hidden = !LC.me.admin;
    history.href = "/ui/jobs/" + job.id + "/history";
    const toggle = LC.byId("toggle-job");
    toggle.hidden = !data.may.edit;
    toggle.textContent = job.activityStatus === "Closed" ? "Reopen" : "Close";
    toggle.title = job.activityStatus === "Closed" ? "Resume the schedule" : "Pause the schedule (the job cannot run while closed)";
    LC.byId("delete-job").hidden = !data.may.delete;
  }

  function render(data) {
    state.data = data;
    renderHead(data);
    renderWhat(data.job, data.runForm);
    renderSchedule(data);
    renderChains(data);
    renderNotify(data.job);
    renderRuns(data.runs);
    LC.byId("job-loading").hidden = true;
    LC.byId("job-cards").hidden = false;
    LC.byId("load-error").hidden = true;
  }

  async function load() {
    const data = await LC.api("GET", "/ui/api/jobs/" + jobId + "/overview");
    render(data);
    return data;
  }

  LC.byId("runs-zone").textContent = "(your time: " + (LC.zone || LC.fmtOffset(Date.now())) + ")";
  const refresher = LC.repeat(async function () {
    try {
      const data = await load();
      return data.runs.some(function (r) { return LC.isActiveStatus(r.status); }) ? 2000 : 15000;
    } catch (e) {
      if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
      return 10000;
    }
  });

  LC.byId("run-job").addEventListener("click", async function () {
    if (!state.data) return;
    const run = await LC.runJob(state.data.job);
    if (run) refresher.now();
  });

  // Close / Reopen: a full replace of the job as the API returned it, with the other status.
  LC.byId("toggle-job").addEventListener("click", async function () {
    if (!state.data) return;
    const job = state.data.job;
    const next = job.activityStatus === "Closed" ? "Active" : "Closed";
    const button = LC.byId("toggle-job");
    button.disabled = true;
    try {
      await LC.api("PUT", "/scheduled-jobs/" + job.id, Object.assign({}, job, { activityStatus: next }));
      LC.toast("Job " + job.name + (next === "Closed" ? " closed: it will not run until it is reopened." : " reopened."));
    } catch (e) {
      if (e.status !== 401) LC.toast("Job " + job.name + " was not changed: " + LC.errorText(e), { error: true });
    }
    button.disabled = false;
    refresher.now();
  });

  LC.byId("delete-job").addEventListener("click", async function () {
    if (!state.data) return;
    const job = state.data.job;
    const ok = await LC.confirmDialog({
      title: "Delete job",
      message: "Are you sure you want to delete the job - " + job.name + "?",
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    try {
      await LC.api("DELETE", "/scheduled-jobs/" + job.id);
      try { sessionStorage.setItem("labcron-flash", "Job " + job.name + " deleted."); } catch (e) { /* only a courtesy */ }
      refresher.stop();
      location.assign("/ui/jobs");
    } catch (e) {
      if (e.status !== 401) LC.toast("Job " + job.name + " was not deleted: " + LC.errorText(e), { error: true });
    }
  });

  window.addEventListener("resize", LC.debounce(function () {
    chartSignature = "";
    if (state.data) renderChart(state.data.runs, Date.now());
  }, 200));
})();
