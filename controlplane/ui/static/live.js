// n-kudo dashboard live updates: the plan page listens to its event
// stream (Server-Sent Events) and applies each action's state and new log
// lines in place; the fleet page listens to the fleet stream and updates
// the rows of sites that changed. No polling: the server pushes when the
// store signals a change.
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

(function () {
  var table = document.getElementById("fleet");
  if (!table || !table.dataset.events || !window.EventSource) {
    return;
  }
  var note = document.getElementById("live-note");
  var src = new EventSource(table.dataset.events);
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) {
      e.className = cls;
    }
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }
  function fill(cell, nodes) {
    while (cell.firstChild) {
      cell.removeChild(cell.firstChild);
    }
    nodes.forEach(function (n) {
      cell.appendChild(typeof n === "string" ? document.createTextNode(n) : n);
    });
  }
  function set(text, id) {
    var e = document.getElementById(id);
    if (e) {
      e.textContent = text;
    }
  }
  src.addEventListener("sites", function (ev) {
    var f = JSON.parse(ev.data);
    set(String(f.online), "fleet-online");
    set(String(f.total), "fleet-total");
    (f.sites || []).forEach(function (s) {
      var row = table.querySelector('tr[data-site="' + CSS.escape(s.name) + '"]');
      if (!row) {
        return; // not on this page (filtered out, or new: a reload shows it)
      }
      var state = el("span", "badge st-" + s.state, s.state);
      state.dataset.state = s.state;
      fill(row.querySelector('[data-role="state"]'), [state]);
      fill(row.querySelector('[data-role="heartbeat"]'), [s.heartbeat]);
      fill(row.querySelector('[data-role="agent"]'), [s.agent]);
      var vms = [String(s.vmTotal)];
      (s.vms || []).forEach(function (v) {
        vms.push(" ", el("span", "vmcount", v.n + " " + v.state));
      });
      fill(row.querySelector('[data-role="vms"]'), vms);
      if (s.plan) {
        var a = el("a");
        a.href = "/ui/plans/" + encodeURIComponent(s.plan.id);
        a.appendChild(el("span", "badge st-" + s.plan.status, s.plan.status));
        fill(row.querySelector('[data-role="plan"]'), [a, " " + s.plan.ago]);
      } else {
        fill(row.querySelector('[data-role="plan"]'), ["—"]);
      }
    });
    if (note) {
      note.textContent = "live";
    }
  });
  src.addEventListener("end", function () {
    src.close();
    if (note) {
      note.textContent = "not live: reload";
    }
  });
  src.onerror = function () {
    if (note) {
      note.textContent = "reconnecting…";
    }
  };
})();
