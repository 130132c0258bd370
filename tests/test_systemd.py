"""sd_notify: messages arrive on a real unix datagram socket; the watchdog interval follows systemd."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
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


def test_a_receiver_that_does_not_read_never_blocks_the_sender(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket  # nobody reads: the datagram queue fills up after a few messages
    notifier = Notifier({"NOTIFY_SOCKET": path})
    results = [notifier.status(f"frame {i}") for i in range(2000)]
    assert results[0] is True
    assert results[-1] is False  # dropped, not blocked: this line is reached at all
    assert notifier.dropped == results.count(False) > 0


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


# ---------------------------------------------------------------- the unit file
REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edgepipe@.service"
INSTALLED_BINARY = "/opt/edgepipe/bin/edgepipe"
# systemd-analyze's exposure scale is 0-100 (it prints 1.6 for 16); the unit scored 1.6 "OK" with
# systemd 252. Raise this only with a reason written next to it.
SECURITY_THRESHOLD = 20


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's edgepipe (verify wants it to exist)."""
    binary = shutil.which("edgepipe") or str(Path(sys.executable).parent / "edgepipe")
    if not os.access(binary, os.X_OK):
        pytest.skip("no edgepipe executable to point ExecStart at (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, binary))
    return unit


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return tool


def test_unit_runs_one_pipeline_per_instance_with_notify_and_sandbox() -> None:
    s = unit_settings()
    assert s["ExecStart"] == [f"{INSTALLED_BINARY} -v run /etc/edgepipe/pipelines/%i.yml"]
    expected = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "edgepipe",
        "StateDirectory": "edgepipe",
        "CacheDirectory": "edgepipe",  # compiled models: paths.model_cache_directory
        "ConfigurationDirectory": "edgepipe",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {key: s[key][-1] for key in expected} == expected
    assert 0 < int(s["WatchdogSec"][0]) <= 60
    assert "MemoryDenyWriteExecute" not in s  # OpenVINO's CPU plugin needs JIT memory


def test_systemd_analyze_verify_accepts_the_unit(testable_unit: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "verify", str(testable_unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # a misspelt setting is only a warning


def test_systemd_analyze_verify_rejects_a_missing_binary(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(tmp_path / "nope" / "edgepipe")))
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "is not executable" in result.stderr


def test_systemd_analyze_security_exposure_is_low(testable_unit: Path) -> None:
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            f"--threshold={SECURITY_THRESHOLD}",
            str(testable_unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert level is not None, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {level.group(1)} above {SECURITY_THRESHOLD / 10}"
    assert float(level.group(1)) <= SECURITY_THRESHOLD / 10
