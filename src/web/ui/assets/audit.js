// The audit trail (admins): GET /rest/ng/audit-events with the page's filters, newest first, a page
// of 100 at a time. With data-job-id (the /ui/jobs/{id}/history page) it is that job's history.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const tbody = LC.byId("audit-body");
  const form = LC.byId("audit-filters");
  const more = LC.byId("audit-more");
  const jobId = LC.page.jobId || null;
  const PAGE = 100;
  let shown = 0;

  function cell(label, cls, content) {
    const td = el("td", { "data-label": label, class: cls || null });
    td.append(content === null || content === undefined ? "" : content);
    return td;
  }

  // One line per changed field ("timeoutSeconds: 3600 → 120"), else the detail's JSON.
  function describe(detail) {
    const changes = detail && detail.changes;
    const rest = Object.assign({}, detail || {});
    delete rest.changes;
    const box = el("div", { class: "audit-detail" });
    if (changes && Object.keys(changes).length) {
      const list = el("ul", {});
      Object.keys(changes).forEach(function (field) {
        const c = changes[field];
        list.append(el("li", {}, field + ": " + JSON.stringify(c.before) + " → " + JSON.stringify(c.after)));
      });
      box.append(list);
    }
    if (Object.keys(rest).length) box.append(el("code", {}, JSON.stringify(rest)));
    return box;
  }

  function params() {
    const q = new URLSearchParams();
    const from = LC.parseLocalInput(LC.byId("audit-from").value);
    const to = LC.parseLocalInput(LC.byId("audit-to").value);
    if (from !== null) q.set("fromDate", String(from));
    if (to !== null) q.set("toDate", String(to));
    [["audit-actor", "actor"], ["audit-action", "action"], ["audit-object-type", "objectType"], ["audit-object-id", "objectId"]].forEach(function (pair) {
      const value = LC.byId(pair[0]).value.trim();
      if (value) q.set(pair[1], value);
    });
    return q;
  }

  async function load(append) {
    const q = params();
    q.set("maxResults", String(PAGE));
    q.set("startAt", String(append ? shown : 0));
    const events = await LC.api("GET", "/audit-events?" + q.toString());
    if (!append) {
      LC.clear(tbody);
      shown = 0;
    }
    events.forEach(function (e) {
      const object = e.objectType ? e.objectType + (e.objectId ? " " + e.objectId : "") : "";
      tbody.append(el("tr", { dataset: { eventId: e.id, action: e.action } },
        cell("When", "nowrap", LC.timeEl(e.at, true)),
        cell("Actor", null, e.actor),
        cell("Action", "nowrap", e.action),
        cell("Object", "nowrap", object),
        cell("Detail", null, describe(e.detail)),
        cell("From", "nowrap", e.remoteAddr || "")));
    });
    shown += events.length;
    LC.byId("audit-size").textContent = shown ? "Showing " + shown + (shown === 1 ? " event" : " events") : "No events match.";
    more.hidden = events.length < PAGE;
  }

  function reload() {
    LC.byId("load-error").hidden = true;
    load(false).catch(function (e) { if (e.status !== 401) LC.showError(LC.byId("load-error"), e); });
  }

  if (jobId) {
    LC.byId("page-title").textContent = "Job " + jobId + ": History";
    LC.byId("history-crumb").hidden = false;
    LC.byId("history-job-link").href = "/ui/jobs/" + jobId;
    LC.byId("history-job-link").textContent = "Job " + jobId;
    LC.byId("audit-object-type").value = "JOB";
    LC.byId("audit-object-id").value = jobId;
  }
  form.addEventListener("submit", function (event) { event.preventDefault(); reload(); });
  LC.byId("audit-clear").addEventListener("click", function () {
    form.reset();
    if (jobId) {
      LC.byId("audit-object-type").value = "JOB";
      LC.byId("audit-object-id").value = jobId;
    }
    reload();
  });
  more.addEventListener("click", function () {
    load(true).catch(function (e) { LC.toast(LC.errorText(e), { error: true }); });
  });
  reload();
})();
