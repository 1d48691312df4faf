"""What pyproject.toml declares matches what the code imports and what constraints.txt pins.

* The runtime packages (agent, cluster, lvslab) import no distribution that only the
  ``test`` extras install (a production install would fail on it), lazy imports included.
* Every pinned dependency, runtime or test, has the same pin in constraints.txt.
"""

import ast
import importlib.metadata
import re
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("agent", "cluster", "lvslab")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    """``"prometheus-client==0.26.0"`` -> ``"prometheus-client"`` (normalised, PEP 503)."""
    name = re.match(r"^\s*([A-Za-z0-9._-]+)", requirement).group(1)  # type: ignore[union-attr]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*==\s*([^\s;#]+)", req)
        if m:
            out[_name(m.group(1))] = m.group(2)
    return out


def _runtime_closure(names: set[str]) -> set[str]:
    """The runtime distributions and everything they require, as installed here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in ``source``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def test_runtime_code_imports_no_test_only_distribution():
    project = _project()
    runtime = _runtime_closure({_name(r) for r in project["dependencies"]})
    test_only = {_name(r) for r in project["optional-dependencies"]["test"]} - runtime
    assert "scapy" in test_only and "pytest" in test_only
    modules = {mod for mod, dists in importlib.metadata.packages_distributions().items()
               if {_name(d) for d in dists} & test_only}
    assert "scapy" in modules
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {mod}"
           for package in RUNTIME_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
           for line, mod in imported_modules(path.read_text()) if mod in modules]
    assert bad == []


def test_imported_modules_sees_lazy_imports():
    source = textwrap.dedent("""\
        import os.path
        from . import sibling
        def f():
            from scapy import all as scapy
            import pytest, json
        """)
    assert imported_modules(source) == [(1, "os"), (4, "scapy"), (5, "pytest"), (5, "json")]


def test_constraints_pin_every_declared_dependency():
    project = _project()
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    assert len(declared) == len(project["dependencies"]) + len(
        project["optional-dependencies"]["test"]), "every dependency is pinned with =="
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert {name: constraints.get(name) for name in declared} == declared
