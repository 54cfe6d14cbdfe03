"""`cloud plan`: the two ways to hold the models through a workshop season, priced."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from comfymulti.cli.plan import plan_cmd
from comfymulti.ops.plan import KEEP, RESTORE, PlanInputs, plan


def test_twenty_users_ten_days_keeping_the_sfs_is_cheaper_and_saves_twelve_minutes() -> None:
    found = plan(PlanInputs(users=20, days=10, hours=8))
    # 45 GB at 500 Mbit/s: 12 minutes each morning while 2 GPUs at 3.25 USD/h wait.
    assert found.gpus == 2 and found.restore.minutes_per_morning == pytest.approx(12.0)
    assert found.restore.waiting_cost == pytest.approx(2 * 3.25 * 0.2 * 10)
    assert found.restore.sfs_cost == pytest.approx(45 * 0.20 / 730 * 8.2 * 10)
    assert found.keep.sfs_cost == pytest.approx(45 * 0.20)  # a month, attached or not
    assert found.keep.r2_cost == found.restore.r2_cost == pytest.approx(45 * 0.015)
    assert found.keep.minutes_per_morning == 0 and found.cheaper.name == KEEP
    assert found.break_even_days == pytest.approx(9.0 / (45 * 0.2 / 730 * 8.2 + 1.3))
    assert found.teaching_cost == pytest.approx(2 * 3.25 * 8 * 10)


def test_small_models_and_a_single_day_make_the_morning_restore_cheaper() -> None:
    found = plan(PlanInputs(users=5, days=1, hours=6, models_gb=5, download_mbps=2000))
    assert found.cheaper.name == RESTORE and found.break_even_days > 1
    assert found.restore.minutes_per_morning == pytest.approx(5 * 8000 / 2000 / 60)


def _app() -> typer.Typer:
    """The command as the `cloud` group will carry it."""
    app = typer.Typer()
    app.command("plan")(plan_cmd)
    app.callback()(lambda: None)
    return app


def test_the_command_prints_both_options_and_json_for_scripts() -> None:
    runner = CliRunner()
    text = runner.invoke(_app(), ["plan", "--users", "20", "--days", "10", "--hours", "8"],
                         terminal_width=200)
    assert text.exit_code == 0, text.output
    assert "keep the SFS all season" in text.output and "12 min" in text.output
    assert "Cheaper: keep the SFS all season, by 5.01 USD" in text.output

    done = runner.invoke(_app(), ["plan", "--users", "20", "--days", "10", "--hours", "8",
                                  "--gpu-price", "1.625", "--json"])
    body = json.loads(done.output)
    assert body["options"][RESTORE]["waiting_cost"] == pytest.approx(6.5)
    assert body["cheaper"] == RESTORE  # at the spot price the waiting GPUs cost less


def test_a_nonsense_number_is_a_usage_error() -> None:
    done = CliRunner().invoke(_app(), ["plan", "--users", "0", "--days", "10", "--hours", "8"])
    assert done.exit_code == 2 and "--users" in done.output
