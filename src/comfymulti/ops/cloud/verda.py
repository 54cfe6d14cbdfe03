"""The only module importing the `verda` SDK: timeouts, retries and our own error tree around it.

The SDK sets no timeout and never retries (reference §1.8), so every request it sends goes
through `_TimedHTTP`: a timeout on each request, and 429 / 5xx answers turned into `_Transient`
before the SDK reads them. `_call` retries those (and timeouts) for reads and idempotent
actions, waiting as Retry-After says; creates are never blindly resent: after an unclear
failure the thing is looked up by its unique name first (a create may have gone through).
Each answer's Date header is kept: the provider's clock, which its bill runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from verda.authentication import AuthenticationService
from verda.balance import BalanceService
from verda.exceptions import APIException
from verda.http_client import HTTPClient, handle_error
from verda.images import ImagesService
from verda.instance_types import InstanceTypesService
from verda.instances import InstancesService
from verda.locations import LocationsService
from verda.ssh_keys import SSHKeysService
from verda.startup_scripts import StartupScriptsService
from verda.volume_types import VolumeTypesService
from verda.volumes import VolumesService

from comfymulti.config import CloudSettings
from comfymulti.errors import CloudError, CloudUnavailable, ConfigError

T = TypeVar("T")
ATTEMPTS = 5
MAX_WAIT = 60.0  # longest single wait between attempts, whatever Retry-After says
SFS_TYPE = "NVMe_Shared"
BLOCK_TYPE = "NVMe"
HOURS_PER_MONTH = 730  # how the console turns a monthly storage price into an hourly one
GONE = ("discontinued", "deleting", "notfound")

_HINTS = {
    "unauthorized_request": "check [cloud] client_id and COMFYMULTI_CLOUD__CLIENT_SECRET",
    "insufficient_funds": "top up the Verda balance (console: Billing), then rerun",
    "not_found": "it no longer exists; 'comfymulti cloud status' shows what does",
}


class _Transient(Exception):
    """A 429 or 5xx answer: the request may be sent again after `wait` seconds."""

    def __init__(self, status: int, wait: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.wait = status, wait


@dataclass
class _Clock:
    """The provider's time as its last answer's Date header gave it."""

    server_time: float | None = None

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if date := response.headers.get("Date"):
            self.server_time = parsedate_to_datetime(date).timestamp()
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After", "")
            raise _Transient(response.status_code, float(after) if after.isdigit() else None)


class _TimedAuth(AuthenticationService):
    """The SDK's token exchange with a timeout (its own sends none)."""

    def __init__(self, cfg: CloudSettings, clock: _Clock) -> None:
        super().__init__(cfg.client_id, cfg.client_secret.get_secret_value(), cfg.base_url)
        self._timeout, self._clock = cfg.api_timeout, clock

    def authenticate(self) -> dict[str, Any]:
        return self._token({"grant_type": "client_credentials", "client_id": self._client_id,
                            "client_secret": self._client_secret})

    def refresh(self) -> dict[str, Any]:
        return self._token({"grant_type": "refresh_token", "refresh_token": self._refresh_token})

    def _token(self, payload: dict[str, str]) -> dict[str, Any]:
        response = requests.post(self._base_url + "/oauth2/token", json=payload,
                                 headers=self._generate_headers(), timeout=self._timeout,
                                 hooks={"response": self._clock.hook})
        handle_error(response)
        data: dict[str, Any] = response.json()
        self._access_token, self._refresh_token = data["access_token"], data["refresh_token"]
        self._expires_at = time.time() + data["expires_in"]
        return data


class _TimedHTTP(HTTPClient):
    """The SDK's HTTP client with a timeout and the Date / 429 / 5xx hook on every request."""

    def __init__(self, auth: _TimedAuth, cfg: CloudSettings, clock: _Clock) -> None:
        self._timeout, self._clock = cfg.api_timeout, clock
        super().__init__(auth, cfg.base_url)

    def _request(self, method: str, url: str, json: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None, path_params: dict[str, Any] | None = None,
                 **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        kwargs.setdefault("hooks", {"response": self._clock.hook})
        return super()._request(method, url, json=json, params=params,
                                path_params=path_params, **kwargs)


@dataclass(frozen=True)
class Instance:
    id: str
    hostname: str
    description: str
    status: str
    instance_type: str
    price_per_hour: float
    created_at: float
    os_volume_id: str | None
    location: str
    is_spot: bool


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    type: str
    size: int
    status: str
    created_at: float
    location: str
    instance_ids: tuple[str, ...]
    is_os_volume: bool
    price_per_hour: float
    mount_command: str | None

    @property
    def shared(self) -> bool:
        return self.type == SFS_TYPE


@dataclass(frozen=True)
class InstanceType:
    name: str
    price_per_hour: float
    spot_price_per_hour: float
    gpus: int


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _instance(raw: Any) -> Instance:
    return Instance(raw.id, raw.hostname, raw.description, raw.status, raw.instance_type,
                    float(raw.price_per_hour), _epoch(raw.created_at), raw.os_volume_id,
                    raw.location, bool(raw.is_spot))


def _volume(raw: Any) -> Volume:
    ids = {i["id"] for i in raw.instances or []} | ({raw.instance_id} if raw.instance_id else set())
    monthly = raw.monthly_price if raw.monthly_price is not None else 0.0
    return Volume(raw.id, raw.name, raw.type, int(raw.size), raw.status, _epoch(raw.created_at),
                  raw.location, tuple(sorted(ids)), bool(raw.is_os_volume),
                  float(monthly) / HOURS_PER_MONTH, raw.mount_command)


class Verda:
    """Verda through the SDK, one call at a time; every failure becomes a CloudError."""

    def __init__(self, cfg: CloudSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        if not cfg.client_id or not cfg.client_secret.get_secret_value():
            raise ConfigError("[cloud] client_id and client_secret are not set: put them in the "
                              "config or COMFYMULTI_CLOUD__CLIENT_ID / __CLIENT_SECRET")
        self.cfg, self._sleep, self.clock = cfg, sleep, _Clock()
        self._http: _TimedHTTP | None = None

    def _client(self) -> _TimedHTTP:
        # Built on first use: the SDK authenticates in its constructor (network I/O).
        if self._http is None:
            self._http = self._call("sign in", lambda: _TimedHTTP(
                _TimedAuth(self.cfg, self.clock), self.cfg, self.clock))
        return self._http

    def now(self) -> float:
        """The provider's time at its last answer (our own clock before any answer)."""
        return self.clock.server_time or time.time()

    def _call(self, what: str, fn: Callable[[], T], retry: bool = True) -> T:
        """Run one SDK call; retry 429 always (not processed), 5xx and timeouts only if
        `retry` (reads and idempotent actions). Raises CloudError naming `what`."""
        for attempt in range(ATTEMPTS):
            try:
                return fn()
            except _Transient as exc:
                if exc.status != 429 and not retry:
                    raise CloudUnavailable(f"Verda: {what}: HTTP {exc.status}; rerun the "
                                           "command (it finds what was already done)") from None
                failure, wait = f"HTTP {exc.status}", exc.wait
            except (requests.Timeout, requests.ConnectionError) as exc:
                reason = (f"no answer within {self.cfg.api_timeout:g} s"
                          if isinstance(exc, requests.Timeout)
                          else f"cannot reach {self.cfg.base_url}")
                if not retry:
                    raise CloudUnavailable(f"Verda: {what}: {reason}; rerun the command "
                                           "(it finds what was already done)") from None
                failure, wait = reason, None
            except APIException as exc:
                hint = _HINTS.get(exc.code or "", "")
                raise CloudError(f"Verda: {what}: {exc.message or exc.code}"
                                 + (f"; {hint}" if hint else "")) from None
            except ValueError as exc:  # the SDK's own checks, or a non-JSON error body
                raise CloudError(f"Verda: {what}: {exc}") from None
            if attempt + 1 < ATTEMPTS:
                self._sleep(min(MAX_WAIT, wait if wait is not None else 0.5 * 2 ** attempt))
        raise CloudUnavailable(f"Verda: {what}: still {failure} after {ATTEMPTS} tries; "
                               "try again later")

    # -- catalogue ----------------------------------------------------------------------------

    def instance_types(self) -> dict[str, InstanceType]:
        raw = self._call("list instance types",
                         lambda: InstanceTypesService(self._client()).get())
        return {t.instance_type: InstanceType(t.instance_type, t.price_per_hour,
                                              t.spot_price_per_hour,
                                              int(t.gpu.get("number_of_gpus", 1)))
                for t in raw}

    def is_available(self, instance_type: str, spot: bool) -> bool:
        return bool(self._call(f"check capacity for {instance_type}", lambda: InstancesService(
            self._client()).is_available(instance_type, spot, self.cfg.location)))

    def images(self) -> list[str]:
        return [i.image_type for i in self._call(
            "list images", lambda: ImagesService(self._client()).get())]

    def locations(self) -> list[str]:
        return [loc["code"] for loc in self._call(
            "list locations", lambda: LocationsService(self._client()).get())]

    def ssh_key_ids(self) -> list[str]:
        return [k.id for k in self._call("list SSH keys",
                                         lambda: SSHKeysService(self._client()).get())]

    def balance(self) -> float:
        return float(self._call("read the balance",
                                lambda: BalanceService(self._client()).get()).amount)

    def storage_per_hour(self, size_gb: int, shared: bool = False) -> float:
        """What a volume of this size costs per hour (monthly price / 730, as the console)."""
        want = SFS_TYPE if shared else BLOCK_TYPE
        types = self._call("list volume types", lambda: VolumeTypesService(self._client()).get())
        monthly = next((t.price_per_month_per_gb for t in types if t.type == want), None)
        if monthly is None:
            raise CloudError(f"Verda lists no volume type {want}")
        return size_gb * float(monthly) / HOURS_PER_MONTH

    def startup_script(self, name: str, script: str) -> str:
        """The id of the script named `name` holding `script`, created if there is none.
        Older versions under that name go: scripts are stored in plain text at Verda."""
        service = StartupScriptsService(self._client())
        for found in self._call("list startup scripts", service.get):
            if found.name == name and found.script == script:
                return str(found.id)
            if found.name == name:
                self._call(f"delete old startup script {name}",
                           lambda sid=found.id: service.delete_by_id(sid))
        return self._create(f"create startup script {name}",
                            lambda: service.create(name, script).id,
                            lambda: next((s.id for s in service.get()
                                          if s.name == name and s.script == script), None))

    # -- instances ----------------------------------------------------------------------------

    def instances(self) -> list[Instance]:
        return [_instance(i) for i in self._call(
            "list instances", lambda: InstancesService(self._client()).get())]

    def instance(self, instance_id: str) -> Instance:
        return _instance(self._call(f"read instance {instance_id}", lambda: InstancesService(
            self._client()).get_by_id(instance_id)))

    def find_instance(self, hostname: str) -> Instance | None:
        return next((i for i in self.instances()
                     if i.hostname == hostname and i.status not in GONE), None)

    def create_instance(self, hostname: str, description: str, instance_type: str, spot: bool,
                        script_id: str | None) -> Instance:
        """Order an instance (without data volumes: those are attached once it is offline)."""
        cfg = self.cfg
        service = InstancesService(self._client())
        return self._create(
            f"create instance {hostname} ({instance_type}{', spot' if spot else ''})",
            lambda: _instance(service.create(
                instance_type, cfg.image, hostname, description, list(cfg.ssh_key_ids),
                cfg.location, script_id, os_volume={"name": f"{hostname}-os",
                                                    "size": cfg.os_volume_gb},
                is_spot=spot, wait_for_status=None)),
            lambda: self.find_instance(hostname))

    def action(self, instance_id: str, action: str, volume_ids: list[str] | None = None) -> None:
        """start, shutdown or delete. A delete always names the volumes it deletes (to trash)."""
        if action == "delete" and volume_ids is None:
            raise ValueError("delete needs an explicit volume list")
        self._call(f"{action} instance {instance_id}", lambda: InstancesService(
            self._client()).action(instance_id, action, volume_ids=volume_ids))

    # -- volumes ------------------------------------------------------------------------------

    def volumes(self) -> list[Volume]:
        return [_volume(v) for v in self._call(
            "list volumes", lambda: VolumesService(self._client()).get())]

    def trash(self) -> list[Volume]:
        return [_volume(v) for v in self._call(
            "list trash", lambda: VolumesService(self._client()).get_in_trash())]

    def find_volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes() if v.name == name), None)

    def create_volume(self, name: str, shared: bool, size_gb: int) -> Volume:
        service = VolumesService(self._client())
        vtype = SFS_TYPE if shared else BLOCK_TYPE
        return self._create(f"create volume {name} ({vtype}, {size_gb} GB)",
                            lambda: _volume(service.create(vtype, name, size_gb,
                                                           location=self.cfg.location)),
                            lambda: self.find_volume(name))

    def attach(self, volume_id: str, instance_id: str) -> None:
        self._call(f"attach volume {volume_id}", lambda: VolumesService(self._client()).attach(
            volume_id, instance_id))

    def detach(self, volume_id: str) -> None:
        self._call(f"detach volume {volume_id}",
                   lambda: VolumesService(self._client()).detach(volume_id))

    def delete_volume(self, volume_id: str) -> None:
        """To the trash (96 h, not billed unless restored)."""
        self._call(f"delete volume {volume_id}",
                   lambda: VolumesService(self._client()).delete(volume_id))

    def _create(self, what: str, create: Callable[[], T], find: Callable[[], T | None]) -> T:
        """Create once: after an unclear failure (5xx, timeout) look for it by name before
        sending the create again, so a create that went through is not paid for twice."""
        for attempt in range(ATTEMPTS):
            try:
                return self._call(what, create, retry=False)
            except CloudUnavailable:
                # A create that reached the server has had this long to finish by now.
                self._sleep(self.cfg.api_timeout)
                if (found := self._call(f"look up {what}", find)) is not None:
                    return found
                if attempt + 1 == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
