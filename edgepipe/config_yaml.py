"""Reading a pipeline file safely: a regular text file of sane size, YAML 1.2 scalars, no duplicate keys.

PyYAML speaks YAML 1.1, where `off`, `no` and `y` are booleans (`name: off` became False) and `017`
is octal. Pipeline files are read with the YAML 1.2 core schema instead: booleans are only
true/false, nulls only null/~/empty, numbers only decimal (or 0o/0x), `.nan`/`.inf` are numbers
(the config models then reject them). A key given twice is an error naming both lines, where
PyYAML lets the last one win silently. Aliases are followed, but a file that expands to more than
MAX_NODES nodes is refused (an alias bomb would otherwise hang validation).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from edgepipe.errors import ConfigError

MAX_BYTES = 1 << 20  # a pipeline file is a few hundred lines: 1 MiB is far beyond any real one
MAX_NODES = 100_000


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit scalars."""


_Yaml12Loader.yaml_implicit_resolvers = {}  # drop the YAML 1.1 resolvers, then add the 1.2 core ones
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
):
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
# `<<: *defaults` (merge keys) is YAML 1.1, but harmless and useful for several similar rules: kept
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)  # 1.2: a leading zero is decimal, not octal


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith("inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text.endswith("nan"):
        return float("nan")
    return float(text)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)

# libyaml's parser, where PyYAML has it, with the same resolvers: composes ~15x faster. Only for
# files it takes: where it fails, the pure-Python parser says what is wrong, and where, more plainly.
_FastYaml12Loader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastYaml12Loader(yaml.CSafeLoader):  # type: ignore[no-redef]
        yaml_implicit_resolvers = _Yaml12Loader.yaml_implicit_resolvers
        yaml_constructors = _Yaml12Loader.yaml_constructors


def _compose(text: str) -> yaml.Node | None:
    if _FastYaml12Loader is not None:
        try:
            return yaml.compose(text, Loader=_FastYaml12Loader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=_Yaml12Loader)


def read_pipeline_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The parsed document and its node tree (for line numbers); every problem a ConfigError with
    the file and, where there is one, the line."""
    text = _read_text(path)
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:  # e.g. a control character the reader refuses
        raise ConfigError(f"{path}: YAML error: {str(error).splitlines()[0]}") from None
    if root is None:
        return None, None
    if _count_nodes(root) > MAX_NODES:  # first: every other walk over the tree follows aliases
        raise ConfigError(
            f"{path}:1: (top level): the document expands to more than {MAX_NODES} nodes (aliases?); simplify it"
        )
    problems = _duplicate_keys(path, root)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        data = _Yaml12Loader("").construct_document(root)  # from the tree already parsed
    except yaml.YAMLError as error:  # a scalar the 1.2 constructors cannot build, e.g. an int of "0o9"
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: YAML error: {getattr(error, 'problem', None) or error}") from None
    return data, root


def _read_text(path: Path) -> str:
    """The file as UTF-8 text: a regular file, not too large, not binary."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type check below refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read pipeline file: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = (
                "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
            )
            raise ConfigError(f"{path}: cannot read pipeline file: it is {kind}")
        if info.st_size > MAX_BYTES:
            raise ConfigError(
                f"{path}: cannot read pipeline file: {info.st_size} bytes is too large (at most {MAX_BYTES})"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read pipeline file: {error.strerror}") from None
    finally:
        os.close(fd)
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not a text file (a NUL byte): is this the pipeline YAML?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}): save the file as UTF-8"
        ) from None


def _duplicate_keys(path: Path, node: yaml.Node, where: str = "") -> list[str]:
    """`FILE:LINE: field: key 'x' given twice (first at line N)` for every repeated key, at any depth."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            field = f"{where}.{key}" if where else key
            if key in seen:
                problems.append(
                    f"{path}:{line}: {field}: key given twice (first at line {seen[key]}); keep one"
                )
            else:
                seen[key] = line
            problems += _duplicate_keys(path, value_node, field)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(path, item, f"{where}[{index}]")
    return problems


def _count_nodes(root: yaml.Node) -> int:
    """Nodes of the document with aliases expanded (an alias is the same node object again)."""
    count = 0
    stack = [root]
    while stack and count <= MAX_NODES:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack += (key_node, value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return count
