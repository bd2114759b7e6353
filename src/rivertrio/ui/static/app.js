// rivertrio dashboard: live refresh by polling the JSON API, and confirmations.
// Everything from the database is put in the page as text (textContent and
// attribute values), never parsed as HTML.
"use strict";

(function () {
  const body = document.body;
  const root = body.dataset.root || "";
  const csrf = body.dataset.csrf || "";
  const refreshMs = Math.max(200, Number(body.dataset.refresh) || 3000);
  const readOnly = body.dataset.readOnly === "yes";
  const STATES = [
    "available", "running", "scheduled", "retryable",
    "pending", "completed", "discarded", "cancelled",
  ];
  const SVG = "http://www.w3.org/2000/svg";

  document.addEventListener("submit", function (event) {
    const question = event.target.dataset ? event.target.dataset.confirm : undefined;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // -- building elements ------------------------------------------------------------

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(name, String(value));
      }
    }
    for (const child of children || []) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function s(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) {
      node.setAttribute(name, String(value));
    }
    return node;
  }

  function query(pairs) {
    return new URLSearchParams(pairs).toString();
  }

  function jobsUrl(pairs) {
    const text = query(pairs);
    return root + "/jobs" + (text ? "?" + text : "");
  }

  // -- times and numbers ------------------------------------------------------------

  let clockSkew = 0; // server time minus this browser's, from the last answer

  function nowMs() {
    return Date.now() + clockSkew;
  }

  function ago(iso) {
    if (!iso) {
      return "\u2014";
    }
    const delta = (Date.parse(iso) - nowMs()) / 1000;
    const span = Math.abs(delta);
    let text;
    if (span < 1) {
      return "just now";
    } else if (span < 60) {
      text = Math.round(span) + "s";
    } else if (span < 3600) {
      text = Math.floor(span / 60) + "m";
    } else if (span < 86400) {
      text = Math.floor(span / 3600) + "h";
    } else {
      text = Math.floor(span / 86400) + "d";
    }
    return delta > 0 ? "in " + text : text + " ago";
  }

  function stamp(iso) {
    return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : "\u2014";
  }

  function num(n) {
    return Number(n).toLocaleString("en-US");
  }

  // One line of JSON spaced as Postgres writes jsonb, as the page first showed it.
  function jsonText(value) {
    if (Array.isArray(value)) {
      return "[" + value.map(jsonText).join(", ") + "]";
    }
    if (value !== null && typeof value === "object") {
      return "{" + Object.entries(value).map(function ([key, item]) {
        return JSON.stringify(key) + ": " + jsonText(item);
      }).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function relTime(iso) {
    return h("time", { class: "rel", datetime: iso, title: stamp(iso) }, [ago(iso)]);
  }

  function refreshTimes() {
    for (const node of document.querySelectorAll("time.rel[datetime]")) {
      node.textContent = ago(node.getAttribute("datetime"));
    }
  }

  // -- shared pieces ----------------------------------------------------------------

  function badge(state) {
    return h("span", { class: "badge state-" + state }, [state]);
  }

  function pill(kind, text, title) {
    return h("span", { class: "pill pill-" + kind, title: title }, [text]);
  }

  function csrfField() {
    return h("input", { type: "hidden", name: "csrf_token", value: csrf });
  }

  function drawChart(figure, completed, discarded) {
    const totals = completed.map((c, i) => c + discarded[i]);
    const top = Math.max(0, ...totals) || 1;
    let okPath = "";
    let badPath = "";
    totals.forEach(function (_total, i) {
      const ok = (completed[i] / top) * 100;
      const bad = (discarded[i] / top) * 100;
      const x = Math.round((i + 0.12) * 100) / 100;
      if (completed[i]) {
        okPath += "M" + x + " " + (100 - ok - bad).toFixed(2) + "h0.76v" + ok.toFixed(2) + "h-0.76z";
      }
      if (discarded[i]) {
        badPath += "M" + x + " " + (100 - bad).toFixed(2) + "h0.76v" + bad.toFixed(2) + "h-0.76z";
      }
    });
    const svg = figure.querySelector("svg");
    svg.setAttribute("viewBox", "0 0 " + totals.length + " 100");
    svg.querySelector(".bar-ok").setAttribute("d", okPath);
    svg.querySelector(".bar-bad").setAttribute("d", badPath);
    svg.querySelectorAll(".bar-hit title").forEach(function (title, i) {
      title.textContent = (totals.length - 1 - i) + " min ago: " + completed[i] +
        " completed, " + discarded[i] + " discarded";
    });
    const sum = (list) => list.reduce((a, b) => a + b, 0);
    const fill = function (name, value) {
      const node = figure.querySelector("[data-chart-" + name + "]");
      if (node) {
        node.textContent = num(value);
      }
    };
    fill("completed", sum(completed));
    fill("discarded", sum(discarded));
    fill("peak", Math.max(0, ...totals));
  }

  function smallChart(series) {
    const figure = h("figure", { class: "chart chart-small", "data-chart": "" }, []);
    const svg = s("svg", { viewBox: "0 0 60 100", preserveAspectRatio: "none", role: "img" });
    svg.append(s("path", { class: "bar-ok" }), s("path", { class: "bar-bad" }));
    figure.append(svg);
    drawChart(figure, series.completed, series.discarded);
    return figure;
  }

  // -- pages ------------------------------------------------------------------------

  function queueRow(q) {
    let status;
    if (q.paused) {
      status = pill("paused", "paused");
    } else if (q.has_row) {
      status = pill("active", "active");
    } else {
      status = pill("none", "no workers", "No client has worked this queue yet");
    }
    const cells = [
      h("td", { class: "name" }, [h("a", { href: jobsUrl([["queue", q.name]]) }, [q.name])]),
      h("td", {}, [status]),
    ];
    for (const state of STATES) {
      const link = h("a", { href: jobsUrl([["queue", q.name], ["state", state]]) },
        [q.counts_text[state]]);
      cells.push(h("td", { class: q.counts[state] === 0 ? "num zero" : "num" }, [link]));
    }
    cells.push(h("td", { class: "spark" }, [smallChart(q.per_minute)]));
    if (!readOnly) {
      const actions = h("td", { class: "row-actions" }, []);
      if (q.has_row) {
        const action = q.paused ? "resume" : "pause";
        actions.append(h("form", { method: "post", action: root + "/queues/" + action, class: "inline" }, [
          csrfField(),
          h("input", { type: "hidden", name: "queue", value: q.name }),
          h("button", { class: "btn btn-small" }, [q.paused ? "Resume" : "Pause"]),
        ]));
      }
      cells.push(actions);
    }
    return h("tr", { "data-queue": q.name }, cells);
  }

  function emptyRow(columns, text) {
    return h("tr", { class: "empty" }, [h("td", { colspan: columns }, [text])]);
  }

  function updateOverview(data) {
    for (const node of document.querySelectorAll("[data-total]")) {
      node.textContent = data.totals.counts_text[node.dataset.total];
    }
    const total = document.querySelector("#total-chart [data-chart]");
    if (total) {
      drawChart(total, data.totals.per_minute.completed, data.totals.per_minute.discarded);
    }
    const rows = document.getElementById("queue-rows");
    if (rows && !rows.contains(document.activeElement)) {
      rows.replaceChildren(...(data.queues.length ? data.queues.map(queueRow) : [emptyRow(
        readOnly ? 11 : 12,
        "No queues yet: no job has been inserted and no client has worked a queue.")]));
      const count = document.getElementById("queue-count");
      if (count) {
        count.textContent = data.queues.length + (data.queues.length === 1 ? " queue" : " queues");
      }
    }
    const leader = document.getElementById("leader");
    if (leader) {
      const l = data.leader;
      leader.replaceChildren(l ? h("dl", { class: "facts" }, [
        h("dt", {}, ["Client"]), h("dd", { class: "mono" }, [l.id]),
        h("dt", {}, ["Elected"]), h("dd", {}, [relTime(l.elected_at)]),
        h("dt", {}, ["Term ends"]), h("dd", {}, [relTime(l.expires_at), " unless renewed"]),
      ]) : h("p", { class: "muted" }, ["No leader: no client that works queues is running."]));
    }
    const clients = document.getElementById("client-rows");
    if (clients) {
      clients.replaceChildren(...(data.clients.length ? data.clients.map(function (c) {
        let liveness;
        if (c.alive === null) {
          liveness = pill("none", "unknown",
            "This client holds no liveness lock (a River Go client, or poll_only)");
        } else {
          liveness = c.alive ? pill("active", "alive") : pill("paused", "gone");
        }
        return h("tr", {}, [
          h("td", { class: "mono" }, [c.id]),
          h("td", {}, [liveness]),
          h("td", { class: "num" }, [c.running]),
          h("td", {}, [relTime(c.last_seen)]),
        ]);
      }) : [emptyRow(4, "No client has worked a job in the last 10 minutes.")]));
    }
  }

  function jobRow(job) {
    let at = job.created_at;
    let verb = "created";
    if (job.finalized_at) {
      at = job.finalized_at;
      verb = "finished";
    } else if (job.state === "running" && job.attempted_at) {
      at = job.attempted_at;
      verb = "started";
    } else if (job.state === "scheduled" || job.state === "retryable") {
      at = job.scheduled_at;
      verb = "runs";
    }
    const args = h("td", { class: "args" }, [h("code", { class: "clip" }, [jsonText(job.args)])]);
    if (job.last_error && ["discarded", "retryable", "cancelled"].includes(job.state)) {
      args.append(h("span", { class: "clip error-line" }, [job.last_error]));
    }
    const link = root + "/jobs/" + job.id;
    return h("tr", { "data-id": job.id }, [
      h("td", { class: "mono id" }, [h("a", { href: link }, [job.id])]),
      h("td", {}, [badge(job.state)]),
      h("td", { class: "kind" }, [h("a", { href: link }, [job.kind])]),
      h("td", {}, [job.queue]),
      args,
      h("td", { class: "num" }, [job.attempt + "/" + job.max_attempts]),
      h("td", { class: "when" }, [h("span", { class: "muted" }, [verb]), " ", relTime(at)]),
    ]);
  }

  function updateJobs(data) {
    const rows = document.getElementById("job-rows");
    if (!rows || main.dataset.firstPage !== "yes") {
      return;
    }
    rows.replaceChildren(...(data.jobs.length ? data.jobs.map(jobRow) : [emptyRow(7, "No jobs match.")]));
  }

  async function updateTabCounts() {
    const nodes = document.querySelectorAll("[data-count]");
    if (!nodes.length) {
      return;
    }
    const data = await getJson(root + "/api/overview");
    const wanted = new URLSearchParams(window.location.search).get("queue");
    const source = wanted ? data.queues.find((q) => q.name === wanted) : data.totals;
    for (const node of nodes) {
      node.textContent = source ? source.counts_text[node.dataset.count] : "0";
    }
  }

  function updateJob(data) {
    const job = data.job;
    const version = job.state + ":" + job.attempt + ":" + job.errors.length;
    if (version !== main.dataset.version) {
      const state = document.getElementById("job-state");
      if (state) {
        state.className = "badge badge-large state-" + job.state;
        state.textContent = job.state;
      }
      const notice = document.getElementById("job-changed");
      if (notice) {
        notice.hidden = false;
      }
    }
  }

  function updatePeriodic(data) {
    const rows = document.getElementById("periodic-rows");
    if (!rows) {
      return;
    }
    rows.replaceChildren(...(data.periodic.length ? data.periodic.map(function (p) {
      const next = p.next_at ? relTime(p.next_at) : h("span", { class: "muted" }, ["none queued"]);
      return h("tr", {}, [
        h("td", { class: "kind" }, [
          h("a", { href: jobsUrl([["kind", p.kind], ["queue", p.queue]]) }, [p.kind]),
        ]),
        h("td", {}, [p.queue]),
        h("td", { class: "mono" }, [p.periodic_id || "\u2014"]),
        h("td", { class: "num" }, [num(p.total)]),
        h("td", { class: p.discarded === 0 ? "num zero" : "num" }, [num(p.discarded)]),
        h("td", {}, [relTime(p.last_created)]),
        h("td", {}, [
          h("a", { href: root + "/jobs/" + p.last_id, class: "mono" }, ["#" + p.last_id]),
          " ",
          badge(p.last_state),
        ]),
        h("td", {}, [next]),
      ]);
    }) : [emptyRow(8, "No periodic jobs in the table.")]));
  }

  // -- polling ----------------------------------------------------------------------

  async function getJson(url) {
    const response = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok) {
      throw new Error(url + ": HTTP " + response.status);
    }
    const data = await response.json();
    if (data.now) {
      clockSkew = Date.parse(data.now) - Date.now();
    }
    return data;
  }

  const main = document.querySelector("main[data-live]");
  const live = document.getElementById("live");
  const updaters = {
    overview: updateOverview,
    jobs: updateJobs,
    job: updateJob,
    periodic: updatePeriodic,
  };

  function showLive(state, text, title) {
    if (!live) {
      return;
    }
    live.hidden = false;
    live.className = "live" + (state ? " " + state : "");
    live.textContent = text;
    live.title = title || "";
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const data = await getJson(main.dataset.src);
        updaters[main.dataset.live](data);
        if (main.dataset.live === "jobs") {
          await updateTabCounts();
        }
        refreshTimes();
        showLive("", "Live", "Refreshed every " + refreshMs / 1000 + " s");
        body.dataset.refreshed = String(Date.now());
      } catch (error) {
        showLive("down", "Offline", String(error));
      }
    } else {
      showLive("stale", "Paused", "Refresh pauses while the tab is hidden");
    }
    window.setTimeout(poll, refreshMs);
  }

  if (main && updaters[main.dataset.live]) {
    window.setTimeout(poll, refreshMs);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        refreshTimes();
      }
    });
    showLive("", "Live", "Refreshed every " + refreshMs / 1000 + " s");
  }
})();
