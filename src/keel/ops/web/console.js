// The operator console: plain DOM over the /ops API, refreshed on a timer. Text goes in through
// textContent only: dead letters carry whatever bytes an outside producer sent.
"use strict";

const REFRESH_MS = 2000;
const state = { route: null, topic: null, record: null };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : response.statusText);
  return data;
}

function fill(tableId, rows, cells, onClick) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const value of cells(row)) {
      const td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "" : String(value);
      tr.append(td);
    }
    if (onClick) {
      tr.classList.add("clickable");
      tr.addEventListener("click", () => onClick(row));
    }
    return tr;
  }));
  return body;
}

const counts = (obj) => Object.entries(obj).map(([k, v]) => `${k} ${v}`).join(", ");
const say = (text) => { document.getElementById("status").textContent = text; };

async function loadWorkflows() {
  const status = document.getElementById("wf-status").value;
  const rows = await api("GET", `/ops/workflows${status ? `?status=${status}` : ""}`);
  const body = fill("workflows", rows, (w) => [w.route_id, w.status, w.attempts, w.failure, w.created_at], (w) => openWorkflow(w.route_id));
  rows.forEach((w, n) => { body.children[n].dataset.routeId = w.route_id; body.children[n].dataset.status = w.status; });
}

async function openWorkflow(routeId) {
  state.route = routeId;
  await loadWorkflow();
  document.getElementById("workflow").hidden = false;
}

async function loadWorkflow() {
  if (!state.route) return;
  const w = await api("GET", `/ops/workflows/${encodeURIComponent(state.route)}`);
  document.getElementById("wf-route").textContent = w.route_id;
  document.getElementById("workflow-status").textContent = w.status;
  fill("wf-steps", w.steps, (s) => [s.name, s.status, s.attempts, s.error]);
  fill("wf-jobs", w.jobs, (j) => [j.story_id, j.status, j.attempt, j.error]);
  fill("wf-restarts", w.restarts, (r) => [r.requested_at || r.at, r.requested_by || r.who, r.attempt, r.reason]);
}

async function restart() {
  try {
    const w = await api("POST", `/ops/workflows/${encodeURIComponent(state.route)}/restart?step=tts_batch`, { reason: "restarted from the console" });
    say(`restarted ${w.route_id}: ${w.status}`);
    await loadWorkflow();
  } catch (error) { say(`restart refused: ${error.message}`); }
}

async function loadDeadLetters() {
  const topics = await api("GET", "/ops/dlq");
  const body = fill("dlq-topics", topics, (t) => [t.topic, t.pending, t.oldest, t.newest, counts(t.by_reason), counts(t.by_source_topic)], (t) => openTopic(t.topic));
  topics.forEach((t, n) => { body.children[n].dataset.topic = t.topic; });
  if (state.topic) await loadRecords();
}

async function openTopic(topic) {
  state.topic = topic;
  document.getElementById("dlq-topic").textContent = topic;
  document.getElementById("dlq-list").hidden = false;
  await loadRecords();
}

async function loadRecords() {
  const rows = await api("GET", `/ops/dlq/${encodeURIComponent(state.topic)}/records`);
  const body = fill("dlq-records", rows, (r) => [r.reason, r.error, `${r.source_topic}/${r.source_partition}/${r.source_offset}`, r.failed_at, r.replay_count], (r) => openRecord(r.id));
  rows.forEach((r, n) => { body.children[n].dataset.id = r.id; body.children[n].dataset.reason = r.reason; });
}

async function openRecord(id) {
  const r = await api("GET", `/ops/dlq/records/${id.split("/").map(encodeURIComponent).join("/")}`);
  state.record = r;
  document.getElementById("rec-id").textContent = r.id;
  const meta = document.getElementById("rec-meta");
  meta.replaceChildren(...["reason", "error", "attempts", "source_topic", "source_offset", "consumer_group", "failed_at", "first_failed_at", "replay_count", "key"].flatMap((name) => {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = String(r[name] ?? "");
    return [dt, dd];
  }));
  document.getElementById("payload").value = r.payload ?? "";
  document.getElementById("replay-result").textContent = "";
  document.getElementById("dlq-record").hidden = false;
}

async function replay() {
  const r = state.record;
  const edited = document.getElementById("payload").value;
  const body = { ids: [r.id] };
  if (edited !== (r.payload ?? "")) body.payload = edited;
  const result = document.getElementById("replay-result");
  try {
    const outcome = await api("POST", `/ops/dlq/${encodeURIComponent(r.topic)}/replay`, body);
    result.textContent = `replayed ${outcome.count}, skipped ${outcome.skipped}`;
    await Promise.all([loadDeadLetters(), loadAudit()]);
  } catch (error) { result.textContent = `replay refused: ${error.message}`; }
}

async function loadLag() {
  const lag = await api("GET", "/ops/lag");
  fill("outbox-lag", lag.outbox, (o) => [o.service, o.topic, o.pending, o.oldest_s]);
  fill("consumer-lag", lag.consumers, (c) => [c.group, c.topic, c.partition, c.lag]);
}

async function loadAudit() {
  fill("audit", await api("GET", "/ops/audit"), (a) => [a.at, a.actor, a.action, a.topic, a.records]);
}

async function refresh() {
  try {
    await Promise.all([loadWorkflows(), loadWorkflow(), loadDeadLetters(), loadLag(), loadAudit()]);
    say(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) { say(`refresh failed: ${error.message}`); }
}

document.getElementById("restart").addEventListener("click", restart);
document.getElementById("replay").addEventListener("click", replay);
document.getElementById("wf-status").addEventListener("change", loadWorkflows);
refresh();
setInterval(refresh, REFRESH_MS);
