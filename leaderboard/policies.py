"""The leaderboard's policies by kind, and the context every policy is trained and scored with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maw_gym.tables import Tables
from maw_gym_agents.train import AGENTS

#: Learned policies, trained per seed: every agent of ``maw_gym_agents.train.AGENTS`` but its
#: ``best-fixed``, which the leaderboard chooses on dev among the heuristics instead.
LEARNED = tuple(name for name in AGENTS if name != "best-fixed")
#: Training-free policies and bounds (``maw_gym_agents.heuristics.heuristic_routers``), in
#: table order.
HEURISTICS = (
    "random",
    "hash",
    "best-fixed",
    "best-fixed-ndcg",
    "entropy-max",
    "entropy-min",
    "attention-norm",
    "topk-norm",
    "joint-router",
    "oracle",
)
#: Rerankers that need no router: their candidate scores come straight from the tables.
RERANKERS = {"BM25": "bm25_scores", "NON-MAW reranker": "nonmaw_scores"}
EXTRA = ("uniform-mixture",)
#: Per query, the hard depth with the best NDCG@10 on the test judgments (no env return).
NDCG_ORACLE = "oracle-ndcg"
#: Bounds, not policies: they read the test judgments, so they are listed apart and unranked.
#: ``oracle`` maximises the env reward per query, ``oracle-ndcg`` NDCG@10.
BOUNDS = ("oracle", NDCG_ORACLE)
#: Full-information learners (``maw_gym_agents.ceiling.CEILINGS``): reference rows, not agents.
CEILINGS = ("ceiling-ridge", "ceiling-mlp", "ceiling-ridge-ndcg", "ceiling-mlp-ndcg")
#: Per metric, the fixed depth its columns compare with (chosen on dev by that metric) and the
#: bound that closes the gap: closed gap = (π − baseline) / (bound − baseline) (issue 18).
#: Every leaderboard scores these four, whatever ``--policies`` names.
GAP_REFERENCES = {"return": ("best-fixed", "oracle"), "ndcg": ("best-fixed-ndcg", NDCG_ORACLE)}
ALL_POLICIES = (*RERANKERS, *HEURISTICS, *EXTRA, *LEARNED, *CEILINGS, NDCG_ORACLE)
MIXTURE_ENV = "MAW/SoftDepthMixture-v3"
RESULT_FILE = "result.json"
#: Stored in ``config.json``: bumped when ``result.json`` gains fields the report reads (2: the
#: per-query random and oracle returns), so that a resumed run recomputes older results
#: instead of misreading them.
RESULT_FORMAT = 2
#: A run's command, wall-clock time and whether it resumed (``scripts/readme_tables.py``).
RUN_FILE = "run.json"
#: Fewest judged queries per split the leaderboard accepts (bootstraps need a sample).
MIN_QUERIES = 8


def policy_env(policy: str, run_env: str) -> str:
    """The env ``policy`` is scored on in a run on ``run_env``: the run's own, except for the
    mixtures of :data:`EXTRA`, which need a mixture action space (``validate`` replays each
    submission on this env, whatever the submission says)."""
    return MIXTURE_ENV if policy in EXTRA else run_env


@dataclass
class Context:
    """What every policy is trained and scored with."""

    env_id: str
    train: Tables
    dev: Tables
    test: Tables
    qrels: dict[str, dict[str, int]]
    steps: int
    out: Path
    config: dict[str, Any]
