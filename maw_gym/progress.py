"""Progress of the pipeline's long stages (issue 19): a bar with rate and ETA, and one line that
says what a stage computes and why it runs.

Both go to stderr: the line through :mod:`logging` at INFO (the command-line tools show it,
``maw_gym_leaderboard.command.log_to_stderr``; a library user chooses with ``logging``), the
bar through tqdm. In a terminal the bar redraws itself; when stderr is a file or a pipe (a log,
CI), it writes at most one update every :data:`LOG_INTERVAL_S`, so that a long stage is never
silent (MiniLM once encoded for 7 minutes with nothing printed) and a log does not fill with
redraws.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

#: Seconds between two updates of a bar written to a file or a pipe.
LOG_INTERVAL_S = 30.0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str,
    leave: bool = True,
) -> tqdm:
    """A tqdm bar on stderr (rate and ETA), redrawn live in a terminal, every
    :data:`LOG_INTERVAL_S` in a log."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        mininterval=0.1 if interactive else LOG_INTERVAL_S,
        dynamic_ncols=interactive,
    )


def announce(logger: logging.Logger, stage: str, work: str, cache_entry: Path | str) -> None:
    """Log the line that opens a stage: ``<stage>: <work> (cache miss: <entry>)``. Stages run
    only on a cache miss (a new key: new inputs or settings; a corrupt entry is first named by
    its own warning), so the entry that was missing is the reason."""
    logger.info("%s: %s (cache miss: %s)", stage, work, cache_entry)
