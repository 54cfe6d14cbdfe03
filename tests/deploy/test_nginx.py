"""The generated nginx site, run by Debian's nginx with a self-signed certificate in front of
a real hub, a worker and a fake ComfyUI: everything a participant and a worker do goes through
it (login, workspace, WSS, a job, %2F names, upload limits, ACME challenge, HTTP/2, IPv6)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from comfymulti.config import load_settings, render_toml
from comfymulti.hub.app import create_app
from comfymulti.hub.web.sessions import COOKIE
from comfymulti.ops.deploy import nginx
from tests.conftest import HubHarness, LiveServer, free_port
from tests.deploy.conftest import nginx_test, require, self_signed, wrapper_config
from tests.fakes.comfyui import FakeComfyUI
from tests.test_cli import run
from tests.worker.util import image_prompt

pytestmark = pytest.mark.slow

UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Any]:
    """A workshop config for a hub behind nginx on free ports, and the generated site."""
    cert, key = self_signed(tmp_path)
    https, http, hub_port = free_port(), free_port(), free_port()
    webroot = tmp_path / "acme"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge" / "token123").write_text("proof")
    config = tmp_path / "comfymulti.toml"
    config.write_text(render_toml({
        "": {"data_dir": "data"},
        "hub": {"port": hub_port, "public_url": f"https://127.0.0.1:{https}",
                "trusted_proxies": ["127.0.0.1"], "secret_key": "k" * 40},
        "queue": {"long_poll_seconds": 1.0},
        "files": {"max_upload_bytes": UPLOAD_LIMIT},
        "deploy": {"http_port": http, "acme_webroot": str(webroot),
                   "tls_certificate": str(cert), "tls_certificate_key": str(key)}}))
    r = run("--config", str(config), "deploy", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    return {"config": config, "cert": cert, "https": https, "http": http, "hub_port": hub_port,
            "site": tmp_path / "out" / "nginx-comfymulti.conf", "prefix": tmp_path / "nginx"}


@pytest.fixture
def hub(site: dict[str, Any]) -> Iterator[HubHarness]:
    harness = HubHarness(create_app(load_settings(site["config"])))
    server = LiveServer(harness.app, port=site["hub_port"]).start()
    yield harness
    server.stop()


def test_nginx_t_passes_and_http2_syntax_follows_the_installed_version(
        site: dict[str, Any]) -> None:
    installed = nginx.installed_version()
    assert installed is not None, "nginx -v gave no version"
    text = site["site"].read_text()
    if installed >= nginx.HTTP2_ON_SINCE:
        assert "http2 on;" in text
    else:
        assert f"listen {site['https']} ssl http2;" in text and "http2 on;" not in text
    checked = nginx_test(wrapper_config(site["prefix"], site["site"]))
    assert checked.returncode == 0, checked.stderr
    # The other syntax is what the issue saw fail: nginx -t tells them apart on this nginx.
    other = nginx.render(nginx.Site.from_settings(
        load_settings(site["config"]), (1, 25, 1) if installed < (1, 25, 1) else (1, 22, 1)),
        "test")
    (site["prefix"] / "other.conf").write_text(other)
    if installed < nginx.HTTP2_ON_SINCE:
        bad = nginx_test(wrapper_config(site["prefix"] / "o", site["prefix"] / "other.conf"))
        assert bad.returncode != 0 and "http2" in bad.stderr


def _worker(url: str, token: str, ca: Path, comfy: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMULTI_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "comfymulti", "worker", "--hub", url, "--token", token,
             "--ca", str(ca), "--comfyui", comfy, "--name", "gpu-behind-nginx"],
            cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_a_workshop_through_the_generated_site(site: dict[str, Any], hub: HubHarness,
                                               run_nginx, tmp_path: Path) -> None:
    run_nginx(wrapper_config(site["prefix"], site["site"]), site["https"])
    base = f"https://127.0.0.1:{site['https']}"
    tls = ssl.create_default_context(cafile=str(site["cert"]))
    user = hub.user("user001")
    with httpx.Client(base_url=base, verify=tls, timeout=30) as http:
        _workshop(site, hub, http, base, tls, user, tmp_path)


def _workshop(site: dict[str, Any], hub: HubHarness, http: httpx.Client, base: str,
              tls: ssl.SSLContext, user: str, tmp_path: Path) -> None:

    # Port 80: the ACME challenge is served, everything else redirected to the HTTPS URL.
    plain = f"http://127.0.0.1:{site['http']}"
    assert httpx.get(f"{plain}/.well-known/acme-challenge/token123").text == "proof"
    moved = httpx.get(f"{plain}/u/user001/?x=1")
    assert moved.status_code == 301 and moved.headers["location"] == f"{base}/u/user001/?x=1"
    # HTTP/2 is negotiated, and the site answers on IPv6 too.
    version = subprocess.run([require("curl"), "-s", "-o", "/dev/null", "--http2", "--cacert",
                              str(site["cert"]), "-w", "%{http_version}", f"{base}/health"],
                             capture_output=True, text=True)
    assert version.stdout == "2"
    assert httpx.get(f"https://[::1]:{site['https']}/health", verify=tls).status_code == 200

    # Log in and open the workspace (a Secure cookie: the public URL is https).
    r = http.post("/login", data={"username": user, "password": hub.passwords[user]})
    assert r.status_code == 303 and r.headers["location"] == "/u/user001/"
    assert "secure" in r.headers["set-cookie"].lower()
    cookie = r.cookies[COOKIE]
    http.cookies.set(COOKIE, cookie)
    page = http.get("/u/user001/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    # Writes carry the browser's Origin, with the port: refused if nginx sent Host without it.
    browser = {"Origin": base}

    # A job over WSS, run by a worker that reaches the hub through nginx with --ca.
    comfy = FakeComfyUI(node_seconds=0.01).start()
    worker = _worker(base, hub.worker_token(), site["cert"], comfy.url, tmp_path / "w.log")
    try:
        client_id = uuid.uuid4().hex
        with connect(f"wss://127.0.0.1:{site['https']}/u/user001/ws?clientId={client_id}",
                     ssl=tls, additional_headers={"Cookie": f"{COOKIE}={cookie}", **browser}
                     ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"
            deadline_hit = _until_worker_registered(http)
            assert deadline_hit, (tmp_path / "w.log").read_text()
            posted = http.post("/u/user001/api/prompt", headers=browser,
                               json={"prompt": image_prompt(), "client_id": client_id})
            assert posted.status_code == 200, posted.text
            prompt_id = posted.json()["prompt_id"]
            seen: list[str] = []
            while seen[-2:] != ["executing", None]:  # the closing one: history is final
                message = ws.recv(timeout=30)
                if isinstance(message, str):
                    event = json.loads(message)
                    if event.get("data", {}).get("prompt_id") == prompt_id:
                        seen += [event["type"], event["data"].get("node", "")]
            assert "executed" in seen and "execution_success" in seen
        history = http.get(f"/u/user001/api/history/{prompt_id}").json()
        image = history[prompt_id]["outputs"]["2"]["images"][0]
        view = http.get("/u/user001/api/view", params=image)
        assert view.status_code == 200 and view.content[:4] == b"\x89PNG"
    finally:
        worker.terminate()
        worker.wait(30)
        comfy.close()

    # A workflow named with %2F keeps its folder: nginx passes the path undecoded.
    saved = http.post("/u/user001/api/userdata/workflows%2Fday1%2Fflow.json",
                      headers=browser, content=b'{"nodes": []}')
    assert saved.status_code == 200, saved.text
    userdata = hub.ctx.settings.data_dir / "users" / "user001" / "userdata"
    assert (userdata / "workflows" / "day1" / "flow.json").read_bytes() == b'{"nodes": []}'
    assert http.get("/u/user001/api/userdata/workflows%2Fday1%2Fflow.json").status_code == 200

    # Uploads: just under the configured limit is stored; just over is 413 (from the hub);
    # a body above the site's client_max_body_size (from the config) is refused by nginx.
    def upload(size: int) -> httpx.Response:
        return http.post("/u/user001/api/upload/image", headers=browser,
                         files={"image": ("big.png", b"\0" * size, "image/png")})

    assert upload(UPLOAD_LIMIT - 1024).status_code == 200
    over = upload(UPLOAD_LIMIT + 1)
    assert over.status_code == 413 and "limited" in over.text + json.dumps(over.json())
    nginx_limit = nginx.Site.from_settings(hub.ctx.settings, None).body_limit
    assert f"client_max_body_size {nginx_limit};" in site["site"].read_text()
    far = upload(nginx_limit + 1)
    assert far.status_code == 413 and "nginx" in far.text


def _until_worker_registered(http: httpx.Client) -> bool:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if http.get("/health").json().get("workers_online"):
            return True
        time.sleep(0.2)
    return False


def test_http_only_site_loads_before_any_certificate_exists(tmp_path: Path) -> None:
    """The first certificate needs port 80 served while no certificate exists yet."""
    config = tmp_path / "comfymulti.toml"
    config.write_text(render_toml({"": {"data_dir": "data"},
                                   "hub": {"public_url": "https://hub.example.org"},
                                   "deploy": {"http_port": free_port(), "ipv6": False}}))
    r = run("--config", str(config), "deploy", "--out", str(tmp_path / "out"), "--http-only")
    assert r.returncode == 0, r.stderr
    site = tmp_path / "out" / "nginx-comfymulti.conf"
    text = site.read_text()
    assert "/.well-known/acme-challenge/" in text and "ssl" not in text
    assert "listen [::]" not in text  # deploy.ipv6 = false
    checked = nginx_test(wrapper_config(tmp_path / "nginx", site))
    assert checked.returncode == 0, checked.stderr
    full = run("--config", str(config), "deploy", "--out", str(tmp_path / "full"))
    assert full.returncode == 0 and nginx_test(wrapper_config(
        tmp_path / "nginx2", tmp_path / "full" / "nginx-comfymulti.conf")).returncode != 0
