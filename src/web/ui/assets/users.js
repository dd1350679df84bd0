// Users: admins list, create, edit and disable users; everyone else sees their own account and may
// change their names and password. All through /rest/ng/users. Each row's "Tokens" dialog lists the
// user's API tokens (names and dates, never the secret), makes one (its secret shown once) and
// revokes them, through /rest/ng/api-tokens.
"use strict";

(function () {
  const LC = window.LC;
  const el = LC.el;
  const tbody = LC.byId("users-body");

  const FIELD_OF_CODE = {
    USER_LOGIN_NAME_REQUIRED: "loginName",
    USER_INVALID_LOGIN_NAME: "loginName",
    USER_DUP_LOGIN_NAME: "loginName",
    USER_PASSWORD_REQUIRED: "password",
    USER_PASSWORD_TOO_SHORT: "password",
    USER_LAST_ADMIN: "admin",
  };

  function cell(label, cls) {
    const td = el("td", { "data-label": label, class: cls || null });
    for (let i = 2; i < arguments.length; i++) td.append(arguments[i] === null || arguments[i] === undefined ? "" : arguments[i]);
    return td;
  }

  async function load() {
    const users = (await LC.api("GET", "/users")).filter(function (u) {
      return u.loginName.charAt(0) !== "$" && (LC.me.admin || u.id === LC.me.id);
    });
    LC.byId("list-size").textContent = LC.me.admin ? "Showing " + users.length + (users.length === 1 ? " user" : " users") : "Your account";
    LC.clear(tbody);
    users.forEach(function (user) {
      const actions = el("div", { class: "row-actions" });
      const edit = el("button", { type: "button", class: "small", "aria-label": "Edit user " + user.loginName, dataset: { action: "edit" } }, "Edit");
      edit.addEventListener("click", function () { openDialog(user); });
      actions.append(edit);
      const tokens = el("button", { type: "button", class: "small", "aria-label": "API tokens of " + user.loginName, dataset: { action: "tokens" } }, "Tokens");
      tokens.addEventListener("click", function () { openTokens(user); });
      actions.append(tokens);
      if (LC.me.admin && user.id !== LC.me.id && user.activityStatus !== "Disabled") {
        const disable = el("button", { type: "button", class: "small danger", "aria-label": "Disable user " + user.loginName, dataset: { action: "disable" } }, "Disable");
        disable.addEventListener("click", function () { disableUser(user); });
        actions.append(disable);
      }
      tbody.append(el("tr", { dataset: { userId: user.id } },
        cell("Login Name", "title", el("span", { class: "job-name" }, user.loginName)),
        cell("Name", null, ((user.firstName || "") + " " + (user.lastName || "")).trim()),
        cell("Email", null, user.emailAddress || ""),
        cell("Role", null, user.admin ? "Administrator" : "User"),
        cell("Status", null, user.activityStatus || ""),
        cell("Created", "nowrap", user.creationDate ? LC.timeEl(user.creationDate) : ""),
        cell("Actions", "actions", actions)));
    });
  }

  function field(name, label, input, help) {
    return el("div", { class: "field", dataset: { field: name } }, el("label", { for: "user-" + name }, label), input, help ? el("p", { class: "help" }, help) : null);
  }

  function openDialog(user) {
    const creating = !user;
    const dialog = el("dialog", { "aria-labelledby": "user-dialog-title", id: "user-dialog" });
    const inputs = {
      loginName: el("input", { id: "user-loginName", autocomplete: "off", value: user ? user.loginName : "", disabled: !LC.me.admin }),
      firstName: el("input", { id: "user-firstName", autocomplete: "off", value: user ? user.firstName : "" }),
      lastName: el("input", { id: "user-lastName", autocomplete: "off", value: user ? user.lastName : "" }),
      emailAddress: el("input", { id: "user-emailAddress", type: "email", autocomplete: "off", value: user ? user.emailAddress || "" : "" }),
      password: el("input", { id: "user-password", type: "password", autocomplete: "new-password" }),
      admin: el("input", { id: "user-admin", type: "checkbox", checked: !!(user && user.admin), disabled: !LC.me.admin }),
    };
    const summary = el("p", { class: "form-error", role: "alert", hidden: true });
    const form = el("form", { class: "stack", novalidate: true },
      el("h2", { id: "user-dialog-title" }, creating ? "Create user" : "Edit " + user.loginName),
      field("loginName", "Login Name", inputs.loginName),
      field("firstName", "First Name", inputs.firstName),
      field("lastName", "Last Name", inputs.lastName),
      field("emailAddress", "Email", inputs.emailAddress),
      field("password", creating ? "Password" : "New Password", inputs.password, creating ? "At least 8 characters." : "Leave empty to keep the current password."),
      el("div", { class: "field checkbox", dataset: { field: "admin" } }, el("label", { for: "user-admin" }, inputs.admin, " Administrator")),
      summary,
      el("div", { class: "buttons" },
        el("button", { type: "button", onclick: function () { dialog.close(); } }, "Cancel"),
        el("button", { type: "submit", class: "primary", id: "user-save" }, creating ? "Create" : "Save")));
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      form.querySelectorAll(".field-error").forEach(function (n) { n.remove(); });
      summary.hidden = true;
      const body = {
        firstName: inputs.firstName.value,
        lastName: inputs.lastName.value,
        emailAddress: inputs.emailAddress.value,
      };
      if (LC.me.admin) {
        body.loginName = inputs.loginName.value;
        body.admin = inputs.admin.checked;
      }
      if (inputs.password.value) body.password = inputs.password.value;
      try {
        if (creating) await LC.api("POST", "/users", body);
        else await LC.api("PUT", "/users/" + user.id, body);
        dialog.close();
        LC.toast("User " + (body.loginName || user.loginName) + " saved.");
        load();
      } catch (e) {
        const unplaced = [];
        (e.errors || [{ message: LC.errorText(e) }]).forEach(function (error) {
          const name = FIELD_OF_CODE[error.code];
          const box = name && form.querySelector('[data-field="' + name + '"]');
          if (box) box.append(el("p", { class: "field-error" }, error.message));
          else unplaced.push(error.message);
        });
        if (unplaced.length) {
          summary.textContent = unplaced.join(" ");
          summary.hidden = false;
        }
      }
    });
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", function () { dialog.remove(); });
    dialog.showModal();
    (creating ? inputs.loginName : inputs.firstName).focus();
  }

  function openTokens(user) {
    const dialog = el("dialog", { "aria-labelledby": "tokens-dialog-title", id: "tokens-dialog" });
    const list = el("tbody", { id: "tokens-body" });
    const summary = el("p", { class: "form-error", role: "alert", hidden: true });
    const shown = el("div", { class: "field", id: "new-token-box", hidden: true });
    const name = el("input", { id: "user-token-name", autocomplete: "off", maxlength: "100" });
    const days = el("input", { id: "user-token-days", type: "number", min: "1", step: "1", inputmode: "numeric" });
    const dateOrNever = function (ms, never) { return ms ? LC.timeEl(ms) : never; };

    async function refresh() {
      const tokens = await LC.api("GET", "/api-tokens?userId=" + user.id);
      LC.clear(list);
      if (!tokens.length) list.append(el("tr", {}, el("td", { colspan: "5" }, "No API tokens.")));
      tokens.forEach(function (token) {
        const revoke = el("button", { type: "button", class: "small danger", dataset: { action: "revoke-token" }, "aria-label": "Revoke token " + token.name }, "Revoke");
        revoke.addEventListener("click", async function () {
          try {
            await LC.api("DELETE", "/api-tokens/" + token.id);
            LC.toast("Token " + token.name + " revoked.");
            refresh();
          } catch (e) {
            LC.toast(LC.errorText(e), { error: true });
          }
        });
        list.append(el("tr", { dataset: { tokenId: token.id } },
          cell("Name", "title", token.name),
          cell("Created", "nowrap", LC.timeEl(token.createdAt)),
          cell("Expires", "nowrap", dateOrNever(token.expiresAt, "Never")),
          cell("Last used", "nowrap", dateOrNever(token.lastUsedAt, "Not yet")),
          cell("Actions", "actions", revoke)));
      });
    }

    const form = el("form", { class: "stack", novalidate: true },
      el("h2", { id: "tokens-dialog-title" }, "API tokens of " + user.loginName),
      el("div", { class: "table-wrap" }, el("table", { class: "data responsive" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "Created"),
          el("th", { scope: "col" }, "Expires"), el("th", { scope: "col" }, "Last used"),
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
        list)),
      field("token-name", "New token's name", name),
      field("token-days", "Expires after (days)", days, "Leave empty for a token that does not expire."),
      shown,
      summary,
      el("div", { class: "buttons" },
        el("button", { type: "button", id: "tokens-close", onclick: function () { dialog.close(); } }, "Close"),
        el("button", { type: "submit", class: "primary", id: "token-create" }, "Create token")));
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      summary.hidden = true;
      const body = { name: name.value, userId: user.id };
      if (days.value) body.expiresAt = Date.now() + Number(days.value) * 86400000;
      try {
        const made = await LC.api("POST", "/api-tokens", body);
        LC.clear(shown);
        shown.append(el("label", { for: "new-token" }, "Token " + made.name + " (copy it now: it is not shown again)"),
          el("input", { id: "new-token", readonly: true, value: made.token, spellcheck: "false" }));
        shown.hidden = false;
        name.value = "";
        days.value = "";
        refresh();
      } catch (e) {
        summary.textContent = (e.errors || [{ message: LC.errorText(e) }]).map(function (x) { return x.message; }).join(" ");
        summary.hidden = false;
      }
    });
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", function () { dialog.remove(); });
    dialog.showModal();
    name.focus();
    refresh().catch(function (e) {
      summary.textContent = LC.errorText(e);
      summary.hidden = false;
    });
  }

  async function disableUser(user) {
    const ok = await LC.confirmDialog({ title: "Disable user", message: "Disable " + user.loginName + "? They will no longer be able to sign in.", confirmLabel: "Disable", danger: true });
    if (!ok) return;
    try {
      await LC.api("DELETE", "/users/" + user.id);
      LC.toast("User " + user.loginName + " disabled.");
      load();
    } catch (e) {
      LC.toast(LC.errorText(e), { error: true });
    }
  }

  const create = LC.byId("create-user");
  create.hidden = !LC.me.admin;
  create.addEventListener("click", function () { openDialog(null); });
  load().catch(function (e) { if (e.status !== 401) LC.showError(LC.byId("load-error"), e); });
})();
