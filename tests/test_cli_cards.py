"""The organiser's CLI for participants' first minutes: credential cards carry the URL
participants open (hub.public_url), never one only the hub machine can reach, and can be
reprinted for chosen accounts without touching the others; the first-visit workflow is set."""

from __future__ import annotations

import csv
from pathlib import Path

from comfymulti.config import load_settings
from comfymulti.db import make_engine, session_factory, transaction
from comfymulti.hub.services import templates, users
from comfymulti.hub.services.auth import verify_password
from tests.test_cli import run


def _sheet(folder: Path) -> list[dict[str, str]]:
    newest = max(folder.glob("credentials-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    return list(csv.DictReader(newest.read_text().splitlines()))


def _config(folder: Path, url: str) -> Path:
    config = folder / "comfymulti.toml"
    config.write_text(f'data_dir = "data"\n[hub]\npublic_url = "{url}"\n')
    return config


def test_only_an_address_participants_can_open_goes_on_cards(tmp_path: Path) -> None:
    for url in ("", "http://127.0.0.1:8080", "http://0.0.0.0:8080", "http://localhost/",
                "http://[::1]:8080", "http://[::]:8080", "https://"):
        problem = users.card_url_problem(load_settings(_config(tmp_path, url)))
        assert problem and "hub.public_url" in problem, url
    for url in ("https://workshop.example.org", "http://192.168.1.20:8080"):
        assert users.card_url_problem(load_settings(_config(tmp_path, url))) is None, url


def test_create_refuses_cards_nobody_can_open_unless_forced(tmp_path: Path) -> None:
    cfg = ["--config", str(_config(tmp_path, "http://127.0.0.1:8080"))]
    r = run(*cfg, "users", "create", "--count", "2")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "public_url" in r.stderr and cfg[1] in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "data/credentials").exists()  # and no account made

    forced = run(*cfg, "users", "create", "--count", "2", "--force")
    assert forced.returncode == 0 and "warning: hub.public_url is" in forced.stderr
    assert {row["user"] for row in _sheet(tmp_path / "data/credentials")} == {
        "user001", "user002"}


def test_cards_reprint_chosen_users_with_new_passwords_only(tmp_path: Path) -> None:
    config = _config(tmp_path, "https://workshop.example.org")
    cfg = ["--config", str(config)]
    assert run(*cfg, "users", "create", "--count", "4").returncode == 0
    first = {row["user"]: row["password"] for row in _sheet(tmp_path / "data/credentials")}

    r = run(*cfg, "users", "cards", "user002", "user004", "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    rows = _sheet(tmp_path / "again")
    assert [row["user"] for row in rows] == ["user002", "user004"]
    assert {row["url"] for row in rows} == {"https://workshop.example.org/"}
    assert all(row["password"] != first[row["user"]] for row in rows)
    page = next((tmp_path / "again").glob("*.html")).read_text()
    assert page.count('class="card"') == 2 and "https://workshop.example.org/" in page

    # The new passwords work, the old ones of those two do not, the others are unchanged.
    settings = load_settings(config)
    factory = session_factory(make_engine(settings.database_url))
    new = {row["user"]: row["password"] for row in rows}
    with transaction(factory) as s:
        for name, old in first.items():
            stored = users.get_user(s, name).password_hash
            assert verify_password(stored, new.get(name, old)), name
            if name in new:
                assert not verify_password(stored, old), name

    unknown = run(*cfg, "users", "cards", "user001", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    assert len(list((tmp_path / "data/credentials").glob("*.csv"))) == 1  # nothing written


def test_templates_default_is_what_a_first_visit_opens(tmp_path: Path) -> None:
    config = _config(tmp_path, "https://workshop.example.org")
    flow = tmp_path / "Welcome.json"
    flow.write_text('{"nodes": []}')
    cfg = ["--config", str(config)]
    assert run(*cfg, "templates", "publish", str(flow)).returncode == 0
    assert run(*cfg, "templates", "default", "Welcome").returncode == 0
    assert templates.default_slug(load_settings(config)) == "Welcome"
    missing = run(*cfg, "templates", "default", "Nothing")
    assert missing.returncode == 1 and "no template" in missing.stderr
