// Users: admins list, create, edit and disable users; everyone else sees their own account and may
// change their names and password. All through /rest/ng/users.
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
