// Add/Edit job: the fields of the job object with OpenSpecimen's visibility rules per type and
// schedule, a read-only "Run Schedule" description, and a preview of the next five fire times
// (from /scheduled-jobs/{id}/next-runs for a saved, unchanged schedule; otherwise computed by the
// server's scheduler for the form's values). Saving sends the whole job (PUT is a full replace);
// the API's error array is shown beside the fields it concerns and in a summary at the top.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const jobId = LC.page.jobId || null;
  // The job's History (issue 15): the audit trail of this job, for admins.
  if (jobId && LC.me.admin) {
    LC.byId("job-history-link").href = "/ui/jobs/" + jobId + "/history";
    LC.byId("job-history").hidden = false;
  }
  const form = LC.byId("job-form");
  const params = new URLSearchParams(location.search);
  let original = null;
  let scheduleDirty = !jobId;
  let startDateTouched = false;
  let previewGeneration = 0;

  const SCHEDULE_FIELDS = ["scheduledDayOfMonth", "scheduledDayOfWeek", "scheduledHour", "scheduledMinute", "hourlyInterval", "minutelyInterval", "cronExpression"];
  const USES = {
    ONDEMAND: [],
    MINUTELY: ["minutelyInterval"],
    HOURLY: ["scheduledMinute", "hourlyInterval"],
    DAILY: ["scheduledHour", "scheduledMinute"],
    WEEKLY: ["scheduledDayOfWeek", "scheduledHour", "scheduledMinute"],
    MONTHLY: ["scheduledDayOfMonth", "scheduledHour", "scheduledMinute"],
    CRON: ["cronExpression"],
  };

  function input(name) {
    return form.elements.namedItem(name);
  }

  function radioValue(name) {
    const checked = form.querySelector('input[name="' + name + '"]:checked');
    return checked ? checked.value : "";
  }

  function setRadio(name, value) {
    form.querySelectorAll('input[name="' + name + '"]').forEach(function (r) { r.checked = r.value === String(value); });
  }

  function numberOrText(value) {
    const text = String(value).trim();
    if (text === "") return undefined;
    return /^-?\d+$/.test(text) ? Number(text) : text;
  }

  function checkedIds(containerId) {
    return Array.from(LC.byId(containerId).querySelectorAll("input:checked")).map(function (c) { return { id: Number(c.value) }; });
  }

  // ------------------------------------------------------------ the job object from the form
  function collect() {
    const type = radioValue("type");
    const repeat = radioValue("repeatSchedule");
    const job = {
      name: input("name").value.trim(),
      type: type || undefined,
      repeatSchedule: repeat || undefined,
      activityStatus: radioValue("activityStatus") || "Active",
      sharedWith: checkedIds("sharedWith"),
      recipients: checkedIds("recipients"),
      fixedArgs: input("fixedArgs").value.trim() || undefined,
      rtArgsProvided: radioValue("rtArgsProvided") === "true",
      misfirePolicy: input("misfirePolicy").value,
      timeoutSeconds: numberOrText(input("timeoutSeconds").value),
      maxQueuedRuns: numberOrText(input("maxQueuedRuns").value),
    };
    if (repeat && repeat !== "ONDEMAND") job.timezone = input("timezone").value.trim() || undefined;
    else if (original) job.timezone = original.timezone;
    (USES[repeat] || []).forEach(function (name) {
      const value = input(name).value;
      job[name] = name === "scheduledDayOfWeek" || name === "cronExpression" ? value.trim() || undefined : numberOrText(value);
    });
    if (job.rtArgsProvided) job.rtArgsHelpText = input("rtArgsHelpText").value.trim() || undefined;
    if (type === "INTERNAL") job.taskImplFqn = input("taskImplFqn").value || undefined;
    if (type === "EXTERNAL") {
      job.command = input("command").value.trim() || undefined;
      job.resultFromStdout = input("resultFromStdout").checked;
    }
    if (type === "QUERY") {
      const q = input("savedQuery").value;
      if (q) job.savedQuery = { id: Number(q) };
      const runAs = input("runAs").value;
      if (runAs) job.runAs = { id: Number(runAs) };
    }
    const start = LC.parseLocalInput(input("startDate").value);
    if (startDateTouched) {
      if (start !== null) job.startDate = start;
    } else if (original) {
      job.startDate = original.startDate;
    }
    const end = LC.parseLocalInput(input("endDate").value);
    if (end !== null) job.endDate = end;
    // PUT replaces the whole job: keep what this form has no field for.
    if (original && original.webhookUrl) job.webhookUrl = original.webhookUrl;
    if (original) {
      ["maxRetries", "retryDelaySeconds", "notifyOn"].forEach(function (name) {
        if (original[name] !== undefined && original[name] !== null) job[name] = original[name];
      });
      ["onSuccess", "onFailure"].forEach(function (name) {
        if (Array.isArray(original[name])) job[name] = original[name].map(function (r) { return { id: r.id }; });
      });
    }
    return job;
  }

  // ------------------------------------------------------------ visibility rules
  function applyVisibility() {
    const type = radioValue("type");
    const repeat = radioValue("repeatSchedule");
    const rt = radioValue("rtArgsProvided") === "true";
    const has = function (list, value) { return list.split(/\s+/).indexOf(value) >= 0; };
    form.querySelectorAll("[data-show-types]").forEach(function (n) { n.hidden = !has(n.dataset.showTypes, type); });
    document.querySelectorAll("[data-show-schedules]").forEach(function (n) { n.hidden = !has(n.dataset.showSchedules, repeat); });
    document.querySelectorAll("[data-hide-schedules]").forEach(function (n) { n.hidden = !repeat || has(n.dataset.hideSchedules, repeat); });
    form.querySelectorAll("[data-show-rt]").forEach(function (n) { n.hidden = !rt; });
  }

  // ------------------------------------------------------------ errors beside fields
  const FIELD_OF_CODE = {
    SCHEDULED_JOB_NAME_REQUIRED: "name",
    SCHEDULED_JOB_DUP_JOB_NAME: "name",
    SCHEDULED_JOB_NAME_TOO_LONG: "name",
    SCHEDULED_JOB_REPEAT_SCHEDULE_REQUIRED: "repeatSchedule",
    SCHEDULED_JOB_INVALID_REPEAT_SCHEDULE: "repeatSchedule",
    SCHEDULED_JOB_END_DATE_BEFORE_START_DATE: "endDate",
    SCHEDULED_JOB_INVALID_TYPE: "type",
    SCHEDULED_JOB_TASK_IMPL_FQN_REQUIRED: "taskImplFqn",
    SCHEDULED_JOB_INVALID_TASK_IMPL_FQN: "taskImplFqn",
    SCHEDULED_JOB_QUERY_REQ: "savedQuery",
    SAVED_QUERY_NOT_FOUND: "savedQuery",
    SCHEDULED_JOB_EXTERNAL_COMMAND_REQUIRED: "command",
    SCHEDULED_JOB_COMMAND_NOT_ALLOWED: "command",
    SCHEDULED_JOB_INVALID_CRON: "cronExpression",
    SCHEDULED_JOB_INVALID_TIMEZONE: "timezone",
    SCHEDULED_JOB_INVALID_TIMEOUT: "timeoutSeconds",
    SCHEDULED_JOB_INVALID_MAX_QUEUED_RUNS: "maxQueuedRuns",
    SCHEDULED_JOB_INVALID_MISFIRE_POLICY: "misfirePolicy",
    ACTIVITY_STATUS_INVALID: "activityStatus",
    USER_NOT_FOUND: "runAs",
    USER_ONE_OR_MORE_NOT_FOUND: "sharedWith",
    SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED: "rtArgsProvided",
  };
  const NAMED_IN_MESSAGE = SCHEDULE_FIELDS.concat(["command", "fixedArgs", "startDate", "endDate", "runAs", "recipients", "sharedWith", "resultFromStdout", "rtArgsProvided", "savedQuery", "timezone"]);

  function fieldOf(error) {
    if (FIELD_OF_CODE[error.code]) return FIELD_OF_CODE[error.code];
    const message = error.message || "";
    let best = null, at = Infinity;
    NAMED_IN_MESSAGE.forEach(function (name) {
      const i = message.indexOf(name);
      if (i >= 0 && i < at) { best = name; at = i; }
    });
    return best;
  }

  function container(field) {
    return form.querySelector('[data-field="' + field + '"]');
  }

  function focusTarget(field) {
    const box = container(field);
    if (!box) return null;
    return box.querySelector("input:not([type=hidden]), select, textarea") || box;
  }

  function clearErrors() {
    form.querySelectorAll(".field-error").forEach(function (n) { n.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (n) { n.removeAttribute("aria-invalid"); });
    form.querySelectorAll("[data-error-described]").forEach(function (n) {
      const ids = (n.getAttribute("aria-describedby") || "").split(" ").filter(function (id) { return !id.startsWith("err-"); });
      if (ids.length) n.setAttribute("aria-describedby", ids.join(" "));
      else n.removeAttribute("aria-describedby");
      delete n.dataset.errorDescribed;
    });
    LC.byId("error-summary").hidden = true;
    LC.clear(LC.byId("error-list"));
  }

  function showErrors(errors) {
    clearErrors();
    const list = LC.byId("error-list");
    errors.forEach(function (error) {
      const field = fieldOf(error);
      const box = field ? container(field) : null;
      let link = null;
      if (box && !box.hidden) {
        const id = "err-" + field;
        let p = LC.byId(id);
        if (!p) {
          p = el("p", { class: "field-error", id: id });
          box.appendChild(p);
        } else {
          p.append(" ");
        }
        p.append(error.message);
        const target = focusTarget(field);
        const invalid = box.matches("fieldset") ? box : target;
        if (invalid) invalid.setAttribute("aria-invalid", "true");
        if (target) {
          const ids = (target.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
          if (ids.indexOf(id) < 0) ids.push(id);
          target.setAttribute("aria-describedby", ids.join(" "));
          target.dataset.errorDescribed = "1";
          if (!target.id) target.id = "field-" + field;
          link = "#" + target.id;
        }
        const details = box.closest("details");
        if (details) details.open = true;
      }
      list.appendChild(el("li", { dataset: { code: error.code } }, link ? el("a", { href: link }, error.message) : error.message));
    });
    const summary = LC.byId("error-summary");
    summary.hidden = false;
    summary.focus();
  }

  // ------------------------------------------------------------ schedule text and next runs
  function renderScheduleText(job) {
    const target = LC.clear(LC.byId("schedule-text"));
    if (!job.repeatSchedule) {
      target.append("Choose a repeat interval.");
      return;
    }
    const d = LC.describeSchedule(job);
    if (d.cron) target.append("Cron: ", el("code", {}, d.text || "…"));
    else target.append(d.text);
    const hourBound = ["DAILY", "WEEKLY", "MONTHLY", "CRON"].indexOf(job.repeatSchedule) >= 0;
    if (hourBound && job.timezone) target.append(el("span", { class: "tz-note" }, "Hours in " + job.timezone + "."));
  }

  // "+02:00" from an RFC 3339 time.
  function offsetOf(local) {
    const m = /([+-]\d\d:\d\d|Z)$/.exec(local || "");
    return m ? (m[1] === "Z" ? "+00:00" : m[1]) : "";
  }

  // The job's own zone is the prominent one (the schedule's hours are read in it); the
  // browser's follows, smaller, when it differs.
  function renderFires(fires, zone, note) {
    const list = LC.clear(LC.byId("next-runs"));
    const differs = !!zone && zone !== LC.zone;
    LC.byId("next-runs-zone").textContent = zone ? "(in " + zone + ", the job's time zone" + (differs ? "; your time after each" : "") + ")" : "";
    let previousOffset = null;
    fires.forEach(function (fire) {
      const offset = offsetOf(fire.local);
      const jobTime = fire.local.slice(0, 16).replace("T", " ");
      const item = el("li", { dataset: { at: fire.at } });
      if (differs) {
        item.append(el("strong", { class: "job-local" }, jobTime + " in " + zone), " ", el("span", { class: "muted" }, "(UTC" + offset + ")"),
          " ", el("span", { class: "muted browser-local" }, "· your time: ", LC.timeEl(fire.at), " " + LC.fmtOffset(fire.at)));
      } else {
        item.append(el("strong", { class: "job-local" }, jobTime), " ", el("span", { class: "muted" }, "UTC" + offset + (zone ? " (" + zone + ")" : "")));
      }
      if (previousOffset !== null && offset !== previousOffset) {
        item.append(el("span", { class: "dst", title: "The UTC offset changes (daylight saving time)" }, "DST: UTC" + previousOffset + " → UTC" + offset));
      }
      previousOffset = offset;
      list.appendChild(item);
    });
    LC.byId("preview-note").textContent = note || (fires.length ? "" : "No runs are scheduled: the schedule does not fire again (check the start and end dates).");
  }

  async function updatePreview() {
    const job = collect();
    renderScheduleText(job);
    if (!job.repeatSchedule || job.repeatSchedule === "ONDEMAND") return;
    const mine = ++previewGeneration;
    try {
      const paused = job.activityStatus === "Closed";
      let fires, zone = job.timezone, note = "", errors = [];
      if (jobId && !scheduleDirty && !paused) {
        fires = await LC.api("GET", "/scheduled-jobs/" + jobId + "/next-runs?count=5");
      } else {
        const preview = await LC.api("POST", "/ui/api/schedule-preview?count=5", job);
        fires = preview.nextRuns;
        zone = preview.timezone;
        errors = preview.errors;
        if (preview.paused) note = "The job is paused: these are the times it would run.";
      }
      if (mine !== previewGeneration) return;
      if (errors.length) {
        renderFires([], zone, errors.map(function (e) { return e.message; }).join(" "));
      } else {
        renderFires(fires, zone, note);
      }
    } catch (e) {
      if (mine === previewGeneration) renderFires([], null, "Preview unavailable: " + LC.errorText(e));
    }
  }
  const schedulePreview = LC.debounce(updatePreview, 300);

  // ------------------------------------------------------------ the chosen saved query
  // Its SQL and parameters, and a warning beside "Runtime Parameters" when it takes none (the
  // API refuses such a job with SCHEDULED_JOB_RT_ARGS_NOT_ALLOWED).
  let queryFacts = null;
  let factsGeneration = 0;
  async function showQueryFacts() {
    const box = LC.byId("saved-query-facts");
    const id = input("savedQuery").value;
    const mine = ++factsGeneration;
    if (radioValue("type") !== "QUERY" || !id) {
      box.hidden = true;
      queryFacts = null;
      updateRtNote();
      return;
    }
    let facts = null, problem = null;
    try {
      facts = await LC.api("GET", "/ui/api/saved-queries/" + id + "/facts");
    } catch (e) {
      problem = e;
    }
    if (mine !== factsGeneration) return;
    queryFacts = facts;
    const params = LC.byId("saved-query-params");
    LC.byId("saved-query-sql").textContent = facts ? facts.sql : "";
    if (!facts) {
      params.textContent = "The query cannot be read: " + LC.errorText(problem);
    } else if (!facts.parameters) {
      params.textContent = "Its parameters cannot be read: " + facts.parametersError;
    } else if (facts.parameters.length) {
      params.textContent = "Parameters: " + facts.parameters.map(function (p) { return ":" + p; }).join(", ") + " — give them as name=value in the fixed or runtime parameters.";
    } else {
      params.textContent = "This query takes no parameters.";
    }
    box.hidden = false;
    updateRtNote();
  }

  function updateRtNote() {
    const note = LC.byId("rt-args-note");
    const none = radioValue("type") === "QUERY" && !!queryFacts && !!queryFacts.parameters && queryFacts.parameters.length === 0;
    const asked = radioValue("rtArgsProvided") === "true";
    note.hidden = !(none && asked);
    note.textContent = none && asked ? "The chosen query takes no parameters, so its runs cannot be given any: choose Not Provided." : "";
  }

  // ------------------------------------------------------------ loading
  function userChecklist(containerId, users, selected) {
    const box = LC.clear(LC.byId(containerId));
    const chosen = new Set((selected || []).map(function (u) { return u.id; }));
    if (!users.length) box.append(el("span", { class: "muted" }, "No other users."));
    users.forEach(function (user) {
      const id = containerId + "-" + user.id;
      box.append(el("label", { for: id }, el("input", { type: "checkbox", id: id, value: user.id, checked: chosen.has(user.id) }), LC.userName(user) + " (" + user.loginName + ")"));
    });
  }

  function fillSelect(select, options, selectedValue) {
    options.forEach(function (o) { select.append(el("option", { value: o.value }, o.label)); });
    if (selectedValue !== undefined && selectedValue !== null) select.value = String(selectedValue);
  }

  function fillTimezones() {
    const list = LC.byId("timezones");
    let zones = [];
    try {
      zones = Intl.supportedValuesOf("timeZone");
    } catch (e) {
      zones = [];
    }
    ["UTC", LC.page.serverTimezone, LC.zone].forEach(function (z) { if (z && zones.indexOf(z) < 0) zones.unshift(z); });
    zones.forEach(function (z) { list.append(el("option", { value: z })); });
  }

  function fill(job) {
    input("name").value = job.name || "";
    setRadio("type", job.type || "");
    input("taskImplFqn").value = job.taskImplFqn || "";
    input("command").value = job.command || "";
    input("resultFromStdout").checked = !!job.resultFromStdout;
    input("fixedArgs").value = job.fixedArgs || "";
    setRadio("rtArgsProvided", job.rtArgsProvided ? "true" : "false");
    input("rtArgsHelpText").value = job.rtArgsHelpText || "";
    setRadio("repeatSchedule", job.repeatSchedule || "");
    SCHEDULE_FIELDS.forEach(function (name) {
      if (job[name] !== null && job[name] !== undefined) input(name).value = job[name];
    });
    input("timezone").value = job.timezone || "";
    setRadio("activityStatus", job.activityStatus === "Closed" ? "Closed" : "Active");
    input("startDate").value = LC.localInputValue(job.startDate);
    input("endDate").value = LC.localInputValue(job.endDate);
    input("timeoutSeconds").value = job.timeoutSeconds || "";
    input("misfirePolicy").value = job.misfirePolicy || "SKIP";
    input("maxQueuedRuns").value = job.maxQueuedRuns === undefined || job.maxQueuedRuns === null ? "" : job.maxQueuedRuns;
  }

  // The read-only scripts picker (admins only, as EXTERNAL jobs are): name, size, modified and
  // first lines of each program; "Use" puts its name into the command field.
  async function loadScripts() {
    const picker = LC.byId("scripts-picker");
    if (!picker || !LC.me.admin) return;
    let programs;
    try {
      programs = await LC.api("GET", "/ui/api/scripts");
    } catch (e) {
      LC.byId("scripts-note").textContent = "The scripts cannot be listed: " + LC.errorText(e);
      picker.hidden = false;
      return;
    }
    const list = LC.byId("scripts-list");
    LC.clear(list);
    if (!programs.length) LC.byId("scripts-note").textContent = "The scripts directory holds no programs yet.";
    programs.forEach(function (p) {
      const use = el("button", { type: "button", class: "secondary", "data-script": p.name }, "Use");
      use.addEventListener("click", function () {
        const command = input("command");
        const rest = command.value.trim().split(/\s+/).slice(1).join(" ");
        command.value = rest ? p.name + " " + rest : p.name;
        command.dispatchEvent(new Event("input", { bubbles: true }));
        command.focus();
      });
      const when = p.modified ? LC.fmtDateTime(p.modified) : "";
      list.append(el("li", { class: "script", "data-name": p.name },
        el("div", { class: "script-head" }, el("code", { class: "script-name" }, p.name), " ",
          el("span", { class: "muted script-meta" }, p.size + " bytes" + (when ? ", modified " + when : "")), " ", use),
        el("pre", { class: "script-lines" }, p.firstLines.join("\n"))));
    });
    picker.hidden = false;
  }

  async function init() {
    loadScripts();
    const usersCall = LC.api("GET", "/users").catch(function () { return []; });
    const queriesCall = LC.api("GET", "/saved-queries?maxResults=1000").then(function (list) { return { list: list }; }, function (e) { return { error: e }; });
    const jobCall = jobId ? LC.api("GET", "/scheduled-jobs/" + jobId) : Promise.resolve(null);
    let users, queries, job;
    try {
      [users, queries, job] = await Promise.all([usersCall, queriesCall, jobCall]);
    } catch (e) {
      const loading = LC.byId("form-loading");
      loading.textContent = "The job cannot be loaded: " + LC.errorText(e);
      loading.classList.add("form-error");
      return;
    }
    users = (users || []).filter(function (u) { return u.loginName && u.loginName.charAt(0) !== "$"; });
    const others = users.filter(function (u) { return u.id !== LC.me.id; });

    // Saved queries (the QUERY type's dropdown).
    const querySelect = input("savedQuery");
    const queryList = Array.isArray(queries.list) ? queries.list : [];
    fillSelect(querySelect, queryList.map(function (q) { return { value: q.id, label: "#" + q.id + " " + q.title }; }));
    if (queries.error) LC.byId("saved-query-help").textContent = "Saved queries cannot be listed: " + LC.errorText(queries.error);
    fillSelect(input("runAs"), users.map(function (u) { return { value: u.id, label: LC.userName(u) + " (" + u.loginName + ")" }; }));
    fillTimezones();

    if (!LC.me.admin) {
      form.querySelectorAll('input[name="type"]').forEach(function (r) { if (r.value !== "QUERY") r.disabled = true; });
      LC.byId("type-note").hidden = false;
    }

    if (job) {
      original = job;
      document.title = "Edit #" + job.id + " " + job.name + " · labcron";
      LC.byId("page-title").textContent = "Edit job #" + job.id;
      LC.byId("crumb").textContent = "#" + job.id + " " + job.name;
      LC.byId("save-job").textContent = "Update";
      fill(job);
      if (job.savedQuery && !queryList.some(function (q) { return q.id === job.savedQuery.id; })) {
        querySelect.append(el("option", { value: job.savedQuery.id }, "#" + job.savedQuery.id + " " + (job.savedQuery.title || "(deleted query)")));
        querySelect.value = String(job.savedQuery.id);
      } else if (job.savedQuery) {
        querySelect.value = String(job.savedQuery.id);
      }
      if (job.runAs) input("runAs").value = String(job.runAs.id);
      userChecklist("sharedWith", others, job.sharedWith);
      userChecklist("recipients", users, job.recipients);
    } else {
      const queryId = params.get("queryId");
      fill({
        type: queryId || !LC.me.admin ? "QUERY" : "EXTERNAL",
        repeatSchedule: "ONDEMAND",
        rtArgsProvided: false,
        scheduledHour: 0,
        scheduledMinute: 0,
        scheduledDayOfMonth: 1,
        scheduledDayOfWeek: "MONDAY",
        minutelyInterval: 5,
        hourlyInterval: 1,
        timezone: LC.page.serverTimezone || LC.zone,
        activityStatus: "Active",
        misfirePolicy: "SKIP",
      });
      if (queryId) querySelect.value = queryId;
      userChecklist("sharedWith", others, []);
      userChecklist("recipients", users, []);
    }
    LC.byId("form-loading").hidden = true;
    form.hidden = false;
    applyVisibility();
    updatePreview();
    showQueryFacts();
    input("name").focus();
  }

  // ------------------------------------------------------------ events
  form.addEventListener("change", function (event) {
    applyVisibility();
    const name = event.target.name;
    if (name === "savedQuery" || name === "type") showQueryFacts();
    if (name === "rtArgsProvided") updateRtNote();
    if (name === "startDate") startDateTouched = true;
    if (isScheduleInput(name)) {
      scheduleDirty = true;
      schedulePreview();
    }
  });
  form.addEventListener("input", function (event) {
    if (event.target.name === "startDate") startDateTouched = true;
    if (isScheduleInput(event.target.name)) {
      scheduleDirty = true;
      renderScheduleText(collect());
      schedulePreview();
    }
  });

  function isScheduleInput(name) {
    return SCHEDULE_FIELDS.indexOf(name) >= 0 || ["repeatSchedule", "timezone", "startDate", "endDate", "activityStatus"].indexOf(name) >= 0;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const job = collect();
    const save = LC.byId("save-job");
    save.disabled = true;
    try {
      const saved = jobId
        ? await LC.api("PUT", "/scheduled-jobs/" + jobId, job)
        : await LC.api("POST", "/scheduled-jobs", job);
      sessionStorage.setItem("labcron-flash", "Job " + saved.name + " saved.");
      location.assign("/ui/jobs");
    } catch (e) {
      save.disabled = false;
      if (e instanceof LC.ServiceError && e.status !== 401) showErrors(e.errors);
      else if (!(e instanceof LC.ServiceError)) showErrors([{ code: "CLIENT", message: LC.errorText(e) }]);
    }
  });

  init();
})();
