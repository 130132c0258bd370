"""sd_notify: messages arrive on a real unix datagram socket; the watchdog interval follows systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepipe.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def test_messages_arrive_in_order(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}) as notifier:
        assert notifier.enabled
        assert notifier.ready(status="door: running")
        assert notifier.watchdog(now=100.0)
        assert notifier.status("fps 9.8")
        assert notifier.stopping()
    received = [sock.recv(4096).decode() for _ in range(4)]
    assert received == ["READY=1\nSTATUS=door: running", "WATCHDOG=1", "STATUS=fps 9.8", "STOPPING=1"]


def test_abstract_namespace_socket() -> None:
    name = f"edgepipe-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()
    finally:
        sock.close()


def test_watchdog_is_rate_limited_to_half_the_timeout(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.watchdog_interval_s == 2.0
    sent = [notifier.watchdog(now=t) for t in (10.0, 10.5, 11.9, 12.0, 13.0, 14.1)]
    assert sent == [True, False, False, True, False, True]
    assert [sock.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3
    notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ],
)
def test_watchdog_interval_from_environment(environ: dict[str, str], interval_s: float | None) -> None:
    assert Notifier(environ).watchdog_interval_s == interval_s


def test_no_notify_socket_is_a_silent_no_op() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog(now=1.0)
    assert not notifier.stopping()


def test_relative_socket_name_is_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "notify.sock"}).enabled


def test_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert not notifier.ready()
    notifier.close()


def test_environment_is_read_at_construction(
    monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notifier.ready()
    assert sock.recv(64) == b"READY=1"
    notifier.close()
