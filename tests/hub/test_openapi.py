"""The OpenAPI document: public, complete, and honest about the bodies routes read by hand."""

from __future__ import annotations

import inspect
import re

from tests.hub.test_route_access import all_routes

# What reading a body looks like in a handler (see hub/web/bodies.py and files_api._read_form).
_READS_BODY = re.compile(
    r"\b(read_model|read_json|read_object|read_body|receive_file|_read_form)\(")


def _document(hub) -> dict:
    _harness, client = hub
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def test_the_document_lists_every_route_that_is_not_hidden(hub) -> None:
    harness, _client = hub
    doc = _document(hub)
    listed = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    expected = {(method, re.sub(r":path}", "}", route.path))
                for route in all_routes(harness.app) if route.include_in_schema
                for method in route.methods - {"HEAD"}}
    assert listed == expected
    assert not any(p.startswith(("/login", "/logout")) or p in ("/", "/u/{user}/{path}")
                   for p in doc["paths"])


def test_each_route_reading_a_body_declares_it(hub) -> None:
    harness, _client = hub
    doc = _document(hub)
    readers, declared = set(), set()
    for route in all_routes(harness.app):
        if not route.include_in_schema:
            continue
        path = re.sub(r":path}", "}", route.path)
        for method in route.methods - {"HEAD"}:
            if _READS_BODY.search(inspect.getsource(route.endpoint)):
                readers.add((method, path))
            if "requestBody" in doc["paths"][path][method.lower()]:
                declared.add((method, path))
    assert len(readers) >= 20
    assert readers == declared


def test_declared_bodies_follow_the_protocol_models_and_content_types(hub) -> None:
    paths = _document(hub)["paths"]

    def content(path: str, method: str) -> dict:
        return paths[path][method]["requestBody"]["content"]

    register = content("/worker/v1/register", "post")["application/json"]["schema"]
    assert register["required"] == ["name"] and register["properties"]["name"]["maxLength"] == 128
    events = content("/worker/v1/jobs/{job_id}/events", "post")["application/json"]["schema"]
    assert "$ref" not in str(events) and events["properties"]["events"]["items"]["required"]
    assert list(content("/worker/v1/catalog/{catalog_hash}", "put")) == ["application/gzip"]
    assert list(content("/worker/v1/jobs/{job_id}/outputs", "put")) == [
        "application/octet-stream"]
    assert list(content("/u/{user}/api/userdata/{rest}", "post")) == ["application/octet-stream"]
    upload = content("/u/{user}/api/upload/mask", "post")["multipart/form-data"]["schema"]
    assert upload["properties"]["image"]["format"] == "binary"
    assert "original_ref" in upload["required"]
    policy = content("/admin/api/policy", "put")["application/json"]["schema"]
    assert policy["properties"]["policy"]["enum"] == ["fifo", "fair", "priority"]


def test_errors_are_documented_as_json_not_as_fastapis_422(hub) -> None:
    doc = _document(hub)
    for ops in doc["paths"].values():
        for op in ops.values():
            assert "422" not in op["responses"]
            assert "application/json" in op["responses"]["4XX"]["content"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
