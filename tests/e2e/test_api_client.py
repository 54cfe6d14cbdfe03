"""Standard ComfyUI API scripts (the shapes of ComfyUI's own websockets examples) work
unchanged against /u/<user>/ with a Bearer token: POST /prompt, wait on /ws, read
/history/{id}, fetch /view; or collect SaveImageWebsocket's images as binary frames."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import LiveServer, wait_for_worker
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_nodes import FImage, websocket_pngs

pytestmark = pytest.mark.slow

PROMPT = {"3": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64,
                                                        "batch_size": 1, "color": 255}},
          "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0],
                                                       "filename_prefix": "script"}}}

# The prompt of ComfyUI's script_examples/websockets_api_example_ws_images.py, batch of 4.
WS_IMAGES_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0],
        "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
        "scheduler": "normal", "seed": 5, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"batch_size": 4, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode",
          "inputs": {"clip": ["4", 1], "text": "masterpiece best quality man"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "save_image_websocket_node": {"class_type": "SaveImageWebsocket",
                                  "inputs": {"images": ["8", 0]}},
}


class ComfyScript:
    """What people's scripts do, only with an Authorization header added."""

    def __init__(self, server: str, token: str) -> None:
        self.server = server  # "127.0.0.1:PORT/u/user002"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client_id = str(uuid.uuid4())

    def _open(self, path: str, data: bytes | None = None) -> bytes:
        req = urllib.request.Request(f"http://{self.server}{path}", data=data,
                                     headers=self.headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.read()

    def queue_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        return json.loads(self._open("/prompt", body))

    def get_history(self, prompt_id: str) -> dict[str, Any]:
        return json.loads(self._open(f"/history/{prompt_id}"))

    def get_image(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder,
                                        "type": folder_type})
        return self._open(f"/view?{query}")

    def get_ws_images(self, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
        """websockets_api_example_ws_images.py: the binary frames received while the
        SaveImageWebsocket node executes, less their 8-byte header."""
        images: dict[str, list[bytes]] = {}
        with connect(f"ws://{self.server}/ws?clientId={self.client_id}",
                     additional_headers=self.headers) as ws:
            prompt_id = self.queue_prompt(prompt)["prompt_id"]
            current_node = ""
            while True:
                out = ws.recv(timeout=60)
                if isinstance(out, str):
                    message = json.loads(out)
                    if message["type"] == "executing":
                        data = message["data"]
                        if data["prompt_id"] == prompt_id:
                            if data["node"] is None:
                                break
                            current_node = data["node"]
                elif current_node == "save_image_websocket_node":
                    images.setdefault(current_node, []).append(out[8:])
        return images

    def run(self, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
        with connect(f"ws://{self.server}/ws?clientId={self.client_id}",
                     additional_headers=self.headers) as ws:
            prompt_id = self.queue_prompt(prompt)["prompt_id"]
            while True:
                out = ws.recv(timeout=60)
                if isinstance(out, str):
                    message = json.loads(out)
                    if message["type"] == "executing":
                        data = message["data"]
                        if data["node"] is None and data["prompt_id"] == prompt_id:
                            break
        history = self.get_history(prompt_id)[prompt_id]
        images: dict[str, list[bytes]] = {}
        for node_id, node_output in history["outputs"].items():
            for image in node_output.get("images", []):
                images.setdefault(node_id, []).append(
                    self.get_image(image["filename"], image["subfolder"], image["type"]))
        return images


def test_unchanged_comfyui_script_with_bearer_token(make_hub) -> None:
    harness = make_hub()
    harness.user("user002")
    token = harness.token("user002")
    server = LiveServer(harness.app).start()
    fake = FakeComfyUI().start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "comfymulti", "worker", "--hub", server.url, "--token",
         harness.worker_token(), "--comfyui", fake.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_worker(harness)
        script = ComfyScript(f"127.0.0.1:{server.port}/u/user002", token)
        images = script.run(PROMPT)
        produced = sorted((fake.dirs["output"]).glob("script_*.png"))
        assert len(produced) == 1
        assert images == {"9": [produced[0].read_bytes()]}
        with pytest.raises(urllib.error.HTTPError) as denied:
            ComfyScript(f"127.0.0.1:{server.port}/u/user002", "cmu_wrong").queue_prompt(PROMPT)
        assert denied.value.code == 401
        denied.value.close()
    finally:
        worker.terminate()
        worker.wait(15)
        server.stop()
        fake.close()


def test_save_image_websocket_batch_arrives_whole_and_in_order(make_hub) -> None:
    harness = make_hub()
    harness.user("user002")
    server = LiveServer(harness.app).start()
    fake = FakeComfyUI(models={"checkpoints": ["v1-5-pruned-emaonly.safetensors"]},
                       progress_steps=10, node_seconds=0.02).start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "comfymulti", "worker", "--hub", server.url, "--token",
         harness.worker_token(), "--comfyui", fake.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_worker(harness)
        script = ComfyScript(f"127.0.0.1:{server.port}/u/user002", harness.token("user002"))
        images = script.get_ws_images(WS_IMAGES_PROMPT)
    finally:
        worker.terminate()
        worker.wait(15)
        server.stop()
        fake.close()
    sent = websocket_pngs(FImage(512, 512, 4, 0x808080))  # VAEDecode's batch in the fake
    assert len(set(sent)) == 4
    assert images == {"save_image_websocket_node": sent}
