"""Waiting in tests: on a condition, never for a fixed time (these machines are shared and noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """True as soon as `condition()` is; False if it still is not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL_S)
    return condition()
