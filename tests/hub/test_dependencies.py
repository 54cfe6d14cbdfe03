"""Every dependency of every hub route is a coroutine function: FastAPI runs a plain `def`
dependency in its thread pool, a thread hop on every request that used it (`get_hub`, on
94 routes, was one: 7 % of the hub's GIL time under the load bench)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

from tests.conftest import HubHarness


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _routes(routes: list[Any]) -> Iterator[APIRoute | APIWebSocketRoute]:
    """Every route, also those of included routers (kept as one entry per router)."""
    for route in routes:
        if isinstance(route, APIRoute | APIWebSocketRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _routes(router.routes)


def test_no_route_has_a_dependency_that_runs_in_a_thread(
        make_hub: Callable[..., HubHarness]) -> None:
    routes = list(_routes(make_hub().app.routes))
    assert len(routes) > 50
    sync = {f"{route.path}: {dep.call.__qualname__}"
            for route in routes for dep in _dependencies(route.dependant)
            if dep.call is not None and not inspect.iscoroutinefunction(dep.call)}
    assert not sync
