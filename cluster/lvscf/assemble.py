"""A tree of read blocks to the model, then the semantic checks; problems keep their lines.

Blocks that fail (e.g. a missing required directive) are left out, so the checks still run
on the rest and one pass reports as much as possible.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from cluster.config_checks import check
from cluster.lvscf.parser import Frame
from cluster.model import LvsConfig, Path, Problem, describe

Lines = dict[Path, int]
Problems = list[tuple[int, str]]


def assemble(top: Frame) -> tuple[LvsConfig | None, Problems, Lines]:
    """The model built from the global frame (None if it cannot be), its problems, and the
    line of every block and directive it was built from (by model path)."""
    errors: Problems = _duplicate_names(top)
    lines: Lines = {(): 1}
    cfg = _model(top, (), lines, errors)
    if not isinstance(cfg, LvsConfig):
        return None, _unique(errors), lines
    errors += [locate(problem, lines) for problem in check(cfg)]
    return cfg, _unique(errors), lines


def locate(problem: Problem, lines: Lines) -> tuple[int, str]:
    """(line, message) of a model problem, its related earlier path cited by line."""
    message = problem.message
    if problem.other is not None:
        message += f" (first defined at line {line_of(lines, problem.other)})"
    return line_of(lines, problem.path), message


def _duplicate_names(frame: Frame) -> Problems:
    """Duplicate block names, found on the frames so that blocks with errors count too.

    Worded like check()'s, so the same finding from both is reported once.
    """
    out: Problems = []
    for kids in frame.children.values():
        first: dict[str | None, int] = {}
        for kid in kids:
            if kid.name in first:
                out.append((kid.line, f"duplicate {kid.keyword} name '{kid.name}' "
                                      f"(first defined at line {first[kid.name]})"))
            first.setdefault(kid.name, kid.line)
            out += _duplicate_names(kid)
    return out


def _unique(problems: Problems) -> Problems:
    return list(dict.fromkeys(problems))


def line_of(lines: Lines, path: Path) -> int:
    """The line of the longest known prefix of `path`."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _model(frame: Frame, path: Path, lines: Lines, errors: Problems) -> BaseModel | None:
    spec = frame.spec
    if spec is None:
        return None
    own: Lines = {path: frame.line, (*path, "name"): frame.line}
    own.update({(*path, key): line for key, line in frame.lines.items()})
    data: dict[str, object] = dict(frame.values)
    if frame.name is not None:
        data["name"] = frame.name
    for field, kids in frame.children.items():
        built: list[BaseModel] = []
        for kid in kids:
            model = _model(kid, (*path, field, len(built)), own, errors)
            if model is not None:
                built.append(model)
        data[field] = tuple(built)
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            key = next((p for p in err["loc"] if isinstance(p, str)), "")
            if key in frame.failed:
                continue  # already reported where the value was read
            errors.append((own.get((*path, key), frame.line), _message(frame, key, err)))
        return None
    lines.update(own)
    return model


def _message(frame: Frame, key: str, err: dict[str, object]) -> str:
    what = frame.describe()
    if key == "name":
        return (f"bad {frame.keyword} name {frame.name!r}: use up to 64 letters, digits, "
                "'_', '.' or '-'")
    if err.get("type") == "missing":
        return f"{what} is missing required directive '{key}'"
    return f"{what}: {describe(err, key or frame.keyword)}"  # type: ignore[arg-type]
