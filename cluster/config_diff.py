"""What changed between two configs, as lines an operator can read."""

from __future__ import annotations

from typing import Any

from .mh_table import resized
from .model import LvsConfig

_NAMED_LISTS = {"routers": "router", "virtuals": "virtual", "servers": "server",
                "failovers": "failover"}


def changes(old: LvsConfig | None, new: LvsConfig) -> list[str]:
    """One line per change: ``virtual web / server rs2: weight 1 -> 3``."""
    before = old.model_dump(mode="json") if old is not None else {}
    after = new.model_dump(mode="json")
    if old is None:
        return ["new configuration"]
    out: list[str] = []
    _walk("", before, after, out)
    return out + resize_warnings(old, new)


def resize_warnings(old: LvsConfig, new: LvsConfig) -> list[str]:
    """A line per ``mh`` virtual whose Maglev table changes size: a new size sends nearly
    every flow to another real server (only connection sync keeps them open)."""
    was = {v.name: v for v in old.virtuals if v.scheduler == "mh"}
    out = []
    for v in new.virtuals:
        if v.scheduler != "mh" or v.name not in was:
            continue
        try:
            step = resized(len(was[v.name].servers), len(v.servers))
        except ValueError:
            continue  # too many servers: validation says so
        if step is not None:
            out.append(f"virtual {v.name}: WARNING: the mh table goes from {step[0]} to "
                       f"{step[1]} slots: nearly every flow moves to another real server "
                       "(connections without state sync are reset)")
    return out


def _label(path: str, name: str) -> str:
    return f"{path} / {name}" if path else name


def _walk(path: str, old: dict[str, Any], new: dict[str, Any], out: list[str]) -> None:
    for field in list(dict.fromkeys([*old, *new])):
        a, b = old.get(field), new.get(field)
        if field in _NAMED_LISTS:
            _walk_named(path, _NAMED_LISTS[field], a or [], b or [], out)
        elif a != b:
            where = f"{path}: " if path else ""
            out.append(f"{where}{field} {_fmt(a)} -> {_fmt(b)}")


def _walk_named(path: str, kind: str, old: list[dict[str, Any]], new: list[dict[str, Any]],
                out: list[str]) -> None:
    olds = {item["name"]: item for item in old}
    news = {item["name"]: item for item in new}
    for name in olds.keys() - news.keys():
        out.append(f"{_label(path, f'{kind} {name}')}: removed")
    for name, item in news.items():
        label = _label(path, f"{kind} {name}")
        if name not in olds:
            out.append(f"{label}: added")
        else:
            _walk(label, olds[name], item, out)


def _fmt(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, dict):
        return " ".join(str(v) for v in value.values() if v is not None)
    return repr(value) if isinstance(value, str) else str(value)
