"""Input staging: which inputs are files, per-job copies in ComfyUI, references rewritten."""

from __future__ import annotations

from typing import Any

import pytest

from comfymulti.catalog.prompt import parse_reference
from comfymulti.errors import NotFound
from comfymulti.worker.comfyui import ComfyUIClient
from comfymulti.worker.staging import find_inputs, stage_inputs, unstage
from tests.fakes import media
from tests.fakes.comfyui_catalog import base_catalog
from tests.worker.util import new_id

pytestmark = pytest.mark.anyio


class FilesHub:
    """The hub side of staging: each job's owner has their own files."""

    def __init__(self, files: dict[str, dict[tuple[str, str, str], bytes]]) -> None:
        self.files = files  # job id → (type, subfolder, filename) → bytes
        self.downloads: list[tuple[str, str, str, str]] = []

    async def download_input(self, job_id: str, lease_id: str, filename: str,
                             subfolder: str = "", type: str = "input") -> bytes:
        self.downloads.append((job_id, type, subfolder, filename))
        try:
            return self.files[job_id][(type, subfolder, filename)]
        except KeyError:
            raise NotFound(f"{type} file {filename} not found") from None


class MemoryComfy:
    def __init__(self) -> None:
        self.input: dict[str, bytes] = {}

    async def upload_input(self, data: bytes, filename: str, subfolder: str) -> dict[str, Any]:
        self.input[f"{subfolder}/{filename}"] = data
        return {"name": filename, "subfolder": subfolder, "type": "input"}


def test_file_inputs_are_found_by_node_and_by_upload_flag() -> None:
    catalog = dict(base_catalog())
    catalog["MyUploader"] = {"input": {"required": {
        "clip": [["a.wav"], {"upload": True}], "strength": ["FLOAT", {}]}}}
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "masks/m.png [input]",
                                                        "channel": "alpha"}},
        "3": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "4": {"class_type": "LoadAudio", "inputs": {"audio": "voice.flac"}},
        "5": {"class_type": "LoadImageOutput", "inputs": {"image": "ComfyUI_00001_.png [output]"}},
        "6": {"class_type": "Load3D", "inputs": {"model_file": "3d/cube.glb"}},
        "7": {"class_type": "MyUploader", "inputs": {"clip": "sub/a.wav", "strength": 1.0}},
        "8": {"class_type": "LoadImage", "inputs": {"image": ["9", 0]}},  # a link
        "9": {"class_type": "Painter", "inputs": {"mask": ""}},  # empty widget
        "10": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    found = {(r.node_id, r.input_name): (r.type, r.subfolder, r.filename, r.annotated)
             for r in find_inputs(prompt, catalog)}
    assert found == {
        ("1", "image"): ("input", "", "photo.png", False),
        ("2", "image"): ("input", "masks", "m.png", True),
        ("3", "file"): ("input", "", "clip.mp4", False),
        ("4", "audio"): ("input", "", "voice.flac", False),
        ("5", "image"): ("output", "", "ComfyUI_00001_.png", True),
        ("6", "model_file"): ("input", "3d", "cube.glb", False),
        ("7", "clip"): ("input", "sub", "a.wav", False),
    }


def test_parse_reference_never_leaves_the_folder() -> None:
    assert parse_reference("a/b/c.png [temp]") == ("temp", "a/b", "c.png", True)
    assert parse_reference("../../etc/passwd") == ("input", "etc", "passwd", False)
    assert parse_reference("/abs/x.png") == ("input", "abs", "x.png", False)
    assert parse_reference("..\\..\\x.png") == ("input", "", "x.png", False)
    assert parse_reference("x.png", "output") == ("output", "", "x.png", False)


async def test_same_name_two_users_two_copies() -> None:
    job_a, job_b = new_id(), new_id()
    hub = FilesHub({job_a: {("input", "", "photo.png"): b"A"},
                    job_b: {("input", "", "photo.png"): b"B"}})
    comfy = MemoryComfy()
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}}
    info = base_catalog()
    staged_a = await stage_inputs(prompt, info, job_id=job_a, lease_id="l", hub=hub, comfy=comfy)
    staged_b = await stage_inputs(prompt, info, job_id=job_b, lease_id="l", hub=hub, comfy=comfy)
    assert staged_a["1"]["inputs"]["image"] == f"cm-{job_a}/photo.png"
    assert staged_b["1"]["inputs"]["image"] == f"cm-{job_b}/photo.png"
    assert comfy.input == {f"cm-{job_a}/photo.png": b"A", f"cm-{job_b}/photo.png": b"B"}
    assert prompt["1"]["inputs"]["image"] == "photo.png"  # the leased prompt is not changed


async def test_references_rewritten_with_subfolders_annotations_and_once_per_file() -> None:
    job = new_id()
    hub = FilesHub({job: {("input", "pets", "cat.png"): b"cat",
                          ("output", "", "ComfyUI_00001_.png"): b"out"}})
    comfy = MemoryComfy()
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "pets/cat.png"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "pets/cat.png [input]",
                                                        "channel": "alpha"}},
        "3": {"class_type": "LoadImageOutput", "inputs": {"image": "ComfyUI_00001_.png [output]"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": f"cm-{new_id()}/theirs.png"}},
    }
    staged = await stage_inputs(prompt, base_catalog(), job_id=job, lease_id="l", hub=hub,
                                comfy=comfy)
    folder = f"cm-{job}"
    assert staged["1"]["inputs"]["image"] == f"{folder}/pets/cat.png"
    assert staged["2"]["inputs"]["image"] == f"{folder}/pets/cat.png [input]"
    assert staged["3"]["inputs"]["image"] == f"{folder}/ComfyUI_00001_.png [input]"
    # Not on the hub: still rewritten into this job's folder, so it cannot reach anyone else's.
    assert staged["4"]["inputs"]["image"] == f"{folder}/missing.png"
    assert staged["5"]["inputs"]["image"].startswith(f"{folder}/cm-")
    assert sorted(comfy.input) == [f"{folder}/ComfyUI_00001_.png", f"{folder}/pets/cat.png"]
    assert sum(1 for d in hub.downloads if d[3] == "cat.png") == 1


async def test_prompt_without_files_is_untouched() -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    hub, comfy = FilesHub({}), MemoryComfy()
    assert await stage_inputs(prompt, base_catalog(), job_id=new_id(), lease_id="l", hub=hub,
                              comfy=comfy) is prompt


async def test_staged_file_is_what_comfyui_loads(make_comfy) -> None:
    fake = make_comfy()
    job = new_id()
    png = media.make_png(40, 30, 0x112233)
    hub = FilesHub({job: {("input", "", "photo.png"): png}})
    comfy = ComfyUIClient(fake.url)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    staged = await stage_inputs(prompt, base_catalog(), job_id=job, lease_id="l", hub=hub,
                                comfy=comfy)
    sent = await comfy.post_prompt(staged, job)
    await comfy.aclose()
    assert sent.accepted, sent.body
    assert (fake.dirs["input"] / f"cm-{job}" / "photo.png").read_bytes() == png


def test_unstage_maps_messages_back_to_the_users_names() -> None:
    job = new_id()
    payload = {"exception_message": f"Invalid image file: cm-{job}/photo.png",
               "current_inputs": {"image": [f"cm-{job}/pets/cat.png [input]"]}, "n": 3}
    assert unstage(payload, job) == {"exception_message": "Invalid image file: photo.png",
                                     "current_inputs": {"image": ["pets/cat.png [input]"]},
                                     "n": 3}
