"""The hub-worker wire protocol (/worker/v1), shared by both sides.

Flow: register → (upload catalog if the hub lacks its hash) → lease (long-poll) → events …
→ outputs (streamed PUT) → complete. Leases are kept alive by `renew` (the worker's heartbeat)
and by every events post. `commands` is a long-poll the hub answers as soon as a job of this
worker must be cancelled or the worker must drain. Any call under a lease the worker no longer
holds answers 409 with error type `lease_lost`, and the worker drops that job.

ComfyUI's binary WebSocket frames take two paths. Frames an output node sends (e.g.
SaveImageWebsocket's images) are results: they travel as `binary` events among the others, in
order, each frame split into parts of at most FRAME_PART_BYTES (a batch stays under the hub's
body cap). Sampler previews and progress text are live-only: POSTed raw to
`jobs/{id}/preview`, throttled and droppable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

PREFIX = "/worker/v1"
WORKER_ID_HEADER = "X-Worker-Id"


class RegisterRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    comfyui_version: str = Field("", max_length=64)
    gpu: str = Field("", max_length=256)
    vram_total: int = Field(0, ge=0, le=2**50, description="bytes")
    catalog_hash: str = Field("", max_length=64)


class RegisterResponse(BaseModel):
    worker_id: str
    catalog_needed: bool
    lease_seconds: float
    long_poll_seconds: float


class LeasedJob(BaseModel):
    job_id: str
    lease_id: str
    attempt: int
    lease_seconds: float
    prompt: dict[str, Any]
    extra_data: dict[str, Any]


class Event(BaseModel):
    seq: int = Field(ge=0, le=2**53)
    type: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = {}


BINARY_EVENT = "binary"
FRAME_PART_BYTES = 3 * 1024 * 1024  # raw bytes; 4 MiB once in base64


class FramePart(BaseModel):
    """The data of a `binary` event: one part of a ComfyUI binary frame. The frame is the
    concatenation of consecutive parts up to the one with `more` false."""

    frame: str = Field(description="base64 of the part's bytes")
    more: bool = False


class EventsRequest(BaseModel):
    lease_id: str = Field(max_length=64)
    events: list[Event] = Field(max_length=1000)


class EventsResponse(BaseModel):
    cancel: bool


class RenewRequest(BaseModel):
    leases: dict[str, str] = Field(description="job id → lease id")


class RenewResponse(BaseModel):
    lost: list[str]
    cancel: list[str]


class LeaseRef(BaseModel):
    lease_id: str = Field(max_length=64)


class CompleteRequest(BaseModel):
    lease_id: str = Field(max_length=64)
    status: Literal["success", "error", "interrupted", "retry"]
    error: dict[str, Any] | None = None
    events: list[Event] = Field([], max_length=1000,
                                description="the job's last events, stored before it ends")


class JobStateResponse(BaseModel):
    job_id: str
    state: str


class StoredFile(BaseModel):
    filename: str
    subfolder: str
    type: str


class Commands(BaseModel):
    cancel: list[str]
    drain: bool
