"""The process around the pipelines, end to end through `edgepipe run`: SIGTERM, sd_notify, RTSP
drops, several pipelines in one process, and the age of processed frames on a live source."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgepipe.config import RtspSourceConfig
from edgepipe.detect import ModelPool
from edgepipe.pipeline import Pipeline, build
from edgepipe.publish import FanoutPublisher
from edgepipe.rules import Rules
from edgepipe.sources import RtspSource
from edgepipe.track import SortTracker
from edgepipe.types import Detections, Frame
from tests.fixtures.rtsp import RtspServer
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"

pytestmark = pytest.mark.integration

RULES = """
rules:
  - type: line
    name: crossing
    points: [[240, 100], [240, 300]]
    in_side: left
  - type: zone
    name: lawn
    polygon: [[0, 180], [240, 190], [480, 330], [480, 360], [0, 360]]
"""


def write_config(tmp_path: Path, name: str, source: str, status_interval_s: float = 1.0) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(
        f"name: {name}\nsource: {source}\ndetector:\n  model: {MODEL}\n  classes: [person]\n"
        f"{RULES}status_interval_s: {status_interval_s}\n"
    )
    return path


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "-v", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class NotifyListener:
    """The systemd side of sd_notify: a bound unix datagram socket that collects messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def env(self, watchdog_usec: int = 1_000_000) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(watchdog_usec)}

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first message (old or new) matching `pattern`; fails after timeout_s."""
        for message in self.messages:
            if match := re.search(pattern, message):
                return match
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if match := re.search(pattern, message):
                return match
        raise AssertionError(
            f"no sd_notify message matching {pattern!r} in {timeout_s} s: {self.messages[-5:]}"
        )

    def frames_once_above(self, frames: int, timeout_s: float) -> int:
        """Wait for a status line of a connected source with more than `frames` frames; its count."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.wait_for(
                r"STATUS=\w+: (\d+) frames.*source state connected", deadline - time.monotonic()
            )
            if int(found.group(1)) > frames:
                return int(found.group(1))
            self.messages.remove(found.string)
        raise AssertionError(f"no status line with more than {frames} frames in {timeout_s} s")

    def drain(self) -> None:
        self.sock.settimeout(0.0)
        try:
            while True:
                self.messages.append(self.sock.recv(65536).decode())
        except (BlockingIOError, TimeoutError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(tmp_path / "notify.sock")
    yield notify
    notify.close()


def summary_events(stderr: str, name: str) -> Counter[str]:
    line = next(x for x in stderr.splitlines() if x.startswith(f"{name}: events: "))
    text = line.split(": events: ", 1)[1]
    return (
        Counter()
        if text == "none"
        else Counter({k: int(n) for k, n in (p.rsplit(" ", 1) for p in text.split(", "))})
    )


@pytest.mark.slow
def test_sigterm_mid_run_exits_cleanly_with_every_event_flushed(
    tmp_path: Path, vtest_20fps: Path, listener: NotifyListener
) -> None:
    config = write_config(tmp_path, "demo", f"{{type: file, path: {vtest_20fps}, realtime: true}}")
    events_path = tmp_path / "events.jsonl"
    process = start(str(config), "--events", str(events_path), env=listener.env())
    try:
        listener.wait_for(r"^READY=1", timeout_s=60)
        wait_until(lambda: events_path.exists() and events_path.read_text().count("\n") >= 2, timeout_s=60)
        listener.wait_for(r"STATUS=demo: \d+ frames", timeout_s=10)
        listener.drain()  # like systemd, read what is queued, so STOPPING=1 finds room
        sent_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        exit_s = time.monotonic() - sent_at
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert exit_s < 10, f"took {exit_s:.1f} s to exit after SIGTERM"
    assert "stopped by SIGTERM" in stderr
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert len(events) >= 2
    # every event the pipeline produced (the summary counts them as they are published) is in the file
    assert Counter(e["type"] for e in events) == summary_events(stderr, "demo")
    assert len({e["id"] for e in events}) == len(events)
    frames = int(re.search(r"demo: (\d+) frames in", stderr).group(1))  # type: ignore[union-attr]
    assert 0 < frames < 795  # stopped mid-run, not at the end of the file
    listener.drain()
    assert listener.messages[-1] == "STOPPING=1"


@pytest.mark.slow
def test_notify_socket_gets_ready_then_watchdog(
    tmp_path: Path, shared_data: Path, listener: NotifyListener
) -> None:
    video = shared_data / "video" / "vtest.mp4"
    config = write_config(tmp_path, "demo", f"{{type: file, path: {video}}}")
    process = start(str(config), "--max-frames", "40", env=listener.env(watchdog_usec=200_000))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    listener.drain()
    kinds = [m.split("=", 1)[0] for m in listener.messages]
    assert kinds[0] == "READY", listener.messages
    assert listener.messages[0] == "READY=1\nSTATUS=running demo"
    assert "WATCHDOG" in kinds[1:]
    assert kinds[-1] == "STOPPING"
    assert kinds.index("WATCHDOG") > kinds.index("READY")


@pytest.mark.slow
def test_no_notify_socket_runs_as_before(tmp_path: Path, shared_data: Path) -> None:
    video = shared_data / "video" / "vtest.mp4"
    config = write_config(tmp_path, "demo", f"{{type: file, path: {video}}}")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(config), "--max-frames", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "demo: 5 frames in" in result.stderr


@pytest.mark.slow
def test_rtsp_drop_during_run_reconnects_and_keeps_counting(
    tmp_path: Path, rtsp_server_fn: RtspServer, listener: NotifyListener
) -> None:
    source = (
        f"{{type: rtsp, url: '{rtsp_server_fn.url}', open_timeout_s: 5, read_timeout_s: 2, "
        "reconnect_initial_s: 0.1, reconnect_max_s: 0.5}"
    )
    config = write_config(tmp_path, "cam", source, status_interval_s=0.5)
    process = start(str(config), env=listener.env())
    try:
        listener.wait_for(r"^READY=1", timeout_s=60)
        before = listener.frames_once_above(0, timeout_s=10)  # frames flow
        rtsp_server_fn.kill()
        listener.wait_for(r"source state (reconnecting|failed)", timeout_s=10)
        rtsp_server_fn.start()
        # drop the messages seen so far: the next "connected" must come after the reconnect
        listener.messages.clear()
        after = int(listener.wait_for(r"STATUS=cam: (\d+) frames.*source state connected", 20).group(1))
        listener.frames_once_above(after + 5, timeout_s=10)  # and flow again
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert after > before
    final = int(re.search(r"cam: (\d+) frames in", stderr).group(1))  # type: ignore[union-attr]
    assert final > after  # the frame counter kept rising after the reconnect
    assert "rtsp://127.0.0.1" in stderr and "connected → reconnecting" in stderr


@pytest.mark.slow
def test_two_pipelines_in_one_process_share_the_compiled_model(tmp_path: Path, shared_data: Path) -> None:
    from edgepipe.config import load_pipeline

    video = shared_data / "video" / "vtest.mp4"
    configs = [load_pipeline(write_config(tmp_path, n, f"{{type: file, path: {video}}}")) for n in ("a", "b")]
    pool = ModelPool()
    a, b = (build(cfg, pool, max_frames=3) for cfg in configs)
    assert a.detector.compiled_for((360, 480)) is b.detector.compiled_for((360, 480))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe",
            "run",
            *(str(tmp_path / f"{n}.yml") for n in "ab"),
            "--max-frames",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "a: 15 frames in" in result.stderr and "b: 15 frames in" in result.stderr


class SlowDetector:
    """Stands in for a detector slower than the camera: `period_s` per frame, no boxes."""

    labels = ("person",)
    threshold = 0.4

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s

    def prepare(self, frame_hw: tuple[int, int]) -> None:
        pass

    def stream(self, frames: Any, *, frame_waiting: Any = None) -> Iterator[tuple[Frame, Detections] | None]:
        for frame in frames:
            if frame is None:
                yield None
                continue
            time.sleep(self.period_s)  # the work a slow detector does
            yield frame, Detections.empty()


class AgeRecorder:
    """A publisher that keeps nothing but the frame ages the pipeline measured."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, object]] = []

    def publish(self, event: object) -> None:
        pass

    def publish_counts(self, counts: dict[str, dict[str, int]]) -> None:
        pass

    def publish_status(self, status: dict[str, object]) -> None:
        self.statuses.append(status)

    def backlog(self) -> int | None:
        return None

    def lost(self) -> int:
        return 0

    def problems(self) -> list[str]:
        return []

    def close(self, timeout_s: float = 5.0) -> None:
        pass


@pytest.mark.slow
def test_frame_age_stays_bounded_with_a_detector_slower_than_the_camera(rtsp_server: RtspServer) -> None:
    period_s = 0.3  # 3.3 fps against a 10 fps camera
    source = RtspSource(
        RtspSourceConfig(url=rtsp_server.url, open_timeout_s=5.0, read_timeout_s=2.0, reconnect_initial_s=0.1)
    )
    recorder = AgeRecorder()
    pipeline = Pipeline(
        "latency",
        source,
        SlowDetector(period_s),  # type: ignore[arg-type]
        SortTracker(),
        Rules([]),
        FanoutPublisher([recorder]),
        max_frames=25,
        status_interval_s=1000,
    )
    stats = pipeline.run()
    assert stats.frames == 25
    final = recorder.statuses[-1]
    age_ms = final["frame_age_ms"]
    assert isinstance(age_ms, dict)
    # One-slot box: a frame waits at most one camera interval plus one detector pass. A FIFO would
    # fall ~0.2 s further behind with every frame (7 s after 25 frames at these rates).
    assert age_ms["max_ms"] < 1000 * (2 * period_s + 0.1 + 0.3)
    assert final["dropped_frames"] > 25  # about two of every three camera frames were skipped
    assert 0 < age_ms["p50_ms"] <= age_ms["max_ms"]
    print(
        f"frame age with a {period_s} s detector on a 10 fps stream: {age_ms}, dropped {final['dropped_frames']}"
    )


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler yet (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.0, 0.1, 0.3, 0.6, 1.2, 2.5])
def test_sigterm_at_any_moment_of_the_start_is_a_clean_exit(
    tmp_path: Path, shared_data: Path, after_s: float
) -> None:
    """While the package imports, the config loads or the model compiles: never killed by the signal.
    The moments count from when the process first handles SIGTERM, edgepipe's first line; before it,
    only the interpreter's own start (about 0.1 s) is unprotected, as in any Python program."""
    video = shared_data / "video" / "vtest.mp4"
    config = write_config(tmp_path, "demo", f"{{type: file, path: {video}, realtime: true}}")
    process = start(str(config))
    assert wait_until(lambda: catches_sigterm(process.pid), timeout_s=30)
    time.sleep(after_s)  # the moment of the signal is what the test varies
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
