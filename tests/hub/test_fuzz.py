"""Fuzz the hub from its own OpenAPI document with schemathesis, once per kind of caller:
a participant (Bearer API token, /api/v1 and their own /u/<name>/), an admin (/admin/api) and
a worker (/worker/v1 with its token and registered X-Worker-Id). Positive and negative
examples per operation, with a fixed seed; no answer may be a 5xx, and an answer must be of
the documented content type and shape (JSON where the document promises JSON).

The hub runs under uvicorn on a real port (real HTTP, like a script or a worker), with a tiny
long-poll so that lease and commands calls answer at once."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from comfymulti.queue.jobs import Role
from tests.conftest import HubHarness, simple_prompt, tiny_catalog

EXAMPLES = 15  # per operation and generation mode
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]

# Catalog uploads are gzip-compressed JSON: some valid catalogs, some JSON that is none, and
# bytes that are not gzip at all.
schemathesis.openapi.media_type("application/gzip", st.one_of(
    st.just(gzip.compress(json.dumps(tiny_catalog()).encode())),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4)
    .map(lambda value: gzip.compress(json.dumps(value).encode())),
    st.binary(max_size=64),
))


@dataclass
class Tally:
    """What one fuzz run did, printed by the test so a run can be compared with the last."""

    caller: str
    operations: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"fuzz as {self.caller}: {self.operations} operations, {self.requests} "
                f"requests, {len(self.failures)} failures")


def fuzz(base_url: str, caller: str, include: Callable[[str], bool], headers: dict[str, str],
         path_parameters: dict[str, str] | None = None) -> Tally:
    """Every documented operation `include` accepts, EXAMPLES positive and EXAMPLES negative
    cases each; a failing operation is recorded with its failure and the run goes on."""
    doc = httpx.get(f"{base_url}/openapi.json").raise_for_status().json()
    schema = schemathesis.openapi.from_dict(doc)
    tally = Tally(caller)
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if not include(operation.path):
                continue
            tally.operations += 1
            fixed = {name: value for name, value in (path_parameters or {}).items()
                     if f"{{{name}}}" in operation.path}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode,
                                                 path_parameters=fixed or None)

                @settings(max_examples=EXAMPLES, derandomize=True, database=None,
                          deadline=None, phases=[Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much,
                                                 HealthCheck.data_too_large])
                @given(case=strategy)
                def run(case: schemathesis.Case) -> None:
                    response = case.call(base_url=base_url, session=session, headers=headers,
                                         timeout=10)
                    tally.requests += 1
                    case.validate_response(response, checks=CHECKS, headers=headers)

                try:
                    run()
                except Unsatisfiable:
                    # Nothing to make invalid (no parameters, or only fixed ones): skip.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, FailureGroup) as exc:
                    tally.failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(tally)
    return tally


@pytest.fixture
def fuzzed_hub(live_hub: Callable[..., tuple[HubHarness, str]]
               ) -> Iterator[tuple[HubHarness, str]]:
    """A live hub with a registered worker, its catalog, and a participant's finished and
    queued jobs, so the fuzzer also meets routes with something to show."""
    harness, url = live_hub(queue={"long_poll_seconds": 0.05})
    harness.user("user002")
    with httpx.Client(base_url=url, timeout=10) as client:
        user = harness.bearer("user002")
        for width in (64, 65):
            client.post("/u/user002/api/prompt", json={"prompt": simple_prompt(width)},
                        headers=user).raise_for_status()
    yield harness, url


def _assert_clean(tally: Tally) -> None:
    assert tally.operations and tally.requests >= tally.operations
    assert not tally.failures, "\n\n".join(tally.failures)


def test_fuzz_as_participant(fuzzed_hub: tuple[HubHarness, str]) -> None:
    harness, url = fuzzed_hub
    tally = fuzz(url, "participant", lambda p: p.startswith(("/api/v1", "/u/{user}/")),
                 harness.bearer("user002"), {"user": "user002"})
    _assert_clean(tally)


def test_fuzz_as_admin(fuzzed_hub: tuple[HubHarness, str]) -> None:
    harness, url = fuzzed_hub
    harness.user("boss", Role.ADMIN)
    tally = fuzz(url, "admin", lambda p: p.startswith("/admin/api"), harness.bearer("boss"))
    _assert_clean(tally)


def test_fuzz_as_worker(fuzzed_hub: tuple[HubHarness, str]) -> None:
    harness, url = fuzzed_hub
    auth = {"Authorization": f"Bearer {harness.worker_token()}"}
    reg: dict[str, Any] = httpx.post(f"{url}/worker/v1/register", json={"name": "gpu"},
                                     headers=auth).raise_for_status().json()
    tally = fuzz(url, "worker", lambda p: p.startswith("/worker/v1"),
                 {**auth, "X-Worker-Id": reg["worker_id"]})
    _assert_clean(tally)
