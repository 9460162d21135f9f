// The Clade console: a small hand-written front end over the gateway's own /v1 routes.
// Signed in, the browser holds only an HttpOnly cookie; every change carries the CSRF token
// the sign-in answered. Nothing the gateway returns is ever parsed as HTML: every text goes
// into the page through textContent.
"use strict";

const state = { me: null, streams: [], timers: [] };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString();
}

function badge(word) {
  return el("span", { class: "badge " + word }, word);
}

function toast(text, bad) {
  const note = el("div", { class: bad ? "bad" : "" }, text);
  document.getElementById("toast").append(note);
  setTimeout(() => note.remove(), 6000);
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-Clade-Csrf"] = state.me ? state.me.csrf : "";
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch (_) {
    parsed = null;
  }
  if (!response.ok) {
    const error = (parsed && parsed.error) || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || text || response.statusText);
  }
  return parsed;
}

function enc(part) {
  return encodeURIComponent(part);
}

/// Runs `action`; a refusal is shown, never thrown away.
async function act(action, done) {
  try {
    const result = await action();
    if (done) toast(done);
    return result;
  } catch (err) {
    toast(err.message, true);
    return null;
  }
}

function stopLive() {
  for (const stream of state.streams) stream.close();
  for (const timer of state.timers) clearInterval(timer);
  state.streams = [];
  state.timers = [];
}

/// An EventSource that shows whether it is connected; the browser reconnects by itself and
/// resumes after the last event id it saw.
function follow(path, indicator, onEvent, kinds) {
  const stream = new EventSource(path, { withCredentials: true });
  stream.onopen = () => {
    indicator.textContent = "● live";
    indicator.className = "live on";
  };
  stream.onerror = () => {
    indicator.textContent = "○ reconnecting…";
    indicator.className = "live off";
  };
  for (const kind of kinds) {
    stream.addEventListener(kind, (message) => {
      let data = null;
      try {
        data = JSON.parse(message.data);
      } catch (_) {
        data = { text: message.data };
      }
      onEvent(kind, data, message.lastEventId);
    });
  }
  state.streams.push(stream);
  return stream;
}

const EVENT_KINDS = [
  "turn.started", "turn.finished", "turn.failed", "turn.yielded", "turn.resumed",
  "tool.called", "tool.result", "approval.requested", "approval.decided",
  "agent.message.sent", "agent.message.received", "executions.paused", "executions.resumed",
  "execution.started", "execution.progress", "execution.ended", "debug.stopped", "debug.resumed",
];

// ---------------------------------------------------------------- sign-in

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("tenant").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  const token = el("input", { type: "password", id: "token", autocomplete: "off",
    placeholder: "clade_…", required: true });
  const error = el("p", { class: "error", id: "signin-error" }, message || "");
  const form = el("form", { class: "card signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", { for: "token" }, "Token"),
    token,
    el("p", { class: "muted" },
      "A tenant's token (clade tokens create) or the operator's. It stays on the gateway; " +
      "this browser keeps only a cookie."),
    el("button", { class: "primary", type: "submit" }, "Sign in"),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      state.me = await api("POST", "/console/session", { token: token.value });
      signedIn();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  main().replaceChildren(el("section", { class: "card signin" }, form));
}

function signedIn() {
  document.getElementById("nav").hidden = false;
  const out = document.getElementById("sign-out");
  out.hidden = false;
  showWho();
  if (state.me.operator) fillTenants();
  route();
}

function showWho() {
  const me = state.me;
  const who = me.operator
    ? "operator" + (me.viewing ? " · looking into " + me.viewing : "")
    : "tenant " + me.tenant;
  document.getElementById("who").textContent = who + " · " + me.scopes.join(", ");
}

/// The operator picks the tenant its console looks into; the gateway keeps the choice with the
/// sign-in, so every request and stream of the console acts in it.
async function fillTenants() {
  const select = document.getElementById("tenant");
  const page = await act(() => api("GET", "/console/tenants"));
  if (!page) return;
  const current = state.me.viewing || state.me.tenant;
  select.replaceChildren(...page.items.map((t) =>
    el("option", { value: t.name, selected: t.name === current }, t.name)));
  select.hidden = false;
  select.onchange = async () => {
    const tenant = select.value === state.me.tenant ? null : select.value;
    const me = await act(() => api("PUT", "/console/session/tenant", { tenant }));
    if (!me) return;
    state.me = me;
    showWho();
    if (location.hash === "#/agents") route();
    else location.hash = "#/agents";
  };
}

async function signOut() {
  await act(() => api("DELETE", "/console/session"));
  state.me = null;
  stopLive();
  location.hash = "#/agents";
  showSignIn("Signed out.");
}

function main() {
  return document.getElementById("main");
}

// ---------------------------------------------------------------- routing

const PANELS = [
  [/^#\/agents\/([^/]+)$/, (m) => agentPanel(decodeURIComponent(m[1]))],
  [/^#\/sessions\/([^/]+)$/, (m) => sessionPanel(decodeURIComponent(m[1]))],
  [/^#\/approvals$/, () => approvalsPanel()],
  [/^#\/debug$/, () => debugPanel()],
  [/^#\/tools$/, () => toolsPanel()],
  [/^#\/audit$/, () => auditPanel()],
  [/^#\/usage$/, () => usagePanel(false)],
  [/^#\/usage\/hours$/, () => usagePanel(true)],
  [/^#\/replay$/, () => replayPanel()],
  [/^(#\/agents)?$|^#?\/?$/, () => agentsPanel()],
];

function route() {
  if (!state.me) return;
  stopLive();
  const hash = location.hash || "#/agents";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", hash.startsWith("#/" + link.dataset.panel));
  }
  for (const [pattern, panel] of PANELS) {
    const match = hash.match(pattern);
    if (match) {
      panel(match).catch(showFailure);
      return;
    }
  }
  showFailure(new ApiError(404, "route_not_found", "The console has no page " + hash + "."));
}

function showFailure(err) {
  if (err && err.status === 401) {
    state.me = null;
    showSignIn("Your sign-in has ended: sign in again.");
    return;
  }
  main().replaceChildren(el("section", { class: "card", id: "failure" },
    el("h1", {}, err.status === 404 ? "Not found" : "Something went wrong"),
    el("p", { class: "error" }, err.message),
    el("p", {}, el("a", { href: "#/agents" }, "Back to the agents"))));
}

// ---------------------------------------------------------------- agents

async function agentsPanel(cursor) {
  const query = "/v1/agents?limit=50" + (cursor ? "&cursor=" + enc(cursor) : "");
  const page = await api("GET", query);
  const rows = page.items.map((agent) => {
    const status = el("td", { class: "status" }, el("span", { class: "muted" }, "…"));
    const controls = el("td", {});
    const row = el("tr", { dataset: { agent: agent.handle } },
      el("td", {}, el("a", { href: "#/agents/" + enc(agent.handle) }, agent.handle)),
      el("td", {}, agent.name),
      el("td", {}, agent.template),
      status,
      el("td", {}, when(agent.created_at)),
      controls);
    fillStatus(agent.handle, status, controls);
    return row;
  });
  const more = page.next_cursor
    ? el("button", { onclick: () => agentsPanel(page.next_cursor).catch(showFailure) }, "Next page")
    : null;
  main().replaceChildren(
    el("h1", {}, "Agents"),
    el("section", { class: "card" },
      page.items.length === 0
        ? el("p", { class: "muted" }, "No agents yet: create one with clade agents create NAME.")
        : el("table", { id: "agents" },
          el("thead", {}, el("tr", {}, ["Handle", "Name", "Template", "Status", "Created", ""]
            .map((h) => el("th", {}, h)))),
          el("tbody", {}, rows)),
      el("div", { class: "pager" }, cursor
        ? el("button", { onclick: () => agentsPanel().catch(showFailure) }, "First page")
        : null, more)));
}

async function fillStatus(handle, cell, controls) {
  try {
    const status = await api("GET", "/v1/agents/" + enc(handle) + "/status");
    const running = status.sessions.filter((s) => s.state === "running").length;
    const waiting = status.sessions.filter((s) => s.state !== "running").length;
    cell.replaceChildren(
      status.paused ? badge("paused") : badge(running ? "running" : "idle"),
      el("span", { class: "muted" }, waiting ? " " + waiting + " waiting" : ""));
    controls.replaceChildren(pauseButton(handle, Boolean(status.paused), () =>
      fillStatus(handle, cell, controls)));
  } catch (err) {
    cell.replaceChildren(el("span", { class: "error" }, err.message));
  }
}

function pauseButton(handle, paused, after) {
  const path = "/v1/agents/" + enc(handle) + (paused ? "/resume" : "/pause");
  return el("button", {
    class: paused ? "" : "danger",
    dataset: { action: paused ? "resume" : "pause" },
    onclick: async () => {
      const done = await act(() => api("POST", path, paused ? undefined : {}),
        (paused ? "Resumed " : "Paused ") + handle);
      if (done) after();
    },
  }, paused ? "Resume" : "Pause");
}

// ---------------------------------------------------------------- one agent

async function agentPanel(handle) {
  const base = "/v1/agents/" + enc(handle);
  const agent = await api("GET", base);
  const header = el("div", { class: "row" });
  const controls = el("span", {});
  const status = el("span", { id: "agent-status" });
  const refresh = async () => {
    const now = await act(() => api("GET", base + "/status"));
    if (!now) return;
    status.replaceChildren(now.paused ? badge("paused") :
      badge(now.sessions.some((s) => s.state === "running") ? "running" : "idle"));
    controls.replaceChildren(pauseButton(handle, Boolean(now.paused), refresh));
  };
  header.append(el("div", {},
    el("h1", {}, agent.name + " ", el("span", { class: "muted" }, "@" + agent.handle), " ", status),
    el("p", { class: "muted" }, "Template " + agent.template + " · created " + when(agent.created_at)),
    controls));
  const indicator = el("span", { class: "live off" }, "○ connecting…");
  const timeline = el("ul", { class: "timeline", id: "timeline" });
  const text = el("textarea", { id: "message", placeholder: "A message to " + handle });
  const send = el("form", { id: "send" }, text,
    el("button", { class: "primary", type: "submit" }, "Send"));
  send.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!text.value.trim()) return;
    const body = { agent: handle, text: text.value,
      source: { platform: "http", channel: "console", actor: "console" } };
    const sent = await act(() => api("POST", "/v1/events", body), "Sent");
    if (sent) text.value = "";
  });
  main().replaceChildren(
    header,
    el("section", { class: "card" }, el("h2", {}, "Live ", indicator), timeline, send),
    el("div", { class: "row" },
      el("section", { class: "card", id: "sessions" }, el("h2", {}, "Sessions")),
      el("section", { class: "card", id: "schedules" }, el("h2", {}, "Schedules"))),
    el("div", { class: "row" },
      el("section", { class: "card", id: "memory" }, el("h2", {}, "Memory")),
      el("section", { class: "card", id: "grants" }, el("h2", {}, "Grants"))),
    el("section", { class: "card", id: "lineage" }, el("h2", {}, "Lineage")),
    el("section", { class: "card", id: "runs" }));
  refresh();
  follow(base + "/events", indicator, (kind, data) => {
    timeline.prepend(timelineEntry(kind, data.data || data, data.session));
    if (kind.startsWith("turn.") || kind.startsWith("executions.")) refresh();
  }, EVENT_KINDS);
  fillSessions(handle);
  fillSchedules(handle);
  fillMemory(handle);
  fillGrants(handle);
  fillLineage(handle);
  fillRuns(handle);
}

/// Who made the agent, and the tree of agents it made (`agent.spawn`).
async function fillLineage(handle) {
  const box = document.getElementById("lineage");
  const tree = await act(() => api("GET", "/v1/agents/" + enc(handle) + "/lineage"));
  if (!tree) return;
  const link = (h) => el("a", { href: "#/agents/" + enc(h) }, "@" + h);
  const branch = (nodes) => el("ul", { class: "tree" }, nodes.map((n) =>
    el("li", { dataset: { child: n.handle } }, link(n.handle), n.children.length ? branch(n.children) : null)));
  box.append(
    el("p", {}, tree.ancestors.length === 0 ? el("span", { class: "muted" }, "Made by a person.") :
      ["Made by ", ...tree.ancestors.flatMap((h, i) => i === 0 ? [link(h)] : [" ← ", link(h)])]),
    tree.children.length === 0 ? el("p", { class: "muted" }, "It made no agents.") : branch(tree.children));
}

function timelineEntry(kind, data, session) {
  const summary = data.reply || data.text || data.tool || data.error || data.reason || "";
  return el("li", { dataset: { kind } },
    el("time", {}, new Date().toLocaleTimeString()),
    el("span", { class: "kind" }, kind),
    String(summary).slice(0, 300),
    session ? el("a", { href: "#/sessions/" + enc(session), class: "muted" }, " session") : null,
    el("details", {}, el("summary", {}, "details"), el("pre", {}, JSON.stringify(data, null, 2))));
}

async function fillSessions(handle) {
  const box = document.getElementById("sessions");
  const page = await act(() => api("GET", "/v1/sessions?limit=20&agent=" + enc(handle)));
  if (!page) return;
  box.append(page.items.length === 0 ? el("p", { class: "muted" }, "No sessions yet.") :
    el("table", {}, el("tbody", {}, page.items.map((s) => el("tr", {},
      el("td", {}, el("a", { href: "#/sessions/" + enc(s.id) }, s.channel + " · " + (s.actor || ""))),
      el("td", { class: "muted" }, when(s.updated_at || s.created_at)))))));
}

async function fillSchedules(handle) {
  const box = document.getElementById("schedules");
  const base = "/v1/agents/" + enc(handle) + "/jobs";
  const page = await act(() => api("GET", base));
  if (!page) return;
  const items = page.items || [];
  box.append(items.length === 0 ? el("p", { class: "muted" }, "No schedules.") :
    el("ul", { class: "timeline" }, items.map((job) => {
      const runs = el("div", {});
      const history = el("details", { dataset: { job: job.name } },
        el("summary", {}, "run history"), runs);
      history.addEventListener("toggle", async () => {
        if (!history.open) return;
        const fired = await act(() => api("GET", base + "/" + enc(job.name) + "/runs?limit=20"));
        if (!fired) return;
        runs.replaceChildren(fired.items.length === 0 ? el("p", { class: "muted" }, "No fires yet.") :
          el("table", {}, el("tbody", {}, fired.items.map((run) => el("tr", { class: "fire" },
            el("td", { class: "muted" }, when(run.fired_at)),
            el("td", {}, run.error ? badge("failed") :
              badge(run.turn_status || run.flow_run_status || (run.delivered ? "delivered" : "waiting"))),
            el("td", {}, run.error || ""))))));
      });
      return el("li", { dataset: { schedule: job.name } },
        el("span", { class: "kind" }, job.name), job.schedule, " ",
        job.enabled ? badge("enabled") : badge("disabled"),
        el("span", { class: "muted" }, job.enabled && job.next_at ? " next " + when(job.next_at) : ""),
        history);
    })));
}

async function fillRuns(handle) {
  const box = document.getElementById("runs");
  const fill = async () => {
    const page = await act(() => api("GET", "/v1/agents/" + enc(handle) + "/runs?limit=20"));
    if (!page) return;
    const open = (run) => run.status === "running" || run.status === "pending" || run.status === "paused";
    box.replaceChildren(el("h2", {}, "Runs: branches, workers, scheduled fires"),
      page.items.length === 0 ? el("p", { class: "muted" }, "No runs.") :
        el("table", {}, el("tbody", {}, page.items.map((run) => el("tr", { dataset: { run: run.id } },
          el("td", {}, run.kind), el("td", {}, badge(run.status)),
          el("td", {}, String(run.input || "").slice(0, 120)),
          el("td", { class: "muted" }, when(run.created_at)),
          el("td", {}, open(run) ? el("button", { class: "danger", onclick: async () => {
            if (await act(() => api("POST", "/v1/runs/" + enc(run.id) + "/cancel"), "Cancelled")) fill();
          } }, "Cancel") : ""))))));
  };
  await fill();
}

async function fillMemory(handle) {
  const box = document.getElementById("memory");
  const base = "/v1/agents/" + enc(handle) + "/memories";
  const list = el("div", {});
  const query = el("input", { type: "text", id: "memory-query", placeholder: "Search memory" });
  const search = el("form", { class: "inline" }, query, el("button", { type: "submit" }, "Search"));
  const show = (items) => list.replaceChildren(items.length === 0 ?
    el("p", { class: "muted" }, "Nothing.") :
    el("ul", {}, items.map((hit) => {
      const item = hit.item || hit;
      return el("li", {}, badge(item.kind || "item"), " ", item.content || "");
    })));
  search.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!query.value.trim()) {
      const page = await act(() => api("GET", base + "?limit=20"));
      if (page) show(page.items);
      return;
    }
    const found = await act(() => api("POST", base + "/search", { query: query.value }));
    if (found) show(found.items || found.hits || []);
  });
  box.append(search, list);
  const page = await act(() => api("GET", base + "?limit=20"));
  if (page) show(page.items);
}

async function fillGrants(handle) {
  const box = document.getElementById("grants");
  const page = await act(() => api("GET", "/v1/grants?agent=" + enc(handle)));
  if (!page) return;
  box.append(page.items.length === 0 ? el("p", { class: "muted" }, "No grants.") :
    el("table", {}, el("tbody", {}, page.items.map((g) => el("tr", {},
      el("td", {}, badge(g.effect)), el("td", {}, g.tool), el("td", { class: "muted" }, g.resource))))));
}

// ---------------------------------------------------------------- one session

async function sessionPanel(id) {
  const base = "/v1/sessions/" + enc(id);
  const session = await api("GET", base);
  const turns = await api("GET", base + "/turns?limit=50");
  const list = el("ul", { class: "timeline", id: "turns" });
  for (const turn of turns.items) list.append(turnEntry(id, turn));
  const indicator = el("span", { class: "live off" }, "○ connecting…");
  main().replaceChildren(
    el("h1", {}, "Session ", el("span", { class: "muted" }, id)),
    el("p", {}, el("a", { href: "#/agents/" + enc(session.agent) }, "@" + session.agent),
      " · " + session.channel + " · " + (session.actor || ""), " ",
      el("button", { class: "danger", onclick: () =>
        act(() => api("POST", base + "/cancel"), "Cancel asked") }, "Cancel the running turn")),
    el("section", { class: "card" }, el("h2", {}, "Turns ", indicator), list));
  follow(base + "/events", indicator, (kind, data) => {
    list.append(timelineEntry(kind, data.data || data, null));
  }, EVENT_KINDS);
}

function turnEntry(session, turn) {
  const steps = el("div", {});
  const open = el("details", {}, el("summary", {}, "steps"), steps);
  open.addEventListener("toggle", async () => {
    if (!open.open || steps.childElementCount) return;
    const page = await act(() => api("GET", "/v1/sessions/" + enc(session) + "/turns/" +
      enc(turn.id) + "/steps"));
    if (page) steps.append(el("pre", {}, JSON.stringify(page.items || page, null, 2)));
  });
  return el("li", { dataset: { turn: turn.id } },
    el("time", {}, when(turn.started_at || turn.created_at)),
    badge(turn.status), " ", String(turn.reply || turn.error || "").slice(0, 400), open);
}

// ---------------------------------------------------------------- approvals

async function approvalsPanel() {
  const box = el("section", { class: "card", id: "approvals" });
  main().replaceChildren(el("h1", {}, "Approvals waiting"), box);
  const canDecide = state.me.scopes.includes("approve");
  const fill = async () => {
    const page = await act(() => api("GET", "/v1/approvals?status=pending"));
    if (!page) return;
    box.replaceChildren(page.items.length === 0 ?
      el("p", { class: "muted" }, "Nothing waits for a decision.") :
      el("table", {}, el("tbody", {}, page.items.map((a) => el("tr", { dataset: { approval: a.id } },
        el("td", {}, "@" + a.agent), el("td", {}, a.tool), el("td", {}, a.resource),
        el("td", {}, el("pre", {}, JSON.stringify(a.arguments, null, 2))),
        el("td", { class: "muted" }, a.reason),
        el("td", {}, canDecide ? [
          el("button", { class: "primary", dataset: { decide: "approve" },
            onclick: () => decide(a.id, "approve", fill) }, "Approve"), " ",
          el("button", { class: "danger", dataset: { decide: "deny" },
            onclick: () => decide(a.id, "deny", fill) }, "Deny")]
          : el("span", { class: "muted" }, "needs the approve scope")))))));
  };
  await fill();
  state.timers.push(setInterval(fill, 2000));
}

async function decide(id, decision, after) {
  const done = await act(() => api("POST", "/v1/approvals/" + enc(id), { decision }),
    decision === "approve" ? "Approved" : "Denied");
  if (done) after();
}

// ---------------------------------------------------------------- debugging

/// Breakpoints, and the turns paused at them: each shows what it holds (the context before a
/// model call, the call before a tool runs, the error) and takes continue, step, skip or edit.
async function debugPanel() {
  const canTell = state.me.scopes.includes("admin");
  const stops = el("section", { class: "card", id: "stops" });
  const points = el("section", { class: "card", id: "breakpoints" });
  main().replaceChildren(el("h1", {}, "Paused turns"), stops, el("h2", {}, "Breakpoints"), points);
  const agent = el("input", { type: "text", placeholder: "agent handle", id: "break-agent", required: true });
  const at = el("select", { id: "break-at" },
    el("option", { value: "tool" }, "before a tool call"),
    el("option", { value: "model" }, "before each model call"),
    el("option", { value: "error" }, "on an error"));
  const tool = el("input", { type: "text", placeholder: "tool (all when empty)", id: "break-tool" });
  const form = el("form", { class: "inline", id: "break-form" }, agent, at, tool,
    el("button", { type: "submit", class: "primary" }, "Set breakpoint"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { agent: agent.value.trim(), at: at.value };
    if (at.value === "tool" && tool.value.trim()) body.tool = tool.value.trim();
    if (await act(() => api("POST", "/v1/breakpoints", body), "Breakpoint set")) fillPoints();
  });
  const fillPoints = async () => {
    const page = await act(() => api("GET", "/v1/breakpoints"));
    if (!page) return;
    points.replaceChildren(canTell ? form : el("p", { class: "muted" }, "Setting breakpoints needs the admin scope."),
      page.items.length === 0 ? el("p", { class: "muted" }, "No breakpoints.") :
        el("table", {}, el("tbody", {}, page.items.map((b) => el("tr", { dataset: { breakpoint: b.id } },
          el("td", {}, "@" + b.agent), el("td", {}, b.at + (b.tool ? " " + b.tool : "")),
          el("td", { class: "muted" }, b.session ? "session " + b.session : "every session"),
          el("td", {}, canTell ? el("button", { class: "danger",
            onclick: async () => {
              // A removal answers 204, with no body: `act` then returns null, failed or not.
              await act(() => api("DELETE", "/v1/breakpoints/" + enc(b.id)), "Removed");
              fillPoints();
            } }, "Remove") : ""))))));
  };
  const tell = async (id, body) => {
    if (await act(() => api("POST", "/v1/debug/stops/" + enc(id), body), "Told: " + body.action)) {
      drawn = null;
      fillStops();
    }
  };
  const controls = (s) => {
    if (!canTell) return el("span", { class: "muted" }, "needs the admin scope");
    const given = el("input", { type: "text", placeholder: "result that stands for the call's", class: "given" });
    const parts = [
      el("button", { class: "primary", dataset: { tell: "continue" }, onclick: () => tell(s.id, { action: "continue" }) }, "Continue"), " ",
      el("button", { dataset: { tell: "step" }, onclick: () => tell(s.id, { action: "step" }) }, "Step"), " ",
      given,
      el("button", { dataset: { tell: "skip" }, onclick: () => tell(s.id, { action: "skip", result: given.value }) }, "Skip"),
    ];
    if (s.at === "tool") {
      const args = el("textarea", { class: "arguments", rows: 4 },
        JSON.stringify(s.detail.call ? s.detail.call.arguments : {}, null, 2));
      parts.push(el("div", {}, args, el("button", { dataset: { tell: "edit" }, onclick: () => {
        let parsed;
        try {
          parsed = JSON.parse(args.value);
        } catch (err) {
          toast("The arguments are not JSON: " + err.message, true);
          return;
        }
        tell(s.id, { action: "edit", arguments: parsed });
      } }, "Run with these arguments")));
    }
    return parts;
  };
  const shown = (s) => {
    const d = s.detail || {};
    if (d.error) return el("pre", {}, d.error);
    if (d.call) return el("pre", {}, d.call.name + " " + JSON.stringify(d.call.arguments, null, 2));
    const messages = (d.messages || []).map((m) => "[" + m.role + "] " + (m.text || m.content || ""));
    return el("details", {}, el("summary", {}, messages.length + " messages, " + (d.tools || []).length + " tools offered"),
      el("pre", {}, messages.join("\n\n")));
  };
  // Drawn again only when the paused turns change, so what a person types is not lost.
  let drawn = null;
  const fillStops = async () => {
    const page = await act(() => api("GET", "/v1/debug/stops"));
    if (!page) return;
    const key = page.items.map((s) => s.id).join(" ");
    if (key === drawn) return;
    drawn = key;
    stops.replaceChildren(page.items.length === 0 ?
      el("p", { class: "muted" }, "No turn waits at a breakpoint.") :
      el("table", {}, el("tbody", {}, page.items.map((s) => el("tr", { dataset: { stop: s.id } },
        el("td", {}, "@" + s.agent), el("td", {}, el("a", { href: "#/sessions/" + enc(s.session_id) }, s.place)),
        el("td", {}, shown(s)), el("td", {}, controls(s)))))));
  };
  await Promise.all([fillStops(), fillPoints()]);
  state.timers.push(setInterval(fillStops, 1500));
}

// ---------------------------------------------------------------- tool calls

/// The tool invocation log: every tool call of the tenant's agents with its arguments and what
/// it returned, filtered by agent, tool and time, a page at a time (oldest first in a page).
async function toolsPanel() {
  const agent = el("input", { type: "text", placeholder: "agent handle", id: "calls-agent" });
  const tool = el("input", { type: "text", placeholder: "tool", id: "calls-tool" });
  const span = el("select", { id: "calls-since" },
    el("option", { value: "3600000" }, "last hour"),
    el("option", { value: "86400000", selected: true }, "last day"),
    el("option", { value: "604800000" }, "last week"));
  const results = el("div", { id: "calls" });
  const form = el("form", { class: "inline", id: "calls-form" }, agent, tool, span,
    el("button", { type: "submit" }, "Search"));
  const search = async (cursor) => {
    const since = Date.now() - Number(span.value);
    const filter = (kind, limit) => {
      let query = "/v1/events?limit=" + limit + "&type=" + kind + "&since=" + since;
      if (agent.value.trim()) query += "&agent=" + enc(agent.value.trim());
      return query;
    };
    const called = await act(() => api("GET", filter("tool.called", 200) + (cursor ? "&cursor=" + cursor : "")));
    const returned = await act(() => api("GET", filter("tool.result", 1000)));
    if (!called || !returned) return;
    const results_of = new Map(returned.items.map((e) => [e.turn + " " + e.data.call, e.data]));
    const wanted = tool.value.trim();
    const rows = called.items.filter((e) => !wanted || e.data.name === wanted);
    const more = called.next_cursor && called.items.length === 200
      ? el("div", { class: "pager" }, el("button", { onclick: () => search(called.next_cursor) }, "Next page"))
      : null;
    results.replaceChildren(rows.length === 0 ? el("p", { class: "muted" }, "No tool calls match.") :
      el("table", {}, el("thead", {}, el("tr", {}, ["time", "session", "tool", "arguments", "result"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.map((e) => {
          const result = results_of.get(e.turn + " " + e.data.call);
          const outcome = !result ? el("span", { class: "muted" }, "no result yet")
            : el("span", {}, badge(result.is_error ? "error" : "ok"), " ", String(result.content || "").slice(0, 300));
          return el("tr", { dataset: { call: e.data.call, tool: e.data.name } },
            el("td", {}, el("time", {}, when(e.created_at))),
            el("td", {}, el("a", { href: "#/sessions/" + enc(e.session) }, String(e.session).slice(0, 8))),
            el("td", {}, e.data.name),
            el("td", {}, el("pre", {}, JSON.stringify(e.data.arguments, null, 1))),
            el("td", {}, outcome));
        }))),
      more || "");
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(null);
  });
  main().replaceChildren(el("h1", {}, "Tool calls"), el("section", { class: "card" }, form, results));
  await search(null);
}

// ---------------------------------------------------------------- audit

async function auditPanel() {
  const agent = el("input", { type: "text", placeholder: "agent handle", id: "audit-agent" });
  const tool = el("input", { type: "text", placeholder: "tool", id: "audit-tool" });
  const results = el("div", {});
  const form = el("form", { class: "inline" }, agent, tool, el("button", { type: "submit" }, "Search"));
  const search = async (after) => {
    let query = "/v1/audit?limit=100";
    if (agent.value.trim()) query += "&agent=" + enc(agent.value.trim());
    if (tool.value.trim()) query += "&tool=" + enc(tool.value.trim());
    if (after) query += "&after=" + enc(after);
    const page = await act(() => api("GET", query));
    if (!page) return;
    const more = page.next_after
      ? el("div", { class: "pager" }, el("button", { onclick: () => search(page.next_after) }, "Next page"))
      : null;
    results.replaceChildren(page.items.length === 0 ? el("p", { class: "muted" }, "No records.") :
      el("table", { id: "audit" }, el("tbody", {}, page.items.map((r) => el("tr", {},
        el("td", { class: "muted" }, when(r.at)), el("td", {}, r.kind),
        el("td", {}, r.tool || ""), el("td", {}, r.decision ? badge(r.decision) : ""),
        el("td", {}, el("pre", {}, JSON.stringify(r.detail || {}, null, 2))))))), more || "");
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  main().replaceChildren(el("h1", {}, "Audit"), el("section", { class: "card" }, form, results));
  await search();
}

// ---------------------------------------------------------------- usage

/// Tokens (and, on hover, cost) by agent and day over 30 days, or by hour over the last two
/// days.
async function usagePanel(hourly) {
  const since = Date.now() - 48 * 3600 * 1000;
  const usage = await api("GET", hourly ? "/v1/usage?by_hour=true&since=" + since : "/v1/usage?by_day=true");
  const items = usage.items || [];
  const slot = (i) => hourly ? i.day + " " + String(i.hour).padStart(2, "0") + "h" : i.day;
  const slots = [...new Set(items.map(slot))].sort();
  const agents = [...new Set(items.map((i) => i.agent))].sort();
  const tokens = (i) => (i.input_tokens || 0) + (i.output_tokens || 0);
  const most = Math.max(1, ...items.map(tokens));
  const cell = (agent, at) => {
    const found = items.filter((i) => i.agent === agent && slot(i) === at);
    const sum = found.reduce((n, i) => n + tokens(i), 0);
    const cost = found.reduce((n, i) => n + (i.cost_micros || 0), 0) / 1e6;
    const td = el("td", { class: "cell", dataset: { tokens: sum },
      title: cost ? "$" + cost.toFixed(4) : null }, sum ? String(sum) : "");
    // Set through the DOM: the page's policy takes no inline style attribute.
    if (sum) td.style.backgroundColor = "rgba(42, 93, 176, " + (0.1 + 0.6 * sum / most).toFixed(2) + ")";
    return td;
  };
  const other = hourly
    ? el("a", { href: "#/usage", id: "usage-days" }, "by day, 30 days")
    : el("a", { href: "#/usage/hours", id: "usage-hours" }, "by hour, 48 hours");
  main().replaceChildren(el("h1", {}, "Usage: tokens by agent and " + (hourly ? "hour" : "day")),
    el("p", {}, other),
    el("section", { class: "card" }, items.length === 0 ?
      el("p", { class: "muted" }, "No model calls in this span.") :
      el("table", { class: "heat", id: "usage" },
        el("thead", {}, el("tr", {}, el("th", {}, "agent"), slots.map((d) => el("th", {}, d)))),
        el("tbody", {}, agents.map((a) => el("tr", {}, el("td", {}, a),
          slots.map((d) => cell(a, d))))))));
}

// ---------------------------------------------------------------- replay

const REPLAY_MAX_BYTES = 50 * 1024 * 1024;
/// The gateway's version, written in when the gateway serves this script.
const CLADE_VERSION = "__CLADE_VERSION__";

/// Whether version `a` (major.minor.patch) is newer than `b`.
function newer(a, b) {
  const parts = (v) => v.split(/[.+-]/).slice(0, 3).map((n) => parseInt(n, 10) || 0);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < 3; i++) {
    if (x[i] !== y[i]) return x[i] > y[i];
  }
  return false;
}

function spansOf(text) {
  const spans = [];
  const lines = text.split("\n");
  lines.forEach((line, index) => {
    if (!line.trim()) return;
    let request;
    try {
      request = JSON.parse(line);
    } catch (_) {
      throw new Error("line " + (index + 1) + " is not JSON: is this a file from clade trace export?");
    }
    if (!request || !Array.isArray(request.resourceSpans)) {
      throw new Error("line " + (index + 1) + " has no resourceSpans: this is not a trace export");
    }
    for (const resource of request.resourceSpans) {
      const made = attributes(resource.resource || {})["service.version"];
      if (made && newer(String(made), CLADE_VERSION)) {
        throw new Error("line " + (index + 1) + " was exported by Clade " + made +
          ", newer than this console's " + CLADE_VERSION + ": open it in a console of Clade " +
          made + " or later");
      }
      for (const scope of resource.scopeSpans || []) {
        for (const span of scope.spans || []) spans.push(span);
      }
    }
  });
  if (spans.length === 0) throw new Error("the file holds no spans: export a session that has turns");
  const start = (s) => BigInt(s.startTimeUnixNano || 0);
  spans.sort((a, b) => (start(a) < start(b) ? -1 : start(a) > start(b) ? 1 : 0));
  return spans;
}

/// An OTLP/JSON AnyValue as plain JSON.
function plain(v) {
  if (v.arrayValue) return (v.arrayValue.values || []).map(plain);
  if (v.kvlistValue) {
    return Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, plain(kv.value || {})]));
  }
  return v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue ?? v.bytesValue ?? null;
}

function attributes(span) {
  const out = {};
  for (const attr of span.attributes || []) {
    out[attr.key] = plain(attr.value || {});
  }
  return out;
}

function replayPanel() {
  const input = el("input", { type: "file", id: "replay-file", accept: ".jsonl,.json,application/json" });
  const error = el("p", { class: "error", id: "replay-error" });
  const view = el("div", { id: "replay" });
  input.addEventListener("change", async () => {
    error.textContent = "";
    view.replaceChildren();
    const file = input.files[0];
    if (!file) return;
    if (file.size > REPLAY_MAX_BYTES) {
      error.textContent = "the file is " + Math.round(file.size / 1048576) +
        " MB; the replay reads at most 50 MB: export one session at a time";
      return;
    }
    try {
      showReplay(view, spansOf(await file.text()));
    } catch (err) {
      error.textContent = err.message;
    }
  });
  main().replaceChildren(el("h1", {}, "Replay a trace"),
    el("section", { class: "card" },
      el("p", { class: "muted" }, "Drop a file from clade trace export: it is read here, in this " +
        "browser, and never sent anywhere."), input, error, view));
  return Promise.resolve();
}

function showReplay(view, spans) {
  let at = 0;
  const items = spans.map((span, i) => el("li", { dataset: { step: i } },
    el("span", { class: "kind" }, span.name), el("span", { class: "muted" },
      attributes(span)["gen_ai.operation.name"] || "")));
  const detail = el("pre", { id: "replay-detail" });
  const position = el("span", { id: "replay-position" });
  const show = () => {
    items.forEach((item, i) => item.classList.toggle("current", i === at));
    const span = spans[at];
    detail.textContent = JSON.stringify({ name: span.name, attributes: attributes(span),
      status: span.status || {} }, null, 2);
    position.textContent = "step " + (at + 1) + " of " + spans.length;
  };
  const prev = el("button", { id: "replay-prev", onclick: () => { at = Math.max(0, at - 1); show(); } }, "◀ Previous");
  const next = el("button", { id: "replay-next", onclick: () => { at = Math.min(spans.length - 1, at + 1); show(); } }, "Next ▶");
  view.replaceChildren(el("div", { class: "pager" }, prev, next, position),
    el("div", { class: "row" }, el("ul", { class: "timeline" }, items), detail));
  show();
}

// ---------------------------------------------------------------- start

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("sign-out").addEventListener("click", signOut);
  try {
    state.me = await api("GET", "/console/session");
    signedIn();
  } catch (_) {
    showSignIn("");
  }
});
