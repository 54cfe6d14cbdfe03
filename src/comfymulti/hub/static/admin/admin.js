// The organiser's dashboard: fills the server-rendered panels from /admin/ws (a new view
// whenever something changes) and acts through /admin/api. Times arrive as Unix seconds and
// are shown as "12 s ago", kept current by the page's own clock (no polling).
const isAdmin = document.body.dataset.role === "admin";
const $ = (id) => document.getElementById(id);
let skew = 0; // hub clock minus ours, in seconds
const shown = {}; // panel -> JSON of the data it shows (a panel is redrawn only on change)
const selected = new Set(); // users ticked for new cards

const now = () => Date.now() / 1000 + skew;

function span(seconds) {
  if (seconds < 2) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function ago(t) {
  if (t == null) return "—";
  const s = now() - t;
  return s < 2 ? "just now" : `${span(s)} ago`;
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// An element with text children (never HTML from data).
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

// A relative time that the clock below keeps current.
const since = (t, suffix = " ago") => el("time", {dataset: {t: t ?? "", suffix}});

function tick() {
  for (const node of document.querySelectorAll("time[data-t]")) {
    const t = node.dataset.t;
    node.textContent = t === "" ? "—" : (node.dataset.suffix ? ago(Number(t))
                                                             : span(now() - Number(t)));
  }
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { box.hidden = true; }, ok ? 4000 : 10000);
}

async function call(method, path, body) {
  const r = await fetch(path, {
    method, credentials: "same-origin",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new Error(data?.error?.message || `${method} ${path}: HTTP ${r.status}`);
  return data;
}

// A button that runs `action`, shows its error, and is keyboard-reachable like any button.
function action(label, key, fn, danger = false) {
  return el("button", {type: "button", className: danger ? "danger" : "", dataset: {key},
                       onclick: async () => {
                         try { await fn(); } catch (e) { say(e.message); }
                       }}, label);
}

function showOutput(title, text, cards) {
  $("output-title").textContent = title;
  $("output-text").textContent = text || "";
  const frame = $("output-cards");
  frame.hidden = !cards;
  $("output-print").hidden = !cards;
  if (cards) frame.srcdoc = cards;
  $("output").showModal();
}

async function newCards(names) {
  const data = await call("POST", "/admin/api/users/cards", {names});
  showOutput("New login cards", `New passwords for ${data.names.join(", ")}; ` +
             "their old sessions have ended.", data.cards);
}

// Redraw a panel's body only when its data changed, keeping keyboard focus where it was.
function redraw(panel, data, draw) {
  const json = JSON.stringify(data);
  if (shown[panel] === json) return;
  shown[panel] = json;
  const focused = document.activeElement?.dataset?.key;
  draw(data);
  if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
}

function drawHealth(h) {
  const text = {
    database: h.database, disk_free: bytes(h.disk_free), workers_online: h.workers_online,
    queue_depth: `${h.queue_depth} waiting · ${h.policy}`,
    paused: h.paused ? "paused" : "running",
    backup_age: h.backup_age == null ? "not set up" : ago(h.backup_age),
    billing: h.billing ?? "not set up",
  };
  for (const [k, v] of Object.entries(text)) {
    document.querySelector(`[data-health="${k}"]`).textContent = v;
  }
  const oldest = document.querySelector('[data-health="oldest_waiting"]');
  oldest.replaceChildren(h.oldest_waiting == null ? "—" : since(h.oldest_waiting, ""));
  $("pause").textContent = h.paused ? "Resume dispatch" : "Pause dispatch";
  $("pause").dataset.paused = h.paused ? "1" : "";
  if (document.activeElement !== $("policy")) $("policy").value = h.policy;
}

function drawQueue(rows) {
  $("queue-empty").hidden = rows.length > 0;
  $("queue-rows").replaceChildren(...rows.map((j) => {
    const actions = el("td", {className: "actions admin-only"});
    if (isAdmin) {
      actions.append(action("Cancel", `cancel-${j.id}`, async () => {
        await call("POST", `/admin/api/jobs/${j.id}/cancel`);
        say(`Job of ${j.user} cancelled`, true);
      }, true));
      if (j.state === "queued") {
        actions.append(action("Run next", `next-${j.id}`,
                              () => call("POST", `/admin/api/jobs/${j.id}/run-next`)));
      }
    }
    const state = j.cancel_requested ? "cancelling" : j.state;
    return el("tr", {dataset: {job: j.id}},
      el("td", {}, j.position ?? ""), el("td", {}, j.user),
      el("td", {className: `state-${j.state}`}, state), el("td", {}, j.worker ?? ""),
      el("td", {}, j.eta_seconds != null ? `~${span(j.eta_seconds)}`
                   : (j.state === "queued" ? "no GPU online" : "")),
      el("td", {}, since(j.created_at, "")), actions);
  }));
}

function drawWorkers(rows) {
  $("workers-empty").hidden = rows.length > 0;
  $("workers-rows").replaceChildren(...rows.map((w) => {
    const actions = el("td", {className: "actions admin-only"});
    if (isAdmin && w.state === "online") {
      actions.append(action("Drain", `drain-${w.id}`,
                            () => call("POST", `/admin/api/workers/${w.id}/drain`)));
    }
    if (isAdmin && w.state === "offline") {
      actions.append(action("Forget", `forget-${w.id}`,
                            () => call("DELETE", `/admin/api/workers/${w.id}`), true));
    }
    const job = w.current_job ? `${w.current_job.user} (${w.current_job.id.slice(0, 8)})` : "";
    return el("tr", {dataset: {worker: w.name}},
      el("td", {}, w.name), el("td", {}, w.gpu), el("td", {}, w.vram_total ? bytes(w.vram_total) : ""),
      el("td", {className: `state-${w.state}`}, w.state), el("td", {}, since(w.last_seen)),
      el("td", {}, job), el("td", {}, w.jobs_today), actions);
  }));
}

function drawUsers(rows) {
  $("users-rows").replaceChildren(...rows.map((u) => {
    const pick = el("input", {type: "checkbox", checked: selected.has(u.name),
                              dataset: {key: `pick-${u.name}`},
                              "aria-label": `select ${u.name}`,
                              onchange: (e) => e.target.checked ? selected.add(u.name)
                                                                : selected.delete(u.name)});
    const actions = el("td", {className: "actions admin-only"});
    if (isAdmin) {
      actions.append(
        u.disabled
          ? action("Enable", `enable-${u.name}`, () => call("POST", `/admin/api/users/${u.name}/enable`))
          : action("Disable", `disable-${u.name}`, () => call("POST", `/admin/api/users/${u.name}/disable`), true),
        action("New password", `password-${u.name}`, () => newCards([u.name])),
        action("Issue token", `token-${u.name}`, async () => {
          const data = await call("POST", `/admin/api/users/${u.name}/tokens`);
          showOutput(`API token for ${u.name}`, `${data.token}  (shown once)`);
        }),
        action("Revoke tokens", `revoke-${u.name}`, async () => {
          const data = await call("DELETE", `/admin/api/users/${u.name}/tokens`);
          say(`${data.revoked} token(s) of ${u.name} revoked`, true);
        }, true));
    }
    return el("tr", {dataset: {user: u.name}, className: u.disabled ? "state-offline" : ""},
      el("td", {}, pick), el("td", {}, u.name + (u.disabled ? " (disabled)" : "")),
      el("td", {}, u.role), el("td", {}, since(u.last_activity)), el("td", {}, u.jobs_today),
      el("td", {}, u.gpu_seconds), el("td", {}, u.tokens), actions);
  }));
}

function drawTemplates(t) {
  const names = t.items.map((i) => i.name);
  const move = (name, by) => {
    const order = names.filter((n) => n !== name);
    order.splice(Math.max(0, names.indexOf(name) + by), 0, name);
    return call("PUT", "/admin/api/templates/order", {names: order});
  };
  $("templates-list").replaceChildren(...t.items.map((i) => {
    const actions = el("span", {className: "actions admin-only"});
    if (isAdmin) {
      actions.append(
        action("Up", `up-${i.name}`, () => move(i.name, -1)),
        action("Down", `down-${i.name}`, () => move(i.name, 1)),
        action("Remove", `remove-${i.name}`,
               () => call("DELETE", `/admin/api/templates/${encodeURIComponent(i.name)}`), true));
    }
    const thumb = i.thumbnail && isAdmin
      ? el("img", {alt: `thumbnail of ${i.title}`,
                   src: `/admin/api/templates/${encodeURIComponent(i.name)}/thumbnail`})
      : el("span");
    return el("li", {dataset: {template: i.name}}, thumb,
      el("span", {className: "text"}, el("strong", {}, i.title), " ",
         el("span", {className: "description"}, i.description), " ",
         el("small", {}, i.name + (t.default === i.name ? " · default" : ""))), actions);
  }));
  const select = $("default-workflow");
  select.replaceChildren(el("option", {value: ""}, "(none: a blank canvas)"),
                         ...names.map((n) => el("option", {value: n}, n)));
  select.value = t.default ?? "";
  select.disabled = !isAdmin;
}

function drawAnnouncements(list) {
  $("announcements-list").replaceChildren(...list.map((a) =>
    el("li", {}, since(a.at), a.text, el("small", {}, ` (${a.by})`))));
}

function render(v) {
  skew = v.now - Date.now() / 1000;
  redraw("health", v.health, drawHealth);
  redraw("queue", v.queue, drawQueue);
  redraw("workers", v.workers, drawWorkers);
  redraw("users", v.users, drawUsers);
  redraw("templates", v.templates, drawTemplates);
  redraw("announcements", v.announcements, drawAnnouncements);
  tick();
}

function connect(delay = 500) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/admin/ws`);
  const status = $("connection");
  ws.onopen = () => { status.textContent = "live"; status.className = "live"; delay = 500; };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "snapshot") render(msg.data);
  };
  ws.onclose = () => {
    status.textContent = "reconnecting…";
    status.className = "";
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function readFile(file, how) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader[how](file);
  });
}

function onSubmit(id, fn) {
  $(id).addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await fn(e.target); } catch (err) { say(err.message); }
  });
}

function wire() {
  $("output-close").onclick = () => $("output").close();
  $("output-print").onclick = () => $("output-cards").contentWindow.print();
  if (!isAdmin) return;
  $("pause").onclick = () => call("PUT", "/admin/api/dispatch",
                                  {paused: !$("pause").dataset.paused}).catch((e) => say(e.message));
  $("policy").onchange = (e) => call("PUT", "/admin/api/policy", {policy: e.target.value})
    .then(() => say(`Policy is now ${e.target.value}`, true), (err) => say(err.message));
  $("default-workflow").onchange = (e) => call("PUT", "/admin/api/templates/default",
                                               {name: e.target.value || null})
    .catch((err) => say(err.message));
  $("print-selected").onclick = () => (selected.size ? newCards([...selected])
                                       : Promise.reject(new Error("tick some users first")))
    .catch((e) => say(e.message));
  onSubmit("create-batch", async (form) => {
    const v = formValues(form);
    const data = await call("POST", "/admin/api/users",
                            {count: Number(v.count), prefix: v.prefix, start: Number(v.start)});
    showOutput("New accounts", `Created ${data.names.join(", ")}.`, data.cards);
  });
  onSubmit("add-one", async (form) => {
    const v = formValues(form);
    const data = await call("POST", "/admin/api/users", {names: [v.name], role: v.role});
    showOutput("New account", `Created ${data.names[0]}.`, data.cards);
    form.reset();
  });
  onSubmit("publish", async (form) => {
    const v = formValues(form);
    const file = $("tpl-file").files[0];
    const workflow = JSON.parse(await readFile(file, "readAsText"));
    const image = $("tpl-thumbnail").files[0];
    const body = {name: v.name || file.name, workflow, title: v.title, description: v.description,
                  thumbnail: image ? await readFile(image, "readAsDataURL") : null};
    const data = await call("POST", "/admin/api/templates", body);
    say(`Published ${data.name}`, true);
    form.reset();
  });
  onSubmit("announce", async (form) => {
    await call("POST", "/admin/api/announcements", {text: formValues(form).text});
    say("Announcement sent", true);
    form.reset();
  });
}

wire();
connect();
setInterval(tick, 1000);
