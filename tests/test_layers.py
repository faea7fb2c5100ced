"""The layers of DESIGN.md and the README's code layout, checked on the source:

- the core never imports the agents or the leaderboard, and inside the core each module
  imports only the stages drawn below it (:data:`CORE_ORDER`);
- no import circle anywhere in the three packages (lazy imports in functions count; imports
  under ``if TYPE_CHECKING:`` do not, since they never run);
- argument parsing lives in the command layer: no core or agents module defines
  ``configure``/``run`` or imports argparse;
- the agents' import name does not collide with other packages called ``agents``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import maw_gym

ROOT = Path(maw_gym.__file__).resolve().parent.parent
#: Import name -> source folder of the three packages (pyproject's package-dir).
PACKAGES = {"maw_gym": "maw_gym", "maw_gym_agents": "agents", "maw_gym_leaderboard": "leaderboard"}
ABOVE_THE_CORE = ("maw_gym_agents", "maw_gym_leaderboard", "agents", "leaderboard")
#: The core's stages, bottom to top, as the README draws them: a module may import its own
#: stage and the ones before it. The first row holds the shared utilities (and the package
#: itself, whose ``__init__`` only registers env ids by name).
CORE_ORDER = (
    ("maw_gym", "cache", "signals", "device", "specs", "metrics", "stats", "presets", "progress"),
    ("ray_connect",),
    ("data",),
    ("retrieval",),
    ("base_encoder",),
    ("pipeline",),
    ("groups",),
    ("encoder",),
    ("tables",),
    ("artifacts",),
    ("official",),
    ("build",),
    ("envs",),
)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports(source: str) -> set[str]:
    """Every dotted module ``source`` imports that runs (lazy imports in functions too; those
    in ``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(source)
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for child in ast.walk(stmt)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def internal_graph() -> dict[str, set[str]]:
    """Module -> the modules of the three packages it imports (submodules resolved)."""
    modules = module_files()
    return {
        name: {target for target in imports(path.read_text()) if target in modules} - {name}
        for name, path in modules.items()
    }


def test_import_walk_sees_lazy_and_dotted_imports_but_not_type_checking_ones() -> None:
    source = (
        "import os.path\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from maw_gym.envs.base import Variant\n"
        "def f():\n    from maw_gym_agents.common import x\n"
    )
    assert imports(source) == {
        "os.path",
        "typing",
        "typing.TYPE_CHECKING",
        "maw_gym_agents.common",
        "maw_gym_agents.common.x",
    }


def test_no_core_module_imports_the_agents_or_the_leaderboard() -> None:
    core = ROOT / "maw_gym"
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            {name.split(".")[0] for name in imports(path.read_text())} & set(ABOVE_THE_CORE)
        )
        for path in sorted(core.rglob("*.py"))
    }
    # the walk reaches every subpackage (a wrong root would pass vacuously)
    assert {"maw_gym/envs/base.py", "maw_gym/encoder/train.py"} <= set(offenders)
    assert {path: names for path, names in offenders.items() if names} == {}


def _stage(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "maw_gym"
    for rank, stages in enumerate(CORE_ORDER):
        if name in stages:
            return rank
    raise AssertionError(f"{module}: not in CORE_ORDER; add its stage where the README draws it")


def test_core_modules_import_only_the_stages_below_them() -> None:
    graph = internal_graph()
    upward = {
        module: sorted(t for t in targets if t.startswith("maw_gym") and _stage(t) > _stage(module))
        for module, targets in graph.items()
        if module.split(".")[0] == "maw_gym"
    }
    assert len(upward) > 20  # every core module was ranked
    assert {module: names for module, names in upward.items() if names} == {}


def test_no_import_circles() -> None:
    graph = internal_graph()
    # A module imports its package's __init__ too; that edge is Python's, not a design choice.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("package", ["maw_gym", "maw_gym_agents"])
def test_libraries_parse_no_arguments(package: str) -> None:
    """Commands live in ``maw_gym_leaderboard.commands``; libraries are usable from a notebook."""
    offenders = []
    for module, path in module_files().items():
        if module.split(".")[0] != package:
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if {"configure", "run"} & defined or "argparse" in imports(path.read_text()):
            offenders.append(module)
    assert offenders == []


def test_maw_gym_agents_imports_beside_a_foreign_agents_package(tmp_path: Path) -> None:
    """A researcher with e.g. ``openai-agents`` installed has a top-level ``agents``: ours must
    neither import it nor be shadowed by it."""
    stub = tmp_path / "agents"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('the foreign agents package')\n")
    script = (
        "import importlib, pkgutil, sys\n"
        "import maw_gym_agents\n"
        "for info in pkgutil.iter_modules(maw_gym_agents.__path__):\n"
        "    importlib.import_module('maw_gym_agents.' + info.name)\n"
        "import maw_gym_leaderboard.run\n"
        "assert 'agents' not in sys.modules, sys.modules['agents']\n"
        "print(sorted(m for m in sys.modules if m.startswith('maw_gym_agents.')))\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": path},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "maw_gym_agents.rllib" in done.stdout and "maw_gym_agents.evaluate" in done.stdout
