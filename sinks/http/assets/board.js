// atm board: follows /events (a snapshot, then one frame per change) and draws the sessions
// grouped by host and project, and the requests waiting for an answer. Text from agents is only
// ever set as textContent, never parsed as HTML. Answers are POSTs with the CSRF header; the
// login cookie (HttpOnly) goes with them on its own.
"use strict";

const sessions = new Map(); // id -> SessionView
let host = "";
let seq = 0;
let filterText = "";
const cards = new Map(); // session id -> element
const requestCards = new Map(); // request id -> element

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

const STATE_NAMES = {
  working: "Working", needs_permission: "Needs permission", needs_input: "Needs input",
  idle: "Idle", starting: "Starting",
};

function ago(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return "";
  let s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h " + (m % 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

function project(v) {
  return v.project_root || v.working_directory || "(no directory)";
}

function shortPath(p) {
  const parts = p.split("/").filter(Boolean);
  return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : p;
}

function haystack(v) {
  const a = v.attention || {};
  return [v.id, v.harness, v.agent_type, v.model, v.state, STATE_NAMES[v.state], project(v), v.title,
    v.tmux_pane, a.tool, a.detail, a.reason, v.worktree_branch].filter(Boolean).join(" ").toLowerCase();
}

function matches(v) {
  return !filterText || haystack(v).includes(filterText);
}

// ---- answers ----

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 6000);
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-atm-csrf": "1" },
    body: JSON.stringify(body || {}),
  });
  if (r.status === 401) { location.reload(); throw new Error("logged out"); }
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

async function decide(card, requestId, decision, what) {
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  try {
    await post("/api/requests/" + encodeURIComponent(requestId) + "/decision", decision);
    toast(what);
  } catch (e) {
    toast("Not answered: " + e.message);
    for (const b of card.querySelectorAll("button")) b.disabled = false;
  }
}

async function jump(v) {
  try {
    const r = await post("/api/sessions/" + encodeURIComponent(v.id) + "/focus");
    toast("tmux shows " + (r.location || v.tmux_pane) + (r.client ? "" : " (no client attached)"));
  } catch (e) {
    toast("Cannot jump: " + e.message);
  }
}

// ---- pending requests ----

function requestCard(v) {
  const a = v.attention;
  const req = a.request;
  const isQ = (a.questions || []).length > 0;
  const card = el("li", { class: "card request" + (isQ ? " q" : ""), "aria-label": "Request from " + shortPath(project(v)) });
  card.dataset.session = v.id;
  card.append(el("div", { class: "row" },
    el("span", { class: "state" }, isQ ? "Question" : "Permission"),
    el("span", { class: "since" }, el("span", { "data-since": req.asked_at }, ago(req.asked_at)), " waiting")));
  card.append(el("div", { class: "meta" }, v.harness + " · " + shortPath(project(v)) + (v.tmux_pane ? " · pane " + v.tmux_pane : "")));
  if (a.tool) card.append(el("div", { class: "wait" }, el("b", {}, a.tool)));
  if (a.detail && !isQ) card.append(el("pre", { class: "mono" }, a.detail));
  if (!req.answerable) {
    card.append(el("p", { class: "note" }, "Answer this one in the agent's own terminal: nothing waits for an answer from here."));
    if (v.tmux_pane) card.append(el("div", { class: "actions" }, el("button", { type: "button", onclick: () => jump(v) }, "Jump to pane")));
    return card;
  }
  if (isQ) {
    const form = el("form", {});
    a.questions.forEach((q, qi) => {
      const fs = el("fieldset", {}, el("legend", {}, (q.header ? q.header + ": " : "") + q.question));
      const name = "q" + req.id + "-" + qi;
      (q.options || []).forEach((o) => {
        fs.append(el("label", { class: "opt" },
          el("input", { type: q.multi_select ? "checkbox" : "radio", name, value: o.label }), " ", o.label,
          o.description ? el("span", { class: "note" }, " — " + o.description) : null));
      });
      fs.append(el("label", { class: "opt" }, el("span", { class: "sr" }, "Other answer"),
        el("input", { type: "text", name: name + "-text", placeholder: "or type an answer", autocomplete: "off" })));
      form.append(fs);
    });
    const send = el("button", { type: "submit", class: "allow" }, "Send answers");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const answers = a.questions.map((q, qi) => {
        const name = "q" + req.id + "-" + qi;
        const text = form.querySelector(`[name="${name}-text"]`).value.trim();
        if (text) return text;
        return [...form.querySelectorAll(`[name="${name}"]:checked`)].map((i) => i.value).join(", ");
      });
      if (answers.some((x) => !x)) { toast("Answer every question first"); return; }
      decide(card, req.id, { decision: "answer", answers }, "Answered");
    });
    form.append(el("div", { class: "actions" }, send,
      el("button", { type: "button", class: "deny", onclick: () => decide(card, req.id, { decision: "deny" }, "Declined") }, "Decline")));
    card.append(form);
    return card;
  }
  const msg = el("input", { type: "text", placeholder: "Tell the agent why (optional)", autocomplete: "off",
    "aria-label": "Message with the denial" });
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", class: "allow", onclick: () => decide(card, req.id, { decision: "allow" }, "Allowed") }, "Allow"));
  (a.suggestions || []).forEach((s, i) => {
    actions.append(el("button", { type: "button", class: "allow", title: s.label, "aria-label": "Always allow: " + s.label,
      onclick: () => decide(card, req.id, { decision: "allow", always: true, rule: i }, "Always allowed") },
    a.suggestions.length > 1 ? "Always allow (" + (i + 1) + ")" : "Always allow"));
  });
  actions.append(el("button", { type: "button", class: "deny",
    onclick: () => decide(card, req.id, msg.value.trim() ? { decision: "deny", message: msg.value.trim() } : { decision: "deny" }, "Denied") }, "Deny"));
  msg.addEventListener("keydown", (ev) => { if (ev.key === "Enter") actions.lastChild.click(); });
  card.append(actions, el("label", { class: "opt" }, msg));
  return card;
}

function drawPending() {
  const list = $("pending");
  const open = [...sessions.values()].filter((v) => v.attention && v.attention.request);
  const wanted = new Set(open.map((v) => v.attention.request.id));
  for (const [id, card] of requestCards) {
    if (!wanted.has(id)) { card.remove(); requestCards.delete(id); }
  }
  open.sort((x, y) => Date.parse(x.attention.request.asked_at) - Date.parse(y.attention.request.asked_at));
  let shown = 0;
  open.forEach((v, i) => {
    const id = v.attention.request.id;
    let card = requestCards.get(id);
    if (!card) { card = requestCard(v); requestCards.set(id, card); }
    card.hidden = !matches(v);
    if (!card.hidden) shown++;
    // Moved only when out of place: moving a node takes the focus from a field being typed in.
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  $("pending-section").hidden = open.length === 0;
  $("pending-count").textContent = open.length ? "(" + shown + (shown !== open.length ? " of " + open.length : "") + ")" : "";
}

// ---- sessions ----

function meter(label, pct, text) {
  const p = Math.max(0, Math.min(100, Number(pct) || 0));
  const m = el("div", { class: "meter" + (p >= 90 ? " crit" : p >= 75 ? " warn" : "") },
    el("span", {}, label + " " + (text || Math.round(p) + "%")));
  const track = el("div", { class: "track", role: "progressbar", "aria-label": label, "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(Math.round(p)) });
  const fill = el("div", { class: "fill" });
  fill.style.width = p + "%";
  track.append(fill);
  m.append(track);
  return m;
}

function limit(v, key, label) {
  const l = (v.rate_limits || {})[key];
  if (!l) return el("div", { class: "meter" }, el("span", {}, label + " –"));
  return meter(label, l.used_percentage, Math.round(l.used_percentage) + "%");
}

function sessionCard(v) {
  const a = v.attention;
  const card = el("article", { class: "card st-" + v.state, "aria-label": (STATE_NAMES[v.state] || v.state) + ": " + shortPath(project(v)) });
  card.append(el("div", { class: "row" },
    el("span", { class: "state" }, STATE_NAMES[v.state] || v.state),
    el("span", { class: "since" }, "for ", el("span", { "data-since": v.state_since }, ago(v.state_since)))));
  const title = v.title || v.first_prompt;
  if (title) card.append(el("div", { class: "title" }, title.length > 140 ? title.slice(0, 140) + "…" : title));
  if (a) {
    card.append(el("div", { class: "wait" }, "Waits for: ", el("b", {}, a.tool || a.reason),
      a.detail ? " — " + (a.detail.length > 160 ? a.detail.slice(0, 160) + "…" : a.detail) : ""));
  } else if (v.activity_detail) {
    card.append(el("div", { class: "wait" }, v.activity_detail));
  }
  card.append(el("div", { class: "meta" }, [v.harness, v.model, v.cost_display,
    v.worktree_branch ? "⎇ " + v.worktree_branch : null, v.tmux_pane ? "pane " + v.tmux_pane : null]
    .filter(Boolean).join(" · ")));
  card.append(el("div", { class: "meters" },
    meter("Context", v.context_percentage),
    limit(v, "five_hour", "5h"),
    limit(v, "seven_day", "7d")));
  if (v.tmux_pane) {
    card.append(el("div", { class: "actions" },
      el("button", { type: "button", "aria-label": "Jump to pane " + v.tmux_pane, onclick: () => jump(v) }, "Jump to pane")));
  }
  return card;
}

function drawSessions() {
  const groups = $("groups");
  // Host, then project: sessions of other machines (the nats adapter) carry their own host.
  const byHost = new Map();
  for (const v of sessions.values()) {
    const h = v.host || host || "this machine";
    if (!byHost.has(h)) byHost.set(h, new Map());
    const byProject = byHost.get(h);
    const key = project(v);
    if (!byProject.has(key)) byProject.set(key, []);
    byProject.get(key).push(v);
  }
  const focused = document.activeElement;
  const keepFocus = focused && groups.contains(focused) && focused.closest("article");
  const focusedId = keepFocus ? keepFocus.dataset.id : null;
  groups.textContent = "";
  cards.clear();
  let shown = 0;
  // This machine first, then the others by name.
  const hosts = [...byHost.keys()].sort((a, b) => (a === host ? -1 : b === host ? 1 : a.localeCompare(b)));
  for (const h of hosts) {
    const byProject = byHost.get(h);
    const stale = [...byProject.values()].flat().some((v) => v.stale);
    groups.append(el("h3", {}, "Host ", el("span", { class: "host" }, h),
      stale ? el("span", { class: "stale", title: "no heartbeat from this host lately" }, " (not heard from lately)") : null));
    for (const key of [...byProject.keys()].sort()) {
      const list = byProject.get(key).filter(matches);
      if (!list.length) continue;
      const g = el("div", { class: "group", role: "list" });
      for (const v of list) {
        const c = sessionCard(v);
        c.dataset.id = v.id;
        c.setAttribute("role", "listitem");
        cards.set(v.id, c);
        g.append(c);
        shown++;
      }
      groups.append(el("h4", { title: key }, shortPath(key)), g);
    }
  }
  if (focusedId && cards.has(focusedId)) {
    const b = cards.get(focusedId).querySelector("button");
    if (b) b.focus();
  }
  $("empty").hidden = sessions.size > 0;
  $("session-count").textContent = sessions.size ? "(" + shown + (shown !== sessions.size ? " of " + sessions.size : "") + ")" : "";
}

let drawQueued = false;
function draw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    drawSessions();
    drawPending();
  });
}

// Times in state tick without a redraw.
setInterval(() => {
  for (const e of document.querySelectorAll("[data-since]")) e.textContent = ago(e.dataset.since);
}, 1000);

// ---- the live stream ----

function connect() {
  const conn = $("conn");
  const es = new EventSource("/events");
  es.addEventListener("snapshot", (ev) => {
    const d = JSON.parse(ev.data);
    sessions.clear();
    for (const v of d.sessions) sessions.set(v.id, v);
    host = d.host;
    seq = d.seq;
    conn.textContent = "live";
    conn.className = "conn live";
    draw();
  });
  es.addEventListener("session", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.seq <= seq) return; // the snapshot holds it already
    seq = d.seq;
    sessions.set(d.session.id, d.session);
    draw();
  });
  es.addEventListener("removed", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.seq <= seq) return;
    seq = d.seq;
    sessions.delete(d.id);
    draw();
  });
  es.onerror = async () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn down";
    // EventSource retries by itself; a 401 (logged out, token changed) will not heal.
    try {
      const r = await fetch("/api/pending", { credentials: "same-origin" });
      if (r.status === 401) { es.close(); location.reload(); }
    } catch (_) { /* the daemon is down; EventSource keeps trying */ }
  };
}

$("filter").addEventListener("input", (ev) => { filterText = ev.target.value.trim().toLowerCase(); draw(); });
document.addEventListener("keydown", (ev) => {
  if (ev.key === "/" && document.activeElement.tagName !== "INPUT") { ev.preventDefault(); $("filter").focus(); }
  if (ev.key === "Escape" && document.activeElement === $("filter")) { $("filter").value = ""; filterText = ""; draw(); }
});
$("logout").addEventListener("click", async () => {
  try { await post("/logout"); } finally { location.reload(); }
});
connect();
