"""SIGTERM as an exception: libraries' ``finally`` blocks (a private Ray's shutdown among them)
run when a command is terminated, as they do on Ctrl-C.

The command layer (``maw_gym_leaderboard.command.run_command``) installs
:func:`raise_terminated`; ``ray.init`` replaces the handler with one that only exits, so code
that starts Ray wraps it in :func:`keeping_sigterm_handler`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's ``KeyboardInterrupt`` so that the same clean-up runs."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler commands install (Ray's own only calls ``sys.exit``)."""
    raise Terminated


@contextmanager
def keeping_sigterm_handler() -> Iterator[None]:
    """Put the caller's SIGTERM handler back after the block: ``ray.init`` replaces it with one
    that only exits, and the command layer's raises, so that ``finally`` blocks (the private
    Ray's shutdown among them) run first."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)
