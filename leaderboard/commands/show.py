"""``maw-gym show``: one query of a split under one action, as the env renders it.

    maw-gym show --env MAW/DepthSelection-v3 --split test --query-index 3 --action 2 --out frame.png

prints the ``ansi`` frame (query, action, reward parts, top-10 after reranking) and, with
``--out``, writes the ``rgb_array`` frame as a PNG. ``--action`` lists every decision of an
episode, comma-separated: a depth (``2``), per-head depths (``0,3,1,2``), mixture weights
(``0.5,0.5,0,0``), or layer 1's then layer 2's depth (``1,3``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from maw_gym import env_ids
from maw_gym.cache import WriteError
from maw_gym.envs.base import MAWEnv
from maw_gym.envs.render import write_png
from maw_gym_leaderboard.command import add_preset_arguments, preset_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``maw-gym show``."""
    parser.add_argument("--env", required=True, help="a registered MAW/ env id")
    parser.add_argument("--split", default="test", help="train, dev or test (default: %(default)s)")
    parser.add_argument(
        "--query-index", type=int, default=0, help="row of the split's tables (default: 0)"
    )
    parser.add_argument(
        "--action",
        required=True,
        help="every decision of the episode, comma-separated: a depth '2', per-head depths "
        "'0,3,1,2', mixture weights '0.5,0.5,0,0', or layer 1's then layer 2's depth '1,3'",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the image frame here (PNG)")
    parser.add_argument("--dataset", default="nave-kjv", help="BEIR dataset name or folder")
    add_preset_arguments(parser, default="smoke")
    parser.add_argument("--encoder", type=Path, default=None, help="MAW encoder directory")


def parse_action(text: str, space: gym.Space, horizon: int) -> list[np.ndarray]:
    """The ``horizon`` decisions written in ``text`` as arrays of ``space``'s shape and dtype."""
    size = int(np.prod(space.shape, dtype=np.int64)) if space.shape else 1
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        values = []
    integer = np.issubdtype(space.dtype, np.integer)
    if len(values) != size * horizon or (integer and any(v != int(v) for v in values)):
        kind = "integers" if integer else "numbers"
        raise ValueError(
            f"--action {text!r}: expected {size * horizon} comma-separated {kind} "
            f"({horizon} decision(s) of {space})"
        )
    array = np.asarray(values, dtype=space.dtype).reshape(horizon, *space.shape)
    return list(array)


def run(args: argparse.Namespace) -> int:
    """Play one episode of ``--query-index`` with ``--action``; print and save its frame."""
    if args.env not in env_ids():
        raise ValueError(f"--env {args.env!r}: not a MAW env; choose one of {env_ids()}")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a directory; give a file name such as frame.png")
    env = gym.make(
        args.env,
        dataset=args.dataset,
        split=args.split,
        preset=preset_from_args(args),
        encoder=args.encoder,
        render_mode="ansi",
    ).unwrapped
    assert isinstance(env, MAWEnv)
    count = env.tables.num_queries
    if not 0 <= args.query_index < count:
        raise ValueError(
            f"--query-index {args.query_index}: the {args.split} split has {count} queries "
            f"(0 to {count - 1})"
        )
    decisions = parse_action(args.action, env.action_space, env.variant.horizon)
    env.reset(options={"query_index": args.query_index})
    for decision in decisions:
        try:
            env.step(decision)
        except ValueError as error:
            raise ValueError(f"--action {args.action!r}: {error}") from error
    print(env.render(), end="")
    if args.out is not None:
        try:
            write_png(env.draw("rgb_array"), args.out)
        except (OSError, WriteError) as error:  # a file where a folder should be, a full disk
            raise ValueError(f"--out {args.out}: cannot write the image ({error})") from error
        print(f"wrote {args.out}")
    return 0
