"""A Verda API test server: real HTTP on 127.0.0.1, spoken to by the official `verda` SDK.

Built from the Verda reference (verda-and-r2.md) §1 and §5: OAuth2 client credentials with short
token lifetimes, plain-text ids from create calls (202), JSON `{code, message}` on every error,
instances going ordered -> provisioning -> running over successive reads (ip null until running),
no delete while provisioning, delete with the three `volume_ids` cases, block volumes attached
only to an offline instance in the same location, volumes to trash (or gone when permanent).

Its own clock (`advance()` moves it; every answer's Date header shows it) and billing ledger:
compute from creation to delete at the instance's price per hour, storage at its monthly price
/ 730 per hour, both per second. Failures are injected by rule (429 with Retry-After, 5xx, slow
answers, no capacity, spot unavailable, insufficient funds); every call is logged.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-never-printed"
STORAGE_PRICE_GB_MONTH = 0.20  # NVMe and NVMe_Shared alike (reference §2.1)
HOURS_PER_MONTH = 730  # the console's monthly -> hourly rule (reference §1.5)
LOCATIONS = [{"code": "FIN-01", "name": "Finland 1", "country_code": "FI"},
             {"code": "FIN-02", "name": "Finland 2", "country_code": "FI"},
             {"code": "FIN-03", "name": "Finland 3", "country_code": "FI"}]
# instance type -> (on-demand price per hour, GPUs), reference §2.1 (Aug 2026)
TYPES = {"1H100.80S.30V": ("3.25", 1), "1A100.22V": ("1.79", 1), "1B200.30V": ("6.11", 1),
         "2H100.80S.60V": ("6.50", 2)}
IMAGES = ["ubuntu-24.04-cuda-12.8-open-docker", "ubuntu-22.04-cuda-12.4-docker"]
TRANSITIONS = {"ordered": "provisioning", "provisioning": "running"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Fault:
    """Answer `times` matching calls with an error (status, code) or after `delay` seconds."""

    method: str
    path: str  # regex on the path after /v1
    times: int
    status: int = 0
    code: str = ""
    message: str = ""
    delay: float = 0.0
    retry_after: int | None = None


@dataclass
class Charge:
    """One line of the ledger: a resource billed per second from start until end."""

    resource_id: str
    kind: str
    name: str
    per_hour: float
    start: int
    end: int | None = None

    def cost(self, now: int) -> float:
        return ((self.end if self.end is not None else now) - self.start) * self.per_hour / 3600


@dataclass
class FakeVerda:
    token_seconds: int = 3600
    balance: float = 1000.0
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    no_capacity: set[tuple[str, bool]] = field(default_factory=set)  # (type, spot)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    scripts: dict[str, dict[str, str]] = field(default_factory=dict)
    ssh_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    ledger: list[Charge] = field(default_factory=list)
    on_running: Callable[[dict[str, Any]], None] | None = None
    offset: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- the clock and the bill -------------------------------------------------------------

    def now(self) -> int:
        return int(time.time()) + self.offset

    def advance(self, seconds: int) -> None:
        with self.lock:
            self.offset += seconds

    def billed(self) -> float:
        now = self.now()
        return sum(c.cost(now) for c in self.ledger)

    def billing(self) -> list[Charge]:
        return [c for c in self.ledger if c.end is None]

    def fail(self, method: str, path: str, status: int, code: str, message: str,
             times: int = 1, retry_after: int | None = None) -> None:
        self.faults.append(Fault(method, path, times, status, code, message,
                                 retry_after=retry_after))

    def slow(self, method: str, path: str, delay: float, times: int = 1) -> None:
        self.faults.append(Fault(method, path, times, delay=delay))

    def live_instances(self) -> list[dict[str, Any]]:
        return [i for i in self.instances.values() if i["status"] != "discontinued"]

    def live_volumes(self) -> list[dict[str, Any]]:
        return [v for v in self.volumes.values() if v["status"] != "deleted"]

    # -- helpers ------------------------------------------------------------------------------

    def _iso(self, t: int) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    def _stop_charge(self, resource_id: str, now: int) -> None:
        for charge in self.ledger:
            if charge.resource_id == resource_id and charge.end is None:
                charge.end = now

    def _new_volume(self, name: str, size: int, vtype: str, location: str, now: int,
                    is_os: bool = False) -> dict[str, Any]:
        vid = str(uuid.uuid4())
        monthly = round(size * STORAGE_PRICE_GB_MONTH, 6)
        shared = vtype == "NVMe_Shared"
        vol = {"id": vid, "status": "ordered", "name": name, "size": size, "type": vtype,
               "is_os_volume": is_os, "created_at": self._iso(now), "target": None,
               "location": location, "instance_id": None, "instances": [], "ssh_key_ids": [],
               "deleted_at": None, "contract": "PAY_AS_YOU_GO", "monthly_price": monthly,
               "base_hourly_cost": monthly / HOURS_PER_MONTH, "currency": "usd",
               "pseudo_path": f"/{name}-{vid[:8]}" if shared else None,
               "mount_command": (f"mount -t nfs -o nconnect=16 nfs.{location.lower()}"
                                 f".datacrunch.io:/{name}-{vid[:8]} /mnt/{name}")
               if shared else None}
        self.volumes[vid] = vol
        self.ledger.append(Charge(vid, "volume", name, monthly / HOURS_PER_MONTH, now))
        return vol

    def _instance(self, iid: str) -> dict[str, Any]:
        inst = self.instances.get(iid)
        if inst is None:
            raise ApiError(404, "not_found", "Invalid instance id")
        return inst

    def _volume(self, vid: str) -> dict[str, Any]:
        vol = self.volumes.get(vid)
        if vol is None:
            raise ApiError(404, "not_found", "Invalid volume id")
        return vol

    def _progress(self, inst: dict[str, Any]) -> None:
        """One step along ordered -> provisioning -> running per read, as the real API moves."""
        nxt = TRANSITIONS.get(inst["status"])
        if nxt is None:
            return
        inst["status"] = nxt
        if nxt == "running":
            inst["ip"] = f"10.0.{len(self.instances) % 250}.{len(self.instances) % 200 + 10}"
            if self.on_running is not None:
                self.on_running(dict(inst))

    def _settle(self, vol: dict[str, Any]) -> None:
        if vol["status"] == "ordered":
            vol["status"] = "detached"

    # -- routes ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any,
               bearer: str | None, now: int) -> tuple[int, Any]:
        if method == "POST" and path == "/oauth2/token":
            return self._token(body, now)
        if bearer is None or self.tokens.get(bearer, 0) <= now:
            raise ApiError(401, "unauthorized_request", "Invalid or expired access token")
        for (verb, pattern), fn in _ROUTES.items():
            if verb == method and (m := re.fullmatch(pattern, path)):
                return fn(self, query, body, now, *m.groups())
        raise ApiError(404, "not_found", f"No route {method} {path}")

    def _token(self, body: dict[str, Any], now: int) -> tuple[int, Any]:
        grant = body.get("grant_type")
        if grant == "client_credentials":
            if (body.get("client_id"), body.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                raise ApiError(401, "unauthorized_request", "Invalid client credentials")
        elif grant == "refresh_token":
            if body.get("refresh_token") not in self.refresh_tokens:
                raise ApiError(401, "unauthorized_request", "Invalid refresh token")
        else:
            raise ApiError(400, "invalid_request", "Unsupported grant_type")
        access, refresh = uuid.uuid4().hex, uuid.uuid4().hex
        self.tokens[access] = now + self.token_seconds
        self.refresh_tokens.add(refresh)
        return 200, {"access_token": access, "refresh_token": refresh, "scope": "cloud-api-v1",
                     "token_type": "Bearer", "expires_in": self.token_seconds}

    def _types(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, [{"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, t)), "instance_type": t,
                      "price_per_hour": price, "spot_price": f"{float(price) / 2:.4f}",
                      "dynamic_price": price, "max_dynamic_price": price,
                      "serverless_price": None, "serverless_spot_price": None,
                      "description": f"{gpus}x GPU", "cpu": {"number_of_cores": 30 * gpus},
                      "gpu": {"number_of_gpus": gpus}, "memory": {"size_in_gigabytes": 120},
                      "gpu_memory": {"size_in_gigabytes": 80 * gpus},
                      "storage": {}, "best_for": [], "model": t[1:5], "name": t, "p2p": "",
                      "currency": query.get("currency", "usd"), "manufacturer": "NVIDIA",
                      "display_name": t, "supported_os": IMAGES}
                     for t, (price, gpus) in TYPES.items()]

    def _availability(self, query: dict[str, str], body: Any, now: int,
                      itype: str | None = None) -> tuple[int, Any]:
        spot = query.get("isSpot") == "true"
        if itype is not None:
            return 200, itype in TYPES and (itype, spot) not in self.no_capacity
        return 200, [{"location_code": loc["code"], "availabilities": [
            t for t in TYPES if (t, spot) not in self.no_capacity]} for loc in LOCATIONS]

    def _images(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, [{"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, i)), "name": i, "image_type": i,
                      "details": []} for i in IMAGES]

    def _locations(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, LOCATIONS

    def _balance(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, {"amount": round(self.balance - self.billed(), 2), "currency": "usd"}

    def _volume_types(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, [{"type": t, "price": {"price_per_month_per_gb": STORAGE_PRICE_GB_MONTH,
                                           "cps_per_gb": STORAGE_PRICE_GB_MONTH / 730 / 3600,
                                           "currency": "usd"}, "is_shared_fs": t == "NVMe_Shared"}
                     for t in ("NVMe", "NVMe_Shared")]

    def _list_named(self, store: dict[str, dict[str, str]]) -> tuple[int, Any]:
        return 200, list(store.values())

    def _create_named(self, store: dict[str, dict[str, str]], body: dict[str, Any],
                      text_field: str) -> tuple[int, Any]:
        if not body.get("name") or not body.get(text_field):
            raise ApiError(400, "invalid_request", f"name and {text_field} are required")
        nid = str(uuid.uuid4())
        store[nid] = {"id": nid, "name": body["name"], text_field: body[text_field]}
        return 202, nid

    def _get_named(self, store: dict[str, dict[str, str]], nid: str) -> tuple[int, Any]:
        if nid not in store:
            raise ApiError(404, "not_found", "Invalid id")
        return 200, [store[nid]]  # the by-id shape is a one-element list (reference §5)

    def _delete_named(self, store: dict[str, dict[str, str]], nid: str) -> tuple[int, Any]:
        if store.pop(nid, None) is None:
            raise ApiError(404, "not_found", "Invalid id")
        return 200, None

    def _list_instances(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        for inst in self.live_instances():
            self._progress(inst)
        status = query.get("status")
        return 200, [i for i in self.live_instances() if status in (None, i["status"])]

    def _get_instance(self, query: dict[str, str], body: Any, now: int, iid: str
                      ) -> tuple[int, Any]:
        inst = self._instance(iid)
        self._progress(inst)
        return 200, inst

    def _create_instance(self, query: dict[str, str], body: dict[str, Any], now: int
                         ) -> tuple[int, Any]:
        for key in ("instance_type", "image", "hostname", "description", "location_code"):
            if not body.get(key):
                raise ApiError(400, "invalid_request", f"{key} is required")
        itype, spot, loc = body["instance_type"], bool(body.get("is_spot")), body["location_code"]
        if itype not in TYPES:
            raise ApiError(400, "invalid_request", f"Invalid instance type {itype}")
        if loc not in {x["code"] for x in LOCATIONS}:
            raise ApiError(400, "invalid_request", f"Invalid location {loc}")
        if body["image"] not in IMAGES and body["image"] not in self.volumes:
            raise ApiError(400, "invalid_request", f"Invalid image {body['image']}")
        if (itype, spot) in self.no_capacity:
            kind = "spot " if spot else ""
            raise ApiError(400, "invalid_request",
                           f"Not enough {kind}capacity for {itype} in {loc}")
        price = float(TYPES[itype][0]) / (2 if spot else 1)
        if self.balance - self.billed() < price / 6:  # 10 prepaid minutes (reference §1.4)
            raise ApiError(400, "insufficient_funds", "Insufficient funds")
        for vid in body.get("existing_volumes") or []:
            vol = self._volume(vid)
            if vol["location"] != loc or vol["instance_id"] is not None:
                raise ApiError(400, "invalid_request",
                               f"Volume {vid} is not a detached volume in {loc}")
        iid = str(uuid.uuid4())
        os_spec = body.get("os_volume") or {"name": f"{body['hostname']}-os", "size": 50}
        os_vol = self._new_volume(os_spec["name"], int(os_spec["size"]), "NVMe", loc, now, True)
        inst = {"id": iid, "instance_type": itype, "price_per_hour": price,
                "hostname": body["hostname"], "description": body["description"],
                "status": "ordered", "created_at": self._iso(now),
                "ssh_key_ids": body.get("ssh_key_ids") or [], "cpu": {}, "gpu": {},
                "memory": {}, "storage": {}, "gpu_memory": {}, "ip": None,
                "os_volume_id": os_vol["id"], "location": loc, "image": body["image"],
                "startup_script_id": body.get("startup_script_id"), "is_spot": spot,
                "contract": "SPOT" if spot else "PAY_AS_YOU_GO", "pricing": "FIXED_PRICE"}
        self._attach(os_vol, inst, "vda")
        for spec in body.get("volumes") or []:
            vol = self._new_volume(spec["name"], int(spec["size"]), spec["type"], loc, now)
            self._attach(vol, inst)
        for vid in body.get("existing_volumes") or []:
            self._attach(self.volumes[vid], inst)
        self.instances[iid] = inst
        self.ledger.append(Charge(iid, "instance", body["hostname"], price, now))
        return 202, iid

    def _attach(self, vol: dict[str, Any], inst: dict[str, Any], target: str | None = None
                ) -> None:
        if vol["type"] == "NVMe_Shared":
            vol["instances"].append({"id": inst["id"]})
            vol["instance_id"] = inst["id"]
            vol["status"] = "exported"
            return
        taken = {v["target"] for v in self.volumes.values() if v["instance_id"] == inst["id"]}
        vol["target"] = target or next(f"vd{c}" for c in "bcdefgh" if f"vd{c}" not in taken)
        vol["instance_id"], vol["status"] = inst["id"], "attached"

    def _detach(self, vol: dict[str, Any], inst_id: str | None = None) -> None:
        if vol["type"] == "NVMe_Shared":
            vol["instances"] = [i for i in vol["instances"] if inst_id not in (None, i["id"])]
            vol["instance_id"] = vol["instances"][0]["id"] if vol["instances"] else None
            return
        vol["instance_id"], vol["target"], vol["status"] = None, None, "detached"

    def _trash(self, vol: dict[str, Any], permanent: bool, now: int) -> None:
        self._detach(vol)
        self._stop_charge(vol["id"], now)
        if permanent:
            del self.volumes[vol["id"]]
        else:
            vol["status"], vol["deleted_at"] = "deleted", self._iso(now)

    def _instance_action(self, query: dict[str, str], body: dict[str, Any], now: int
                         ) -> tuple[int, Any]:
        ids = body.get("id")
        ids = [ids] if isinstance(ids, str) else ids or []
        results, failed = [], False
        for iid in ids:
            try:
                self._one_action(self._instance(iid), body, now)
                results.append({"action": body.get("action"), "instanceId": iid,
                                "status": "success", "statusCode": 202})
            except ApiError as exc:
                failed = True
                if len(ids) == 1:
                    raise
                results.append({"action": body.get("action"), "instanceId": iid,
                                "status": "error", "error": exc.message,
                                "statusCode": exc.status})
        return (207 if failed else 202), results

    def _one_action(self, inst: dict[str, Any], body: dict[str, Any], now: int) -> None:
        action, status = body.get("action"), inst["status"]
        if action == "shutdown":
            if status != "running":
                raise ApiError(400, "invalid_request", f"Can't shut down a {status} instance")
            inst["status"] = "offline"
        elif action == "start":
            if status != "offline":
                raise ApiError(400, "invalid_request", f"Can't start a {status} instance")
            inst["status"] = "provisioning"
        elif action == "delete":
            if status in ("ordered", "provisioning"):
                raise ApiError(400, "invalid_request", "Can't discontinue a provisioning instance")
            if status == "discontinued":
                raise ApiError(400, "invalid_request",
                               "Can't discontinue a discontinued instance")
            mine = [v for v in self.volumes.values()
                    if v["instance_id"] == inst["id"] or {"id": inst["id"]} in v["instances"]]
            listed = body.get("volume_ids")
            doomed = {inst["os_volume_id"]} if listed is None else set(listed)
            for vol in mine:
                if vol["id"] in doomed:
                    self._trash(vol, bool(body.get("delete_permanently")), now)
                else:
                    self._detach(vol, inst["id"])
            inst["status"], inst["ip"] = "discontinued", None
            self._stop_charge(inst["id"], now)
        else:
            raise ApiError(400, "invalid_request", f"Unknown action {action}")

    def _list_volumes(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        for vol in self.volumes.values():
            self._settle(vol)
        status = query.get("status")
        return 200, [v for v in self.live_volumes() if status in (None, v["status"])]

    def _trash_list(self, query: dict[str, str], body: Any, now: int) -> tuple[int, Any]:
        return 200, [v for v in self.volumes.values() if v["status"] == "deleted"]

    def _get_volume(self, query: dict[str, str], body: Any, now: int, vid: str
                    ) -> tuple[int, Any]:
        vol = self._volume(vid)
        self._settle(vol)
        return 200, vol

    def _create_volume(self, query: dict[str, str], body: dict[str, Any], now: int
                       ) -> tuple[int, Any]:
        for key in ("type", "name", "size", "location_code"):
            if not body.get(key):
                raise ApiError(400, "invalid_request", f"{key} is required")
        if body["type"] not in ("NVMe", "NVMe_Shared"):
            raise ApiError(400, "invalid_request", f"Invalid volume type {body['type']}")
        if self.balance - self.billed() <= 0:
            raise ApiError(400, "insufficient_funds", "Insufficient funds")
        vol = self._new_volume(body["name"], int(body["size"]), body["type"],
                               body["location_code"], now)
        if body.get("instance_id"):
            self._volume_action({"id": [vol["id"]], "action": "attach",
                                 "instance_id": body["instance_id"]}, now)
        return 202, vol["id"]

    def _put_volumes(self, query: dict[str, str], body: dict[str, Any], now: int
                     ) -> tuple[int, Any]:
        self._volume_action(body, now)
        return 202, None

    def _volume_action(self, body: dict[str, Any], now: int) -> None:
        ids = body.get("id")
        ids = [ids] if isinstance(ids, str) else ids or []
        action = body.get("action")
        for vid in ids:
            vol = self._volume(vid)
            self._settle(vol)
            shared = vol["type"] == "NVMe_Shared"
            owner = self.instances.get(vol["instance_id"] or "")
            if action == "attach":
                inst = self._instance(body.get("instance_id") or "")
                if vol["location"] != inst["location"]:
                    raise ApiError(400, "invalid_request", "Volume and instance locations differ")
                if not shared and vol["instance_id"] is not None:
                    raise ApiError(400, "invalid_request", "Volume is already attached")
                if not shared and inst["status"] != "offline":
                    raise ApiError(400, "invalid_request",
                                   "Instance must be shut down to attach a volume")
                self._attach(vol, inst)
            elif action == "detach":
                if not shared and owner is not None and owner["status"] not in (
                        "offline", "discontinued"):
                    raise ApiError(400, "invalid_request",
                                   "Instance must be shut down to detach a volume")
                self._detach(vol)
            elif action == "delete":
                if not shared and owner is not None and owner["status"] not in (
                        "offline", "discontinued"):
                    raise ApiError(400, "invalid_request",
                                   "Instance must be shut down to delete an attached volume")
                self._trash(vol, bool(body.get("is_permanent")), now)
            elif action == "resize":
                if int(body.get("size", 0)) <= vol["size"]:
                    raise ApiError(400, "invalid_request", "Volumes can only grow")
                vol["size"] = int(body["size"])
            else:
                raise ApiError(400, "invalid_request", f"Unknown action {action}")

    def _delete_volume(self, query: dict[str, str], body: dict[str, Any] | None, now: int,
                       vid: str) -> tuple[int, Any]:
        vol = self.volumes.get(vid)
        if vol is None:
            raise ApiError(404, "not_found", "Invalid volume id")
        self._trash(vol, True, now)
        return 202, None


_ROUTES: dict[tuple[str, str], Callable[..., tuple[int, Any]]] = {
    ("GET", "/instance-types"): FakeVerda._types,
    ("GET", "/instance-availability"): FakeVerda._availability,
    ("GET", "/instance-availability/([^/]+)"): FakeVerda._availability,
    ("GET", "/images"): FakeVerda._images,
    ("GET", "/locations"): FakeVerda._locations,
    ("GET", "/balance"): FakeVerda._balance,
    ("GET", "/volume-types"): FakeVerda._volume_types,
    ("GET", "/sshkeys"): lambda f, q, b, n: f._list_named(f.ssh_keys),
    ("POST", "/sshkeys"): lambda f, q, b, n: f._create_named(f.ssh_keys, b, "key"),
    ("GET", "/sshkeys/([^/]+)"): lambda f, q, b, n, i: f._get_named(f.ssh_keys, i),
    ("DELETE", "/sshkeys/([^/]+)"): lambda f, q, b, n, i: f._delete_named(f.ssh_keys, i),
    ("GET", "/scripts"): lambda f, q, b, n: f._list_named(f.scripts),
    ("POST", "/scripts"): lambda f, q, b, n: f._create_named(f.scripts, b, "script"),
    ("GET", "/scripts/([^/]+)"): lambda f, q, b, n, i: f._get_named(f.scripts, i),
    ("DELETE", "/scripts/([^/]+)"): lambda f, q, b, n, i: f._delete_named(f.scripts, i),
    ("GET", "/instances"): FakeVerda._list_instances,
    ("POST", "/instances"): FakeVerda._create_instance,
    ("PUT", "/instances"): FakeVerda._instance_action,
    ("GET", "/instances/([^/]+)"): FakeVerda._get_instance,
    ("GET", "/volumes"): FakeVerda._list_volumes,
    ("POST", "/volumes"): FakeVerda._create_volume,
    ("PUT", "/volumes"): FakeVerda._put_volumes,
    ("GET", "/volumes/trash"): FakeVerda._trash_list,
    ("GET", "/volumes/([^/]+)"): FakeVerda._get_volume,
    ("DELETE", "/volumes/([^/]+)"): FakeVerda._delete_volume,
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _now = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The fake's clock, read once per request: the Date a client sees is the billing time.
        return formatdate(self._now, usegmt=True)

    def _serve(self) -> None:
        fake = self.server.fake
        self._now = fake.now()
        url = urlsplit(self.path)
        path = url.path.removeprefix("/v1")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        bearer = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        fault = self._fault(fake, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        headers: dict[str, str] = {}
        try:
            if fault is not None and fault.status:
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                raise ApiError(fault.status, fault.code, fault.message, headers)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(400, "invalid_request", "Body is not JSON") from None
            with fake.lock:
                status, answer = fake.handle(self.command, path, query, body or {}, bearer,
                                             self._now)
        except ApiError as exc:
            status, answer, headers = exc.status, {"code": exc.code, "message": exc.message}, \
                exc.headers
        fake.calls.append((self.command, path, status))
        if isinstance(answer, str):  # created ids come back as plain text
            data, ctype = answer.encode(), "text/plain"
        else:
            data, ctype = json.dumps(answer).encode(), "application/json"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, fake: FakeVerda, path: str) -> Fault | None:
        with fake.lock:
            for fault in fake.faults:
                if fault.times > 0 and fault.method == self.command and re.fullmatch(
                        fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeVerda) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a slow answer (the point of a slowness fault) is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class VerdaServer:
    """The fake on a free loopback port, served from a thread; `.base_url` ends in /v1."""

    def __init__(self, fake: FakeVerda | None = None) -> None:
        self.fake = fake or FakeVerda()
        self._server = _Server(self.fake)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
