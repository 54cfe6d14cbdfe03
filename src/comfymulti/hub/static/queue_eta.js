// ComfyMulti: shows where this user's jobs stand in the shared queue, with an ETA.
// Loaded by the official frontend through /api/extensions; it only reads /api/jobs.
const base = location.pathname.replace(/\/[^/]*$/, "");
const box = document.createElement("div");
box.id = "comfymulti-queue";
box.style.cssText = "position:fixed;right:12px;bottom:64px;z-index:10000;padding:6px 10px;" +
  "border-radius:6px;background:rgba(20,20,20,.85);color:#eee;font:12px system-ui;" +
  "pointer-events:none;display:none";
document.body.appendChild(box);

function minutes(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

async function refresh() {
  try {
    const r = await fetch(`${base}/api/jobs?status=in_progress,pending&limit=50&sort_order=asc`,
                          {cache: "no-store"});
    if (!r.ok) return;
    const {jobs} = await r.json();
    const running = jobs.filter((j) => j.status === "in_progress").length;
    const waiting = jobs.filter((j) => j.status === "pending" && j.queue_position);
    if (!running && !waiting.length) { box.style.display = "none"; return; }
    const parts = [];
    if (running) parts.push(`${running} running`);
    if (waiting.length) {
      const next = waiting[0];
      parts.push(`next #${next.queue_position} in queue, done in ~${minutes(next.eta_seconds)}`);
      if (waiting.length > 1) parts.push(`${waiting.length} waiting`);
    }
    box.textContent = `Your jobs: ${parts.join(" · ")}`;
    box.style.display = "block";
  } catch (e) { /* offline for a moment: try again next tick */ }
}
refresh();
setInterval(refresh, 3000);
