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

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from maw_gym import SAME_EPISODES, replayable_env_id
from maw_gym.artifacts import tables_fingerprint
from maw_gym.cache import read_json, write_json
from maw_gym.tables import Tables
from maw_gym_leaderboard.policies import RESULT_FILE, policy_env

SUBMISSION_FILE = "submission.json"
CONFIG_FILE = "config.json"
ROUTER_FILE = "router.json"
#: Replayed returns may differ from recorded ones by float rounding only (float32 tables).
RTOL, ATOL = 1e-6, 1e-9


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


def replay(env_id: str, tables: Tables, actions: Any) -> np.ndarray:
    """(N,) returns of playing query i with the recorded actions ``actions[i]`` (N, T, ...)."""
    from maw_gym_agents.rollouts import make_vector_env, run_episodes

    envs = make_vector_env(env_id, tables.num_queries, tables)
    try:
        checked = checked_actions(actions, envs.single_action_space, tables.num_queries)
        episodes = run_episodes(
            envs, np.arange(tables.num_queries), lambda _, t: checked[:, t], seed=0
        )
    except IndexError:
        raise ValueError(f"{checked.shape[1]} recorded steps end before the episodes do") from None
    finally:
        envs.close()
    return episodes.returns


def checked_actions(recorded: Any, space: gym.Space, num_queries: int) -> np.ndarray:
    """``recorded`` (N, T, ...) as an array of the action space's dtype, refused unless every
    action lies in ``space`` as recorded: integers for a discrete space, numbers for a box (1.5
    used to be cast to 1 first, and replayed as a valid Discrete action; so were true and "1")."""
    kind = numbers.Integral if np.issubdtype(space.dtype, np.integer) else numbers.Real
    values = np.asarray(recorded, dtype=object).ravel()  # ragged lists leave lists here
    if not all(isinstance(v, kind) and not isinstance(v, bool | np.bool_) for v in values):
        wanted = "integers" if kind is numbers.Integral else "numbers"
        raise ValueError(f"actions must be {wanted} for {space}")
    actions = np.asarray(recorded)
    if actions.ndim < 2 or actions.shape[0] != num_queries:
        raise ValueError(f"actions have shape {actions.shape}, expected (N={num_queries}, T, ...)")
    steps = actions.astype(space.dtype)
    if not all(space.contains(step) for step in steps.reshape(-1, *space.shape)):
        raise ValueError(f"actions outside the action space {space}")
    return steps


def check_submission(
    path: Path, tables: Tables, env_id: str, trust_routers: bool
) -> tuple[dict[str, Any], np.ndarray | None, list[Difference]]:
    """(submission, replayed returns or None, differences) for one ``submission.json`` of a
    run on ``env_id``: it is replayed on the env the run scored its policy on
    (:func:`~maw_gym_leaderboard.policies.policy_env`), never on one the submission names."""
    try:
        record = read_json(path)
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

    env_id = policy_env(policy, env_id)
    if SAME_EPISODES.get(record["env_id"], record["env_id"]) != env_id:
        return record, None, [differ("env", record["env_id"], env_id)]
    fingerprint = tables_fingerprint(tables)
    if record["tables_fingerprint"] != fingerprint:
        return (
            record,
            None,
            [differ("tables fingerprint", record["tables_fingerprint"][:16], fingerprint[:16])],
        )
    try:
        recorded = np.asarray(record["returns"], dtype=np.float64)
        returns = replay(env_id, tables, record["actions"])
    except (ValueError, TypeError) as error:
        return record, None, [differ("actions", "(as stored)", f"not replayable: {error}")]
    if recorded.shape != returns.shape:
        return record, None, [differ("returns", f"{recorded.shape}", f"{returns.shape}")]
    bad = ~np.isclose(returns, recorded, rtol=RTOL, atol=ATOL)
    issues = [
        differ(f"return of query {tables.query_ids[i]}", f"{recorded[i]:.9g}", f"{returns[i]:.9g}")
        for i in np.flatnonzero(bad)
    ]
    if trust_routers and record["router_saved"]:
        issues += _rerun_router(path.parent, record, tables, env_id)
    return record, returns, issues


def _rerun_router(
    directory: Path, record: dict[str, Any], tables: Tables, env_id: str
) -> list[Difference]:
    """Differences between the saved router's test actions on ``env_id`` now and the recorded
    ones."""
    from maw_gym_agents.evaluate import evaluate_router
    from maw_gym_agents.saving import load_router

    router = load_router(directory, allow_pickle=True)  # --trust-routers: the user's choice
    policy, seed = str(record["policy"]), int(record["seed"])
    result = evaluate_router(router, env_id, tables)
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
    env_id = run_env(Path(run_dir))
    issues = _unsubmitted(Path(run_dir))
    means: dict[str, list[float]] = {}
    for path in paths:
        record, returns, found = check_submission(path, tables, env_id, trust_routers)
        issues += found
        if returns is not None:
            means.setdefault(record["policy"], []).append(float(returns.mean()))
    rows = read_json(Path(run_dir) / "leaderboard.json")
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


def run_env(run_dir: Path) -> str:
    """The env id the run's ``config.json`` names: every submission is replayed on it."""
    path = run_dir / CONFIG_FILE
    config = read_json(path)
    env = config.get("env") if isinstance(config, dict) else None
    return replayable_env_id(env, f"{path}: env")


def _unsubmitted(run_dir: Path) -> list[Difference]:
    """A result with env returns but no submission beside it cannot be checked: a difference."""
    issues = []
    for result in sorted(run_dir.glob(f"runs/*/seed*/{RESULT_FILE}")):
        if not (result.parent / SUBMISSION_FILE).is_file():
            record = read_json(result)
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

    config = read_json(Path(run_dir) / CONFIG_FILE)
    if config.get("official_tables"):  # the shipped tables, verified against their pinned id
        from maw_gym.official import official_by_id, official_tables

        benchmark = official_by_id(str(config["official_tables"]))
        if benchmark is None:
            raise FileNotFoundError(
                f"{run_dir}/config.json: its official tables {config['official_tables']} are "
                "not shipped with this maw-gym; install the maw-gym version that made the run, "
                "or pass --tables with the run's tables artifact"
            )
        return official_tables(benchmark, "test")
    encoder = Path(config["test_tables"]["encoder"])
    if not (encoder / "config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir}/config.json: its encoder {encoder} is not on this machine; pass "
            "--tables with the run's tables artifact (`maw-gym tables export`)"
        )
    preset = Preset.from_dict(config["preset"])
    if "encoder" not in read_json(encoder / "config.json"):
        # An encoder directory of an older layout: rebuild the run's preset's own; equal
        # arrays give equal tables fingerprints, which the replay compares.
        encoder = None
    return ensure_tables(config["dataset"], "test", preset, encoder)
