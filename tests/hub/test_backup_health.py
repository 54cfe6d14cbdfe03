"""/health and /metrics show each backup set's last success and age, so a dead timer shows."""

from __future__ import annotations

import json
import time

from comfymulti import backup_status


def test_health_and_metrics_show_each_sets_last_success_age_and_overdue(hub) -> None:
    harness, client = hub
    data = harness.ctx.settings.data_dir
    backup_status.record(data, "user-files", "20261202T100000000Z", files=3, size=42)
    backup_status.record(data, "node-state", "20261202T100000000Z", error="bucket gone")

    backups = client.get("/health").json()["backups"]
    assert set(backups) == {"user-files", "node-state", "models"}
    fresh = backups["user-files"]
    assert fresh["age_seconds"] < 60 and not fresh["stale"] and fresh["error"] == ""
    assert time.time() - fresh["last_success"] < 60
    assert backups["node-state"] == {"last_success": None, "age_seconds": None, "stale": False,
                                     "error": "bucket gone"}  # no schedule: never overdue
    assert backups["models"]["last_success"] is None

    path = data / backup_status.FOLDER / "user-files.json"  # its 1h timer died 3 hours ago
    path.write_text(json.dumps({**json.loads(path.read_text()),
                                "last_success": time.time() - 3 * 3600}))
    late = client.get("/health").json()["backups"]["user-files"]
    assert late["stale"] and 3 * 3600 <= late["age_seconds"] < 3 * 3600 + 60
    text = client.get("/metrics").text
    assert 'comfymulti_backup_overdue{set="user-files"} 1.0' in text
    assert 'comfymulti_backup_overdue{set="node-state"} 0.0' in text
    assert 'comfymulti_backup_age_seconds{set="models"} +Inf' in text
    assert 'comfymulti_backup_last_success_timestamp_seconds{set="models"} 0.0' in text
    age = next(line for line in text.splitlines()
               if line.startswith('comfymulti_backup_age_seconds{set="user-files"}'))
    assert 3 * 3600 <= float(age.split()[-1]) < 3 * 3600 + 60
