// Saved queries: the list (title filter, paging) and the create/edit form with a "Try it" preview
// of the first rows. Everything goes through /rest/ng/saved-queries; the try-out uses the pages'
// helper endpoint /ui/api/saved-query-preview (read-only, row-limited, never stored).
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const PAGE_SIZE = 25;

  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  function canChange(q) {
    return LC.me.admin || (q.createdBy && q.createdBy.id === LC.me.id);
  }

  // ------------------------------------------------------------ list
  function listPage() {
    const input = LC.byId("filter-title");
    const tbody = LC.byId("queries-body");
    const state = { query: new URLSearchParams(location.search).get("query") || "", page: 0, more: false };
    input.value = state.query;

    async function load() {
      try {
        const list = await LC.api("GET", "/saved-queries" + LC.query({ query: state.query, startAt: state.page * PAGE_SIZE, maxResults: PAGE_SIZE + 1 }));
        state.more = list.length > PAGE_SIZE;
        render(list.slice(0, PAGE_SIZE));
        LC.byId("load-error").hidden = true;
      } catch (e) {
        if (e.status !== 401) LC.showError(LC.byId("load-error"), e);
      }
    }

    function render(list) {
      LC.byId("list-size").textContent = "Showing " + list.length + (state.more ? " (more on the next page)" : "");
      LC.byId("queries-empty").hidden = list.length > 0;
      LC.byId("queries-table").hidden = list.length === 0;
      LC.byId("page-info").textContent = "Page " + (state.page + 1);
      LC.byId("prev-page").disabled = state.page === 0;
      LC.byId("next-page").disabled = !state.more;
      LC.clear(tbody);
      list.forEach(function (q) {
        const label = "#" + q.id + " " + q.title;
        const actions = el("div", { class: "row-actions" });
        actions.append(el("a", { class: "button small", href: "/ui/saved-queries/" + q.id + "/edit", "aria-label": (canChange(q) ? "Edit " : "View ") + label }, canChange(q) ? "Edit" : "View"));
        actions.append(el("a", { class: "button small", href: "/ui/jobs/new?queryId=" + q.id, "aria-label": "Schedule " + label }, "Schedule"));
        if (canChange(q)) {
          const del = el("button", { type: "button", class: "small danger", "aria-label": "Delete " + label }, "Delete");
          del.addEventListener("click", async function () {
            const ok = await LC.confirmDialog({ title: "Delete saved query", message: "Are you sure you want to delete the query - " + q.title + "?", confirmLabel: "Delete", danger: true });
            if (!ok) return;
            try {
              await LC.api("DELETE", "/saved-queries/" + q.id);
              LC.toast("Query " + q.title + " deleted.");
              load();
            } catch (e) {
              LC.toast(LC.errorText(e), { error: true });
            }
          });
          actions.append(del);
        }
        tbody.append(el("tr", { dataset: { queryId: q.id } },
          cell("Title", "title", el("a", { href: "/ui/saved-queries/" + q.id + "/edit" }, el("span", { class: "job-id" }, "#" + q.id), " ", el("span", { class: "job-name" }, q.title))),
          cell("Data Source", null, el("code", {}, q.dataSource || "")),
          cell("Created By", null, LC.userName(q.createdBy)),
          cell("Last Modified", "nowrap", LC.timeEl(q.lastModifiedOn)),
          cell("Actions", "actions", actions)));
      });
    }

    const apply = LC.debounce(function () {
      state.query = input.value.trim();
      state.page = 0;
      history.replaceState(null, "", location.pathname + LC.query({ query: state.query }));
      load();
    }, 250);
    input.addEventListener("input", apply);
    LC.byId("query-filters").addEventListener("submit", function (e) { e.preventDefault(); apply(); });
    LC.byId("prev-page").addEventListener("click", function () { state.page = Math.max(0, state.page - 1); load(); });
    LC.byId("next-page").addEventListener("click", function () { state.page += 1; load(); });
    load();
  }

  // ------------------------------------------------------------ form
  function formPage() {
    const queryId = LC.page.queryId || null;
    const form = LC.byId("query-form");
    const FIELD_OF_CODE = {
      SAVED_QUERY_TITLE_REQUIRED: "title",
      SAVED_QUERY_TITLE_TOO_LONG: "title",
      SAVED_QUERY_DUP_TITLE: "title",
      SAVED_QUERY_SQL_REQUIRED: "sql",
      SAVED_QUERY_INVALID_SQL: "sql",
      SAVED_QUERY_SQL_TOO_LONG: "sql",
      SAVED_QUERY_INVALID_DATA_SOURCE: "dataSource",
      SAVED_QUERY_INVALID_ARGS: "params",
    };

    function fieldOf(error) {
      if (FIELD_OF_CODE[error.code]) return FIELD_OF_CODE[error.code];
      if (/data ?source/i.test(error.message || "")) return "dataSource";
      if (/title/i.test(error.message || "")) return "title";
      if (/sql|statement|syntax/i.test(error.message || "")) return "sql";
      return null;
    }

    function clearErrors() {
      form.querySelectorAll(".field-error").forEach(function (n) { n.remove(); });
      form.querySelectorAll("[aria-invalid]").forEach(function (n) { n.removeAttribute("aria-invalid"); });
      LC.byId("error-summary").hidden = true;
      LC.clear(LC.byId("error-list"));
    }

    function showErrors(errors, inSummary) {
      clearErrors();
      errors.forEach(function (error) {
        const name = fieldOf(error);
        const box = name && form.querySelector('[data-field="' + name + '"]');
        if (box) {
          box.append(el("p", { class: "field-error", id: "err-" + name }, error.message));
          const target = box.querySelector("input, textarea");
          if (target) {
            target.setAttribute("aria-invalid", "true");
            target.setAttribute("aria-describedby", "err-" + name);
          }
        }
        LC.byId("error-list").append(el("li", { dataset: { code: error.code } }, error.message));
      });
      if (inSummary !== false) {
        LC.byId("error-summary").hidden = false;
        LC.byId("error-summary").focus();
      }
    }

    function body() {
      return { title: form.elements.title.value.trim(), sql: form.elements.sql.value, dataSource: form.elements.dataSource.value.trim() || undefined };
    }

    async function init() {
      if (queryId) {
        try {
          const q = await LC.api("GET", "/saved-queries/" + queryId);
          form.elements.title.value = q.title;
          form.elements.sql.value = q.sql;
          form.elements.dataSource.value = q.dataSource || "";
          LC.byId("page-title").textContent = "Edit saved query #" + q.id;
          LC.byId("crumb").textContent = "#" + q.id + " " + q.title;
          document.title = "Edit #" + q.id + " " + q.title + " · labcron";
          LC.byId("save-query").textContent = "Update";
          const schedule = LC.byId("schedule-query");
          schedule.href = "/ui/jobs/new?queryId=" + q.id;
          schedule.hidden = false;
          if (!canChange(q)) {
            LC.byId("save-query").hidden = true;
            ["title", "sql", "dataSource"].forEach(function (n) { form.elements[n].readOnly = true; });
          }
        } catch (e) {
          const loading = LC.byId("form-loading");
          loading.textContent = "The saved query cannot be loaded: " + LC.errorText(e);
          loading.classList.add("form-error");
          return;
        }
      }
      LC.byId("form-loading").hidden = true;
      form.hidden = false;
      form.elements.title.focus();
    }

    LC.byId("try-query").addEventListener("click", async function () {
      const state = LC.byId("try-state");
      const wrap = LC.byId("try-wrap");
      state.textContent = "Running…";
      try {
        const result = await LC.api("POST", "/ui/api/saved-query-preview", Object.assign(body(), { args: LC.byId("try-params").value }));
        clearErrors();
        const table = LC.clear(LC.byId("try-preview"));
        table.append(el("thead", {}, el("tr", {}, el("th", { class: "rownum", scope: "col" }, "#"), result.columns.map(function (c) { return el("th", { scope: "col" }, c); }))));
        const tbody = el("tbody");
        result.rows.forEach(function (row, i) {
          tbody.append(el("tr", {}, el("td", { class: "rownum" }, String(i + 1)), row.map(function (v) { return el("td", {}, v === null ? "" : String(v)); })));
        });
        table.append(tbody);
        wrap.hidden = false;
        state.textContent = result.rows.length + " row" + (result.rows.length === 1 ? "" : "s") + (result.truncated ? " (first rows only)" : "") + ".";
      } catch (e) {
        wrap.hidden = true;
        state.textContent = "";
        if (e instanceof LC.ServiceError && e.status !== 401) showErrors(e.errors);
      }
    });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const save = LC.byId("save-query");
      save.disabled = true;
      try {
        const saved = queryId ? await LC.api("PUT", "/saved-queries/" + queryId, body()) : await LC.api("POST", "/saved-queries", body());
        sessionStorage.setItem("labcron-flash", "Query " + saved.title + " saved.");
        location.assign("/ui/saved-queries");
      } catch (e) {
        save.disabled = false;
        if (e instanceof LC.ServiceError && e.status !== 401) showErrors(e.errors);
      }
    });
    init();
  }

  if (LC.page.page === "queries") listPage();
  else formPage();
})();
