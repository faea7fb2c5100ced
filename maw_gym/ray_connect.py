"""Joining a Ray cluster: a deadline on every connection, and Ctrl-C or SIGTERM at any moment.

``ray.init(address=...)`` hands the connection to Ray's C++ client, which retries for minutes
(20 attempts of about 35 s each when nothing answers) and, running on the main thread, holds
back every Python signal handler until an attempt ends: pointed at a closed address,
``maw-gym tables build --ray-address`` and ``maw-gym rllib --address`` were still retrying
after 100 s, ignored SIGTERM and Ctrl-C, and ended only with SIGKILL (issue 22).

So the head is probed before ``ray.init``, within :data:`CONNECT_DEADLINE_S`: its port (a
refused connection is tried again, as Ray does, since a head may be starting), then Ray's own
GCS client, run in a daemon thread while the main thread waits for it. Sleeping or waiting on
a lock in Python leaves signal handlers free to run, so Ctrl-C and SIGTERM end the wait as they
end any other work (``maw_gym_leaderboard.command``). ``ray.init`` is called only on a head that has
just answered.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from maw_gym.signals import keeping_sigterm_handler

#: Seconds a head has to accept a connection and answer Ray's client.
CONNECT_DEADLINE_S = 20
#: Seconds Ray's client always gets once the port accepted (it may have opened just in time).
MIN_CLIENT_S = 5


def head_address(address: str) -> str:
    """The ``HOST:PORT`` that ``ray.init(address=address)`` connects to (``auto`` looked up,
    a loopback host resolved as Ray resolves it), once it answered Ray's client within
    :data:`CONNECT_DEADLINE_S`; otherwise a ValueError naming ``address``."""
    from ray._private import services

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster has no shared token
    try:
        head = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as error:  # "auto" without a running cluster
        raise ValueError(f"Ray address {address!r}: {error}") from None
    named = address if head == address else f"{address} ({head})"
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    _wait_for_port(head, named, deadline)
    _check_head(head, named, max(deadline, time.monotonic() + MIN_CLIENT_S))
    return head


def join(address: str, **init_kwargs: Any) -> None:
    """``ray.init`` on the head at ``address`` (see :func:`head_address`), keeping the caller's
    SIGTERM handler."""
    import ray

    head = head_address(address)
    with keeping_sigterm_handler():  # SIGTERM unwinds like Ctrl-C (maw_gym.signals)
        ray.init(address=head, log_to_driver=False, **init_kwargs)


def _wait_for_port(head: str, named: str, deadline: float) -> None:
    """Connect to ``head``'s port, trying again after a refusal until ``deadline``."""
    host, _, port = head.rpartition(":")
    while True:
        try:
            timeout = max(deadline - time.monotonic(), 0.1)
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"Ray address {named}: connection refused for {CONNECT_DEADLINE_S} s, nothing "
                    f"listens there; start a head (`ray start --head --port {port}`) or give the "
                    "address it printed"
                ) from None
            time.sleep(0.5)
        except OSError as error:  # no answer in time, an unknown host, no route
            raise ValueError(f"Ray address {named}: cannot connect ({error})") from None


def _check_head(head: str, named: str, deadline: float) -> None:
    """Ray's GCS client on ``head`` until ``deadline``, in a daemon thread (its C++ retries
    cannot be cut short, and a thread left waiting does not keep the process alive)."""
    from ray._raylet import GcsClient

    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            GcsClient(address=head)
        except Exception as error:  # reported by the main thread below
            outcome.append(error)
        else:
            outcome.append(None)

    probe = threading.Thread(target=connect, name="ray-head-probe", daemon=True)
    probe.start()
    while not outcome and time.monotonic() < deadline:
        probe.join(timeout=0.2)  # a lock wait: signal handlers run in between
    if not outcome:
        raise ValueError(
            f"Ray address {named}: no Ray head answered within {CONNECT_DEADLINE_S} s; is it a "
            "Ray head's address (the port `ray start --head` printed)?"
        )
    if outcome[0] is not None:
        raise ValueError(f"Ray address {named}: not a Ray head ({outcome[0]})")
