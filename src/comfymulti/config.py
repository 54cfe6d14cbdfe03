"""Every setting, declared once: type, default and help.

Sources, strongest first: environment (``COMFYMULTI_SECTION__KEY``), the TOML file, the defaults.
``comfymulti init`` writes the TOML from these declarations, so file and code cannot drift.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from comfymulti.errors import ConfigError
from comfymulti.queue.jobs import Policy, policy_choices

CONFIG_ENV = "COMFYMULTI_CONFIG"
CONFIG_NAME = "comfymulti.toml"
ENV_PREFIX = "COMFYMULTI_"

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the hub listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the hub listens on.")
    public_url: str = Field(
        "", description="URL participants open (printed on start); empty: http://host:port"
    )
    header_timeout: float = Field(
        15.0, gt=0, le=300, description="Seconds a client has to send a request's headers."
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Signs sessions. Empty: generated once into DATA_DIR/secret_key.",
    )
    trusted_proxies: list[str] = Field(
        [], description="Addresses of reverse proxies (e.g. \"127.0.0.1\" for a local nginx) "
        "whose X-Forwarded-For names the client; from anyone else it is ignored."
    )
    max_sockets_per_user: int = Field(
        20, ge=1, description="Open workspace WebSockets one user may hold; more are refused."
    )
    max_sockets_total: int = Field(
        2000, ge=1, description="Open workspace WebSockets for the whole hub."
    )
    metrics_token: SecretStr = Field(
        SecretStr(""), description="If set, /metrics needs 'Authorization: Bearer <this>' "
        "(unless the caller is in metrics_networks)."
    )
    metrics_networks: list[str] = Field(
        [], description="If set, /metrics answers only these networks (e.g. \"127.0.0.1/32\") "
        "or a caller with metrics_token; empty and no token: public."
    )

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value


class StoreSettings(_Section):
    database_url: str = Field(
        "", description="SQLAlchemy URL. Empty: SQLite file DATA_DIR/comfymulti.db (WAL)."
    )


class QueueSettings(_Section):
    policy: Policy = Field(Policy.FAIR, description=policy_choices())
    lease_seconds: float = Field(
        30.0, gt=0, description="A worker must renew its lease within this time."
    )
    max_attempts: int = Field(3, ge=1, description="Leases a job gets before it fails.")
    max_queued_per_user: int = Field(20, ge=1, description="Queued jobs one participant may hold.")
    max_queued_total: int = Field(2000, ge=1, description="Queued jobs for the whole hub.")
    max_prompt_bytes: int = Field(
        4_000_000, ge=1024, description="Largest accepted prompt request body."
    )
    reaper_seconds: float = Field(1.0, gt=0, description="How often expired leases are checked.")
    long_poll_seconds: float = Field(
        25.0, gt=0, le=120, description="Longest a worker's lease request waits for work."
    )
    max_workers_per_token: int = Field(
        32, ge=1, description="Online workers one worker token may register at once."
    )

    @property
    def online_window(self) -> float:
        """A worker counts as online if seen within this many seconds."""
        return self.lease_seconds + self.long_poll_seconds


class FilesSettings(_Section):
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Largest accepted input upload."
    )
    templates_dir: str = Field(
        "", description="Workshop workflows every participant sees (empty: DATA_DIR/templates)."
    )
    max_output_bytes: int = Field(
        8 * 1024**3, ge=1024, description="Largest output file a worker may deliver."
    )


class WorkerSettings(_Section):
    hub_url: str = Field("http://127.0.0.1:8080", description="The hub this worker serves.")
    token: SecretStr = Field(
        SecretStr(""), description="Worker token (from 'comfymulti workers token')."
    )
    comfyui_url: str = Field("http://127.0.0.1:8188", description="The local stock ComfyUI.")
    name: str = Field("", description="Worker name shown to the admin. Empty: the host name.")
    prefetch: int = Field(
        1, ge=0, le=8, description="Jobs held ready beyond the running one (no idle GPU)."
    )
    preview_fps: float = Field(
        4.0, gt=0, description="Most preview images per second relayed to the hub."
    )


class DeploySettings(_Section):
    service_user: str = Field(
        "comfymulti", description="System user the hub (and worker) services run as."
    )
    http_port: int = Field(
        80, ge=1, le=65535, description="nginx's plain-HTTP port: ACME challenges, else a "
        "redirect to hub.public_url (whose port is the HTTPS one)."
    )
    acme_webroot: str = Field(
        "/var/www/acme", description="Folder nginx serves /.well-known/acme-challenge/ from "
        "(certbot --webroot -w, or any ACME client writing there)."
    )
    tls_certificate: str = Field(
        "", description="Certificate chain (empty: /etc/letsencrypt/live/HOST/fullchain.pem)."
    )
    tls_certificate_key: str = Field(
        "", description="Its private key (empty: /etc/letsencrypt/live/HOST/privkey.pem)."
    )
    ipv6: bool = Field(True, description="nginx also listens on IPv6.")


class BackupMode(StrEnum):
    MIRROR = "mirror"
    SNAPSHOT = "snapshot"


_EVERY = re.compile(r"^(\d+[mhdw])?$")
_KEEP = re.compile(r"^(\d+[hdw])( \d+[hdw])*$|^$")


class BackupSet(_Section):
    root: str = Field(
        "", description="Folder the paths are taken from; restore --to DIR recreates it in DIR "
        "(empty: DATA_DIR; relative: inside DATA_DIR)."
    )
    paths: list[str] = Field(["."], description="Files and folders to back up, under root.")
    include: list[str] = Field(
        [], description="Only paths matching one of these globs (empty: all); * also matches /."
    )
    exclude: list[str] = Field([], description="Skip paths (or names) matching these globs.")
    mode: BackupMode = Field(
        BackupMode.MIRROR,
        description="mirror: keep the current state; snapshot: keep dated runs (see keep).",
    )
    keep: str = Field(
        "24h 7d 4w", description="Snapshots kept: hourly (h), daily (d), weekly (w) counts."
    )
    schedule: str = Field("", description="How often a timer runs it, e.g. 1h (empty: by hand).")

    @field_validator("schedule")
    @classmethod
    def _every(cls, value: str) -> str:
        if not _EVERY.match(value):
            raise ValueError("expected a number and m, h, d or w, e.g. 1h")
        return value

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: str) -> str:
        if not _KEEP.match(value):
            raise ValueError('expected counts like "24h 7d 4w"')
        return value

    @property
    def interval(self) -> int | None:
        """The schedule in seconds (None: run by hand)."""
        return duration_seconds(self.schedule) if self.schedule else None


_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(value: str) -> int:
    """"90m", "1h", "2d", "1w" in seconds; ValueError for anything else."""
    if not value or not _EVERY.match(value) or int(value[:-1]) == 0:
        raise ValueError(f"{value!r}: expected a number and m, h, d or w, e.g. 1h")
    return int(value[:-1]) * _UNIT_SECONDS[value[-1]]


def _default_sets() -> dict[str, BackupSet]:
    return {
        "user-files": BackupSet(
            paths=["comfymulti.db", "users", "templates", "secret_key"], schedule="1h"),
        "node-state": BackupSet(
            root="/", paths=["etc/ssh", "etc/wireguard", "etc/comfymulti"],
            include=["etc/ssh/ssh_host_*", "etc/wireguard/*", "etc/comfymulti/*"]),
        "models": BackupSet(root="/mnt/sfs/models", exclude=["*.tmp", "*.part"]),
    }


class BackupSettings(_Section):
    endpoint_url: str = Field(
        "", description="S3 endpoint, e.g. https://ACCOUNT_ID.r2.cloudflarestorage.com"
    )
    bucket: str = Field("", description="Bucket holding every backup set.")
    prefix: str = Field("comfymulti", description="Key prefix inside the bucket.")
    region: str = Field("auto", description="Region name (R2: auto).")
    access_key_id: str = Field("", description="S3 access key id.")
    secret_access_key: SecretStr = Field(
        SecretStr(""), description="S3 secret (better: COMFYMULTI_BACKUP__SECRET_ACCESS_KEY)."
    )
    concurrency: int = Field(8, ge=1, le=64, description="Files transferred at once.")
    part_size_mb: int = Field(
        64, ge=5, le=5000, description="Multipart part size in MiB (every part but the last)."
    )
    cache_dir: str = Field(
        "", description="Hash cache and database staging (empty: DATA_DIR/backup-cache)."
    )
    sets: dict[str, BackupSet] = Field(
        default_factory=_default_sets, description="Named backup sets: [backup.sets.NAME]."
    )


_CLOCK = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d)?$")


class CloudSettings(_Section):
    provider: Literal["verda"] = Field("verda", description="GPU cloud (only verda for now).")
    client_id: str = Field("", description="Verda REST API client id (console: Keys).")
    client_secret: SecretStr = Field(
        SecretStr(""), description="Verda client secret (better: COMFYMULTI_CLOUD__CLIENT_SECRET)."
    )
    base_url: str = Field("https://api.verda.com/v1", description="Verda API base URL.")
    location: str = Field("FIN-01", description="Data centre for instances and volumes.")
    instance_type: str = Field("1H100.80S.30V", description="GPU instance type for day-start.")
    spot: bool = Field(False, description="Rent spot instances (half price, may vanish).")
    image: str = Field(
        "ubuntu-24.04-cuda-12.8-open-docker", description="OS image (image_type from the API)."
    )
    ssh_key_ids: list[str] = Field([], description="SSH key ids put on every instance.")
    os_volume_gb: int = Field(50, ge=10, description="OS disk of each instance (billed too).")
    sfs_size_gb: int = Field(100, ge=1, description="Shared file system for models (GB).")
    scratch_size_gb: int = Field(50, ge=1, description="Scratch block volume per GPU (GB).")
    sfs_mount: str = Field("/mnt/sfs", description="Where nodes mount the SFS.")
    scratch_mount: str = Field("/mnt/scratch", description="Where nodes mount their scratch.")
    max_gpus: int = Field(4, ge=1, description="Most GPU instances at once.")
    daily_budget: float = Field(0.0, ge=0, description="Most spend per day (0: no cap).")
    name_prefix: str = Field(
        "comfymulti", pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="Every resource we create is named PREFIX-...; others are not ours.",
    )
    api_timeout: float = Field(30.0, gt=0, description="Seconds one Verda API call may take.")
    poll_seconds: float = Field(
        5.0, gt=0, description="How often a wait asks Verda and the hub again."
    )
    ready_minutes: float = Field(
        20.0, gt=0, description="How long day-start waits for workers to register."
    )
    drain_minutes: float = Field(
        30.0, ge=0, description="How long day-end lets running jobs finish."
    )
    day_end_backups: list[str] = Field(
        ["node-state", "user-files"], description="Backup sets day-end runs and verifies."
    )
    day_start: str = Field("", description="Timetable: start the day at HH:MM (empty: off).")
    day_end: str = Field("", description="Timetable: end the day at HH:MM (empty: off).")
    idle_minutes: int = Field(
        0, ge=0, description="After day_end, end once idle this long (0: at day_end); extra "
        "GPUs idle this long are removed."
    )
    auto: bool = Field(
        False, description="Let the hub run the timetable, idle end and autoscale itself."
    )
    timezone: str = Field("UTC", description="Zone of the timetable, e.g. Europe/Berlin.")
    day_gpus: int = Field(1, ge=1, description="GPUs the timetable starts a day with.")
    scale_up_minutes: float = Field(
        0.0, ge=0, description="Add a GPU while the queue's backlog is longer (0: never)."
    )
    auto_seconds: float = Field(60.0, gt=0, description="How often the hub's autopilot looks.")

    @field_validator("day_start", "day_end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError("expected HH:MM (24 h) or empty")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}, e.g. Europe/Berlin") from None
        return value


class Settings(BaseSettings):
    """The whole configuration of a hub (and, later, of its workers and operations)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        Path("comfymulti-data"),
        description="Folder for the database and all user files (relative to this file).",
    )
    hub: HubSettings = HubSettings()
    store: StoreSettings = StoreSettings()
    queue: QueueSettings = QueueSettings()
    files: FilesSettings = FilesSettings()
    worker: WorkerSettings = WorkerSettings()
    deploy: DeploySettings = DeploySettings()
    backup: BackupSettings = BackupSettings()
    cloud: CloudSettings = CloudSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file (secrets can stay out of it); the file beats defaults.
        return env_settings, init_settings

    @property
    def database_url(self) -> str:
        return self.store.database_url or f"sqlite:///{self.data_dir / 'comfymulti.db'}"

    @property
    def templates_dir(self) -> Path:
        """Relative paths are taken from the data folder."""
        folder = self.files.templates_dir
        return self.data_dir / (folder or "templates")

    @property
    def backup_cache_dir(self) -> Path:
        """Relative paths are taken from the data folder."""
        return self.data_dir / (self.backup.cache_dir or "backup-cache")

    def backup_root(self, backup_set: BackupSet) -> Path:
        """A set's root folder: absolute, or inside the data folder."""
        return self.data_dir / backup_set.root

    @property
    def public_url(self) -> str:
        return (self.hub.public_url or f"http://{self.hub.host}:{self.hub.port}").rstrip("/")


def find_config(explicit: Path | None = None) -> Path | None:
    """The config file to use: --config, then $COMFYMULTI_CONFIG, then ./comfymulti.toml."""
    if explicit is not None:
        return explicit
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    local = Path(CONFIG_NAME)
    return local if local.is_file() else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any) and the environment; errors name the key and the file, or
    the environment variable the bad value came from."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder; pass the file, e.g. "
                              f"--config {path / CONFIG_NAME}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it ({_reason(exc)}); run the command as "
                              "the user owning it, or fix its permissions") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key, value in overrides.items():
        data[key] = value
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        env = _env_variable(loc)
        if env is not None:
            raise ConfigError(f"environment variable {env}: {err['msg']}") from None
        raise ConfigError(f"{where}: {'.'.join(loc)}: {err['msg']}") from None
    except SettingsError as exc:  # a list or table in the environment that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        env = _env_variable([field.group(1)] if field else [])
        raise ConfigError(f"environment variable {env or ENV_PREFIX + '...'}: not valid JSON "
                          "(lists and tables are written as JSON there)") from None
    if not settings.data_dir.is_absolute():
        base = path.resolve().parent if path is not None else Path.cwd()
        settings.data_dir = base / settings.data_dir
    return settings


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _env_variable(loc: list[str]) -> str | None:
    """The COMFYMULTI_* variable that set the value at `loc` (or a table around it), if any."""
    names = {key.upper(): key for key in os.environ if key.upper().startswith(ENV_PREFIX)}
    for depth in range(len(loc), 0, -1):
        candidate = ENV_PREFIX + "__".join(loc[:depth]).upper()
        if candidate in names:
            return names[candidate]
        nested = [k for k in names if k.startswith(candidate + "__")]
        if depth == len(loc) and nested:
            return names[sorted(nested)[0]]
    return None


def secret_key(settings: Settings) -> str:
    """The session-signing key: configured, or generated once and kept in the data folder."""
    if value := settings.hub.secret_key.get_secret_value():
        return value
    key_file = settings.data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, StrEnum):
        value = str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string in ASCII: quotes, backslashes, control and non-ASCII characters
    escaped, so a value can never end its line or the file it is embedded in."""
    def escape(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        if " " <= ch <= "~":
            return ch
        return f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"

    return '"' + "".join(escape(ch) for ch in text) + '"'


def render_toml(values: dict[str, dict[str, Any]] | None = None) -> str:
    """A commented comfymulti.toml with every setting, built from the declarations above."""
    values = values or {}
    lines = ["# ComfyMulti configuration. Every key may also come from the environment as",
             "# COMFYMULTI_<SECTION>__<KEY> (e.g. COMFYMULTI_HUB__SECRET_KEY).", ""]
    top = Settings.model_fields["data_dir"]
    lines += [f"# {top.description}",
              f"data_dir = {toml_value(values.get('', {}).get('data_dir', top.default))}", ""]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, _Section)):
            continue
        lines += _render_table(section, model, values.get(section, {}))
    return "\n".join(lines)


def _render_table(header: str, model: type[_Section], values: dict[str, Any]) -> list[str]:
    """One [table] with every field commented; dicts of sections become [header.field.NAME]."""
    lines, nested = [f"[{header}]"], []
    for name, sub in model.model_fields.items():
        value = values.get(name, sub.get_default(call_default_factory=True))
        if isinstance(value, dict):
            nested.append(f"# {sub.description}")
            for key, item in value.items():
                nested += _render_table(f"{header}.{name}.{key}", type(item), item.model_dump())
            continue
        lines.append(f"# {sub.description}")
        lines.append(f"{name} = {toml_value(value)}")
    return [*lines, "", *nested]


def write_config(directory: Path) -> Path:
    """Write DIR/comfymulti.toml with fresh secrets and the data folder inside DIR."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    if path.exists():
        raise ConfigError(f"{path}: already exists; not overwriting it")
    text = render_toml({"": {"data_dir": "data"},
                        "hub": {"secret_key": secrets.token_urlsafe(32)}})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path
