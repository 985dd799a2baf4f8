// n-kudo dashboard live updates: the plan page listens to its event
// stream (Server-Sent Events) and applies each action's state in place.
// No polling: the server pushes when the store signals a change.
"use strict";
(function () {
  var table = document.getElementById("actions");
  if (!table || !table.dataset.events || !window.EventSource) {
    return;
  }
  var note = document.getElementById("live-note");
  var src = new EventSource(table.dataset.events);
  function badge(el, value) {
    el.textContent = value;
    el.className = "badge st-" + String(value).toLowerCase();
  }
  src.addEventListener("plan", function (ev) {
    var p = JSON.parse(ev.data);
    badge(document.getElementById("plan-status"), p.status);
    (p.actions || []).forEach(function (a) {
      var row = table.querySelector('tr[data-action="' + CSS.escape(a.id) + '"]');
      if (!row) {
        return;
      }
      badge(row.querySelector('[data-role="status"]'), a.status);
      row.querySelector('[data-role="error"]').textContent = a.error || "";
      row.querySelector('[data-role="duration"]').textContent = a.duration || "";
    });
    if (note) {
      note.textContent = "live";
    }
  });
  // The log: new lines are appended as text (never parsed as HTML), and
  // the page keeps the newest data-keep lines so a long log stays light.
  var log = document.getElementById("log");
  var logNote = document.getElementById("log-note");
  var keep = log ? parseInt(log.dataset.keep, 10) || 1000 : 0;
  src.addEventListener("log", function (ev) {
    if (!log) {
      return;
    }
    var follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    (JSON.parse(ev.data).lines || []).forEach(function (l) {
      var span = document.createElement("span");
      span.className = "ln ln-" + l.stream;
      span.dataset.seq = l.seq;
      span.textContent = l.line + "\n";
      log.appendChild(span);
    });
    while (log.childElementCount > keep) {
      log.removeChild(log.firstElementChild);
    }
    if (logNote) {
      logNote.textContent = "";
    }
    if (follow) {
      log.scrollTop = log.scrollHeight;
    }
  });
  src.addEventListener("end", function () {
    src.close();
    if (note) {
      note.textContent = "finished";
    }
  });
  src.onerror = function () {
    if (note) {
      note.textContent = "reconnecting…";
    }
  };
})();
