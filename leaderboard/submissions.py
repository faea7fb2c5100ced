"""Replayable submissions, and the replay behind ``maw-gym validate RUN_DIR``.

For every (policy, seed) with env returns, the leaderboard writes ``submission.json`` beside its
``result.json``: the env, the test tables' fingerprint, each test query's recorded actions and
returns, and whether a saved router lies in the same directory. ``maw-gym validate`` replays
every submission's actions through the env on the test tables and compares the returns, query by
query, and each policy's mean with ``leaderboard.json`` (as CompilerGym's leaderboard replays
submitted action sequences instead of trusting reported scores).

Recorded actions are JSON, so replaying them runs nothing from the run directory. Re-running the
saved routers does: SB3 zips and RLlib checkpoints are unpickled, and so is anything
``torch.load(weights_only=False)`` reads. That is opt-in (``--trust-routers``), with a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.artifacts import tables_fingerprint
from maw_gym.cache import write_json
from maw_gym.tables import Tables
from maw_gym_leaderboard.policies import RESULT_FILE

SUBMISSION_FILE = "submission.json"
ROUTER_FILE = "router.json"
#: Replayed returns may differ from recorded ones by float rounding only (float32 tables).
RTOL, ATOL = 1e-6, 1e-9
TRUST_WARNING = (
    "warning: --trust-routers loads the saved routers, which unpickles code from their files "
    "(SB3 zips, RLlib checkpoints, torch.load(weights_only=False)); do this only for run "
    "directories you trust"
)


@dataclass(frozen=True)
class Difference:
    """One way a submission fails to reproduce."""

    policy: str
    seed: int
    what: str
    recorded: str
    replayed: str

    def __str__(self) -> str:
        return (
            f"{self.policy} seed {self.seed}: {self.what}: recorded {self.recorded}, "
            f"replayed {self.replayed}"
        )


def write_submission(
    run_dir: Path,
    policy: str,
    seed: int,
    env_id: str,
    tables: Tables,
    actions: np.ndarray,
    returns: np.ndarray,
) -> None:
    """Record one (policy, seed)'s test actions ``(N, T, ...)`` and returns ``(N,)``."""
    write_json(
        Path(run_dir) / SUBMISSION_FILE,
        {
            "policy": policy,
            "seed": seed,
            "env_id": env_id,
            "tables_fingerprint": tables_fingerprint(tables),
            "query_ids": [str(q) for q in tables.query_ids],
            "actions": np.asarray(actions).tolist(),
            "returns": np.asarray(returns, dtype=np.float64).tolist(),
            "router_saved": (Path(run_dir) / ROUTER_FILE).is_file(),
        },
    )


def replay(env_id: str, tables: Tables, actions: np.ndarray) -> np.ndarray:
    """(N,) returns of playing query i with the recorded actions ``actions[i]`` (N, T, ...)."""
    from maw_gym_agents.common import make_vector_env, run_episodes

    envs = make_vector_env(env_id, tables.num_queries, tables)
    space = envs.single_action_space
    actions = np.asarray(actions, dtype=space.dtype)
    if actions.ndim < 2 or actions.shape[0] != tables.num_queries:
        raise ValueError(
            f"actions have shape {actions.shape}, expected (N={tables.num_queries}, T, ...)"
        )
    if not all(space.contains(step) for step in actions.reshape(-1, *space.shape)):
        raise ValueError(f"actions outside the action space {space}")
    try:
        episodes = run_episodes(
            envs, np.arange(tables.num_queries), lambda _, t: actions[:, t], seed=0
        )
    except IndexError:
        raise ValueError(f"{actions.shape[1]} recorded steps end before the episodes do") from None
    finally:
        envs.close()
    return episodes.returns


def check_submission(
    path: Path, tables: Tables, trust_routers: bool
) -> tuple[dict[str, Any], np.ndarray | None, list[Difference]]:
    """(submission, replayed returns or None, differences) for one ``submission.json``."""
    try:
        record = json.loads(Path(path).read_text())
        policy, seed = str(record["policy"]), int(record["seed"])
        missing = {"env_id", "tables_fingerprint", "actions", "returns", "router_saved"} - set(
            record
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a submission ({error})") from None
    if missing:
        raise ValueError(f"{path}: not a submission (no {sorted(missing)})")

    def differ(what: str, recorded: Any, replayed: Any) -> Difference:
        return Difference(policy, seed, what, str(recorded), str(replayed))

    fingerprint = tables_fingerprint(tables)
    if record["tables_fingerprint"] != fingerprint:
        return (
            record,
            None,
            [differ("tables fingerprint", record["tables_fingerprint"][:16], fingerprint[:16])],
        )
    recorded = np.asarray(record["returns"], dtype=np.float64)
    try:
        returns = replay(record["env_id"], tables, np.asarray(record["actions"]))
    except ValueError as error:
        return record, None, [differ("actions", "(as stored)", f"not replayable: {error}")]
    bad = ~np.isclose(returns, recorded, rtol=RTOL, atol=ATOL)
    issues = [
        differ(f"return of query {tables.query_ids[i]}", f"{recorded[i]:.9g}", f"{returns[i]:.9g}")
        for i in np.flatnonzero(bad)
    ]
    if trust_routers and record["router_saved"]:
        issues += _rerun_router(path.parent, record, tables, policy, seed)
    return record, returns, issues


def _rerun_router(
    directory: Path, record: dict[str, Any], tables: Tables, policy: str, seed: int
) -> list[Difference]:
    """Differences between the saved router's test actions now and the recorded ones."""
    from maw_gym_agents.common import load_router
    from maw_gym_agents.evaluate import evaluate_router

    result = evaluate_router(load_router(directory), record["env_id"], tables)
    actions = np.asarray(result.actions, dtype=np.float64)
    recorded = np.asarray(record["actions"], dtype=np.float64)
    if actions.shape != recorded.shape:
        return [
            Difference(
                policy, seed, "router's action shape", str(recorded.shape), str(actions.shape)
            )
        ]
    rows = np.flatnonzero(
        ~np.isclose(actions, recorded, rtol=RTOL, atol=ATOL).reshape(len(actions), -1).all(axis=1)
    )
    return [
        Difference(
            policy,
            seed,
            f"router's action on query {tables.query_ids[i]}",
            str(recorded[i].tolist()),
            str(actions[i].tolist()),
        )
        for i in rows
    ]


def validate_run(
    run_dir: Path, tables: Tables, trust_routers: bool = False
) -> tuple[int, list[Difference]]:
    """(submissions checked, differences) for every submission of the leaderboard in ``run_dir``.

    Besides each submission's per-query returns, each policy's mean return over its seeds must
    equal the ``return_mean`` that ``leaderboard.json`` reports.
    """
    paths = sorted(Path(run_dir).glob(f"runs/*/seed*/{SUBMISSION_FILE}"))
    if not paths:
        raise FileNotFoundError(
            f"{run_dir}: no runs/*/seed*/{SUBMISSION_FILE}; is it a leaderboard directory?"
        )
    issues = _unsubmitted(Path(run_dir))
    means: dict[str, list[float]] = {}
    for path in paths:
        record, returns, found = check_submission(path, tables, trust_routers)
        issues += found
        if returns is not None:
            means.setdefault(record["policy"], []).append(float(returns.mean()))
    rows = json.loads((Path(run_dir) / "leaderboard.json").read_text())
    for row in rows:
        if row["policy"] in means and "return_mean" in row:
            replayed = float(np.mean(means[row["policy"]]))
            if not np.isclose(replayed, row["return_mean"], rtol=RTOL, atol=ATOL):
                issues.append(
                    Difference(
                        row["policy"],
                        -1,
                        "leaderboard.json return_mean",
                        f"{row['return_mean']:.9g}",
                        f"{replayed:.9g}",
                    )
                )
    return len(paths), issues


def _unsubmitted(run_dir: Path) -> list[Difference]:
    """A result with env returns but no submission beside it cannot be checked: a difference."""
    issues = []
    for result in sorted(run_dir.glob(f"runs/*/seed*/{RESULT_FILE}")):
        if not (result.parent / SUBMISSION_FILE).is_file():
            record = json.loads(result.read_text())
            if "returns" in record:
                seed = int(record.get("seed", -1))
                issues.append(
                    Difference(str(record.get("policy")), seed, "submission", "missing", "–")
                )
    return issues


def run_tables(run_dir: Path, source: Path | None) -> Tables:
    """The test tables to validate ``run_dir`` on: ``source``, else those its config names."""
    if source is not None:
        from maw_gym.artifacts import open_tables

        return open_tables(source, "test")
    from maw_gym.build import ensure_tables
    from maw_gym.presets import Preset

    config = json.loads((Path(run_dir) / "config.json").read_text())
    encoder = Path(config["test_tables"]["encoder"])
    if not (encoder / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir}/config.json: its encoder {encoder} is not on this machine; pass "
            "--tables with the run's tables artifact (`maw-gym tables export`)"
        )
    preset = Preset.from_dict(config["preset"])
    if "encoder" not in json.loads((encoder / "config.json").read_text()):
        # An encoder directory of an older layout: rebuild the run's preset's own; equal
        # arrays give equal tables fingerprints, which the replay compares.
        encoder = None
    return ensure_tables(config["dataset"], "test", preset, encoder)
