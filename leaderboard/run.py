"""The leaderboard: train and rank every routing policy against one frozen MAW encoder.

Every policy is scored on the test split of the same tables (so the same frozen encoder), with
one statistic (``maw_gym_leaderboard.report``): means over test queries with paired bootstrap
CIs over test queries, for the env return, the normalised score (uniform random = 0, per-query
oracle = 1, both exact from the tables) and the retrieval quality of the BM25 → MAW rerank it
routes (NDCG@10, MRR@10, Hit@1, through beir). The headline is the closed gap to the oracle
from the best fixed depth, on return and on NDCG@10, each against its own best depth chosen on
dev; full-information ceilings and the bounds are listed apart. rliable's IQM over seeds is one
labelled extra column. BM25 and the NON-MAW twin have no env return; they are there for the
retrieval columns.

Each (policy, seed) is trained, evaluated and written to ``DIR/runs/<policy>/seed<k>/`` before
the next starts, so an interrupted leaderboard resumes where it stopped; a finished result is
reused only if it was made with the same configuration. :func:`run_leaderboard` runs one
leaderboard (``maw-gym leaderboard``); a suite runs it once per task
(:mod:`maw_gym_leaderboard.suite`).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from maw_gym.cache import make_dirs, read_json, write_json
from maw_gym.presets import Preset, resolve_preset
from maw_gym.specs import SPLITS
from maw_gym_leaderboard.plots import PLOT_FILES
from maw_gym_leaderboard.policies import (
    ALL_POLICIES,
    CEILINGS,
    GAP_REFERENCES,
    LEARNED,
    MIN_QUERIES,
    RESULT_FILE,
    RESULT_FORMAT,
    RUN_FILE,
    Context,
)
from maw_gym_leaderboard.report import Runs, render_markdown, summarise, write_outputs
from maw_gym_leaderboard.score import Scorer

#: Marks a folder as a leaderboard's --out: the only kind of folder --fresh deletes from.
MARKER = ".maw-gym-leaderboard"
#: What a leaderboard writes into --out, so all that --fresh deletes (other files stay).
OUTPUTS = (
    "runs",
    "tasks",
    RUN_FILE,
    "config.json",
    "leaderboard.md",
    "leaderboard.csv",
    "leaderboard.json",
    "raw_scores.json",
    "suite.md",
    "suite.json",
    *PLOT_FILES.values(),
)
DEFAULT_ENV = "MAW/DepthSelection-v3"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderboardJob:
    """One leaderboard: what ``maw-gym leaderboard`` is asked (see its ``--help``)."""

    dataset: str
    preset: str
    """The preset's name; ``overrides`` are applied to it (:meth:`resolved`)."""
    out: Path
    overrides: tuple[str, ...] = ()
    env: str = DEFAULT_ENV
    seeds: int | None = None
    """Seeds per learned policy; None: the preset's ``AgentSpec.seeds``."""
    steps: int | None = None
    """Env steps per RL agent; None: the preset's ``AgentSpec.agent_steps``."""
    policies: tuple[str, ...] = ()
    """A subset of :data:`ALL_POLICIES`; empty: all."""
    encoder: Path | None = None
    fresh: bool = False
    rebuild: bool = False
    """Build the tables from scratch even where official ones ship (``maw_gym.official``)."""

    def resolved(self) -> Preset:
        return resolve_preset(self.preset, list(self.overrides))


def run_leaderboard(job: LeaderboardJob) -> str:
    """The leaderboard in named steps: check, build the context, score, summarise, write;
    returns the markdown table (also in ``leaderboard.md``)."""
    started = time.perf_counter()
    preset = job.resolved()
    seeds, policies = check_job(job, preset)
    check_dataset(job.dataset, preset)
    prepare_out(job.out, job.fresh)  # only once every input is known to be good
    resumed = any(job.out.glob(f"runs/*/seed*/{RESULT_FILE}"))
    ctx = build_context(job, preset, seeds)
    tables_seconds = time.perf_counter() - started
    results = collect(ctx, policies, seeds)
    rows = summarise(results)
    write_outputs(ctx, rows, results)
    seconds = time.perf_counter() - started
    write_run_record(job.out, command_line(job), seconds, resumed, tables_seconds)
    return render_markdown(rows, ctx)


def command_line(job: LeaderboardJob, command: str = "leaderboard") -> str:
    """The shell command that reproduces this run (``--out`` relative to the working directory
    when inside it), as README tables cite it."""
    out = job.out.relative_to(Path.cwd()) if job.out.is_relative_to(Path.cwd()) else job.out
    parts = ["maw-gym", command, "--dataset", str(job.dataset), "--preset", job.preset]
    for item in job.overrides:
        parts += ["--set", item]
    for flag, value in (("--seeds", job.seeds), ("--steps", job.steps)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--env", job.env]
    if job.policies:
        parts += ["--policies", *job.policies]
    if job.encoder is not None:
        parts += ["--encoder", str(job.encoder)]
    if job.rebuild:
        parts += ["--rebuild"]
    return shlex.join([*parts, "--out", str(out)])


def write_run_record(
    out: Path, command: str, seconds: float, resumed: bool, tables_seconds: float | None = None
) -> None:
    """``run.json`` for ``scripts/readme_tables.py``: the command, its wall-clock time (and the
    part spent loading or building the encoder and tables: near 0 when they were cached), and
    whether it reused earlier results (then it is no cold run's time)."""
    from maw_gym.artifacts import maw_gym_version

    record = {
        "command": command,
        "seconds": seconds,
        "tables_seconds": tables_seconds,
        "resumed": resumed,
        "maw_gym_version": maw_gym_version(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_json(out / RUN_FILE, record)


def check_job(job: LeaderboardJob, preset: Preset) -> tuple[int, tuple[str, ...]]:
    """The number of seeds and the policies to rank (with the closed gap's references, which
    every leaderboard scores; by default without ceilings on an env they do not cover); bad
    values name the argument."""
    from maw_gym_agents.ceiling import has_ceiling

    seeds = job.seeds if job.seeds is not None else preset.agents.seeds
    references = [name for pair in GAP_REFERENCES.values() for name in pair]
    chosen = job.policies or ALL_POLICIES
    if not job.policies and not has_ceiling(job.env):
        logger.warning("note: %s takes several decisions: no ceiling rows", job.env)
        chosen = tuple(p for p in chosen if p not in CEILINGS)
    policies = tuple(dict.fromkeys([*chosen, *references]))
    unknown = sorted(set(policies) - set(ALL_POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {list(ALL_POLICIES)}")
    if job.encoder is not None:
        from maw_gym.build import resolve_encoder

        resolve_encoder(job.dataset, preset, job.encoder)  # refused before --out is touched
    return seeds, policies


def prepare_out(out: Path, fresh: bool) -> None:
    """Make ``out`` a marked leaderboard folder; with ``fresh``, first delete what a leaderboard
    wrote there (:data:`OUTPUTS`), and nothing else.

    A folder that is not empty and has no :data:`MARKER` is refused, with or without ``fresh``:
    ``--out ~/myproject --fresh`` used to delete the whole project (issue 10).
    """
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(
            f"--out {out}: not empty and not a maw-gym leaderboard folder (no {MARKER} file); "
            "choose a new or empty folder (for a leaderboard folder made before the marker "
            f"existed, create {marker} by hand)"
        )
    if fresh:
        for name in OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)  # guarded: a leaderboard's own output, in a marked folder
            elif path.exists() or path.is_symlink():
                path.unlink()
    make_dirs(out)
    write_json(marker, {"written_by": "maw-gym leaderboard", "outputs": list(OUTPUTS)})


def build_context(job: LeaderboardJob, preset: Preset, seeds: int) -> Context:
    """The three splits' tables, the test qrels and the run's configuration (``config.json``)."""
    from maw_gym.build import ensure_tables, shipped
    from maw_gym.pipeline import sampled_split

    official = None if job.rebuild else shipped(job.dataset, preset, job.encoder)
    tables = {
        split: ensure_tables(job.dataset, split, preset, job.encoder, rebuild=job.rebuild)
        for split in SPLITS
    }
    steps = job.steps if job.steps is not None else preset.agents.agent_steps
    config = {
        "dataset": str(job.dataset),
        "preset": preset.to_dict(),
        "overrides": list(job.overrides),
        "env": job.env,
        "steps": steps,
        "seeds": seeds,
        "test_tables": tables["test"].meta,
        "official_tables": None if official is None else official.artifact,
        "result_format": RESULT_FORMAT,
    }
    write_json(job.out / "config.json", config)
    qrels = sampled_split(job.dataset, "test", preset.data).qrels
    return Context(
        job.env, tables["train"], tables["dev"], tables["test"], qrels, steps, job.out, config
    )


def check_dataset(dataset: str, preset: Preset) -> None:
    """Refuse, before any training, a dataset without train/dev/test splits or too small.

    A BEIR folder with only a ``test`` split is refused (the data layer names the splits it
    has): routers need train queries to learn from and dev queries to stop on, and splitting
    test queries here would quietly evaluate on what was trained on.
    """
    from maw_gym.pipeline import sampled_split

    for split in SPLITS:
        count = len(sampled_split(dataset, split, preset.data).queries)
        if count < MIN_QUERIES:
            raise ValueError(
                f"dataset {dataset!r}: split {split!r} has {count} judged queries; the "
                f"leaderboard needs at least {MIN_QUERIES} per split for its statistics"
            )
        wanted = preset.data.queries(split)
        if wanted is not None and count < wanted:
            logger.warning(
                "note: split %r has %d queries, fewer than preset %r samples (%d); using all "
                "of them",
                split,
                count,
                preset.name,
                wanted,
            )


def collect(ctx: Context, policies: tuple[str, ...], seeds: int) -> dict[str, Runs]:
    """Every policy's per-seed results, computed now or read back from an earlier run."""
    from tqdm import tqdm

    jobs = [(p, s) for p in policies for s in range(seeds if p in (*LEARNED, "random") else 1)]
    results: dict[str, Runs] = {p: [] for p in policies}
    scorer = Scorer(ctx)
    progress = tqdm(jobs, desc="leaderboard", unit="run")
    for policy, seed in progress:
        progress.set_postfix_str(f"{policy} seed {seed}")
        run_dir = ctx.out / "runs" / policy / f"seed{seed}"
        done = run_dir / RESULT_FILE
        if done.exists():
            saved = read_json(done)
            if saved.get("config") == ctx.config:
                results[policy].append(saved)
                continue
        result = scorer.score(policy, seed, run_dir)
        result["config"] = ctx.config
        write_json(done, result)
        results[policy].append(result)
    return results
