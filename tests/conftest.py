"""Shared test set-up: a cache of its own, so tests never touch a user's ~/.cache/maw-gym."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Set before any maw_gym import reads it. Persistent across local runs (fast re-runs), fresh in CI.
os.environ.setdefault("MAW_GYM_CACHE", str(Path(__file__).resolve().parent.parent / ".maw_cache"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray reads this on import: keep a test head and its driver on 127.0.0.1 (docs/cluster.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (read from /proc: Ray's head is a process tree)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _default_signals() -> None:
    """In the child, before exec: a child inherits ignored signals (under `nohup make test &`
    SIGINT is ignored, and Python then installs no KeyboardInterrupt handler), so a test
    that signals its child says how the child handles them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def spawn(command: list[str], **kwargs: object) -> subprocess.Popen:
    """``command`` in a process group of its own (Ctrl-C is sent to the group, as a terminal
    does), with default signal handling whatever this process inherited."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_default_signals, **kwargs)


def end_process(child: subprocess.Popen) -> None:
    """Kill ``child``, its group and every process below it, whatever state the test left."""
    family = descendants(child.pid)
    for pid in (child.pid, *family):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


@pytest.fixture
def ray_head():
    """A real local head (2 CPUs) on loopback, in a short temp dir outside the shipped code."""
    pytest.importorskip("ray")
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # socket paths must stay < 108 bytes
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set (conftest)"
        )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session logs and sockets
