"""sd_notify over NOTIFY_SOCKET (READY, WATCHDOG, STOPPING, STATUS) with the stdlib only.

systemd sets NOTIFY_SOCKET for `Type=notify` services and WATCHDOG_USEC when `WatchdogSec=` is set.
Outside systemd both are absent and every call is a no-op, so the pipeline calls it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; reads the environment once, when constructed."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = _watchdog_interval_s(env)
        self._last_watchdog = float("-inf")
        self.dropped = 0  # messages not sent because the receiver's queue was full
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one raw message ("READY=1", "STATUS=..."); False when not under systemd or it failed."""
        if self._sock is None or self.address is None:
            return False
        try:
            # Never block the frame loop: a receiver that does not read (its queue holds only
            # net.unix.max_dgram_qlen datagrams) would otherwise stall the pipeline in sendto.
            self._sock.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
        except BlockingIOError:
            self.dropped += 1
            log.debug("sd_notify queue at %r is full; dropped %r", self.address, message.split("=", 1)[0])
            return False
        except OSError as error:
            # A missing notify socket must never stop the pipeline; systemd will notice on its own.
            log.warning("sd_notify to %r failed: %s", self.address, error)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" if status is None else f"READY=1\nSTATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> bool:
        """Send WATCHDOG=1 at most every watchdog_interval_s; cheap to call once per frame."""
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_watchdog < self.watchdog_interval_s:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):  # abstract namespace: a leading NUL byte instead of '@'
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning(
        "ignoring NOTIFY_SOCKET=%r: only unix socket paths and '@abstract' names are supported", value
    )
    return None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends; None when no watchdog is set."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):  # the watchdog was meant for another process (a parent)
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 2e6 if value > 0 else None
