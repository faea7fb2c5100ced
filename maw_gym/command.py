"""How every command-line entry point runs: bad input and interruptions as one line, no traceback.

``maw-gym`` (``maw_gym_leaderboard.cli``) and ``python -m maw_gym_agents.rllib`` both run their
work through :func:`run_command`, so they report alike:

- bad input (``ValueError``, ``FileNotFoundError``: datasets, ids, options, corrupt files) is the
  user's to fix: ``<prog>: error: <message>``, exit 2;
- Ctrl-C (SIGINT) and SIGTERM unwind the stack, so every ``finally`` runs (a private Ray is shut
  down, issue 10), then print one line and exit 130 / 143 (128 + the signal's number).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so that the same clean-up runs."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler :func:`run_command` installs (Ray's own only calls ``sys.exit``)."""
    raise Terminated


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
