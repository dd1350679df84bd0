// One run: status, timings, arguments, message, the log (followed live with
// GET …/log?offset=N once a second while the run is queued or running), a table preview of the
// first 100 rows of a CSV result (read with a Range request, so a large file is not fetched
// whole), Download and Cancel.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const jobId = LC.page.jobId;
  const runId = LC.page.runId;
  const base = "/scheduled-jobs/" + jobId + "/runs/" + runId;
  const logBox = LC.byId("run-log");
  const decoder = new TextDecoder("utf-8");
  const PREVIEW_ROWS = 100;
  let run = null;
  let logOffset = 0;
  let previewShown = false;
  let ticker = null;

  function fact(label, value, cls) {
    if (value === null || value === undefined || value === "") return null;
    return el("div", { class: cls || null }, el("dt", {}, label), el("dd", {}, value));
  }

  function renderRun() {
    const jobLabel = "#" + run.jobId + " " + run.jobName;
    document.title = "Run #" + run.id + " of " + run.jobName + " · labcron";
    LC.byId("page-title").textContent = "Run #" + run.id;
    const crumbJob = LC.byId("crumb-job");
    crumbJob.textContent = jobLabel;
    crumbJob.href = "/ui/jobs/" + run.jobId + "/runs";
    LC.byId("crumb-run").textContent = "Run #" + run.id;

    const status = LC.byId("run-status");
    // A cancelled run stays FAILED in the API; the page says what happened.
    status.dataset.status = run.cancelledBy ? "CANCELLED" : run.status;
    status.textContent = run.cancelledBy ? "Failed: cancelled by " + LC.userName(run.cancelledBy) : LC.statusLabel(run.status);
    LC.byId("run-message").textContent = run.message || "";

    const active = LC.isActiveStatus(run.status);
    const duration = LC.runDuration(run, Date.now());
    const facts = LC.clear(LC.byId("run-facts"));
    [
      fact("Job", el("a", { href: "/ui/jobs/" + run.jobId, id: "run-job-link" }, jobLabel)),
      fact("Run By", LC.userName(run.runBy)),
      fact("Trigger", LC.triggerLabel(run.trigger)),
      fact("Scheduled For", run.scheduledFor ? LC.timeEl(run.scheduledFor, true) : null),
      fact("Queued", LC.timeEl(run.queuedAt, true)),
      fact("Start Time", run.startedAt ? LC.timeEl(run.startedAt, true) : "Not started"),
      fact("End Time", run.finishedAt ? LC.timeEl(run.finishedAt, true) : active ? "Not finished" : null),
      fact("Duration", duration === null ? null : LC.fmtDuration(duration) + (active ? " so far" : ""), "duration"),
      fact("Node", run.node ? el("span", { id: "run-node" }, run.node) : null),
      fact("Exit Code", run.exitCode === null || run.exitCode === undefined ? null : String(run.exitCode)),
      fact("Arguments", run.rtArgs ? el("code", { id: "run-args-value" }, run.rtArgs) : el("span", { class: "muted" }, "None")),
      fact("Result File", run.logFilePath ? run.logFilePath + (run.resultFileSize !== null && run.resultFileSize !== undefined ? " (" + LC.fmtBytes(run.resultFileSize) + ")" : "") : null),
      fact("Log Size", LC.fmtBytes(run.logSize) + (run.logTruncated ? " (truncated)" : "")),
    ].forEach(function (item) { if (item) facts.append(item); });

    const download = LC.byId("download");
    const downloadable = !active && !!run.logFilePath;
    download.hidden = !downloadable;
    if (downloadable) {
      download.href = "/rest/ng" + base + "/result-file";
      download.setAttribute("download", run.logFilePath);
    }
    LC.byId("cancel-run").hidden = !active;
    LC.byId("log-state").textContent = active
      ? run.status === "QUEUED" ? "Waiting to start…" : "Following the log…"
      : "Complete" + (run.logTruncated ? " — the log was cut at the size limit" : "");
    if (!active && !previewShown && run.logFilePath && /\.csv$/i.test(run.logFilePath)) {
      previewShown = true;
      showPreview();
    }
  }

  async function loadRun() {
    run = await LC.api("GET", base);
    LC.byId("load-error").hidden = true;
    renderRun();
  }

  function appendLog(text) {
    if (!text) return;
    const nearBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 40;
    logBox.append(text);
    if (nearBottom) logBox.scrollTop = logBox.scrollHeight;
  }

  // Reads what the log has beyond `logOffset`. Returns the run status the server reported.
  async function readLog() {
    const response = await LC.api("GET", base + "/log?offset=" + logOffset, undefined, { raw: true, headers: { Accept: "text/plain" } });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const next = Number(response.headers.get("X-Log-Offset"));
    logOffset = Number.isFinite(next) && next >= logOffset ? next : logOffset + bytes.length;
    appendLog(decoder.decode(bytes, { stream: true }));
    return response.headers.get("X-Run-Status");
  }

  async function follow() {
    try {
      const reported = await readLog();
      if (run && reported && reported !== run.status) await loadRun();
      if (run && !LC.isActiveStatus(run.status)) {
        // Output written just before the end: one more read, then flush the decoder.
        await readLog();
        appendLog(decoder.decode());
        if (!logBox.textContent) logBox.append(el("span", { class: "muted" }, "(The run wrote nothing to its log.)"));
        clearInterval(ticker);
        return;
      }
    } catch (e) {
      if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
    }
    setTimeout(follow, 1000);
  }

  // ------------------------------------------------------------ CSV preview
  async function showPreview() {
    const section = LC.byId("result-section");
    const info = LC.byId("result-info");
    section.hidden = false;
    info.textContent = "Loading the preview…";
    try {
      let size = 256 * 1024;
      for (;;) {
        const response = await LC.api("GET", base + "/result-file", undefined, { raw: true, headers: { Range: "bytes=0-" + (size - 1), Accept: "text/csv" } });
        const buffer = await response.arrayBuffer();
        const total = totalSize(response, buffer.byteLength);
        const complete = response.status === 200 || buffer.byteLength >= total;
        const text = new TextDecoder("utf-8").decode(buffer);
        const parsed = LC.parseCsv(text, PREVIEW_ROWS + 1, complete);
        if (parsed.rows.length > PREVIEW_ROWS || complete || size >= 8 * 1024 * 1024) {
          renderPreview(parsed, total);
          return;
        }
        size *= 4;
      }
    } catch (e) {
      info.textContent = "No preview: " + LC.errorText(e);
    }
  }

  function totalSize(response, received) {
    const range = response.headers.get("Content-Range");
    const m = range && /\/(\d+)\s*$/.exec(range);
    return m ? Number(m[1]) : received;
  }

  function renderPreview(parsed, total) {
    const table = LC.clear(LC.byId("result-preview"));
    const rows = parsed.rows;
    if (!rows.length) {
      LC.byId("result-info").textContent = "The result file is empty.";
      return;
    }
    const header = rows[0];
    const data = rows.slice(1, PREVIEW_ROWS + 1);
    const width = Math.max.apply(null, rows.map(function (r) { return r.length; }));
    const headCells = [el("th", { scope: "col", class: "rownum" }, "#")];
    for (let i = 0; i < width; i++) headCells.push(el("th", { scope: "col" }, header[i] === undefined ? "" : header[i]));
    table.append(el("thead", {}, el("tr", {}, headCells)));
    const tbody = el("tbody");
    data.forEach(function (row, index) {
      const cells = [el("td", { class: "rownum" }, String(index + 1))];
      for (let i = 0; i < width; i++) cells.push(el("td", {}, row[i] === undefined ? "" : row[i]));
      tbody.append(el("tr", {}, cells));
    });
    table.append(tbody);
    const more = parsed.truncated || rows.length > PREVIEW_ROWS + 1;
    LC.byId("result-info").textContent = (more ? "First " + data.length + " rows" : "All " + data.length + " rows") + " of " + LC.fmtBytes(total) + " — Download for the whole file.";
  }

  // ------------------------------------------------------------ cancel
  LC.byId("cancel-run").addEventListener("click", async function () {
    const ok = await LC.confirmDialog({
      title: "Cancel run",
      message: "Cancel run #" + runId + (run ? " of " + run.jobName : "") + "? A running process is stopped.",
      confirmLabel: "Cancel run",
      cancelLabel: "Keep running",
      danger: true,
    });
    if (!ok) return;
    try {
      run = await LC.api("POST", base + "/cancel");
      renderRun();
      LC.toast("Run #" + runId + " cancelled.");
    } catch (e) {
      LC.toast(LC.errorText(e), { error: true });
      loadRun().catch(function () {});
    }
  });

  (async function start() {
    try {
      await loadRun();
    } catch (e) {
      if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
      return;
    }
    // Keep "Duration … so far" moving while the run is in progress.
    ticker = setInterval(function () {
      if (!run || run.status !== "IN_PROGRESS") return;
      const target = document.querySelector("#run-facts .duration dd");
      if (target) target.textContent = LC.fmtDuration(LC.runDuration(run, Date.now())) + " so far";
    }, 1000);
    follow();
  })();
})();
