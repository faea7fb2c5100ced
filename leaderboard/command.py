"""How every command-line entry point runs: bad input and interruptions as one line, no traceback.

Every ``maw-gym`` subcommand (``maw_gym_leaderboard.cli``) runs its work through
:func:`run_command`, so they all report alike:

- bad input (``ValueError``, ``FileNotFoundError``: datasets, ids, options, corrupt files, and
  a full disk or read-only folder as :class:`maw_gym.cache.WriteError`) is the user's to fix:
  ``<prog>: error: <message>``, exit 2;
- Ctrl-C (SIGINT) and SIGTERM unwind the stack, so every ``finally`` runs (a private Ray is shut
  down, issue 10), then print one line and exit 130 / 143 (128 + the signal's number).

Its argparse types (:func:`positive_int`, :func:`env_id`, :func:`output_dir`,
:func:`output_file`, :func:`ray_address`) refuse bad values while the arguments are parsed,
before any work: argparse prints one line and exits 2.

Before anything imports torch, the entry point (``maw_gym_leaderboard.cli``) calls
:func:`sleep_waiting_threads`, and :func:`log_to_stderr` to show what each long stage does
(``maw_gym.progress``); so this module imports no torch itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from maw_gym.presets import PRESETS, Preset, resolve_preset
from maw_gym.signals import Terminated, raise_terminated

#: Loggers whose INFO lines the command-line tools show (the three layers' packages).
LOGGERS = ("maw_gym", "maw_gym_agents", "maw_gym_leaderboard")


def sleep_waiting_threads() -> None:
    """Make torch's OpenMP threads sleep, not spin, while they wait for each other
    (``OMP_WAIT_POLICY=PASSIVE``, unless the user set a policy).

    Why: where cores are shared (this project's machine: 2 cores, several jobs), a thread that
    spins at a barrier burns the core its partner needs. MiniLM states ran at 24 pairs/s with
    libgomp's default policy and 73 with this one, 1 thread at 84 (issue 20, load average 7).
    libgomp reads the variable once, when torch loads it, so this must run before torch is
    imported; child processes (Ray workers, agent runs) inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _TqdmWrite(logging.Handler):
    """Writes records with ``tqdm.write``, so that a line does not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)


def log_to_stderr() -> None:
    """Show the packages' INFO lines (each long stage's opening line, warnings) on stderr,
    once per process; other libraries' loggers are left as they are."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _TqdmWrite) for handler in logger.handlers):
            logger.addHandler(_TqdmWrite())
            logger.setLevel(logging.INFO)


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


def ray_address(value: str) -> str:
    """``--ray-address``: ``local``, ``auto`` or ``HOST:PORT``, checked before any work starts."""
    host, _, port = value.rpartition(":")
    if value in ("local", "auto") or (host and port.isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected local, auto or HOST:PORT")


def add_preset_arguments(
    parser: argparse.ArgumentParser, default: str | None, default_help: str | None = None
) -> None:
    """``--preset NAME`` and repeatable ``--set KEY=VALUE``: the one preset argument of every
    command (an unknown name is refused by :func:`preset_from_args`, naming the valid ones).
    ``default=None`` lets a command fill the name in later (``default_help`` says how)."""
    parser.add_argument(
        "--preset",
        default=default,
        help=f"{', '.join(PRESETS)} (default: {default_help or default})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field of a stage spec, e.g. --set candidates=16 (repeatable; enters "
        "the cache keys of that stage and the ones after it, and the run's config)",
    )


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset named by ``--preset`` with its ``--set`` overrides applied."""
    return resolve_preset(args.preset, args.overrides)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The shared ``--device`` option (resolved later with ``maw_gym.device.resolve_device``)."""
    from maw_gym.device import DEVICE_CHOICES  # imports torch: after sleep_waiting_threads

    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICE_CHOICES,
        help="where torch computes: auto (CUDA when available), cpu or cuda",
    )
