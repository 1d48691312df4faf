"""The model to canonical lvs.cf text: globals, then router, virtual and failover blocks.

Every directive that differs from its default is written (and those marked `always`);
parse(write(cfg)) gives back an equal model.
"""

from __future__ import annotations

from pydantic import BaseModel

from cluster.lvscf.directives import BlockSpec, root
from cluster.lvscf.values import format_value
from cluster.model import LvsConfig

INDENT = "    "


def write(cfg: LvsConfig) -> str:
    """Canonical lvs.cf text for `cfg`."""
    return "\n".join(_block(cfg, root(), 0)) + "\n"


def _block(model: BaseModel, spec: BlockSpec, depth: int) -> list[str]:
    pad = INDENT * depth
    out: list[str] = []
    for name, directive in spec.directives.items():
        value = getattr(model, name)
        if value is None:
            continue
        if not (directive.always or directive.required) and value == directive.default:
            continue
        out.append(f"{pad}{name} = {format_value(directive.kind, value)}")
    for keyword, (field, child) in spec.children.items():
        for block in getattr(model, field):
            out += ["", f"{pad}{keyword} {block.name} {{"]
            out += _block(block, child, depth + 1)
            out.append(pad + "}")
    return out
