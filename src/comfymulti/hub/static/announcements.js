// ComfyMulti: the organiser's announcements as toasts. They arrive over this workspace's own
// socket as the custom message type "comfymulti.announcement" (no polling).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

api.addEventListener("comfymulti.announcement", ({ detail }) => {
  app.extensionManager?.toast?.add({
    severity: "info", summary: `Announcement from ${detail.by}`, detail: detail.text, life: 30000,
  });
});
