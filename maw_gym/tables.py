"""Tables: everything an episode can need, per query and per action, for one split.

With the MAW encoder frozen, an episode's observation and reward are pure functions of
(query, action). They are computed once per split by
:func:`maw_gym.build.build_tables` and cached here, so environments step at
memory speed.

The reranker's score is *linear* in the MAW attention output (see ``maw_gym.encoder.reranker``),
so a candidate's score under any choice of depths decomposes exactly as

    score[c] = score_base[c] + sum_h score_parts[d_h, h, c]

which makes the hard, per-head and soft-mixture environments exact from these arrays.

Shapes (N queries, D depths, H heads, P pooled size, C candidates; "top-8" = the query's 8 best
BM25 candidates, which the observation is averaged over):

| field               | shape              | meaning                                          |
|---------------------|--------------------|--------------------------------------------------|
| query_ids           | (N,) str           | BEIR query ids                                   |
| candidate_ids       | (N, C) str         | BM25 top-C doc ids, "" where a query has fewer   |
| candidate_mask      | (N, C) bool        | True for real candidates                         |
| relevance           | (N, C)             | qrels grade of each candidate (0 if unjudged)    |
| ideal_gains         | (N, 10)            | the query's 10 best qrels grades (for IDCG)      |
| observation         | (N, D, H, P, P)    | compressed 5D attention (mean over top-8)        |
| entropy             | (N, D, H)          | mean normalised row entropy, in [0, 1]           |
| focus               | (N, D, H)          | mean top-k key mass, in [0, 1]                   |
| score_parts         | (N, D, H, C)       | per-head, per-depth part of candidate scores     |
| score_base          | (N, C)             | depth-independent part of the scores             |
| bm25_scores         | (N, C)             | first-stage scores                               |
| nonmaw_scores       | (N, C)             | NON-MAW twin reranker's scores                   |
| joint_router_logits | (N, D)             | the encoder's jointly trained router             |
| layer2_observation  | (N, D, D, H, P, P) | optional: layer-2 observation given layer-1 depth|
| layer2_entropy      | (N, D, D, H)       | optional: layer-2 entropy given (d1, d2)         |
| layer2_focus        | (N, D, D, H)       | optional: layer-2 focus given (d1, d2)           |
| layer2_scores       | (N, D, D, C)       | optional: the stack's scores given (d1, d2)      |

Arrays are float32 unless the table says otherwise.

``alignment`` (N, D) is derived: NDCG@10 of the candidates reranked by each depth's scores.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from maw_gym.cache import atomic_path, file_hash, parse_json, write_json
from maw_gym.metrics import NDCG_CUTOFF, depth_scores, ndcg_at_10, relevant_mass
from maw_gym.retrieval import routed_results

#: The file that describes a tables directory; its presence marks a directory as tables.
TABLES_MANIFEST = "manifest.json"


#: Alignment measures an env can reward (``alignment=`` env kwarg).
ALIGNMENTS = ("ndcg", "relevant_mass")


@dataclass
class Tables:
    """Per-query, per-action arrays for one split (see the module docstring for shapes)."""

    query_ids: np.ndarray
    candidate_ids: np.ndarray
    candidate_mask: np.ndarray
    relevance: np.ndarray
    ideal_gains: np.ndarray
    observation: np.ndarray
    entropy: np.ndarray
    focus: np.ndarray
    score_parts: np.ndarray
    score_base: np.ndarray
    bm25_scores: np.ndarray
    nonmaw_scores: np.ndarray
    joint_router_logits: np.ndarray
    layer2_observation: np.ndarray | None = None
    layer2_entropy: np.ndarray | None = None
    layer2_focus: np.ndarray | None = None
    layer2_scores: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    alignment: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n, d, h = self.observation.shape[:3]
        c = self.candidate_ids.shape[1]
        expected = {
            "candidate_mask": (n, c),
            "relevance": (n, c),
            "ideal_gains": (n, NDCG_CUTOFF),
            "entropy": (n, d, h),
            "focus": (n, d, h),
            "score_parts": (n, d, h, c),
            "score_base": (n, c),
            "bm25_scores": (n, c),
            "nonmaw_scores": (n, c),
            "joint_router_logits": (n, d),
            "query_ids": (n,),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"Tables.{name} has shape {actual}, expected {shape}")
        for name in ("entropy", "focus"):
            values = getattr(self, name)
            if not np.all((values >= 0) & (values <= 1)):
                raise ValueError(f"Tables.{name} must lie in [0, 1]")
        if not np.isfinite(self.observation).all() or not np.isfinite(self.score_parts).all():
            raise ValueError("Tables hold NaN or inf: the encoder that built them diverged")
        self.alignment = self.ndcg(self.depth_scores())

    @property
    def num_queries(self) -> int:
        return int(self.observation.shape[0])

    @property
    def depth(self) -> int:
        return int(self.observation.shape[1])

    @property
    def heads(self) -> int:
        return int(self.observation.shape[2])

    @property
    def has_layers(self) -> bool:
        return self.layer2_scores is not None

    def depth_scores(self) -> np.ndarray:
        """Candidate scores for every hard depth choice: (N, D, C)."""
        return depth_scores(self.score_base, self.score_parts)

    def ndcg(self, scores: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """NDCG@10 of ``scores`` (rows ``index``, or all; extra middle axes broadcast)."""
        rows = slice(None) if index is None else index
        rel, ideal, mask = self.relevance[rows], self.ideal_gains[rows], self.candidate_mask[rows]
        return ndcg_at_10(scores, rel, ideal, mask)

    def results(self, scores: np.ndarray) -> dict[str, dict[str, float]]:
        """BEIR ``results`` of the rerank given by candidate ``scores`` (N, C), e.g.
        ``tables.depth_scores()[np.arange(N), actions]`` for a router's choices."""
        return routed_results(self.query_ids, self.candidate_ids, self.candidate_mask, scores)

    def alignment_of(
        self, scores: np.ndarray, kind: str, index: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``kind`` alignment (one of :data:`ALIGNMENTS`) of ``scores``, like :meth:`ndcg`."""
        if kind == "ndcg":
            return self.ndcg(scores, index)
        if kind != "relevant_mass":
            raise ValueError(f"alignment={kind!r}: choose one of {ALIGNMENTS}")
        rows = slice(None) if index is None else index
        return relevant_mass(scores, self.relevance[rows], self.candidate_mask[rows])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every stored field that is set (``meta`` and the derived ``alignment`` excluded)."""
        return {
            name: getattr(self, name)
            for name in self.field_names()
            if getattr(self, name) is not None
        }

    def save(self, path: Path) -> None:
        """Write a directory of one ``.npy`` per field plus ``manifest.json`` (``meta`` and each
        field's shape, dtype and sha256), atomically: it is filled beside ``path`` and renamed
        into place, so a reader sees the old tables or the new ones, never a mix."""
        with atomic_path(Path(path), folder=True, place=_replace_dir) as tmp:
            manifest = {}
            for name, array in self.arrays().items():
                file = tmp / f"{name}.npy"
                np.save(file, np.ascontiguousarray(array), allow_pickle=False)
                manifest[name] = {
                    "shape": list(array.shape),
                    "dtype": array.dtype.str,
                    "sha256": file_hash(file, length=64),
                }
            write_json(tmp / TABLES_MANIFEST, {"meta": self.meta, "fields": manifest})

    @classmethod
    def load(cls, path: Path, verify: bool = True) -> Tables:
        """Open tables written by :meth:`save`, every field memory-mapped read-only, so env
        processes on one node share its pages and a split need not fit in memory.

        Each field's shape and dtype must match the manifest (a truncated file fails here) and,
        with ``verify``, its sha256 too (a corrupt one fails; this reads every byte once). Any
        mismatch is a ``ValueError`` naming the file.
        """
        path = Path(path)
        try:
            manifest = parse_json((path / TABLES_MANIFEST).read_bytes(), path / TABLES_MANIFEST)
            unknown = sorted(set(manifest["fields"]) - set(cls.field_names()))
            if unknown:
                raise ValueError(
                    f"unknown field {unknown[0]!r} in {TABLES_MANIFEST}; expected among "
                    f"{cls.field_names()}"
                )
            arrays = {
                name: _open_field(path / f"{name}.npy", expected, verify)
                for name, expected in manifest["fields"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}: not readable tables ({error}); delete it to rebuild"
            ) from error
        return cls(**arrays, meta=manifest["meta"])

    @classmethod
    def field_names(cls) -> list[str]:
        """The array fields a tables directory or artifact may hold (``meta`` aside)."""
        return [f.name for f in fields(cls) if f.init and f.name != "meta"]

    def subset(self, index: np.ndarray) -> Tables:
        """The tables restricted to queries ``index`` (a new object; arrays are copies)."""
        picked = {name: array[index] for name, array in self.arrays().items()}
        return Tables(**picked, meta=dict(self.meta))

    @classmethod
    def synthetic(
        cls,
        num_queries: int = 32,
        depth: int = 4,
        heads: int = 2,
        pool: int = 2,
        candidates: int = 8,
        best_depth: int | None = None,
        layers: bool = False,
        seed: int = 0,
    ) -> Tables:
        """Random but well-formed tables for unit tests.

        With ``best_depth`` set, that depth's scores rank the relevant candidates first on every
        query, so an agent that learns anything should pick it.
        """
        rng = np.random.default_rng(seed)
        n, d, h, p, c = num_queries, depth, heads, pool, candidates
        relevance = (rng.random((n, c)) < 0.3).astype(np.float32)
        relevance[:, 0] = np.maximum(relevance[:, 0], (rng.random(n) < 0.8))
        ideal = -np.sort(-relevance, axis=1)[:, :NDCG_CUTOFF]
        ideal = np.pad(ideal, ((0, 0), (0, max(0, NDCG_CUTOFF - ideal.shape[1]))))
        score_parts = rng.normal(size=(n, d, h, c)).astype(np.float32)
        if best_depth is not None:
            score_parts[:, best_depth] += 4.0 * relevance[:, None, :] / h
        obs = rng.random((n, d, h, p, p)).astype(np.float32)
        obs /= obs.sum(axis=(-1, -2), keepdims=True)
        extra: dict[str, Any] = {}
        if layers:
            extra = {
                "layer2_observation": rng.random((n, d, d, h, p, p)).astype(np.float32),
                "layer2_entropy": rng.random((n, d, d, h)).astype(np.float32),
                "layer2_focus": rng.random((n, d, d, h)).astype(np.float32),
                "layer2_scores": rng.normal(size=(n, d, d, c)).astype(np.float32),
            }
            if best_depth is not None:
                extra["layer2_scores"][:, best_depth, best_depth] += 4.0 * relevance
        return cls(
            query_ids=np.array([f"q{i}" for i in range(n)]),
            candidate_ids=np.array([[f"d{i}_{j}" for j in range(c)] for i in range(n)]),
            candidate_mask=np.ones((n, c), dtype=bool),
            relevance=relevance,
            ideal_gains=ideal.astype(np.float32),
            observation=obs,
            entropy=rng.random((n, d, h)).astype(np.float32),
            focus=rng.random((n, d, h)).astype(np.float32),
            score_parts=score_parts,
            score_base=np.zeros((n, c), dtype=np.float32),
            bm25_scores=np.sort(rng.random((n, c)).astype(np.float32), axis=1)[:, ::-1].copy(),
            nonmaw_scores=rng.normal(size=(n, c)).astype(np.float32),
            joint_router_logits=rng.normal(size=(n, d)).astype(np.float32),
            meta={"synthetic": True, "seed": seed},
            **extra,
        )


def _open_field(file: Path, expected: dict[str, Any], verify: bool) -> np.ndarray:
    """One field, memory-mapped, checked against its manifest entry."""
    array = np.load(file, mmap_mode="r", allow_pickle=False)
    if list(array.shape) != expected["shape"] or array.dtype.str != expected["dtype"]:
        raise ValueError(
            f"{file.name} is {array.dtype.str}{list(array.shape)}, the manifest says "
            f"{expected['dtype']}{expected['shape']}"
        )
    if verify and file_hash(file, length=64) != expected["sha256"]:
        raise ValueError(f"{file.name}: its sha256 differs from the manifest's (corrupt)")
    return array


def _replace_dir(new: Path, path: Path) -> None:
    """Rename ``new`` onto ``path``; an existing ``path`` must be tables (it holds
    ``TABLES_MANIFEST`` and only ``.npy`` files besides) and is moved aside, then deleted."""
    if not path.exists():
        os.replace(new, path)
        return
    entries = list(path.iterdir()) if path.is_dir() else []
    if not (path / TABLES_MANIFEST).is_file() or any(
        entry.name != TABLES_MANIFEST and entry.suffix != ".npy" for entry in entries
    ):
        raise FileExistsError(f"{path}: exists and is not a tables directory; move it away")
    old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old)  # guarded: proven a tables directory above, then moved aside
