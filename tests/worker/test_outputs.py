"""Outputs: every file of an `executed` event goes to the hub; the event names the copies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfymulti.errors import ComfyUIError, LeaseLost
from comfymulti.protocol import StoredFile
from comfymulti.worker.outputs import deliver_executed, file_items, output_key

pytestmark = pytest.mark.anyio


class StoringHub:
    """Stores uploads per key like the hub (a retried key returns the first name)."""

    def __init__(self, lose: bool = False) -> None:
        self.stored: dict[str, tuple[StoredFile, bytes]] = {}
        self.lose = lose

    async def upload_output(self, job_id: str, lease_id: str, *, key: str, node_id: str,
                            filename: str, subfolder: str, type: str,
                            body: Callable[[], AsyncIterator[bytes] | bytes]) -> StoredFile:
        if self.lose:
            raise LeaseLost("gone")
        stream = body()
        data = stream if isinstance(stream, bytes) else b"".join([c async for c in stream])
        if key not in self.stored:
            name = f"u-{filename}"
            self.stored[key] = (StoredFile(filename=name, subfolder=subfolder, type=type), data)
        return self.stored[key][0]


class ViewComfy:
    def __init__(self, files: dict[tuple[str, str, str], bytes]) -> None:
        self.files = files

    async def view(self, filename: str, subfolder: str = "",
                   type: str = "output") -> AsyncIterator[bytes]:
        try:
            data = self.files[(type, subfolder, filename)]
        except KeyError:
            raise ComfyUIError(f"/view {filename}: HTTP 404") from None
        yield data[:3]
        yield data[3:]


async def test_every_kind_of_file_is_delivered_and_renamed() -> None:
    files = {("output", "v", "clip_00001_.mp4"): b"MP4 bytes",
             ("output", "", "a_00001_.flac"): b"FLAC",
             ("temp", "", "ComfyUI_temp_abcde_00001_.png"): b"PNG temp",
             ("output", "3d", "mesh_00001_.glb"): b"GLB",
             ("output", "", "x_00001_.gif"): b"GIF89a",
             ("output", "", "notes_00001.txt"): b"hello"}
    hub, comfy = StoringHub(), ViewComfy(files)
    job = "job-1"
    executed = {"node": "9", "display_node": "9", "prompt_id": job, "output": {
        "images": [{"filename": "clip_00001_.mp4", "subfolder": "v", "type": "output"}],
        "animated": [True],
        "audio": [{"filename": "a_00001_.flac", "subfolder": "", "type": "output"}],
        "gifs": [{"filename": "x_00001_.gif", "subfolder": "", "type": "output",
                  "format": "image/gif"}],
        "3d": [{"filename": "mesh_00001_.glb", "subfolder": "3d", "type": "output"}],
        "previews": [{"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "",
                      "type": "temp"}],
        "text": ["hello"],
        "files": [{"filename": "notes_00001.txt", "subfolder": "", "type": "output"}],
    }}
    out = await deliver_executed(executed, job_id=job, lease_id="l", hub=hub, comfy=comfy)
    o = out["output"]
    assert o["images"] == [{"filename": "u-clip_00001_.mp4", "subfolder": "v", "type": "output"}]
    assert o["gifs"][0] == {"filename": "u-x_00001_.gif", "subfolder": "", "type": "output",
                            "format": "image/gif"}
    assert o["previews"][0]["type"] == "temp"
    assert o["animated"] == [True] and o["text"] == ["hello"]
    assert out["node"] == "9" and out["prompt_id"] == job
    assert executed["output"]["images"][0]["filename"] == "clip_00001_.mp4"  # input unchanged
    by_key = {k: data for k, (_s, data) in hub.stored.items()}
    assert by_key == {
        "9/images/0/v/clip_00001_.mp4": b"MP4 bytes",
        "9/audio/0//a_00001_.flac": b"FLAC",
        "9/gifs/0//x_00001_.gif": b"GIF89a",
        "9/3d/0/3d/mesh_00001_.glb": b"GLB",
        "9/previews/0//ComfyUI_temp_abcde_00001_.png": b"PNG temp",
        "9/files/0//notes_00001.txt": b"hello",
    }
    again = await deliver_executed(executed, job_id=job, lease_id="l", hub=hub, comfy=comfy)
    assert again == out and len(hub.stored) == 6  # same keys: nothing stored twice


async def test_missing_file_is_left_out_and_staged_inputs_are_unstaged() -> None:
    job = "job-2"
    hub = StoringHub()
    comfy = ViewComfy({("output", "", "b_00001_.png"): b"B"})
    executed = {"node": "3", "output": {"images": [
        {"filename": "a_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "b_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "cat.png", "subfolder": f"cm-{job}/pets", "type": "input"},
    ]}}
    out = await deliver_executed(executed, job_id=job, lease_id="l", hub=hub, comfy=comfy)
    assert out["output"]["images"] == [
        {"filename": "u-b_00001_.png", "subfolder": "", "type": "output"},
        {"filename": "cat.png", "subfolder": "pets", "type": "input"},
    ]


async def test_lease_lost_propagates() -> None:
    executed = {"node": "3", "output": {"images": [
        {"filename": "a.png", "subfolder": "", "type": "output"}]}}
    with pytest.raises(LeaseLost):
        await deliver_executed(executed, job_id="j", lease_id="l", hub=StoringHub(lose=True),
                               comfy=ViewComfy({("output", "", "a.png"): b"A"}))


def test_keys_and_items() -> None:
    output: dict[str, Any] = {"images": [{"filename": "a.png"}, "junk", {"filename": ""}],
                              "text": ["x"]}
    assert list(file_items(output)) == [("images", 0, {"filename": "a.png"})]
    assert output_key("5", "images", 2, {"filename": "a.png", "subfolder": "s"}) == \
        "5/images/2/s/a.png"
