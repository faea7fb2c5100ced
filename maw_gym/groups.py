"""Query groups of the ground-truth tier (issue 18): which queries each depth is an expert on.

The tier trains MAW depths as experts on disjoint query groups (as Routing Networks, DEMix and
RouterRetriever train experts on disjoint domains), so that a router has something to find by
construction, on real queries, documents and judgments. Only the training assignment is
controlled; the router never sees the group.

- **Where groups come from** (``EncoderSpec.groups``): ``"task"`` reads each query's
  ``metadata.task`` from the dataset's ``queries.jsonl`` (kjv-tasks: ``nave``, ``web``,
  ``rv1909``); ``"cluster:K"`` runs k-means with a fixed seed on the base encoder's sentence
  embeddings (``BaseEncoder.embed``) of the preset's train queries, and gives every query the
  nearest centroid, so that a dataset without task labels gets groups too. Group ``g`` is the
  ``g``-th name in sorted order.
- **Which depths are a group's experts**: depth ``d`` serves group ``d mod G``
  (:func:`expert_depths`), so with D = 8 and G = 3 every group owns two or three depths spread
  over the temperature and first-stage priors (depth 0 sharp and semantic, depth D-1 diffuse
  and lexical) instead of one block of alike depths.
- **The dial ρ** (``EncoderSpec.group_mix``): query q trains depth d with weight
  ``(1 - ρ)·[d ∈ own(q)]/|own(q)| + ρ/D`` (:func:`group_loss_weights`). Each query's weights sum
  to 1, so the loss has the same scale at every ρ; ρ = 1 trains every depth on every query alike
  (shared training, the overall mix), ρ = 0 each depth on its own group only. In between, the
  other groups' share of depth d's training weight is
  ``n_other·ρ/D / (n_own·((1 - ρ)/|own| + ρ/D) + n_other·ρ/D)`` (n_own, n_other: queries of d's
  group and of the others), which grows monotonically from 0 to ``n_other/n``.

:func:`specialisation_matrix` measures whether the experts really specialise: NDCG@10 of each
depth on each group, and each group's own depths against the others with paired CIs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from maw_gym.cache import parse_json
from maw_gym.data.sources import resolve_dataset
from maw_gym.specs import EncoderSpec, InputsSpec, parse_group_source

if TYPE_CHECKING:
    from maw_gym.pipeline import SplitInputs

#: Seed of the k-means initialisation (fixed: the groups are part of the benchmark).
CLUSTER_SEED = 0
#: Lloyd iterations of k-means (it stops earlier once no query changes cluster).
CLUSTER_ITERATIONS = 100
#: The MAW encoder's optimisation under ``specialisation="groups"`` (``TrainConfig`` fields),
#: chosen on dev among four budgets on kjv-tasks at quick, ρ = 0 (``docs/tier``). At quick's
#: default (16 queries a step, lr 1e-3: 69 AdamW steps in 3 epochs) the depth-specific weights
#: end within 0.07 of their initialisation and the depths do not specialise (dev gap 1.6-2.5x
#: the seed control); 4 queries a step at lr 3e-3 (4x the steps, same compute) gave the largest
#: dev gap (4.3x) and significant own-depth gains on two of the three tasks on dev.
EXPERT_TRAINING = {"batch_queries": 4, "lr": 3e-3}


@dataclass(frozen=True)
class QueryGroups:
    """Which group each of N queries belongs to."""

    names: tuple[str, ...]
    """The G group names; group g is ``names[g]``."""
    index: np.ndarray
    """(N,) int64 group of each query, in [0, G)."""

    def __post_init__(self) -> None:
        if self.index.size and (self.index.min() < 0 or self.index.max() >= len(self.names)):
            raise ValueError(f"QueryGroups.index must lie in [0, {len(self.names)})")

    @property
    def count(self) -> int:
        """G, the number of groups."""
        return len(self.names)

    def subset(self, rows: np.ndarray) -> QueryGroups:
        """The groups of queries ``rows`` (the names, and so the group numbers, are kept)."""
        return QueryGroups(self.names, self.index[rows])

    def labels(self) -> np.ndarray:
        """(N,) str name of each query's group."""
        return np.asarray(self.names, dtype=object)[self.index].astype(str)


def task_labels(dataset: str, query_ids: np.ndarray) -> np.ndarray | None:
    """(N,) each query's ``metadata.task`` from the dataset's queries.jsonl ("?" for a query
    without one), or None if no query there carries one."""
    tasks: dict[str, str] = {}
    path = resolve_dataset(dataset) / "queries.jsonl"
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            row = parse_json(line, f"{path}:{number}")
            task = (row.get("metadata") or {}).get("task")
            if task is not None:
                tasks[str(row["_id"])] = str(task)
    if not tasks:
        return None
    return np.array([tasks.get(str(qid), "?") for qid in query_ids])


def task_groups(dataset: str, query_ids: np.ndarray, names: tuple[str, ...]) -> QueryGroups:
    """The ``metadata.task`` groups of ``query_ids``; every query must carry one of ``names``."""
    labels = task_labels(dataset, query_ids)
    where = resolve_dataset(dataset) / "queries.jsonl"
    if labels is None:
        raise ValueError(
            f"{where}: no query has metadata.task, so groups='task' has nothing to read; "
            "label the queries or use groups='cluster:K'"
        )
    unknown = sorted(set(labels.tolist()) - set(names))
    if unknown:
        first = str(query_ids[np.flatnonzero(~np.isin(labels, names))[0]])
        raise ValueError(
            f"{where}: query {first!r} has task {unknown[0]!r} ('?': none), outside the train "
            f"split's tasks {list(names)}; every query needs one of them"
        )
    return QueryGroups(names, np.searchsorted(np.array(names), labels).astype(np.int64))


def kmeans(points: np.ndarray, count: int, seed: int = CLUSTER_SEED) -> np.ndarray:
    """(count, dim) centroids of ``points`` (N, dim) by Lloyd's k-means from a k-means++ start
    drawn with ``seed``: the same points give the same centroids on every machine."""
    if len(points) < count:
        raise ValueError(f"k-means: {len(points)} points cannot make {count} clusters")
    points = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng(seed)
    centroids = [points[rng.integers(len(points))]]
    for _ in range(count - 1):
        distance = ((points[:, None] - np.array(centroids)[None]) ** 2).sum(-1).min(1)
        centroids.append(points[rng.choice(len(points), p=distance / distance.sum())])
    centres = np.array(centroids)
    assignment = np.full(len(points), -1)
    for _ in range(CLUSTER_ITERATIONS):
        new = nearest_centroid(points, centres)
        if (new == assignment).all():
            break
        assignment = new
        for cluster in range(count):
            members = points[assignment == cluster]
            if len(members):  # an emptied cluster keeps its centre
                centres[cluster] = members.mean(0)
    return centres


def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) index of each point's nearest centroid (squared Euclidean; ties to the lower)."""
    distance = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)
    return distance.argmin(1).astype(np.int64)


def expert_depths(groups: int, depth: int) -> list[list[int]]:
    """Per group g, the depths that are its experts: ``[d for d in range(D) if d % G == g]``."""
    if groups > depth:
        raise ValueError(
            f"{groups} query groups need at least as many depths, got depth={depth}: "
            f"raise depth to >= {groups} or use fewer groups"
        )
    return [list(range(group, depth, groups)) for group in range(groups)]


def group_loss_weights(index: np.ndarray, groups: int, depth: int, mix: float) -> np.ndarray:
    """(N, D) weight of each depth in each query's training loss (module docstring):
    ``(1 - mix)·[d ∈ own(q)]/|own(q)| + mix/D``; every row sums to 1."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"group_mix must lie in [0, 1], got {mix}")
    own = np.zeros((groups, depth))
    for group, depths in enumerate(expert_depths(groups, depth)):
        own[group, depths] = 1.0 / len(depths)
    return (1.0 - mix) * own[index] + mix / depth


def specialisation_matrix(
    per_depth: np.ndarray, groups: QueryGroups, seed: int = 0
) -> dict[str, Any]:
    """Whether depths are experts on their groups, from per-query NDCG@10 ``per_depth`` (N, D).

    Per group: its queries' mean NDCG@10 under each depth (a row of the matrix), the mean over
    its own depths minus the mean over the other depths per query with a paired bootstrap CI
    (``own_minus_other``: the diagonal against the off-diagonal), and the best own depth's
    mean minus the best other depth's (``best_own_minus_best_other``, a point: the stricter
    reading, where one strong outsider is enough to lose).
    """
    from maw_gym.stats import paired_difference

    experts = expert_depths(groups.count, per_depth.shape[1])
    out: dict[str, Any] = {}
    for group, name in enumerate(groups.names):
        rows = per_depth[groups.index == group].astype(np.float64)
        own = np.zeros(per_depth.shape[1], dtype=bool)
        own[experts[group]] = True
        if not len(rows):
            out[name] = {"queries": 0}
            continue
        mean, low, high = paired_difference(rows[:, own].mean(1), rows[:, ~own].mean(1), seed)
        depth_means = rows.mean(0)
        out[name] = {
            "queries": len(rows),
            "own_depths": experts[group],
            "depths": depth_means.tolist(),
            "own_minus_other": {"mean": mean, "low": low, "high": high},
            "best_own_minus_best_other": float(depth_means[own].max() - depth_means[~own].max()),
        }
    return out


def cluster_groups(
    dataset: str, inputs: InputsSpec, query_ids: np.ndarray, count: int
) -> QueryGroups:
    """k-means groups (``count`` clusters of the sampled train queries' base-encoder
    embeddings, fixed seed) of ``query_ids`` of any split, each query in its nearest cluster."""
    from maw_gym.base_encoder import BaseEncoder
    from maw_gym.pipeline import sampled_split

    encoder = BaseEncoder(max_length=inputs.states.max_length)
    train = sampled_split(dataset, "train", inputs.data)
    centroids = kmeans(encoder.embed([train.queries[q] for q in sorted(train.queries)]), count)
    texts = {}
    for split in ("train", "dev", "test"):
        texts.update(sampled_split(dataset, split, inputs.data).queries)
    missing = [str(q) for q in query_ids if str(q) not in texts]
    if missing:
        raise ValueError(f"{dataset}: query {missing[0]!r} is in none of the sampled splits")
    embedded = encoder.embed([texts[str(q)] for q in query_ids])
    names = tuple(f"cluster{c}" for c in range(count))
    return QueryGroups(names, nearest_centroid(embedded, centroids))


def spec_groups(
    dataset: str, inputs: InputsSpec, spec: EncoderSpec, query_ids: np.ndarray
) -> QueryGroups:
    """The groups ``spec.groups`` gives ``query_ids`` (of any split of ``dataset``): the task
    names are those of the sampled train queries."""
    count = parse_group_source(spec.groups)
    if count is not None:
        return cluster_groups(dataset, inputs, query_ids, count)
    from maw_gym.pipeline import sampled_split

    train_ids = np.array(sorted(sampled_split(dataset, "train", inputs.data).queries))
    train_labels = task_labels(dataset, train_ids)
    names = set() if train_labels is None else set(train_labels.tolist()) - {"?"}
    return task_groups(dataset, query_ids, tuple(sorted(names)))


def with_groups(
    split: SplitInputs, dataset: str, inputs: InputsSpec, spec: EncoderSpec
) -> SplitInputs:
    """``split`` with its queries' groups attached (unchanged when ``spec.groups`` is empty):
    what ``specialisation="groups"`` training reads."""
    if not spec.groups:
        return split
    return dataclasses.replace(split, groups=spec_groups(dataset, inputs, spec, split.query_ids))
