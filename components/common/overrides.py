"""`--set key.path=value`: change one key of a config's raw YAML before it is validated.

The value is read as YAML (`3`, `0.1`, `true`, `[a, b]`, `{label: buy}`), so an override is spelled as
the file would spell it, and the same validator as the file's judges it (load_config names the key
and says it came from --set). A number in the path indexes a list (`tasks.1.loss=pairwise`); a task
written as a bare name becomes a mapping when one of its settings is set.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml


class OverrideError(ValueError):
    """An override that cannot be applied; the message names it."""


@dataclass(frozen=True)
class Override:
    text: str  # as given, for messages
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)


def parse_override(text: str) -> Override:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.lr=0.01")
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise OverrideError(f"--set {text!r}: empty part in the key path {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise OverrideError(f"--set {text!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
    return Override(text, path, parsed)


def apply_overrides(raw: dict, overrides: list[Override]) -> dict:
    """A copy of `raw` with every override applied in order (a later one wins). Sections the file
    leaves out are created; whether a key exists is the validator's to say."""
    out = copy.deepcopy(raw)
    for o in overrides:
        node: Any = out
        for depth, part in enumerate(o.path[:-1]):
            node = _child(node, part, o, depth)
        _assign(node, o.path[-1], o, len(o.path) - 1)
    return out


def _where(o: Override, depth: int) -> str:
    return ".".join(o.path[:depth]) or "the top level"


def _index(node: list, part: str, o: Override, depth: int) -> int:
    if not part.lstrip("-").isdigit():
        raise OverrideError(f"--set {o.text}: {_where(o, depth)} is a list: expected an item number, got {part!r}")
    i = int(part)
    if not 0 <= i < len(node):
        raise OverrideError(f"--set {o.text}: {_where(o, depth)} has {len(node)} item(s) (0..{len(node) - 1}), "
                            f"no item {i}")
    return i


def _child(node, part: str, o: Override, depth: int):
    if isinstance(node, dict):
        if node.get(part) is None:
            node[part] = {}
        return node[part]
    if isinstance(node, list):
        i = _index(node, part, o, depth)
        if isinstance(node[i], str) and o.path[0] == "tasks":  # a bare task name: `like` -> {name: like}
            node[i] = {"name": node[i]}
        return node[i]
    raise OverrideError(f"--set {o.text}: {_where(o, depth)} is {node!r}, not a section with keys")


def _assign(node, part: str, o: Override, depth: int) -> None:
    if isinstance(node, dict):
        node[part] = copy.deepcopy(o.value)
    elif isinstance(node, list):
        node[_index(node, part, o, depth)] = copy.deepcopy(o.value)
    else:
        raise OverrideError(f"--set {o.text}: {_where(o, depth)} is {node!r}, not a section with keys")


def source_of(key: str, overrides: list[Override]) -> Override | None:
    """The last override that set `key` (a dotted error location) or a section above or below it."""
    for o in reversed(overrides):
        if key == o.key or key.startswith(o.key + ".") or o.key.startswith(key + "."):
            return o
    return None
