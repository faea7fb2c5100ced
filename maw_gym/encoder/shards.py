"""Tables computed shard by shard, in this process or as Ray tasks (``--ray-address``).

A split's queries (sorted ids) are cut into shards of ``shard_queries``
(:func:`maw_gym.pipeline.query_shards`). :func:`compute_shard` turns one shard into its tables
arrays: the shard's token states (cached by :mod:`maw_gym.base_encoder`) and the frozen
encoder's scores and observations. It is a pure function of (split, inputs, encoder, rows), run
on the same batches whichever process runs it, so shards computed by Ray workers concatenate,
in query order, to tables bitwise equal to a single-process CPU build (tests/test_shards.py)
on the same kind of CPU: each shard runs with the driver's torch thread count (set it with
``OMP_NUM_THREADS``), and reserves that many CPUs per Ray task.

Finished shards are written to ``shard_dir`` by the driver as they arrive (atomically), so an
interrupted build resumes where it stopped; a Ray worker that dies mid-shard has its task
retried by Ray (``max_retries``). Only the driver writes shards, so workers need no shared
file system for them (for the states cache they do: docs/scale.md).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maw_gym.cache import atomic_path, make_dirs
from maw_gym.progress import progress_bar
from maw_gym.ray_connect import join
from maw_gym.signals import keeping_sigterm_handler
from maw_gym.specs import InputsSpec

logger = logging.getLogger(__name__)

#: Times Ray reruns a shard whose worker died (Ray's default for tasks is 3, too).
SHARD_RETRIES = 3
#: Passed to Ray workers so that they read and write the driver's cache.
FORWARDED_ENV_VARS = ("MAW_GYM_CACHE", "RAY_AUTH_MODE", "TOKENIZERS_PARALLELISM", "OMP_WAIT_POLICY")


@dataclass(frozen=True)
class ShardJob:
    """One shard of one split's tables: everything a worker needs to compute it."""

    dataset: str
    split: str
    inputs: InputsSpec
    encoder_dir: str
    rows: tuple[int, int]
    """(start, stop) in the split's sorted query ids."""
    device: str
    threads: int
    """torch CPU threads (and Ray CPUs) of the shard: a float sum's order, and so its last
    bit, depends on how many threads split it, so every shard runs with the same count."""
    queries: tuple[int, ...] | None = None
    """Positions within ``rows`` of the only queries to score (None: all). The train tables
    keep the router-train queries only, so only they are scored (issue 20: a quarter of the
    work); the states are still those of the whole shard, as the encoder's training saw them."""

    @property
    def file_name(self) -> str:
        some = "" if self.queries is None else "-some"
        return f"rows-{self.rows[0]:09d}-{self.rows[1]:09d}{some}.npz"


@functools.lru_cache(maxsize=2)
def _encoder(directory: str, device: str):
    """The trained encoder, loaded once per process (a Ray worker runs many shards)."""
    from maw_gym.encoder.train import TrainedEncoder

    return TrainedEncoder.load(Path(directory), device=device)


def compute_shard(job: ShardJob) -> dict[str, np.ndarray]:
    """Every :class:`~maw_gym.tables.Tables` field of the queries ``job.rows`` (of those of
    them in ``job.queries`` if given)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return _shard_arrays(job)
    finally:
        torch.set_num_threads(previous)


def _shard_arrays(job: ShardJob) -> dict[str, np.ndarray]:
    from maw_gym.pipeline import split_inputs

    inputs = split_inputs(job.dataset, job.split, job.inputs, rows=job.rows, device=job.device)
    if job.queries is not None:
        inputs = inputs.subset(np.array(job.queries, dtype=np.int64), "scored")
    encoder = _encoder(job.encoder_dir, job.device)
    models = encoder.models
    return scored_arrays(inputs, models["maw"], models["nonmaw_0"], models.get("stack"))


def scored_arrays(inputs, maw, nonmaw, stack=None) -> dict[str, np.ndarray]:
    """Every :class:`~maw_gym.tables.Tables` field of ``inputs`` (a ``SplitInputs``) scored by
    the MAW, NON-MAW and (optional) layer-2 stack rerankers; the depth study builds one set
    per encoder variant with it."""
    from maw_gym.encoder.reranker import score_split, score_split_per_lower_depth

    of = f"tables {inputs.dataset}/{inputs.split}"
    scored = score_split(maw, inputs, observe=True, progress=f"{of}: MAW with observations")
    nonmaw_scored = score_split(nonmaw, inputs, progress=f"{of}: NON-MAW")
    arrays = {
        "query_ids": inputs.query_ids,
        "candidate_ids": inputs.candidate_ids,
        "candidate_mask": inputs.candidate_mask,
        "relevance": inputs.relevance,
        "ideal_gains": inputs.ideal_gains,
        "observation": scored.observation,
        "entropy": scored.entropy,
        "focus": scored.focus,
        "score_parts": scored.score_parts,
        "score_base": scored.score_base,
        "bm25_scores": inputs.bm25_scores,
        "nonmaw_scores": nonmaw_scored.depth_scores()[:, 0],
        "joint_router_logits": scored.router_logits,
    }
    if stack is not None:
        per_lower = score_split_per_lower_depth(stack, inputs, progress=f"{of}: layer 2")
        arrays["layer2_observation"] = np.stack([s.observation for s in per_lower], axis=1)
        arrays["layer2_entropy"] = np.stack([s.entropy for s in per_lower], axis=1)
        arrays["layer2_focus"] = np.stack([s.focus for s in per_lower], axis=1)
        arrays["layer2_scores"] = np.stack([s.depth_scores() for s in per_lower], axis=1)
    return arrays


def run_shards(
    jobs: list[ShardJob], shard_dir: Path, ray_address: str | None = None
) -> dict[str, np.ndarray]:
    """Compute the shards missing from ``shard_dir`` (locally, or on Ray at ``ray_address``)
    and return every field concatenated in the order of ``jobs``."""
    make_dirs(shard_dir)
    shards = {job: _read_shard(shard_dir / job.file_name) for job in jobs}
    missing = [job for job, arrays in shards.items() if arrays is None]
    if missing and ray_address is None:
        for job in progress_bar(missing, desc=f"tables {jobs[0].split}: shards", unit="shard"):
            shards[job] = compute_shard(job)
            _write_shard(shard_dir / job.file_name, shards[job])
    elif missing:
        shards.update(_run_on_ray(missing, shard_dir, ray_address))
    fields = shards[jobs[0]]
    return {name: np.concatenate([shards[job][name] for job in jobs]) for name in fields}


def _run_on_ray(
    jobs: list[ShardJob], shard_dir: Path, address: str
) -> dict[ShardJob, dict[str, np.ndarray]]:
    """One Ray task per shard (``threads`` CPUs, and a GPU with ``--device cuda``), written
    as they finish."""
    import ray

    init_ray(address)
    task = ray.remote(compute_shard).options(
        num_cpus=jobs[0].threads,
        num_gpus=1 if jobs[0].device == "cuda" else 0,
        max_retries=SHARD_RETRIES,
    )
    pending = {task.remote(job): job for job in jobs}
    finished = {}
    with progress_bar(
        total=len(jobs), desc=f"tables {jobs[0].split}: Ray shards", unit="shard"
    ) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            finished[job] = ray.get(done[0])
            _write_shard(shard_dir / job.file_name, finished[job])
            bar.update(1)
    return finished


def init_ray(address: str) -> None:
    """Connect to ``address`` (``auto``, ``HOST:PORT``, with a deadline: see
    :mod:`maw_gym.ray_connect`) or start a local Ray (``local``), shipping ``maw_gym`` and the
    cache location to workers; a running Ray is kept as it is."""
    import ray

    import maw_gym

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster has no shared token
    if ray.is_initialized():
        return
    env_vars = {key: os.environ[key] for key in FORWARDED_ENV_VARS if key in os.environ}
    runtime_env = {"py_modules": [maw_gym], "env_vars": env_vars}
    if address != "local":
        join(address, runtime_env=runtime_env)
        return
    with keeping_sigterm_handler():  # SIGTERM unwinds like Ctrl-C (maw_gym.signals)
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)


def _write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _read_shard(path: Path) -> dict[str, np.ndarray] | None:
    """A finished shard, or None if it is missing or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as error:  # zipfile/ValueError/EOFError: a damaged file, recompute it
        logger.warning("recomputing shard %s: %s", path, error)
        return None
