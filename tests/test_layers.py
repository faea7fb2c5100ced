"""The layers of DESIGN.md: the core never imports the agents or the leaderboard, and the
agents' import name does not collide with other packages called ``agents``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import maw_gym

CORE = Path(maw_gym.__file__).resolve().parent
ABOVE_THE_CORE = ("maw_gym_agents", "maw_gym_leaderboard", "agents", "leaderboard")


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports (lazy imports in functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_import_walk_sees_lazy_and_dotted_imports() -> None:
    source = "import os.path\ndef f():\n    from maw_gym_agents.common import x\n"
    assert imported_modules(source) == {"os", "maw_gym_agents"}


def test_no_core_module_imports_the_agents_or_the_leaderboard() -> None:
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(
            imported_modules(path.read_text()) & set(ABOVE_THE_CORE)
        )
        for path in sorted(CORE.rglob("*.py"))
    }
    # the walk reaches every subpackage (a wrong root would pass vacuously)
    assert {"maw_gym/envs/base.py", "maw_gym/encoder/table_builder.py"} <= set(offenders)
    assert {path: names for path, names in offenders.items() if names} == {}


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
