"""How every command-line entry point runs: bad input and interruptions as one line, no traceback.

``maw-gym`` (``maw_gym_leaderboard.cli``) and ``python -m maw_gym_agents.rllib`` both run their
work through :func:`run_command`, so they report alike:

- bad input (``ValueError``, ``FileNotFoundError``: datasets, ids, options, corrupt files, and
  a full disk or read-only folder as :class:`maw_gym.cache.WriteError`) is the user's to fix:
  ``<prog>: error: <message>``, exit 2;
- Ctrl-C (SIGINT) and SIGTERM unwind the stack, so every ``finally`` runs (a private Ray is shut
  down, issue 10), then print one line and exit 130 / 143 (128 + the signal's number).

Its argparse types (:func:`positive_int`, :func:`env_id`, :func:`output_dir`,
:func:`output_file`) refuse bad values while the arguments are parsed, before any work:
argparse prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so that the same clean-up runs."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler :func:`run_command` installs (Ray's own only calls ``sys.exit``)."""
    raise Terminated


@contextmanager
def keeping_sigterm_handler() -> Iterator[None]:
    """Put the caller's SIGTERM handler back after the block: ``ray.init`` replaces it with one
    that only exits, and :func:`run_command`'s raises, so that ``finally`` blocks (the private
    Ray's shutdown among them) run first."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


def run_command(prog: str, work: Callable[[], int], resumable: bool) -> int:
    """Run ``work()`` and return its exit status; see the module docstring for the rest.

    ``resumable``: whether rerunning the command continues where it stopped (cached stages,
    finished leaderboard runs, RLlib checkpoints), which the interruption message then says.
    """
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return int(work() or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        hint = "; rerun the same command to resume" if resumable else ""
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (``--steps 0`` used to train nothing silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def env_id(text: str) -> str:
    """argparse type: a registered ``MAW/`` env id, checked before any work (a wrong one used to
    fail with a traceback after the tables were built); a ``maw_gym:`` prefix, which Gymnasium
    accepts, is dropped, since everything below takes ids letter for letter."""
    import maw_gym

    valid = maw_gym.env_ids()
    if text.removeprefix("maw_gym:") not in valid:
        raise argparse.ArgumentTypeError(f"unknown env id {text!r}; choose one of {valid}")
    return text.removeprefix("maw_gym:")


def output_file(text: str) -> Path:
    """argparse type: a file to write (absolute, ``~`` expanded); an existing folder there, or
    a parent folder that cannot be written, is refused before the work that would fill it
    (``tables export DIR`` onto a folder failed after building every split's tables)."""
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name the file to write")
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {existing} is not a writable folder")
    return path


def output_dir(text: str) -> Path:
    """argparse type: an output folder that exists or can be created (absolute, ``~`` expanded).

    An existing file, or a folder whose nearest existing ancestor is not writable, is refused
    here rather than after minutes of work.
    """
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a folder")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: {existing} is not writable")
    return path
