// pg_authaudit admin interface: progressive enhancement only. Every page
// works without this script; with it, the overview refreshes its panels
// every five seconds and the report's print button prints.
"use strict";

function refreshLive(live) {
  const url = live.getAttribute("data-live");
  fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
    .then((r) => {
      if (r.status === 401) {
        window.location.assign("/admin/login");
        return null;
      }
      return r.ok ? r.text() : null;
    })
    .then((html) => {
      if (html === null) return;
      const doc = new DOMParser().parseFromString(html, "text/html");
      live.replaceChildren(...Array.from(doc.body.childNodes));
      live.setAttribute("data-updated", new Date().toISOString());
    })
    .catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) {
    window.setInterval(() => refreshLive(live), 5000);
  }
  for (const b of document.querySelectorAll("[data-print]")) {
    b.hidden = false;
    b.addEventListener("click", () => window.print());
  }
});
