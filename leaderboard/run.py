"""``maw-gym leaderboard``: train and rank every routing policy against one frozen MAW encoder.

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
reused only if it was made with the same configuration.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path

from maw_gym.cache import write_json
from maw_gym.command import env_id, output_dir, positive_int
from maw_gym.presets import Preset, add_preset_arguments, parse_overrides, preset_from_args
from maw_gym_leaderboard.plots import PLOT_FILES
from maw_gym_leaderboard.policies import (
    ALL_POLICIES,
    CEILINGS,
    GAP_REFERENCES,
    LEARNED,
    MIN_QUERIES,
    RERANKERS,
    RESULT_FILE,
    RESULT_FORMAT,
    RUN_FILE,
    Context,
)
from maw_gym_leaderboard.report import Runs, render_markdown, summarise, write_outputs
from maw_gym_leaderboard.score import Scorer
from maw_gym_leaderboard.suite import SUITES

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

__all__ = ["ALL_POLICIES", "RERANKERS", "configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="nave-kjv",
        help="BEIR dataset: embedded name, public BEIR name, or folder path",
    )
    add_preset_arguments(parser, default=None, default_help="quick; with --suite, the suite's")
    parser.add_argument(
        "--suite",
        default=None,
        choices=sorted(SUITES),
        help="rank the policies over a suite of tasks (env x tables) instead of one env",
    )
    parser.add_argument(
        "--add-dataset",
        action="append",
        default=[],
        metavar="PATH",
        help="with --suite: a further dataset whose tables add the suite's envs as tasks",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="seeds per learned policy (default: the preset's)",
    )
    parser.add_argument(
        "--out",
        type=output_dir,
        default="runs/leaderboard",
        help="output directory (default: runs/leaderboard)",
    )
    parser.add_argument(
        "--env",
        type=env_id,
        default="MAW/DepthSelection-v2",
        help="env the policies are trained and scored on",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="env steps per RL agent (default: the preset's agent_steps)",
    )
    parser.add_argument(
        "--policies",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"a subset of: {' '.join(ALL_POLICIES)}",
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="a trained encoder directory (default: built or reused for preset)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete what an earlier leaderboard wrote in --out (a folder it marked) instead "
        "of resuming; other files stay",
    )


def run(args: argparse.Namespace) -> int:
    """The leaderboard in named steps: check, build the context, score, summarise, write."""
    if args.suite is not None:
        from maw_gym_leaderboard.suite import run_suite

        if args.preset is not None:
            raise ValueError(f"--suite {args.suite} names its own preset; drop --preset")
        return run_suite(args)
    if args.add_dataset:
        raise ValueError("--add-dataset needs --suite")
    args.preset = args.preset or "quick"
    started = time.perf_counter()
    preset = preset_from_args(args)
    seeds, policies = check_arguments(args, preset)
    check_dataset(args.dataset, preset)
    prepare_out(args.out, args.fresh)  # only once every input is known to be good
    resumed = any(args.out.glob(f"runs/*/seed*/{RESULT_FILE}"))
    ctx = build_context(args, preset, seeds)
    tables_seconds = time.perf_counter() - started
    results = collect(ctx, policies, seeds)
    rows = summarise(results)
    write_outputs(ctx, rows, results)
    seconds = time.perf_counter() - started
    write_run_record(args, seconds, resumed, tables_seconds)
    print(render_markdown(rows, ctx))
    print(
        f"\nwrote {args.out}/leaderboard.{{md,csv,json}}, raw_scores.json and plots "
        f"({seconds:.0f} s)"
    )
    return 0


def command_line(args: argparse.Namespace, command: str = "leaderboard") -> str:
    """The shell command that reproduces this run (``--out`` relative to the working directory
    when inside it), as README tables cite it."""
    out = args.out.relative_to(Path.cwd()) if args.out.is_relative_to(Path.cwd()) else args.out
    parts = ["maw-gym", command, "--dataset", str(args.dataset)]
    if args.suite is None:
        parts += ["--preset", args.preset]
    for item in args.overrides:
        parts += ["--set", item]
    for flag, value in (("--suite", args.suite), ("--seeds", args.seeds), ("--steps", args.steps)):
        if value is not None:
            parts += [flag, str(value)]
    for path in args.add_dataset:
        parts += ["--add-dataset", str(path)]
    if args.suite is None:
        parts += ["--env", args.env]
    if args.policies:
        parts += ["--policies", *args.policies]
    if args.encoder is not None:
        parts += ["--encoder", str(args.encoder)]
    return shlex.join([*parts, "--out", str(out)])


def write_run_record(
    args: argparse.Namespace, seconds: float, resumed: bool, tables_seconds: float | None = None
) -> None:
    """``run.json`` for ``scripts/readme_tables.py``: the command, its wall-clock time (and the
    part spent loading or building the encoder and tables: near 0 when they were cached), and
    whether it reused earlier results (then it is no cold run's time)."""
    from maw_gym.artifacts import maw_gym_version

    record = {
        "command": command_line(args),
        "seconds": seconds,
        "tables_seconds": tables_seconds,
        "resumed": resumed,
        "maw_gym_version": maw_gym_version(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_json(args.out / RUN_FILE, record)


def check_arguments(args: argparse.Namespace, preset: Preset) -> tuple[int, tuple[str, ...]]:
    """The number of seeds and the policies to rank (with the closed gap's references, which
    every leaderboard scores; by default without ceilings on an env they do not cover); bad
    values name the argument."""
    import sys

    from maw_gym_agents.ceiling import has_ceiling

    seeds = args.seeds if args.seeds is not None else preset.seeds
    references = [name for pair in GAP_REFERENCES.values() for name in pair]
    chosen = args.policies or ALL_POLICIES
    if args.policies is None and not has_ceiling(args.env):
        print(f"note: {args.env} takes several decisions: no ceiling rows", file=sys.stderr)
        chosen = [p for p in chosen if p not in CEILINGS]
    policies = tuple(dict.fromkeys([*chosen, *references]))
    unknown = sorted(set(policies) - set(ALL_POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {list(ALL_POLICIES)}")
    if args.encoder is not None:
        from maw_gym.encoder.train import read_verified

        read_verified(args.encoder)  # a bad --encoder is refused before --out is touched
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
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"written_by": "maw-gym leaderboard", "outputs": list(OUTPUTS)})


def build_context(args: argparse.Namespace, preset: Preset, seeds: int) -> Context:
    """The three splits' tables, the test qrels and the run's configuration (``config.json``)."""
    from maw_gym.encoder.table_builder import ensure_tables
    from maw_gym.pipeline import preset_split

    tables = {
        split: ensure_tables(args.dataset, split, preset, args.encoder)
        for split in ("train", "dev", "test")
    }
    steps = args.steps if args.steps is not None else preset.agent_steps
    config = {
        "dataset": str(args.dataset),
        "preset": preset.to_dict(),
        "overrides": parse_overrides(args.overrides),
        "env": args.env,
        "steps": steps,
        "seeds": seeds,
        "test_tables": tables["test"].meta,
        "result_format": RESULT_FORMAT,
    }
    write_json(args.out / "config.json", config)
    qrels = preset_split(args.dataset, "test", preset).qrels
    return Context(
        args.env, tables["train"], tables["dev"], tables["test"], qrels, steps, args.out, config
    )


def check_dataset(dataset: str, preset: Preset) -> None:
    """Refuse, before any training, a dataset without train/dev/test splits or too small.

    A BEIR folder with only a ``test`` split is refused (the data layer names the splits it
    has): routers need train queries to learn from and dev queries to stop on, and splitting
    test queries here would quietly evaluate on what was trained on.
    """
    import sys

    from maw_gym.pipeline import preset_queries, preset_split

    for split in ("train", "dev", "test"):
        count = len(preset_split(dataset, split, preset).queries)
        if count < MIN_QUERIES:
            raise ValueError(
                f"dataset {dataset!r}: split {split!r} has {count} judged queries; the "
                f"leaderboard needs at least {MIN_QUERIES} per split for its statistics"
            )
        wanted = preset_queries(preset, split)
        if wanted is not None and count < wanted:
            print(
                f"note: split {split!r} has {count} queries, fewer than preset "
                f"{preset.name!r} samples ({wanted}); using all of them",
                file=sys.stderr,
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
            saved = json.loads(done.read_text())
            if saved.get("config") == ctx.config:
                results[policy].append(saved)
                continue
        result = scorer.score(policy, seed, run_dir)
        result["config"] = ctx.config
        write_json(done, result)
        results[policy].append(result)
    return results
