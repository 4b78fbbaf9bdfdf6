// Live job status: every element with data-poll-url and an active data-status
// polls that API URL about once a second and updates its status badge,
// progress bar and [data-field] cells in place, until the job ends.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var ACTIVE = { pending: true, running: true };
  var NBSP = "\u00a0";

  function bytes(n) {
    // Same wording as Django's filesizeformat, so polled and rendered cells match.
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + NBSP + (n === 1 ? "byte" : "bytes");
    var units = ["KB", "MB", "GB", "TB", "PB"];
    var value = n / 1024, i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return value.toFixed(1) + NBSP + units[i];
  }

  function duration(s) {
    // Mirrors the "duration" template filter.
    if (s === null || s === undefined) return "";
    if (s < 1) return Math.round(s * 1000) + " ms";
    var w = Math.round(s);
    if (w < 60) return w + " s";
    if (w < 3600) return Math.floor(w / 60) + " m " + String(w % 60).padStart(2, "0") + " s";
    return Math.floor(w / 3600) + " h " + String(Math.floor(w % 3600 / 60)).padStart(2, "0") + " m";
  }

  var FORMATS = {
    bytes: bytes,
    duration: duration,
    ratio: function (r) { return r === null || r === undefined ? "" : r.toFixed(2) + "×"; },
    datetime: function (t) { return t ? t.slice(0, 19).replace("T", " ") : ""; },
  };

  function render(el, job) {
    var badge = el.querySelector("[data-field=status]");
    badge.textContent = job.status;
    badge.className = "badge status-" + job.status;
    var active = !!ACTIVE[job.status];
    var progress = el.querySelector("[data-role=progress]");
    var text = el.querySelector("[data-role=progress-text]");
    el.querySelector("[data-role=progress-line]").classList.toggle("hidden", !active);
    var known = job.status === "running" && job.percent_done !== null;
    progress.classList.toggle("indeterminate", active && !known);
    progress.querySelector(".bar").style.width = (known ? job.percent_done : 0) + "%";
    if (known) {
      text.textContent = Math.round(job.percent_done) + "%" +
        (job.eta_seconds !== null ? " · ETA " + duration(job.eta_seconds) : "");
    } else {
      text.textContent = job.status === "pending" ? "queued" : "";
    }
    el.querySelectorAll("[data-field][data-format]").forEach(function (cell) {
      cell.textContent = FORMATS[cell.dataset.format](job[cell.dataset.field]);
    });
    el.dataset.status = job.status;
  }

  function poll(el) {
    fetch(el.dataset.pollUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) return null;  // deleted meanwhile: nothing left to follow
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (job) {
        if (!job) return;
        render(el, job);
        if (ACTIVE[job.status]) {
          setTimeout(poll, POLL_MS, el);
        } else if (el.hasAttribute("data-reload-when-done")) {
          window.location.reload();  // the detail page shows much more than the poller updates
        }
      })
      .catch(function () { setTimeout(poll, POLL_MS * 5, el); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(function (el) {
      if (ACTIVE[el.dataset.status]) setTimeout(poll, POLL_MS, el);
    });
  });
})();
