// ComfyMulti: a returning participant on a new browser (nothing saved locally) would get the
// frontend's built-in default graph, whose models no worker has; open the organiser's default
// workflow instead. Only once per page, and only at start-up.
import { app } from "../../scripts/app.js";

const base = location.pathname.replace(/\/[^/]*$/, "");
const loadedAt = Date.now();
const STARTUP_MS = 30000;
let done = false;

function types(graph) {
  return graph.nodes.map((n) => n.type).sort().join(",");
}

async function openDefault() {
  const r = await fetch(`${base}/api/workshop/default_workflow`, {cache: "no-store"});
  const {name} = await r.json();
  if (!name) return;
  const workflow = await (await fetch(`${base}/templates/${name}.json`)).json();
  await app.loadGraphData(workflow, true, true, name);
}

app.registerExtension({
  name: "ComfyMulti.StartWorkflow",
  afterConfigureGraph() {
    const builtin = window.comfyAPI?.defaultGraph?.defaultGraph;
    if (done || !builtin || Date.now() - loadedAt > STARTUP_MS) return;
    if (types(app.graph) !== types(builtin)) return;
    done = true;
    setTimeout(() => openDefault().catch((e) => console.warn("ComfyMulti:", e)), 0);
  },
});
