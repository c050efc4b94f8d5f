// The dashboard: executions list, a live Gantt timeline from the SSE stream, task details.
// Plain JS on purpose: no build step, no CDN, nothing to fetch but this server's API.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { token: sessionStorage.getItem("pa-token") || "", selected: null, exec: null,
                follow: null, offset: -Infinity };

(function tokenFromHash() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem("pa-token", state.token);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
})();

function headers(extra) {
  const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

function notice(text) { $("#notice").textContent = text || ""; }

async function api(path, options) {
  const r = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = body.error || {};
    const problems = (err.problems || []).map((p) => `${p.location}: ${p.message}`).join("; ");
    throw new Error(`${r.status} ${err.message || r.statusText}${problems ? " (" + problems + ")" : ""}`);
  }
  return body;
}

// -- executions list ------------------------------------------------------------------
async function refreshList() {
  try {
    const page = await api("/api/executions?limit=50");
    const ul = $("#executions");
    ul.replaceChildren(...page.items.map((e) => {
      const li = document.createElement("li");
      li.dataset.id = e.execution_id;
      if (e.execution_id === state.selected) li.classList.add("selected");
      const done = (e.counts && e.counts.succeeded) || 0;
      li.innerHTML = `<span class="badge s-${e.status}"></span> <span class="id"></span><br>
        <small></small>`;
      li.querySelector(".badge").textContent = e.status;
      li.querySelector(".id").textContent = e.execution_id;
      li.querySelector("small").textContent =
        `${e.plan} · ${done}/${e.tasks} tasks` + (e.speedup ? ` · ${e.speedup.toFixed(2)}x` : "");
      li.onclick = () => select(e.execution_id);
      return li;
    }));
    if (!state.selected && page.items.length) select(page.items[0].execution_id);
    notice("");
  } catch (e) { notice(e.message); }
}

// -- one execution ----------------------------------------------------------------------
function select(id) {
  if (state.follow) state.follow.abort();
  state.selected = id;
  state.offset = -Infinity;
  state.exec = { id, status: "running", t0: null, tasks: {}, order: [], info: null };
  for (const li of document.querySelectorAll("#executions li"))
    li.classList.toggle("selected", li.dataset.id === id);
  $("#detail").hidden = false;
  $("#task-detail").hidden = true;
  $("#exec-title").textContent = id;
  loadInfo();
  follow(id);
}

async function loadInfo() {
  const ex = state.exec;
  try {
    const info = await api(`/api/execution/${ex.id}`);
    if (state.exec !== ex) return;
    ex.info = info;
    for (const t of info.tasks) {
      if (!ex.tasks[t.id]) { ex.tasks[t.id] = { status: t.status, attempts: [] }; }
      if (!ex.order.includes(t.id)) ex.order.push(t.id);
    }
    if (info.status !== "running") ex.status = info.status;
    render();
  } catch (e) { notice(e.message); }
}

function onEvent(ex, ev) {
  state.offset = Math.max(state.offset, ev.time - Date.now() / 1000);
  if (ev.kind === "run_started") {
    if (ex.t0 === null) ex.t0 = ev.time;
    else {
      // A resume: the attempts still open were cut off when the run stopped (data.idle[0]).
      const stopped = ev.data && ev.data.idle ? ev.data.idle[0] : ev.time;
      for (const id of ex.order) for (const a of ex.tasks[id].attempts) {
        if (!a.end) { a.end = Math.max(a.start, stopped); a.outcome = "interrupted"; }
      }
    }
  }
  if (ev.kind === "run_finished") { ex.status = (ev.data && ev.data.status) || ev.message; loadInfo(); refreshList(); }
  if (!ev.task_id) return;
  const t = ex.tasks[ev.task_id] || (ex.tasks[ev.task_id] = { status: "pending", attempts: [] });
  if (!ex.order.includes(ev.task_id)) ex.order.push(ev.task_id);
  const last = t.attempts[t.attempts.length - 1];
  switch (ev.kind) {
    case "task_queued": t.status = "queued"; break;
    case "task_started": t.status = "running"; t.attempts.push({ start: ev.time, end: null, outcome: "running" }); break;
    case "task_retrying": t.status = "retrying"; t.error = ev.message; if (last && !last.end) { last.end = ev.time; last.outcome = "failed"; } break;
    case "task_succeeded": case "task_failed": case "task_cancelled": case "task_skipped":
      t.status = ev.kind.slice(5);
      t.error = ev.kind === "task_succeeded" ? null : ev.message;
      if (last && !last.end) { last.end = ev.time; last.outcome = t.status; }
      break;
  }
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header).
// A dropped stream is resumed with Last-Event-ID: the server replays from there, no gaps.
async function follow(id) {
  const ctl = new AbortController();
  state.follow = ctl;
  const ex = state.exec;
  let last = 0;
  while (!ctl.signal.aborted) {
    try {
      const r = await fetch(`/api/execution/${id}/events`,
        { headers: headers({ "Last-Event-ID": String(last) }), signal: ctl.signal });
      if (!r.ok) { notice(`events: HTTP ${r.status}`); return; }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;  // a keep-alive comment
          const ev = JSON.parse(data);
          last = ev.seq;
          onEvent(ex, ev);
        }
        render();
      }
      if (ex.status !== "running") return;  // the stream ended with the run
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

function fmt(n, digits) { return n === null || n === undefined ? "–" : Number(n).toFixed(digits); }

function render() {
  const ex = state.exec;
  if (!ex) return;
  const info = ex.info || {};
  const badge = $("#exec-status");
  badge.textContent = ex.status;
  badge.className = `badge s-${ex.status}`;
  $("#cancel").disabled = ex.status !== "running";
  const figures = [
    ["tasks", ex.order.length],
    ["succeeded", ex.order.filter((id) => ex.tasks[id].status === "succeeded").length],
    ["estimated", fmt(info.estimated_duration, 1) + " s"],
    ["makespan", info.makespan_seconds == null ? "–" : fmt(info.makespan_seconds, 2) + " s"],
    ["speedup", info.speedup == null ? "–" : fmt(info.speedup, 2) + "x"],
    ["cost", "$" + fmt((info.cost && info.cost.usd) || 0, 4)],
  ];
  $("#figures").replaceChildren(...figures.map(([k, v]) => {
    const d = document.createElement("div");
    d.innerHTML = "<dt></dt><dd></dd>";
    d.querySelector("dt").textContent = k; d.querySelector("dd").textContent = v;
    return d;
  }));
  // The coordinator's answer (markdown) for runs planned from a request text; shown as text.
  const answer = $("#final-response");
  answer.hidden = !info.final_response;
  answer.textContent = info.final_response || "";
  const now = Date.now() / 1000 + (isFinite(state.offset) ? state.offset : 0);
  const t0 = ex.t0 || now;
  let end = t0 + 0.001;
  for (const id of ex.order) for (const a of ex.tasks[id].attempts) end = Math.max(end, a.end || now);
  // The axis spans the predicted makespan until the run outlasts it, so bars visibly grow
  // left to right instead of every running bar always reaching the right edge.
  const span = Math.max(end - t0, Number(info.estimated_duration) || 0);
  const gantt = $("#gantt");
  gantt.replaceChildren(...ex.order.map((id) => {
    const t = ex.tasks[id];
    const row = document.createElement("div");
    row.className = "row"; row.dataset.task = id; row.dataset.status = t.status;
    row.innerHTML = `<span class="name"></span><div class="track"></div>`;
    row.querySelector(".name").textContent = id;
    row.querySelector(".name").title = `${id}: ${t.status}`;
    const track = row.querySelector(".track");
    for (const a of t.attempts) {
      const bar = document.createElement("div");
      bar.className = `bar ${a.outcome}`;
      const stop = a.end || now;
      bar.style.left = `${((a.start - t0) / span) * 100}%`;
      bar.style.width = `${Math.max(0, (stop - a.start) / span) * 100}%`;
      bar.title = `${id} attempt: ${fmt(stop - a.start, 2)} s (${a.outcome})`;
      track.appendChild(bar);
    }
    row.onclick = () => showTask(id);
    return row;
  }));
}

async function showTask(id) {
  const box = $("#task-detail");
  const ex = state.exec;
  await loadInfo();
  const info = (ex.info && ex.info.results && ex.info.results[id]) || null;
  const t = ex.tasks[id] || {};
  box.hidden = false;
  box.innerHTML = "<h3></h3><p></p><h4>Output</h4><pre class='output'></pre><h4>Attempts</h4><pre class='attempts'></pre>";
  box.querySelector("h3").textContent = id;
  box.querySelector("p").textContent = `status: ${t.status}` + (t.error ? ` · error: ${t.error}` : "");
  box.querySelector(".output").textContent = info ? JSON.stringify(info.output, null, 2) :
    "(available when the run has finished)";
  const history = info ? info.history : t.attempts;
  box.querySelector(".attempts").textContent = JSON.stringify(history, null, 2);
}

$("#cancel").onclick = async () => {
  if (!state.exec) return;
  try { const r = await api(`/api/execution/${state.exec.id}/cancel`, { method: "POST" }); notice(r.message); }
  catch (e) { notice(e.message); }
};

$("#start-run").onclick = async () => {
  let plan;
  try { plan = JSON.parse($("#plan-text").value); } catch (e) { notice("plan is not valid JSON: " + e.message); return; }
  try {
    const r = await api("/api/execute-parallel", { method: "POST", body: JSON.stringify({ plan }) });
    await refreshList();
    select(r.execution_id);
  } catch (e) { notice(e.message); }
};

$("#auth").onsubmit = (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("pa-token", state.token);
  $("#token").value = "";
  refreshList();
};

setInterval(() => { if (state.exec && state.exec.status === "running") render(); }, 100);
setInterval(refreshList, 2000);
refreshList();
