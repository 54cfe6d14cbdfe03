"""Our jobs in ComfyUI's shapes: /api/jobs objects, /history entries, /queue items."""

from __future__ import annotations

import json
from typing import Any

from comfymulti.catalog.prompt import workflow_id
from comfymulti.models import Job, JobEvent
from comfymulti.queue.jobs import JobState

STATUS = {
    JobState.QUEUED: "pending", JobState.LEASED: "pending", JobState.RUNNING: "in_progress",
    JobState.SUCCEEDED: "completed", JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
STATES_FOR = {
    "pending": [JobState.QUEUED, JobState.LEASED], "in_progress": [JobState.RUNNING],
    "completed": [JobState.SUCCEEDED], "failed": [JobState.FAILED],
    "cancelled": [JobState.CANCELLED],
}
_MESSAGE_TYPES = ("execution_start", "execution_cached", "execution_success",
                  "execution_error", "execution_interrupted")
_PREVIEW_KINDS = ("images", "video", "audio", "3d", "gifs")


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def _media_type(kind: str, item: dict[str, Any]) -> str:
    name = str(item.get("filename", "")).lower()
    if kind == "audio" or name.endswith((".wav", ".flac", ".mp3", ".opus", ".ogg")):
        return "audio"
    if kind in ("video", "gifs") or name.endswith((".mp4", ".webm", ".mkv", ".mov")):
        return "video"
    if kind == "3d" or name.endswith((".glb", ".gltf", ".obj", ".ply")):
        return "3d"
    return "images"


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    count = previewable = 0
    preview = None
    for node_id, output in outputs.items():
        for kind, items in output.items():
            if not isinstance(items, list) or kind == "animated":
                continue
            for item in items:
                count += 1
                if isinstance(item, dict) and "filename" in item and kind in _PREVIEW_KINDS:
                    previewable += 1
                    if preview is None:
                        preview = {**item, "nodeId": node_id,
                                   "mediaType": _media_type(kind, item)}
    return count, previewable, preview


def job_object(job: Job, position: int | None = None, eta: float | None = None
               ) -> dict[str, Any]:
    """One entry of /api/jobs (null fields left out, as ComfyUI does), plus our queue
    position and ETA for jobs that wait."""
    outputs = json.loads(job.outputs)
    count, previewable, preview = _outputs_summary(outputs)
    obj: dict[str, Any] = {"id": job.id, "status": STATUS[JobState(job.state)],
                           "priority": job.seq, "create_time": _ms(job.created_at),
                           "outputs_count": count, "previewable_outputs_count": previewable}
    if job.started_at:
        obj["execution_start_time"] = _ms(job.started_at)
    if job.finished_at and job.state != JobState.QUEUED:
        obj["execution_end_time"] = _ms(job.finished_at)
    if job.state == JobState.FAILED and job.error:
        obj["execution_error"] = json.loads(job.error)
    if preview is not None:
        obj["preview_output"] = preview
    if workflow := workflow_id(json.loads(job.extra_data)):
        obj["workflow_id"] = workflow
    if position is not None:
        obj["queue_position"] = position
    if eta is not None:
        obj["eta_seconds"] = round(eta, 1)
    return obj


def status_object(job: Job, events: list[JobEvent]) -> dict[str, Any]:
    """History's `status`: what ComfyUI said about the last attempt, in order."""
    messages = [[e.type, json.loads(e.data)] for e in events
                if e.type in _MESSAGE_TYPES and e.attempt == job.attempts and e.seq is not None]
    if job.state == JobState.FAILED and not any(m[0] == "execution_error" for m in messages):
        # Failed at the hub (no attempts left, validation on the worker): say why.
        messages.append(["execution_error", {"prompt_id": job.id, **json.loads(
            job.error or '{"exception_message": "failed"}')}])
    return {"status_str": "success" if job.state == JobState.SUCCEEDED else "error",
            "completed": job.state == JobState.SUCCEEDED, "messages": messages}


def queue_item(job: Job, output_nodes: list[str]) -> list[Any]:
    return [job.seq, job.id, json.loads(job.prompt), _public_extra(job), output_nodes]


def history_entry(job: Job, events: list[JobEvent], output_nodes: list[str]
                  ) -> dict[str, Any]:
    outputs = json.loads(job.outputs)
    return {
        "prompt": queue_item(job, output_nodes),
        "outputs": outputs,
        "status": status_object(job, events),
        "meta": {node: {"node_id": node, "display_node": node, "parent_node": None,
                        "real_node_id": node} for node in outputs},
    }


def _public_extra(job: Job) -> dict[str, Any]:
    extra = json.loads(job.extra_data)
    extra.setdefault("client_id", job.client_id)
    extra.setdefault("create_time", _ms(job.created_at))
    return extra
