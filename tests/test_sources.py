"""Sources: files deliver every frame in order, live sources keep the newest and reconnect."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepipe.errors import SourceError
from edgepipe.sources import (
    CameraSource,
    FileSource,
    ImageFolderSource,
    RtspSource,
    _set_ffmpeg_option,
    parse_camera_device,
)
from edgepipe.types import Frame
from tests.fixtures.rtsp import RtspServer, free_port

SIZE_WH = (64, 48)


def encoded_index(image: np.ndarray) -> int:
    """The frame index written by write_index_video: 8 bits as black/white squares."""
    bits = [int(image[8:16, 8 * k : 8 * k + 8].mean() > 127) for k in range(8)]
    return sum(bit << k for k, bit in enumerate(bits))


def index_image(index: int) -> np.ndarray:
    image = np.zeros((SIZE_WH[1], SIZE_WH[0], 3), np.uint8)
    for k in range(8):
        if index >> k & 1:
            image[8:16, 8 * k : 8 * k + 8] = 255
    return image


def write_index_video(path: Path, frames: int, fps: float) -> Path:
    """A synthetic video whose pixels encode the frame index (MJPG in AVI: exact enough for 8 squares)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE_WH)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(index_image(i))
    writer.release()
    return path


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ---------------------------------------------------------------- files
def test_file_source_delivers_every_frame_with_container_time(shared_data: Path) -> None:
    source = FileSource(shared_data / "video" / "vtest.mp4")
    assert source.frame_count == 795
    with source:
        assert source.fps == 10.0
        assert source.state == "connected"
        frames = [(f.index, f.source_time, f.image.shape) for f in source]
    assert len(frames) == 795
    assert [i for i, _, _ in frames] == list(range(795))
    assert frames[0][1:] == (0.0, (360, 480, 3))
    assert frames[1][1] == pytest.approx(0.1)
    assert frames[794][1] == pytest.approx(79.4)
    assert source.frames_read == 795
    assert source.dropped_frames == 0
    assert not source.is_live
    assert source.state == "ended"


def test_file_source_order_and_loop(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=12, fps=4.0)
    with FileSource(video, loop=True) as source:
        frames: list[Frame] = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 30:
                source.stop()
    assert [f.index for f in frames] == list(range(30))
    assert [encoded_index(f.image) for f in frames] == [i % 12 for i in range(30)]
    assert [f.source_time for f in frames] == pytest.approx([i / 4.0 for i in range(30)])


def test_file_source_ends_at_eof_without_loop(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=7, fps=25.0)
    with FileSource(video) as source:
        assert [encoded_index(f.image) for f in source] == list(range(7))
        assert source.state == "ended"


def test_realtime_file_keeps_newest_frame_for_a_slow_consumer(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=20, fps=40.0)
    seen: list[int] = []
    with FileSource(video, realtime=True) as source:
        assert source.is_live
        for frame in source:
            assert encoded_index(frame.image) == frame.index
            seen.append(frame.index)
            time.sleep(0.1)  # four frame intervals: the "camera" overwrites what we did not take
    assert seen == sorted(set(seen))
    assert source.dropped_frames > 0
    # every frame was either delivered or counted as dropped: the index gaps are the drops
    assert len(seen) + source.dropped_frames == 20
    assert seen[-1] == 19


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"video file .*nope\.mp4 does not exist"):
        FileSource(tmp_path / "nope.mp4")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video\n")
    with pytest.raises(SourceError, match=r"cannot open video file .*notes\.mp4"):
        FileSource(bogus)


def test_iterating_outside_with_is_an_error(tmp_path: Path) -> None:
    source = FileSource(write_index_video(tmp_path / "index.avi", frames=2, fps=5.0))
    with pytest.raises(RuntimeError, match="inside `with source:`"):
        next(iter(source))


# ---------------------------------------------------------------- image folders
def test_image_folder_sorted_with_time_from_fps(tmp_path: Path) -> None:
    for i in (3, 0, 2, 1):
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), index_image(i))
    (tmp_path / "README.txt").write_text("ignored")
    with ImageFolderSource(tmp_path, fps=5.0, loop=True) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 6:
                source.stop()
    assert [encoded_index(f.image) for f in frames] == [0, 1, 2, 3, 0, 1]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5]
    assert [f.source_time for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_image_folder_ends_after_last_image(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), index_image(i))
    with ImageFolderSource(tmp_path) as source:
        assert len(list(source)) == 3
    assert source.state == "ended"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", r"image folder .*missing does not exist"),
        (lambda d: d, r"image folder .* has no images \(looked for \.bmp, \.jpeg"),
    ],
)
def test_image_folder_errors(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        ImageFolderSource(make(tmp_path))


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with (
        ImageFolderSource(tmp_path) as source,
        pytest.raises(SourceError, match=r"cannot read image .*broken\.png"),
    ):
        list(source)


# ---------------------------------------------------------------- cameras
@pytest.mark.parametrize(
    ("device", "parsed"),
    [(0, 0), (2, 2), ("1", 1), ("/dev/video0", "/dev/video0"), ("/dev/v4l/by-id/cam", "/dev/v4l/by-id/cam")],
)
def test_camera_device_forms(device: int | str, parsed: int | str) -> None:
    assert parse_camera_device(device) == parsed


@pytest.mark.parametrize("device", [-1, "video0", "", "rtsp://cam"])
def test_camera_device_rejected(device: int | str) -> None:
    with pytest.raises(SourceError, match=r"use an index .* or a path like /dev/video0"):
        parse_camera_device(device)


def test_absent_camera_keeps_retrying_without_raising() -> None:
    source = CameraSource("/dev/video99", open_timeout_s=0.3, reconnect_initial_s=0.05, reconnect_max_s=0.1)
    with source:
        assert source.state in ("connecting", "failed")
        assert wait_until(lambda: source.state == "failed", timeout_s=5.0)
        assert wait_until(lambda: source.reconnects >= 3, timeout_s=5.0)
        source.stop()
        assert list(source) == []
    assert source.state == "ended"
    assert source.frames_read == 0


# ---------------------------------------------------------------- streams (without a server)
def test_stream_url_must_have_a_known_scheme() -> None:
    with pytest.raises(SourceError, match=r"must start with rtsp://"):
        RtspSource("ftp://cam/door")


def test_password_never_appears_in_the_name() -> None:
    source = RtspSource("rtsp://admin:s3cret@10.0.0.5:554/stream1")
    assert source.name == "rtsp://admin:***@10.0.0.5:554/stream1"
    with pytest.raises(SourceError) as error:
        RtspSource("rtsp://admin:s3cret@cam/x", transport="quic")
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "rtsp_transport;tcp"),
        ("stimeout;5000000", "stimeout;5000000|rtsp_transport;tcp"),
        ("rtsp_transport;udp", "rtsp_transport;udp"),
    ],
)
def test_ffmpeg_transport_option(monkeypatch: pytest.MonkeyPatch, before: str | None, after: str) -> None:
    if before is None:
        monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    else:
        monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", before)
    _set_ffmpeg_option("rtsp_transport", "tcp")
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == after


def test_unreachable_stream_does_not_raise_and_reports_state() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/stream"  # nothing listens there: connection refused
    source = RtspSource(
        url, open_timeout_s=0.5, read_timeout_s=0.5, reconnect_initial_s=0.05, reconnect_max_s=0.1
    )
    with source:
        assert source.frames_read == 0
        assert wait_until(lambda: source.state == "failed", timeout_s=5.0)
    assert source.state == "ended"


# ---------------------------------------------------------------- streams (real RTSP server)
def fast_rtsp(url: str) -> RtspSource:
    return RtspSource(
        url, open_timeout_s=5.0, read_timeout_s=2.0, reconnect_initial_s=0.1, reconnect_max_s=0.5
    )


@pytest.mark.integration
def test_rtsp_stream_frames(rtsp_server: RtspServer) -> None:
    with fast_rtsp(rtsp_server.url) as source:
        assert source.is_live
        assert source.state == "connected"
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 10:
                break
    assert source.fps == 10.0
    assert all(f.image.shape == (360, 480, 3) and f.source_time is None for f in frames)
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))
    assert all(abs(f.timestamp - time.time()) < 60 for f in frames)  # wall clock, not stream time


@pytest.mark.integration
def test_rtsp_slow_consumer_gets_newest_frame_and_counts_drops(rtsp_server: RtspServer) -> None:
    seen: list[int] = []
    with fast_rtsp(rtsp_server.url) as source:
        for frame in source:
            seen.append(frame.index)
            time.sleep(0.35)  # slower than the 10 fps camera
            if len(seen) == 6:
                break
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(seen))
    # every captured frame up to the last one delivered was either delivered or overwritten
    assert source.dropped_frames >= gaps > 0


@pytest.mark.integration
@pytest.mark.slow
def test_rtsp_survives_server_restarts_without_thread_leak(rtsp_server_fn: RtspServer) -> None:
    baseline = threading.active_count()
    source = fast_rtsp(rtsp_server_fn.url)
    frames_seen: list[int] = []
    consumer = threading.Thread(target=lambda: frames_seen.extend(f.index for f in source))
    with source:
        assert source.state == "connected"
        consumer.start()
        for _ in range(5):
            before = source.frames_read
            assert wait_until(lambda b=before: source.frames_read > b + 3, timeout_s=10.0)
            rtsp_server_fn.kill()
            assert wait_until(lambda: source.state != "connected", timeout_s=10.0), "drop not noticed in 10 s"
            rtsp_server_fn.start()
            assert wait_until(lambda: source.state == "connected", timeout_s=15.0), "no reconnect in 15 s"
        assert wait_until(lambda: source.frames_read > 5, timeout_s=5.0)
        # the supervisor and one capture thread, whatever happened before
        assert threading.active_count() == baseline + 3  # + the consumer thread
    consumer.join(timeout=5.0)
    assert not consumer.is_alive()
    assert threading.active_count() == baseline
    # at least one per kill; an attempt that meets the restarted server before it serves counts too
    assert source.reconnects >= 5
    assert frames_seen == sorted(set(frames_seen))  # the frame counter kept rising across reconnects
    assert frames_seen[-1] + 1 >= source.frames_read - 1


@pytest.mark.integration
@pytest.mark.slow
def test_rtsp_hung_server_is_noticed_by_the_frame_age_watchdog(rtsp_server_fn: RtspServer) -> None:
    source = fast_rtsp(rtsp_server_fn.url)
    idle_calls: list[float] = []
    source.on_idle = lambda: idle_calls.append(time.monotonic())
    consumer = threading.Thread(target=lambda: [None for _ in source])
    with source:
        consumer.start()
        rtsp_server_fn.pause()  # the socket stays open, nothing arrives
        assert wait_until(lambda: source.state != "connected", timeout_s=10.0)
        assert idle_calls, "the waiting consumer must keep calling on_idle (systemd watchdog)"
        rtsp_server_fn.resume()
        before = source.frames_read
        assert wait_until(lambda: source.state == "connected" and source.frames_read > before, timeout_s=20.0)
    consumer.join(timeout=5.0)
    assert not consumer.is_alive()
