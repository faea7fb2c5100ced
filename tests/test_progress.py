"""What a long stage prints (issue 19): its opening line and its bar, and the command line's
process set-up (logging, OpenMP's wait policy)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from maw_gym.progress import LOG_INTERVAL_S, announce, progress_bar
from maw_gym_leaderboard import command


def test_opening_line_names_the_work_and_the_missing_entry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="maw_gym")
    announce(logging.getLogger("maw_gym.test"), "tables", "scoring dev", Path("/c/x.tables"))
    assert caplog.messages == ["tables: scoring dev (cache miss: /c/x.tables)"]


def test_bar_in_a_log_shows_rate_and_updates_rarely(capsys: pytest.CaptureFixture[str]) -> None:
    """stderr is not a terminal under pytest, as in a log file: the bar still shows its
    count and rate, at most once per LOG_INTERVAL_S while it runs."""
    with progress_bar(total=1000, desc="states test", unit="pair") as bar:
        assert bar.mininterval == LOG_INTERVAL_S
        for _ in range(1000):
            bar.update(1)
    err = capsys.readouterr().err
    assert err.count("states test") == 2  # opened, closed: none of the 1,000 updates redrew
    assert "1000/1000" in err and "pair/s" in err


def test_command_line_logging_goes_through_one_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("maw_gym")
    before = list(logger.handlers)
    try:
        command.log_to_stderr()
        command.log_to_stderr()  # twice: still one handler, one line
        logging.getLogger("maw_gym.encoder").info("encoder: training maw")
        assert capsys.readouterr().err.count("encoder: training maw\n") == 1
    finally:
        for handler in set(logger.handlers) - set(before):
            logger.removeHandler(handler)
        for name in command.LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_threads_sleep_unless_the_user_chose_a_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    command.sleep_waiting_threads()
    assert command.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    command.sleep_waiting_threads()
    assert command.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_command_line_imports_no_torch_before_the_policy() -> None:
    """libgomp reads OMP_WAIT_POLICY once, when torch loads: ``maw-gym``'s main sets it first,
    so importing the command line must not load torch (its helpers import it lazily)."""
    code = "import sys, maw_gym_leaderboard.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
