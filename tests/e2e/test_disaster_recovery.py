"""The hub host is gone: a backup taken while it served, restored into an empty folder, is a
hub that serves the same users, workflows, history and outputs, with logins and tokens intact."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfymulti.config import load_settings
from comfymulti.hub.app import create_app
from comfymulti.worker.outputs import is_file
from tests.conftest import LiveServer
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.seaweedfs import SECRET_KEY
from tests.ops import conftest as ops
from tests.ops.test_backup import write_config
from tests.worker.util import RunningAgent, UserApi, image_prompt, sharpen_prompt, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
backup_config = ops.backup_config  # a bucket on the session's real S3 server
USERS = ("ann", "bob")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def comfymulti(config: Path, *args: str) -> tuple[int, str]:
    """The CLI as its own process, while this test's loop keeps the worker agent running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfymulti", "--config", str(config), *args,
        env={**os.environ, "COMFYMULTI_BACKUP__SECRET_ACCESS_KEY": SECRET_KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    return await proc.wait(), output.decode()


async def what_users_see(url: str, tokens: dict[str, str], jobs: dict[str, list[str]]
                         ) -> dict[str, Any]:
    """Per user: their saved workflow, their history's finished jobs, their output files."""
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for user, token in tokens.items():
            auth = {"Authorization": f"Bearer {token}"}
            flow = await http.get(f"/u/{user}/api/userdata/workflows%2Fmine.json", headers=auth)
            history = (await http.get(f"/u/{user}/api/history", headers=auth)).json()
            outputs = {}
            for job_id in jobs[user]:
                job = (await http.get(f"/api/v1/jobs/{job_id}", headers=auth)).json()
                for output in job["outputs"].values():
                    for item in (i for items in output.values() for i in items if is_file(i)):
                        r = await http.get(f"/u/{user}/api/view", headers=auth, params={
                            "filename": item["filename"], "subfolder": item["subfolder"],
                            "type": item["type"]})
                        outputs[item["filename"]] = (r.status_code, r.content)
            seen[user] = {"workflow": (flow.status_code, flow.content),
                          "history": sorted(j for j in history if j in jobs[user]),
                          "states": [(await http.get(f"/api/v1/jobs/{j}", headers=auth)
                                      ).json()["state"] for j in jobs[user]],
                          "outputs": outputs}
    return seen


async def test_a_hub_restored_into_an_empty_folder_serves_everything_and_logins_work(
        live_hub, backup_config: dict[str, Any], tmp_path: Path) -> None:
    harness, url = live_hub(queue={"long_poll_seconds": 1.0})  # stops without waiting
    data = harness.ctx.settings.data_dir
    tokens = {user: harness.token(harness.user(user)) for user in USERS}
    fake = FakeComfyUI(hang_node_types={"ImageSharpen"}).start()
    jobs: dict[str, list[str]] = {user: [] for user in USERS}
    config = write_config(tmp_path, backup_config, data_dir=data)
    try:
        async with RunningAgent(url, harness.worker_token(), fake.url, "w1"), \
                httpx.AsyncClient(base_url=url, timeout=30) as http:
            for i, user in enumerate(USERS):
                api = UserApi(url, {"Authorization": f"Bearer {tokens[user]}"})
                r = await http.post(f"/u/{user}/api/userdata/workflows%2Fmine.json",
                                    content=f'{{"owner": "{user}"}}'.encode(),
                                    headers={"Authorization": f"Bearer {tokens[user]}"})
                assert r.status_code == 200, r.text
                for width in (32 + i, 40 + i):
                    job_id = await api.submit(image_prompt(width, 10 * i, f"{user}/img"))
                    assert (await api.finished(job_id))["state"] == "succeeded"
                    jobs[user].append(job_id)
                await api.aclose()
            api = UserApi(url, {"Authorization": f"Bearer {tokens['ann']}"})
            writing = await api.submit(sharpen_prompt(24, "ann/slow"))  # runs until cancelled
            await api.aclose()
            await until(lambda: any(e.prompt_id == writing for e in fake.executions))
            before = await what_users_see(url, tokens, jobs)
            cookie = (await http.post("/login", data={"username": "ann", "password":
                                                      harness.passwords["ann"]})).cookies
            code, output = await comfymulti(config, "backup", "run", "user-files")
            assert code == 0, output
            health = (await http.get("/health")).json()["backups"]["user-files"]
            assert health["age_seconds"] < 60 and health["error"] == ""
            assert not any(e.prompt_id == writing and e.ended for e in fake.executions)
            api = UserApi(url, {"Authorization": f"Bearer {tokens['ann']}"})
            assert await api.cancel(writing) == "requested"  # lets the hub stop at once
            await api.finished(writing)
            await api.aclose()
    finally:
        fake.close()

    new_home = tmp_path / "new-host" / "data"
    code, output = await comfymulti(config, "restore", "user-files", "--to", str(new_home))
    assert code == 0, output
    restored = create_app(load_settings(None, data_dir=str(new_home)))
    server = LiveServer(restored).start()
    try:
        after = await what_users_see(server.url, tokens, jobs)
        assert after == before
        for user in USERS:
            assert after[user]["workflow"] == (200, f'{{"owner": "{user}"}}'.encode())
            assert after[user]["history"] == sorted(jobs[user])
            assert after[user]["states"] == ["succeeded", "succeeded"]
            assert len(after[user]["outputs"]) == 2
            assert all(code == 200 for code, _ in after[user]["outputs"].values())
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            login = await http.post("/login", data={"username": "bob",
                                                    "password": harness.passwords["bob"]})
            assert login.status_code == 303
            assert (await http.get("/u/bob/api/userdata/workflows%2Fmine.json")).status_code \
                == 200  # the new session cookie is honoured
        async with httpx.AsyncClient(base_url=server.url, cookies=cookie, timeout=30) as http:
            assert (await http.get("/u/ann/api/history")).status_code == 200  # an old session
    finally:
        server.stop()
