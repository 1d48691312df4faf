// The live status page: renders the model the server pushes (server-sent events).
// Every value from etcd goes into the page as text (textContent), never as HTML.
"use strict";

let model = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else tr.appendChild(el("td", c === null || c === undefined ? "–" : c));
  }
  tbody.appendChild(tr);
  return tr;
}

function span(text, cls) { return el("span", text, cls); }

function seconds(v) { return v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} s`; }

function count(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1e9) return `${(v / 1e9).toFixed(1)} G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return String(Math.round(v));
}

function clear(id) {
  const node = document.getElementById(id);
  const body = node.tagName === "TABLE" ? node.tBodies[0] : node;
  body.replaceChildren();
  return body;
}

function button(label, body) {
  const b = el("button", label);
  b.dataset.action = body.action;
  b.addEventListener("click", () => act(body));
  return b;
}

async function act(body) {
  const result = document.getElementById("result");
  result.textContent = `${body.action}…`;
  try {
    const resp = await fetch("/api/action", {
      method: "POST",
      headers: { "Content-Type": "application/json",
                 "Authorization": `Bearer ${document.getElementById("token").value}` },
      body: JSON.stringify(body),
    });
    const answer = await resp.json();
    result.textContent = answer.ok ? answer.message : `refused: ${answer.error}`;
    result.className = answer.ok ? "up" : "bad";
  } catch (err) {
    result.textContent = `failed: ${err}`;
    result.className = "bad";
  }
}

// Virtual services: one box each, kept between messages; a patch rebuilds only the boxes
// of the virtuals it carries. Past OPEN_UP_TO virtuals the boxes start closed and a box
// builds its table of real servers when opened (40,000 rows would stall the page).
const OPEN_UP_TO = 50;
let virtualsByName = new Map();
const boxes = new Map();

function summaryOf(v) {
  const up = v.servers.filter((s) => s.state === "up").length;
  return `${v.name} · ${v.service} · ${v.scheduler}${v.active ? "" : " (inactive)"} · ` +
    `${up}/${v.servers.length} up`;
}

function serversTable(m, v) {
  const table = el("table");
  const head = table.createTHead().insertRow();
  for (const h of ["server", "address", "state", "weight", "admin", "observed by", "since",
                   "reason", "connections", "active conns", "bytes in", "bytes out", ""]) {
    head.appendChild(el("th", h));
  }
  const tbody = table.createTBody();
  for (const s of v.servers) {
    const t = s.traffic || {};
    const buttons = el("span");
    if (m.actions) {
      buttons.appendChild(button("drain", { action: "drain", virtual: v.name, server: s.name }));
      buttons.appendChild(button("disable", { action: "disable", virtual: v.name, server: s.name }));
      buttons.appendChild(button("enable", { action: "enable", virtual: v.name, server: s.name }));
    }
    const tr = row(tbody, [s.name, `${s.address}:${s.port}`, span(s.state, s.state),
      s.effective_weight === null ? s.weight : s.effective_weight,
      s.admin ? span(s.admin, s.admin) : "", (s.observed_by || []).join(", "),
      s.since, s.reason, count(t.connections), count(t.active), count(t.bytes_in),
      count(t.bytes_out), buttons]);
    tr.dataset.virtual = v.name;
    tr.dataset.server = s.name;
    tr.dataset.state = s.state;
  }
  return table;
}

function fillBox(m, box, v) {
  const summary = el("summary");
  summary.appendChild(el("h3", summaryOf(v)));
  box.replaceChildren(summary);
  if (box.open) box.appendChild(serversTable(m, v));
}

function renderVirtuals(m, changedNames) {
  const container = document.getElementById("virtuals");
  const wanted = new Set(m.virtuals.map((v) => v.name));
  for (const [name, box] of boxes) {
    if (!wanted.has(name)) { box.remove(); boxes.delete(name); }
  }
  let previous = null;
  for (const v of m.virtuals) {
    let box = boxes.get(v.name);
    if (!box) {
      box = el("details", null, "virtual");
      box.dataset.virtual = v.name;
      box.open = m.virtuals.length <= OPEN_UP_TO;
      box.addEventListener("toggle", () => {
        const now = virtualsByName.get(box.dataset.virtual);
        if (now) fillBox(model, box, now);
      });
      boxes.set(v.name, box);
      fillBox(m, box, v);
    } else if (changedNames === null || changedNames.has(v.name)) {
      fillBox(m, box, v);
    }
    const next = previous ? previous.nextSibling : container.firstChild;
    if (next !== box) container.insertBefore(box, next);
    previous = box;
  }
}

// A message is the whole model ("full") or a patch: the model less its virtuals, the
// virtuals that changed ("changed") and the order of them all ("order").
function apply(msg) {
  let changedNames = null;
  if (msg.full) {
    virtualsByName = new Map(msg.virtuals.map((v) => [v.name, v]));
  } else {
    changedNames = new Set();
    for (const v of msg.changed) { virtualsByName.set(v.name, v); changedNames.add(v.name); }
    const order = new Set(msg.order);
    for (const name of [...virtualsByName.keys()]) {
      if (!order.has(name)) virtualsByName.delete(name);
    }
    msg.virtuals = msg.order.map((name) => virtualsByName.get(name)).filter(Boolean);
  }
  render(msg, changedNames);
}

function render(m, changedNames) {
  model = m;
  document.getElementById("cluster").textContent = m.cluster;
  document.getElementById("revision").textContent = m.revision;
  document.getElementById("updated").textContent = new Date(m.now * 1000).toISOString();
  document.getElementById("actions").hidden = !m.actions;

  const alerts = clear("alerts");
  const warn = (text) => alerts.appendChild(el("div", text));
  if (!m.leader) warn("No active router.");
  if (m.split_brain) warn("More than one router says it holds the VIPs.");
  if (m.config_error) warn(`Stored config is invalid (ignored by the routers): ${m.config_error}`);
  for (const p of m.config_problems) warn(`Stored config cannot run: ${p}`);
  for (const b of m.not_running_stored_config) warn(`${b.node} does not run the stored config: ${b.why}`);
  if (m.junk) warn(`${m.junk} key(s) in etcd not understood (see lvsctl status).`);

  const summary = clear("summary");
  summary.appendChild(el("span", "active router: "));
  summary.appendChild(m.leader ? span(`${m.leader.node} (term ${m.leader.term}, since ${m.leader.since})`, "active")
                               : span("none", "bad"));
  if (m.config) summary.appendChild(el("span", ` · config serial_no ${m.config.serial_no}, pushed ${m.config.pushed_at} by ${m.config.pushed_by}`));

  const routers = clear("routers");
  for (const r of m.routers) {
    const stale = m.config && r.config_serial !== m.config.serial_no;
    const config = span(r.config_serial === null ? "?" : r.config_serial, stale ? "bad" : "");
    const tr = row(routers, [r.name, r.priority, span(r.role, r.role), r.address,
      r.lease_left === null || r.lease_left === undefined ? "–" : `${r.lease_left} s`,
      seconds(r.heartbeat_age), r.vips_held, config, r.dataplane,
      m.actions && r.role === "backup" && m.leader ? button("switch over here", { action: "switchover", to: r.name }) : ""]);
    tr.dataset.router = r.name;
    tr.dataset.role = r.role;
  }

  const vips = clear("vips");
  for (const v of m.vips) {
    const tr = row(vips, [v.address, v.device, v.for, v.holder ? span(v.holder, "active") : span("nobody", "bad")]);
    tr.dataset.vip = v.address;
    tr.dataset.holder = v.holder || "";
  }

  renderVirtuals(m, changedNames);

  const events = clear("events");
  for (const e of m.events.slice(0, 50)) {
    const tr = row(events, [e.at, e.kind, e.summary]);
    tr.dataset.kind = e.kind;
  }
}

function connect() {
  const link = document.getElementById("link");
  const source = new EventSource("/api/stream");
  source.onopen = () => { link.textContent = "live"; link.className = "link up"; };
  source.onmessage = (msg) => apply(JSON.parse(msg.data));
  source.onerror = () => { link.textContent = "reconnecting…"; link.className = "link down"; };
}

document.addEventListener("DOMContentLoaded", () => {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("lvs-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("lvs-token", token.value));
  connect();
});
