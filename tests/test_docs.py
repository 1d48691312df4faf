"""The docs stay true to the code.

* README.md's layout table names every top-level directory of the repository, and only
  those.
* The default column of docs/lvs-cf.md states the code's defaults (cluster/model.py, and
  cluster/timing.py for the two timers the model leaves unset).
* The Python snippets of README.md and docs/*.md import and compile. For every fenced
  block whose info string starts with ``python``: each ``import x`` / ``from x import y``
  must work here (the module imports and has the name), and the whole block must compile
  (top-level ``await`` allowed). A block that shows call signatures rather than Python is
  marked ``sketch`` in its info string, i.e. opened with ```` ```python sketch ````: it is
  not compiled, but its import lines are still checked. The checker is
  tests/support/doc_snippets.py; the tests at the end show that it fails.
"""

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from support.doc_snippets import Snippet, pages, problems, snippets

from cluster.model import Failover, LvsConfig, Router, Server, Virtual
from cluster.timing import Timing

ROOT = Path(__file__).resolve().parent.parent


def _all_snippets() -> list[Snippet]:
    return [s for page in pages(ROOT)
            for s in snippets(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))]


SNIPPETS = _all_snippets()


def _layout_rows(readme: str) -> list[str]:
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)/` \|", section, flags=re.M)


def _top_level_dirs() -> set[str]:
    """Directories holding files under version control (else: those on disk, less caches)."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return {p.name for p in ROOT.iterdir()
                if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "build"
                and not p.name.endswith(".egg-info")}
    return {f.split("/", 1)[0] for f in files if "/" in f and not f.startswith(".")}


def test_readme_layout_names_every_top_level_directory():
    rows = _layout_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    tops = _top_level_dirs()
    assert len(rows) == len(set(rows)), "a directory is listed twice"
    assert set(rows) == tops


_BLOCKS = {"Global directives": LvsConfig, "`virtual NAME { }`": Virtual,
           "`server NAME { }`": Server, "`failover NAME { }`": Failover,
           "`router NAME { }`": Router}


def documented_defaults(page: str) -> list[tuple[type, str, str]]:
    """(model, directive, default cell) of every directive row of docs/lvs-cf.md's tables."""
    out = []
    parts = re.split(r"^#{2,3} (.*)$", page, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        model = next((m for key, m in _BLOCKS.items() if key in heading), None)
        if model is not None:
            out += [(model, name, cell.strip())
                    for name, cell in re.findall(r"^\| `(\w+)` \|([^|]*)\|", body, flags=re.M)]
    return out


def effective_default(model: type, name: str) -> object:
    """What the agent uses when lvs.cf leaves ``name`` out."""
    default = model.model_fields[name].default
    if default is None and model is LvsConfig and name in ("keepalive", "deadtime"):
        return getattr(Timing(), name)  # pulse's own, where the model says "not given"
    return default


def test_lvs_cf_page_states_the_defaults_of_the_code():
    """Numbers, 0/1 flags and single words in the default column of docs/lvs-cf.md are the
    code's defaults; "—" and "not set" are None, "required" is required. Other cells
    ("deadtime", "the server's port", `/` for a check applied by nanny) are prose."""
    rows = documented_defaults((ROOT / "docs" / "lvs-cf.md").read_text(encoding="utf-8"))
    compared = []
    for model, name, cell in rows:
        code = "required" if model.model_fields[name].is_required() else (
            effective_default(model, name))
        word = re.fullmatch(r"`([^`]+)`", cell)
        if re.fullmatch(r"\d+(\.\d+)?", cell):
            number = float(code) if isinstance(code, int | float) else code
            compared.append((f"{model.__name__}.{name}", float(cell), number))
        elif word and code is not None:
            compared.append((f"{model.__name__}.{name}", word.group(1), str(code)))
        elif cell in ("—", "not set", "required"):
            compared.append((f"{model.__name__}.{name}", cell.replace("not set", "—"),
                             "—" if code is None else code))
    assert len(compared) >= 70, "the tables of docs/lvs-cf.md changed shape"
    assert [c for c in compared if c[1] != c[2]] == []


def test_the_docs_have_snippets():
    # an empty list would make the test below pass vacuously (docs moved, parser broken)
    assert len(SNIPPETS) >= 5
    assert any(not s.sketch for s in SNIPPETS) and any(s.sketch for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_doc_snippet(snippet):
    assert problems(snippet) == []


# ---- the checker itself -------------------------------------------------------------------

def _check(markdown: str) -> list[str]:
    return [p for s in snippets(textwrap.dedent(markdown), "page.md") for p in problems(s)]


def test_a_good_snippet_passes():
    assert _check("""\
        # title

        ```python
        from cluster.model import LvsConfig, config_from_json
        import cluster.lvscf
        from agent.dataplane import ipvs   # a submodule counts as a name
        cfg = LvsConfig()
        await something(cfg)               # top-level await is allowed
        ```
        """) == []


def test_a_missing_name_is_reported_with_its_line():
    assert _check("""\
        text

        ```python
        from cluster.lvscf import parse
        from cluster.model import LvsConfig, check
        ```
        """) == ["page.md:5: cluster.model has no name 'check'"]


def test_a_missing_module_is_reported():
    out = _check("""\
        ```py
        import cluster.nonesuch
        from agent.lease import LeaseKeeper
        ```
        """)
    assert len(out) == 2
    assert out[0].startswith("page.md:2: cannot import cluster.nonesuch: ModuleNotFoundError")
    assert out[1].startswith("page.md:3: cannot import agent.lease: ModuleNotFoundError")


def test_a_relative_import_is_reported():
    assert _check("```python\nfrom .model import Vip\n```\n") == [
        "page.md:2: relative import: a doc snippet must name the package"]


def test_a_snippet_that_does_not_compile_is_reported():
    out = _check("""\
        ```python
        from cluster.model import LvsConfig
        cfg = LvsConfig(
        engine.snapshot() -> dict
        ```
        """)
    assert len(out) == 1 and out[0].startswith("page.md:")
    assert "does not compile" in out[0] and "python sketch" in out[0]


def test_compile_errors_beyond_syntax_are_reported():
    out = _check("```python\nreturn 1\n```\n")
    assert out == ["page.md:2: does not compile: 'return' outside function "
                   "(mark the block `python sketch` if it is not meant to)"]


def test_a_sketch_is_not_compiled_but_its_imports_are_checked():
    good = """\
        ```python sketch
        from agent.nanny.engine import (Engine,
                                        EngineStats)
        engine.snapshot()  -> {key: ServerHealth}
        ```
        """
    assert _check(good) == []
    bad = """\
        ```python sketch
        f(x) -> T
        from agent.nanny.engine import (Engine,
                                        Nonesuch)
        from the agent's point of view
        ```
        """
    assert _check(bad) == ["page.md:3: agent.nanny.engine has no name 'Nonesuch'",
                           "page.md:5: cannot parse this import line"]


def test_imports_of_a_broken_snippet_are_still_checked():
    out = _check("```python\nfrom cluster.model import nonesuch\nx = (\n```\n")
    assert any("does not compile" in p for p in out)
    assert "page.md:2: cluster.model has no name 'nonesuch'" in out


def test_other_blocks_are_ignored():
    assert _check("""\
        ```sh
        import nonesuch
        ```

        ```
        from nonesuch import x
        ```

            from indented import code_block
        """) == []
