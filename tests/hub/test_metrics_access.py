"""/metrics can be restricted to a token or to networks (hub.metrics_token/metrics_networks)."""

from __future__ import annotations

import httpx


def test_metrics_restricted_by_token(live_hub) -> None:
    _, url = live_hub(hub={"metrics_token": "scrape-secret"})
    assert httpx.get(f"{url}/metrics").status_code == 403
    wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "scrape-secret" not in wrong.text
    ok = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and "comfymulti_workers_online" in ok.text
    assert httpx.get(f"{url}/health").status_code == 200  # /health stays public


def test_metrics_restricted_by_network(live_hub) -> None:
    _, inside = live_hub(hub={"metrics_networks": ["127.0.0.0/8"]})
    assert httpx.get(f"{inside}/metrics").status_code == 200
    _, outside = live_hub(hub={"metrics_networks": ["10.0.0.0/8"]})
    assert httpx.get(f"{outside}/metrics").status_code == 403
