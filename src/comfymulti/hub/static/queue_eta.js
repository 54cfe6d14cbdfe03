// ComfyMulti: where this user's jobs stand in the shared queue, and plainly when no GPU is
// running (then no ETA: nothing can be known until one starts). Loaded by the official
// frontend through /api/extensions; it reads /api/jobs and /api/system_stats (its devices are
// the GPUs online). Bottom centre, clear of the minimap and canvas controls on the right.
const base = location.pathname.replace(/\/[^/]*$/, "");
const box = document.createElement("div");
box.id = "comfymulti-queue";
box.setAttribute("role", "status");
box.style.cssText = "position:fixed;left:50%;transform:translateX(-50%);bottom:12px;" +
  "z-index:1000;padding:6px 12px;border-radius:6px;background:rgba(20,20,20,.9);color:#eee;" +
  "font:13px system-ui;pointer-events:none;display:none;max-width:60vw;text-align:center";
document.body.appendChild(box);

function minutes(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

async function json(path) {
  const r = await fetch(`${base}${path}`, {cache: "no-store"});
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function describe(jobs, gpus) {
  const running = jobs.filter((j) => j.status === "in_progress").length;
  const waiting = jobs.filter((j) => j.status === "pending" && j.queue_position);
  if (!gpus) {
    return waiting.length || running
      ? "No GPU running — your job waits until one starts; the organiser sees it waiting."
      : "No GPU running yet — jobs you queue will wait until one starts.";
  }
  if (!running && !waiting.length) return "";
  const parts = [];
  if (running) parts.push(`${running} running`);
  if (waiting.length) {
    const next = waiting[0];
    const eta = next.eta_seconds == null ? "" : `, done in ~${minutes(next.eta_seconds)}`;
    parts.push(`next #${next.queue_position} in queue${eta}`);
    if (waiting.length > 1) parts.push(`${waiting.length} waiting`);
  }
  return `Your jobs: ${parts.join(" · ")}`;
}

async function refresh() {
  try {
    const [{jobs}, {devices}] = await Promise.all([
      json("/api/jobs?status=in_progress,pending&limit=50&sort_order=asc"),
      json("/api/system_stats"),
    ]);
    const text = describe(jobs, devices.length);
    box.textContent = text;
    box.style.display = text ? "block" : "none";
  } catch (e) { /* offline for a moment: try again next tick */ }
}
refresh();
setInterval(refresh, 3000);
