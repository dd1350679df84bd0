// Sign-in page: the form posts normally (works without scripts). This only handles arriving from
// a link in another site or an e-mail: such a navigation does not carry the SameSite=Strict
// session cookie, but a request from this page does, so ask whether the session is still valid
// and go straight on if it is.
"use strict";

(function () {
  const next = document.body.dataset.next || "/ui/jobs";
  fetch("/ui/api/me", { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
    .then(function (r) { return r.ok ? r.json() : { signedIn: false }; })
    .then(function (me) {
      if (me.signedIn && next.indexOf("/ui/") === 0) location.replace(next);
    })
    .catch(function () {});
})();
