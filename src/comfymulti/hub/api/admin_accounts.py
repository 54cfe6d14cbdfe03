"""/admin/api/users: accounts from the dashboard (admins only), through the same user
service as the CLI. New passwords come back once, as a printable page of login cards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, model_validator

from comfymulti.errors import Conflict
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import users
from comfymulti.hub.web import bodies
from comfymulti.hub.web.access import get_hub, require_admin
from comfymulti.hub.web.openapi import request_body
from comfymulti.models import User
from comfymulti.queue.jobs import Role

router = APIRouter(prefix="/admin/api/users", tags=["admin"],
                   dependencies=[Depends(require_admin)])

# Accounts made in one request: hashing a password takes ~20 ms of a hub thread.
MAX_BATCH = 100


class CreateBody(BaseModel):
    """Either named accounts, or `count` numbered ones (prefix001, prefix002, …)."""

    names: list[str] = Field(default=[], max_length=MAX_BATCH)
    count: int = Field(default=0, ge=0, le=MAX_BATCH)
    prefix: str = Field(default="user", min_length=1, max_length=32)
    start: int = Field(default=1, ge=0, le=100_000)
    role: Role = Role.PARTICIPANT

    @model_validator(mode="after")
    def _one_way(self) -> CreateBody:
        if bool(self.names) == bool(self.count):
            raise ValueError("give either names or a count")
        return self


class NamesBody(BaseModel):
    names: list[str] = Field(min_length=1, max_length=MAX_BATCH)


def _cards(hub: HubContext, accounts: list[users.NewAccount]) -> dict[str, Any]:
    rows = [(a.name, a.password) for a in accounts]
    return {"names": [a.name for a in accounts],
            "cards": users.cards_page(rows, hub.settings.public_url)}


@router.post("", status_code=201, openapi_extra=request_body(CreateBody))
async def create(request: Request, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """New accounts; the answer holds their login cards (the only time passwords show)."""
    body = await bodies.read_model(request, CreateBody)
    names = body.names or users.numbered_names(body.count, body.prefix, body.start)
    accounts = await hub.run(users.prepare_accounts, names, body.role)
    await hub.tx(lambda s: users.add_accounts(s, accounts))
    users.make_folders(hub.settings.data_dir, names)
    hub.queue.notify.changed()
    return _cards(hub, accounts)


@router.post("/cards", openapi_extra=request_body(NamesBody))
async def new_cards(request: Request, admin: User = Depends(require_admin),
                    hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """New passwords for these accounts only (their sessions end), as printable cards."""
    body = await bodies.read_model(request, NamesBody)
    if admin.name in body.names:
        raise Conflict("change your own password with 'comfymulti users reset-password'")
    accounts = await hub.run(users.prepare_accounts, list(dict.fromkeys(body.names)))
    await hub.tx(lambda s: users.apply_passwords(s, accounts))
    return _cards(hub, accounts)


@router.post("/{name}/disable")
async def disable(name: str, admin: User = Depends(require_admin),
                  hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Ends the account's sessions; its open workspaces close within seconds."""
    if name == admin.name:
        raise Conflict("you cannot disable your own account")
    await hub.tx(lambda s: users.set_disabled(s, name, True))
    hub.queue.notify.changed()
    return {"name": name, "disabled": True}


@router.post("/{name}/enable")
async def enable(name: str, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    await hub.tx(lambda s: users.set_disabled(s, name, False))
    hub.queue.notify.changed()
    return {"name": name, "disabled": False}


@router.post("/{name}/tokens", status_code=201)
async def issue_token(name: str, hub: HubContext = Depends(get_hub)) -> dict[str, str]:
    """A new API token for scripts (shown once; only its hash is kept)."""
    token = await hub.tx(lambda s: users.create_api_token(s, name, "dashboard"))
    hub.queue.notify.changed()
    return {"name": name, "token": token}


@router.delete("/{name}/tokens")
async def revoke_tokens(name: str, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    revoked = await hub.tx(lambda s: users.revoke_api_tokens(s, name))
    hub.queue.notify.changed()
    return {"name": name, "revoked": revoked}
