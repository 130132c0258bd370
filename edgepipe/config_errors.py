"""Pydantic validation errors → `FILE:LINE: field.path: message` lines.

The line comes from the YAML node tree (yaml.compose keeps every node's line); the words come from
the model's schema: the allowed keys of a section (with a did-you-mean), both bounds of a number,
the tags of a tagged union. An error inside a tagged union has the tag in its location, e.g.
('source', 'rtsp', 'url'); such entries are not YAML keys and are skipped when finding the line.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel

from edgepipe.errors import mask_secrets


def describe(path: Path, root: yaml.Node | None, item: Any, model: type[BaseModel]) -> str:
    """One pydantic error as `FILE:LINE: field.path: message`."""
    loc: tuple[Any, ...] = tuple(item["loc"])
    yaml_loc, line = _locate(root, loc)
    field = dotted(yaml_loc) or "(top level)"
    # a URL with a password may be the value that failed: never echo the password
    return mask_secrets(f"{path}:{line}: {field}: {message(item, yaml_loc, model)}")


def line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The line of the deepest part of `loc` that the file has (1 without a tree)."""
    return _locate(root, loc)[1]


def _locate(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
    """Follow `loc` through the YAML tree; skip entries that are not YAML keys (union tags)."""
    node = root
    line = 1 if root is None else root.start_mark.line + 1
    found: list[Any] = []
    for key in loc:
        child = _child(node, key)
        if child is None:
            if isinstance(key, str) and not _has_key(node, key) and _is_union_tag(node, key):
                continue  # a discriminator tag such as 'rtsp' in ('source', 'rtsp', 'url')
            found.append(key)
            break
        key_node, node = child
        found.append(key)
        line = (key_node or node).start_mark.line + 1
    return tuple(found), line


def _child(node: yaml.Node | None, key: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return None, node.value[key]
    return None


def _has_key(node: yaml.Node | None, key: str) -> bool:
    return _child(node, key) is not None


def _is_union_tag(node: yaml.Node | None, key: str) -> bool:
    tag = _child(node, "type")
    return tag is not None and tag[1].value == key


def dotted(loc: tuple[Any, ...]) -> str:
    """('rules', 0, 'points') → rules[0].points"""
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


class _Short(str):
    """A value shown in a message: its repr is cut in the middle when long (a 5000-character name)."""

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if len(text) <= 80 else f"{text[:40]}…{text[-30:]} ({len(self)} characters)"


def message(item: Any, yaml_loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """What is wrong, in words: the bounds of a number, the allowed keys, the expected tags."""
    kind, value, ctx = item["type"], item.get("input"), item.get("ctx") or {}
    if isinstance(value, str):
        value = _Short(value)
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(yaml_loc[:-1], item, model)
        hint = difflib.get_close_matches(str(yaml_loc[-1]), allowed, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key{suggestion}; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = _bounds(yaml_loc, model)
        if bounds is not None:
            return f"{value!r} is not between {bounds[0]} and {bounds[1]}"
        return f"{value!r}: {item['msg'].lower()}"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match the pattern {ctx.get('pattern')}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"'type' is required: one of {', '.join(repr(t) for t in _union_tags(yaml_loc, model))}"
    if isinstance(value, (dict, list)):
        return str(item["msg"])
    return f"{value!r}: {item['msg'][0].lower()}{item['msg'][1:]}"


# ---------------------------------------------------------------- the model's schema, for messages
def _walk_schema(loc: tuple[Any, ...], model: type[BaseModel]) -> Iterator[Any]:
    """Yield the annotation at each step of a YAML location, starting at the root `model`."""
    current: Any = model
    yield current
    for key in loc:
        current = _step(current, key)
        if current is None:
            return
        yield current


def _step(annotation: Any, key: Any) -> Any:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(key)
        return None if field is None else field
    if typing.get_origin(annotation) in (list, tuple) and isinstance(key, int):
        return typing.get_args(annotation)[0]
    return None


def _strip(annotation: Any) -> Any:
    from pydantic.fields import FieldInfo

    if isinstance(annotation, FieldInfo):
        annotation = annotation.annotation
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _union_tags(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    steps = list(_walk_schema(loc, model))
    if len(steps) != len(loc) + 1:
        return []
    tags: list[str] = []
    for member in _union_members(steps[-1]):
        tag = member.model_fields.get("type")
        if tag is not None:
            tags.extend(str(t) for t in typing.get_args(tag.annotation))
    return tags


def _allowed_keys(parent_loc: tuple[Any, ...], item: Any, model: type[BaseModel]) -> list[str]:
    steps = list(_walk_schema(parent_loc, model))
    if len(steps) != len(parent_loc) + 1:
        return []
    members = _union_members(steps[-1])
    if len(members) > 1:  # a tagged union: the item's loc names the tag that was chosen
        chosen = [m for m in members if _tag_of(m) in item["loc"]]
        members = chosen or members
    keys: list[str] = []
    for member in members:
        keys.extend(k for k in member.model_fields if k not in keys)
    return keys


def _tag_of(model: type[BaseModel]) -> str | None:
    tag = model.model_fields.get("type")
    args = typing.get_args(tag.annotation) if tag is not None else ()
    return str(args[0]) if args else None


def _bounds(loc: tuple[Any, ...], model: type[BaseModel]) -> tuple[float, float] | None:
    """(lower, upper) of a numeric field when both are declared, for 'x is not between a and b'."""
    from pydantic.fields import FieldInfo

    parent_steps = list(_walk_schema(loc[:-1], model))
    if len(parent_steps) != len(loc):
        return None
    lower = upper = None
    for member in _union_members(parent_steps[-1]):
        field = member.model_fields.get(loc[-1])
        if isinstance(field, FieldInfo):
            for rule in field.metadata:
                lower = getattr(rule, "ge", getattr(rule, "gt", lower)) if lower is None else lower
                upper = getattr(rule, "le", getattr(rule, "lt", upper)) if upper is None else upper
    if lower is None or upper is None:
        return None
    return lower, upper
