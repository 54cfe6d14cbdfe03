"""Check a prompt against a worker catalog the way ComfyUI does, with ComfyUI's error shapes,
so the official frontend marks the offending nodes before any GPU time is spent.

Covered: unknown node types, no output nodes, missing required inputs, malformed or mistyped
links, numbers out of range, combo values not offered (model files the workers lack), and
upload inputs naming a file the user does not have. Not covered: custom-node Python
validators (the worker's ComfyUI still runs its own full validation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfymulti.catalog.index import combo_options

Error = dict[str, Any]


@dataclass
class Verdict:
    """`error` set: reject with 400 (`error` + `node_errors`). Else run; `node_errors` may
    still list outputs that will not run (ComfyUI answers 200 then)."""

    error: Error | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def _err(type_: str, message: str, details: str = "", **extra: Any) -> Error:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


def _upload_input(options: dict[str, Any]) -> bool:
    return any(k.endswith("upload") and v for k, v in options.items())


def _types_match(received: str, wanted: Any) -> bool:
    if not isinstance(wanted, str) or received == "*" or wanted in ("*", "COMBO"):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def validate(prompt: dict[str, Any], object_info: dict[str, Any],
             has_input_file: Callable[[str], bool]) -> Verdict:
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type not in object_info:
            title = node.get("_meta", {}).get("title") or class_type
            return Verdict(error=_err(
                "missing_node_type",
                f"Node '{title}' not found. The custom node may not be installed.",
                f"Node ID '#{node_id}'", node_id=node_id, class_type=class_type,
                node_title=title))
    outputs = [n for n, node in prompt.items()
               if object_info[node["class_type"]].get("output_node")]
    if not outputs:
        return Verdict(error=_err("prompt_no_outputs", "Prompt has no outputs"))

    errors: dict[str, list[Error]] = {}
    sources: dict[str, list[str]] = {}
    for node_id in _upstream(prompt, outputs):
        own, sources[node_id] = _check_node(prompt, node_id, object_info, has_input_file)
        if own:
            errors[node_id] = own
    bad = _propagate(outputs, sources, errors)
    good = [o for o in outputs if o not in bad]
    node_errors = {
        node_id: {"errors": errs, "dependent_outputs": [o for o in outputs if o not in good],
                  "class_type": prompt[node_id]["class_type"]}
        for node_id, errs in errors.items()
    }
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}"
                            for entry in node_errors.values() for e in entry["errors"])
        return Verdict(error=_err("prompt_outputs_failed_validation",
                                  "Prompt outputs failed validation", details),
                       node_errors=node_errors)
    return Verdict(node_errors=node_errors, outputs=good)


def _upstream(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """Every node the outputs depend on (outputs included), found without recursion."""
    seen: set[str] = set()
    order: list[str] = []
    stack = list(reversed(outputs))
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        order.append(node_id)
        for value in prompt[node_id].get("inputs", {}).values():
            if _is_link(value, prompt) and str(value[0]) not in seen:
                stack.append(str(value[0]))
    return order


def _propagate(outputs: list[str], sources: dict[str, list[str]],
               errors: dict[str, list[Error]]) -> set[str]:
    """Nodes that cannot run: their own errors, a failing source, or a dependency cycle
    (which gets its own error, as in ComfyUI). Iterative depth-first walk."""
    bad: set[str] = set()
    done: set[str] = set()
    on_path: list[str] = []
    for output in outputs:
        stack: list[tuple[str, int]] = [(output, 0)]
        while stack:
            node_id, i = stack.pop()
            if i == 0:
                if node_id in done:
                    continue
                if node_id in on_path:
                    path = on_path[on_path.index(node_id):]
                    errors.setdefault(node_id, []).append(_err(
                        "dependency_cycle", "Dependency cycle detected", " -> ".join(path)))
                    bad.add(node_id)
                    continue
                on_path.append(node_id)
            deps = sources.get(node_id, [])
            if i < len(deps):
                stack.append((node_id, i + 1))
                stack.append((deps[i], 0))
                continue
            on_path.pop()
            done.add(node_id)
            if node_id in errors or any(d in bad for d in deps):
                bad.add(node_id)
    return bad


def _is_link(value: Any, prompt: dict[str, Any]) -> bool:
    return (isinstance(value, list) and len(value) == 2 and type(value[1]) is int
            and value[1] >= 0 and str(value[0]) in prompt)


def _check_node(prompt: dict[str, Any], node_id: str, object_info: dict[str, Any],
                has_input_file: Callable[[str], bool]) -> tuple[list[Error], list[str]]:
    """One node's own errors and the nodes it links to."""
    node = prompt[node_id]
    node_def = object_info[node["class_type"]]
    inputs = node.get("inputs", {})
    own: list[Error] = []
    linked: list[str] = []
    spec_groups = node_def.get("input", {})
    for group in ("required", "optional"):
        for name, spec in (spec_groups.get(group) or {}).items():
            if not isinstance(spec, list) or not spec:
                continue
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if name not in inputs:
                if group == "required":
                    own.append(_err("required_input_missing", "Required input is missing",
                                    name, input_name=name))
                continue
            value = inputs[name]
            if isinstance(value, list):
                if not _is_link(value, prompt):
                    own.append(_err("bad_linked_input", "Bad linked input, must be a "
                                    "length-2 list of [node_id, slot_index]", name,
                                    input_name=name, input_config=spec,
                                    received_value=value))
                    continue
                source = str(value[0])
                out_types = object_info[prompt[source]["class_type"]].get("output", [])
                received = out_types[value[1]] if value[1] < len(out_types) else "*"
                if not _types_match(str(received), spec[0]):
                    own.append(_err(
                        "return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({spec[0]})",
                        input_name=name, input_config=spec, received_type=received,
                        linked_node=value))
                linked.append(source)
                continue
            own.extend(_check_value(name, value, spec, options, has_input_file))
    return own, linked

def _check_value(name: str, value: Any, spec: list[Any], options: dict[str, Any],
                 has_input_file: Callable[[str], bool]) -> list[Error]:
    kind = spec[0]
    extra = {"input_name": name, "input_config": spec, "received_value": value}
    choices = combo_options(spec)
    if choices is not None:
        if _upload_input(options):
            if not isinstance(value, str) or not has_input_file(value):
                return [_err("custom_validation_failed", "Custom validation failed for node",
                             f"{name} - Invalid file: {value}", **extra)]
            return []
        if value not in choices:
            shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
            return [_err("value_not_in_list", "Value not in list",
                         f"{name}: '{value}' not in {shown}", **extra)]
        return []
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value) if kind == "FLOAT" else int(value)
            except (TypeError, ValueError, OverflowError) as exc:
                return [_err("invalid_input_type",
                             f"Failed to convert an input value to a {kind} value",
                             f"{name}, {value}, {exc}", **extra)]
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and value < low:
            return [_err("value_smaller_than_min",
                         f"Value {value} smaller than min of {low}", name, **extra)]
        if isinstance(high, int | float) and value > high:
            return [_err("value_bigger_than_max",
                         f"Value {value} bigger than max of {high}", name, **extra)]
    return []
