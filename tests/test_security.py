"""Issue 22: a run folder, router folder or artifact from someone else runs no code.

Each test plays one attack through the command a user would run on a folder they were sent,
with a marker that proves whether anything named by the folder's files was imported or
unpickled: a module that writes a file when imported, or a pickle that touches one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

import maw_gym  # noqa: F401  (registers the envs)
from maw_gym.artifacts import export_artifact
from maw_gym.cache import write_json
from maw_gym.tables import Tables
from maw_gym_leaderboard.cli import main
from maw_gym_leaderboard.submissions import SUBMISSION_FILE, write_submission

ENV = "MAW/DepthSelection-v3"
RETRIEVAL_ENV = "MAW/DepthSelectionRetrieval-v3"


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(name, file): an importable module ``name`` whose import creates ``file``."""
    name = f"maw_marker_{uuid.uuid4().hex[:12]}"
    touched = tmp_path / "marker-imported"
    folder = tmp_path / "importable"
    folder.mkdir()
    source = f"open({str(touched)!r}, 'w').close()\n\nclass Router:\n    pass\n"
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    yield name, touched
    sys.modules.pop(name, None)


def _untouched(marker: tuple[str, Path]) -> bool:
    name, touched = marker
    return not touched.exists() and name not in sys.modules


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables.synthetic(num_queries=12, best_depth=2, seed=5)


def _returns(env_id: str, tables: Tables, actions: np.ndarray) -> np.ndarray:
    """Each query's return under ``actions`` (N, 1), through the single env."""
    import gymnasium as gym

    env = gym.make(env_id, tables=tables)
    returns = []
    for query, (action,) in enumerate(actions):
        env.reset(options={"query_index": query})
        returns.append(float(env.step(int(action))[1]))
    return np.array(returns)


def _run(out: Path, tables: Tables, env_id: str = ENV) -> tuple[Path, Path]:
    """(run folder, artifact): a one-submission leaderboard run on ``env_id``, as the
    leaderboard writes it, and its test tables as an artifact."""
    actions = np.full((tables.num_queries, 1), 1)
    returns = _returns(env_id, tables, actions)
    write_submission(
        out / "runs" / "fixed-1" / "seed0", "fixed-1", 0, env_id, tables, actions, returns
    )
    write_json(out / "leaderboard.json", [{"policy": "fixed-1", "return_mean": returns.mean()}])
    write_json(out / "config.json", {"env": ENV})
    artifact = out.parent / "bench.tar"
    export_artifact({"test": tables}, {"preset": {"name": "synthetic"}}, artifact)
    return out, artifact


def _edit_submission(run: Path, change) -> None:
    path = run / "runs" / "fixed-1" / "seed0" / SUBMISSION_FILE
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_submission_env_id_naming_a_module_imports_nothing(
    tables, tmp_path, marker, capsys
) -> None:
    """Gymnasium's ``module:env`` syntax imports ``module``: `validate` printed `this`'s text."""
    run, artifact = _run(tmp_path / "run", tables)
    name, _ = marker
    _edit_submission(run, lambda record: record.update(env_id=f"{name}:{ENV}"))
    assert main(["validate", str(run), "--tables", str(artifact)]) == 1
    assert _untouched(marker)
    assert f"{name}:{ENV}" in capsys.readouterr().out


def test_a_submission_on_another_env_than_its_run_is_refused(tables, tmp_path, capsys) -> None:
    """A submission swapped to another env, with returns that env gives, used to 'reproduce'."""
    run, artifact = _run(tmp_path / "run", tables, env_id=RETRIEVAL_ENV)
    assert main(["validate", str(run), "--tables", str(artifact)]) == 1
    out = capsys.readouterr().out
    assert f"env: recorded {RETRIEVAL_ENV}, replayed {ENV}" in out, out


def test_a_run_config_naming_a_module_env_is_refused(tables, tmp_path, marker, capsys) -> None:
    run, artifact = _run(tmp_path / "run", tables)
    name, _ = marker
    write_json(run / "config.json", {"env": f"{name}:{ENV}"})
    assert main(["validate", str(run), "--tables", str(artifact)]) == 2
    assert _untouched(marker)
    assert "config.json: env" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [1.5, True, "1", None])
def test_actions_of_another_type_than_the_action_space_are_refused(
    tables, tmp_path, capsys, bad
) -> None:
    """1.5 in a Discrete submission replayed as depth 1 and 'reproduced'."""
    run, artifact = _run(tmp_path / "run", tables)
    _edit_submission(run, lambda record: record["actions"].__setitem__(3, [bad]))
    assert main(["validate", str(run), "--tables", str(artifact)]) == 1
    assert "not replayable" in capsys.readouterr().out


@pytest.fixture
def router_dir(tmp_path: Path) -> Path:
    """A best-fixed router trained on synthetic tables, with its ``training.json``."""
    train = tmp_path / "train.npz"
    Tables.synthetic(num_queries=12, best_depth=1, seed=0).save(train)
    out = tmp_path / "router"
    argv = ["train", "--agent", "best-fixed", "--train-tables", str(train), "--out", str(out)]
    assert main(argv) == 0
    return out


def _evaluate(router: Path, extra: tuple[str, ...] = ()) -> int:
    return main(
        ["evaluate", "--router", str(router), "--tables", str(router.parent / "train.npz"), *extra]
    )


def test_a_router_class_outside_the_allow_list_imports_nothing(router_dir, marker, capsys) -> None:
    name, _ = marker
    config = json.loads((router_dir / "router.json").read_text())
    config["class"] = f"{name}:Router"
    (router_dir / "router.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _evaluate(router_dir) == 2
    assert _untouched(marker)
    err = capsys.readouterr().err
    assert f"class '{name}:Router' is not one of maw-gym's routers" in err, err


def test_a_training_record_naming_a_module_env_imports_nothing(router_dir, marker, capsys) -> None:
    name, _ = marker
    record = json.loads((router_dir / "training.json").read_text())
    record["env_id"] = f"{name}:{ENV}"
    (router_dir / "training.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert _evaluate(router_dir) == 2
    assert _untouched(marker)
    assert "training.json: env_id" in capsys.readouterr().err


class _Touch:
    """Unpickling this runs ``Path(file).touch()``."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def __reduce__(self):
        return (Path.touch, (self.file,))


def test_a_pickled_router_is_loaded_only_with_trust_routers(router_dir, tmp_path, capsys) -> None:
    """An SB3 zip unpickles its ``data``: `evaluate --router` ran it without a word."""
    touched = tmp_path / "unpickled"
    payload = base64.b64encode(pickle.dumps(_Touch(touched))).decode()
    with zipfile.ZipFile(router_dir / "model.zip", "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": {":serialized:": payload}}))
    config = {"class": "maw_gym_agents.sb3:SB3Router", "name": "ppo", "algo": "ppo"}
    write_json(router_dir / "router.json", {**config, "model": "model.zip"})
    capsys.readouterr()
    assert _evaluate(router_dir) == 2
    assert not touched.exists()
    assert "--trust-routers" in capsys.readouterr().err
    with contextlib.suppress(Exception):  # whatever SB3 makes of the rest of the zip
        _evaluate(router_dir, ("--trust-routers",))
    assert touched.exists()  # the flag is what loads it: the marker proves the test can tell
