"""The cloud commands as an organiser runs them: plan first, --dry-run, --yes, costs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfymulti.errors import InvalidInput
from comfymulti.ops.cloud.day import day_start
from comfymulti.ops.cloud.season import season_start
from tests.ops.cloud.conftest import Ran, Site


def creates(site: Site) -> list[tuple[str, str, int]]:
    return [c for c in site.fake.calls if c[0] in ("POST", "PUT", "DELETE")
            and c[1] != "/oauth2/token"]


def test_plan_is_shown_and_nothing_changes_without_yes(site: Site, run_cli: Any) -> None:
    def cloud(*args: str) -> Ran:
        return run_cli(site.settings, *args)

    dry = cloud("season-start", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "Plan: start the season" in dry.stdout and "create SFS comfymulti-sfs (100 GB" in \
        dry.stdout and "$/month" not in dry.stdout and "/month)" in dry.stdout
    refused = cloud("season-start")
    assert refused.code == 2 and "add --yes" in refused.stderr
    assert "Plan: start the season" in refused.stdout
    assert creates(site) == []

    done = cloud("season-start", "--yes")
    assert done.code == 0, done.stderr
    assert "Season started in" in done.stdout
    again = season_start(site.cloud())  # idempotent: only the refill step is left
    assert [step.text for step in again.steps if "SFS" in step.text] == []
    assert [v["name"] for v in site.fake.live_volumes()] == ["comfymulti-sfs"]

    start = cloud("day-start", "--gpus", "1", "--dry-run")
    assert "instance comfymulti-gpu-1 (1H100.80S.30V, $3.25/h" in start.stdout
    assert "New compute billing: $3.25/h" in start.stdout
    assert site.fake.live_instances() == []
    with pytest.raises(InvalidInput, match="max_gpus"):  # a usage mistake: exit 2
        day_start(site.cloud(), 9)

    costs = cloud("costs", "--json")
    report = json.loads(costs.stdout)
    assert list(report["per_resource"]) == [
        f"comfymulti-sfs ({site.fake.live_volumes()[0]['id']})"]


def test_an_unset_backup_stops_season_start_before_anything_is_made(site: Site,
                                                                     run_cli: Any) -> None:
    unset = site.settings.model_copy(deep=True)
    unset.backup.endpoint_url = ""
    ran = run_cli(unset, "season-start", "--yes")
    assert ran.code == 2 and "backup.endpoint_url and backup.bucket must be set" in ran.stderr
    assert creates(site) == []
