"""Shared test set-up: a cache of its own, so tests never touch a user's ~/.cache/maw-gym."""

from __future__ import annotations

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
