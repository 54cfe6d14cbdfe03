"""API trouble: retries where safe, one clear line otherwise, nothing created twice or left
unreported. The SDK talks real HTTP to the Verda test server throughout."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from comfymulti.config import load_settings
from comfymulti.db import transaction
from comfymulti.errors import CloudError, CloudUnavailable
from comfymulti.models import CloudResource
from comfymulti.ops.cloud.day import day_start
from comfymulti.ops.cloud.season import season_start
from comfymulti.ops.cloud.status import status
from comfymulti.ops.cloud.verda import Verda
from tests.fakes.verda import CLIENT_SECRET, VerdaServer
from tests.ops.cloud.conftest import Ran, Site, cloud_config


def adapter(server: VerdaServer, **overrides: Any) -> tuple[Verda, list[float]]:
    cfg = load_settings(None, cloud={**cloud_config(server.base_url), **overrides}).cloud
    sleeps: list[float] = []
    return Verda(cfg, sleep=sleeps.append), sleeps


def test_429_waits_as_retry_after_says_then_succeeds(verda_server: VerdaServer) -> None:
    verda, sleeps = adapter(verda_server)
    verda_server.fake.fail("GET", "/instances", 429, "too_many_requests", "Rate limit exceeded",
                           times=2, retry_after=7)
    assert verda.instances() == []
    assert sleeps == [7, 7]
    assert [c[2] for c in verda_server.fake.calls if c[1] == "/instances"] == [429, 429, 200]


def test_5xx_on_a_read_is_retried_with_backoff_then_one_line(verda_server: VerdaServer) -> None:
    verda, sleeps = adapter(verda_server)
    verda_server.fake.fail("GET", "/balance", 503, "service_unavailable", "down", times=2)
    assert verda.balance() == 1000.0
    assert sleeps == [0.5, 1.0]
    verda_server.fake.fail("GET", "/balance", 500, "server_error", "boom", times=99)
    with pytest.raises(CloudUnavailable) as caught:
        verda.balance()
    assert caught.value.message == ("Verda: read the balance: still HTTP 500 after 5 tries; "
                                    "try again later")


def test_a_slow_answer_times_out_and_is_retried(verda_server: VerdaServer) -> None:
    verda, sleeps = adapter(verda_server, api_timeout=0.3)
    verda_server.fake.slow("GET", "/locations", 1.0)
    assert "FIN-01" in verda.locations()
    assert sleeps == [0.5]


def test_a_create_that_timed_out_but_went_through_is_found_not_repeated(
        verda_server: VerdaServer) -> None:
    verda, _ = adapter(verda_server, api_timeout=0.5)
    verda_server.fake.slow("POST", "/instances", 0.8)
    inst = verda.create_instance("comfymulti-gpu-1", "comfymulti:comfymulti", "1H100.80S.30V",
                                 False, None)
    assert [i["id"] for i in verda_server.fake.live_instances()] == [inst.id]
    verda_server.fake.fail("POST", "/volumes", 500, "server_error", "boom")  # not created
    vol = verda.create_volume("comfymulti-scratch-1", False, 50)
    assert [v["id"] for v in verda_server.fake.live_volumes() if not v["is_os_volume"]] == [
        vol.id]


def test_an_expired_token_is_refreshed_and_a_revoked_one_is_one_clear_error(
        verda_server: VerdaServer) -> None:
    verda_server.fake.token_seconds = 1
    verda, _ = adapter(verda_server)
    assert verda.instances() == []
    time.sleep(1.1)
    assert verda.instances() == []
    assert [c for c in verda_server.fake.calls if c[1] == "/oauth2/token"] == [
        ("POST", "/oauth2/token", 200)] * 2
    assert not any(c[2] == 401 for c in verda_server.fake.calls)
    verda_server.fake.token_seconds = 3600
    verda_server.fake.tokens.clear()  # revoked on the provider's side
    with pytest.raises(CloudError) as caught:
        verda.instances()
    assert caught.value.message == ("Verda: list instances: Invalid or expired access token; "
                                    "check [cloud] client_id and "
                                    "COMFYMULTI_CLOUD__CLIENT_SECRET")


def one_line(r: Ran) -> str:
    assert r.code == 1, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line
    assert CLIENT_SECRET not in r.stdout + r.stderr
    return line


def test_no_capacity_spot_unavailable_and_no_funds_are_one_line_and_reported(
        site: Site, run_cli: Any) -> None:
    def cli(*args: str) -> Ran:
        return run_cli(site.settings, *args)

    site.do(season_start)
    site.fake.no_capacity.add(("1H100.80S.30V", False))
    assert "no capacity for 1H100.80S.30V in FIN-01" in one_line(
        cli("day-start", "--gpus", "1", "--yes"))
    site.fake.no_capacity.add(("1H100.80S.30V", True))
    assert "no spot capacity for 1H100.80S.30V" in one_line(
        cli("day-start", "--gpus", "1", "--spot", "--yes"))
    site.fake.no_capacity.clear()
    site.fake.balance = 0.2  # enough for a volume, not for 10 prepaid minutes of a GPU
    ran = cli("day-start", "--gpus", "1", "--yes")
    line = one_line(ran)
    assert "Insufficient funds" in line and "top up" in line
    assert "[2/5] scratch volume comfymulti-scratch-1" in ran.stdout
    assert "Stopped at step 3" in ran.stdout
    assert site.fake.live_instances() == []
    with transaction(site.factory) as s:  # what was made before the refusal is on record
        recorded = set(s.scalars(select(CloudResource.id)))
    assert {v["id"] for v in site.fake.live_volumes()} <= recorded
    status = cli("status", "--json")
    shown = {r["name"]: r for r in json.loads(status.stdout)["resources"]}
    assert shown["comfymulti-scratch-1"]["owner"] == "ours"
    assert shown["comfymulti-scratch-1"]["warning"] == "BILLED WITH NO INSTANCE"


def test_bad_credentials_are_one_line_naming_the_fix(site: Site, run_cli: Any) -> None:
    wrong = site.settings.model_copy(deep=True)
    wrong.cloud.client_secret = SecretStr("wrong")
    r = run_cli(wrong, "status")
    line = one_line(r)
    assert "Invalid client credentials" in line and "COMFYMULTI_CLOUD__CLIENT_SECRET" in line
    assert "wrong" not in line


def test_an_unreachable_api_is_retried_then_one_line_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    cfg = load_settings(None, cloud=cloud_config(url)).cloud
    sleeps: list[float] = []
    with pytest.raises(CloudUnavailable) as caught:
        Verda(cfg, sleep=sleeps.append).instances()
    assert caught.value.message == (f"Verda: sign in: still cannot reach {url} after 5 tries; "
                                    "try again later")
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def test_the_daily_budget_refuses_more_gpus_and_says_so(site: Site) -> None:
    site.do(season_start)
    site.fake.advance(3600)
    site.settings.cloud.daily_budget = 3.0  # the SFS so far plus one hour of an H100 is more
    with pytest.raises(CloudError) as caught:
        day_start(site.cloud(), 1)
    assert caught.value.message.startswith("daily budget $3.00 would be passed: $0.0")
    assert "spent today, starting these costs $3.25/h" in caught.value.message
    assert site.fake.live_instances() == []
    site.settings.cloud.daily_budget = 10.0
    site.do(day_start, 1)
    assert len(site.fake.live_instances()) == 1


def test_a_wrong_location_image_or_ssh_key_is_one_line_before_anything_is_made(
        site: Site, run_cli: Any) -> None:
    site.do(season_start)
    before = len(site.fake.calls)
    for key, value, expected in [("location", "ICE-01", "[cloud] location 'ICE-01' is not"),
                                 ("image", "windows-95", "[cloud] image 'windows-95' is not"),
                                 ("ssh_key_ids", ["nope"], "no SSH key nope on the account")]:
        wrong = site.settings.model_copy(deep=True)
        setattr(wrong.cloud, key, value)
        ran = run_cli(wrong, "day-start", "--yes")
        assert ran.code == 2 and expected in ran.stderr and ran.stderr.count("\n") == 1
    assert [c for c in site.fake.calls[before:] if c[0] != "GET" and c[1] != "/oauth2/token"] \
        == []


def test_status_shows_the_balance_and_the_trash(site: Site) -> None:
    site.do(season_start)
    verda = site.cloud().verda
    vol = verda.create_volume("comfymulti-extra", False, 10)
    verda.detach(vol.id)  # detached already: the call is accepted, nothing changes
    verda.delete_volume(vol.id)
    report = status(site.cloud())
    assert report.trash == ["comfymulti-extra"]
    assert vol.id not in {r.id for r in report.resources}
    assert report.balance == pytest.approx(1000.0, abs=0.01)


def test_a_changed_startup_script_replaces_the_old_one(verda_server: VerdaServer) -> None:
    verda, _ = adapter(verda_server)
    first = verda.startup_script("comfymulti-node", "#!/bin/bash\necho one\n")
    assert verda.startup_script("comfymulti-node", "#!/bin/bash\necho one\n") == first
    second = verda.startup_script("comfymulti-node", "#!/bin/bash\necho two\n")
    assert list(verda_server.fake.scripts) == [second] != [first]
