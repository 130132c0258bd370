"""Sources: files deliver every frame in order, live sources keep the newest and reconnect."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgepipe.config import CameraSourceConfig, FileSourceConfig, ImageFolderSourceConfig, RtspSourceConfig
from edgepipe.errors import SourceError
from edgepipe.sources import (
    CameraSource,
    FileSource,
    ImageFolderSource,
    RtspSource,
    Source,
    _set_ffmpeg_option,
)
from edgepipe.types import Frame
from tests.fixtures.rtsp import RtspServer, free_port
from tests.waiting import wait_until

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


def file_source(path: Path, **settings: Any) -> FileSource:
    return FileSource(FileSourceConfig(path=path, **settings))


def image_source(path: Path, **settings: Any) -> ImageFolderSource:
    return ImageFolderSource(ImageFolderSourceConfig(path=path, **settings))


def frames_of(source: Source) -> Iterator[Frame]:
    """The frames of a source without its idle ticks."""
    return (frame for frame in source.frames() if frame is not None)


# ---------------------------------------------------------------- files
def test_file_source_delivers_every_frame_with_container_time(shared_data: Path) -> None:
    source = file_source(shared_data / "video" / "vtest.mp4")
    assert source.frame_count == 795
    assert source.frame_size() == (360, 480)  # known before the first frame: the model compiles before READY
    with source:
        assert source.fps == 10.0
        assert source.stats().state == "connected"
        frames = [(f.index, f.source_time, f.image.shape) for f in frames_of(source)]
    assert len(frames) == 795
    assert [i for i, _, _ in frames] == list(range(795))
    assert frames[0][1:] == (0.0, (360, 480, 3))
    assert frames[1][1] == pytest.approx(0.1)
    assert frames[794][1] == pytest.approx(79.4)
    stats = source.stats()
    assert (stats.frames_read, stats.dropped_frames, stats.state) == (795, 0, "ended")
    assert not source.is_live


def test_file_source_order_and_loop(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=12, fps=4.0)
    with file_source(video, loop=True) as source:
        assert source.frame_count is None  # a looping file never ends
        frames: list[Frame] = []
        for frame in frames_of(source):
            frames.append(frame)
            if len(frames) == 30:
                source.stop()
    assert [f.index for f in frames] == list(range(30))
    assert [encoded_index(f.image) for f in frames] == [i % 12 for i in range(30)]
    assert [f.source_time for f in frames] == pytest.approx([i / 4.0 for i in range(30)])


def test_file_source_ends_at_eof_without_loop(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=7, fps=25.0)
    with file_source(video) as source:
        assert [encoded_index(f.image) for f in frames_of(source)] == list(range(7))
        assert source.stats().state == "ended"


def test_realtime_file_keeps_newest_frame_for_a_slow_consumer(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "index.avi", frames=20, fps=40.0)
    seen: list[int] = []
    with file_source(video, realtime=True) as source:
        assert source.is_live
        for frame in frames_of(source):
            assert encoded_index(frame.image) == frame.index
            seen.append(frame.index)
            time.sleep(0.1)  # four frame intervals: the "camera" overwrites what we did not take
    assert seen == sorted(set(seen))
    dropped = source.stats().dropped_frames
    assert dropped > 0
    # every frame was either delivered or counted as dropped: the index gaps are the drops
    assert len(seen) + dropped == 20
    assert seen[-1] == 19


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video\n")
    with pytest.raises(SourceError, match=r"cannot open video file .*notes\.mp4"):
        file_source(bogus)


def test_iterating_outside_with_is_an_error(tmp_path: Path) -> None:
    source = file_source(write_index_video(tmp_path / "index.avi", frames=2, fps=5.0))
    with pytest.raises(RuntimeError, match="inside `with source:`"):
        next(iter(source.frames()))


# ---------------------------------------------------------------- image folders
def test_image_folder_sorted_with_time_from_fps(tmp_path: Path) -> None:
    for i in (3, 0, 2, 1):
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), index_image(i))
    (tmp_path / "README.txt").write_text("ignored")
    with image_source(tmp_path, fps=5.0, loop=True) as source:
        frames = []
        for frame in frames_of(source):
            frames.append(frame)
            if len(frames) == 6:
                source.stop()
    assert [encoded_index(f.image) for f in frames] == [0, 1, 2, 3, 0, 1]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5]
    assert [f.source_time for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_image_folder_ends_after_last_image(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), index_image(i))
    with image_source(tmp_path) as source:
        assert source.frame_count == 3
        assert len(list(frames_of(source))) == 3
    assert source.stats().state == "ended"


def test_image_folder_without_images_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"image folder .* has no images \(looked for \.bmp, \.jpeg"):
        image_source(tmp_path)


def test_an_unreadable_image_is_skipped_counted_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in (0, 2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), index_image(i))
    (tmp_path / "1.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING), image_source(tmp_path) as source:
        frames = list(frames_of(source))
    assert [(f.index, encoded_index(f.image)) for f in frames] == [
        (0, 0),
        (2, 2),
    ]  # the index keeps its place
    assert source.stats().skipped == 1
    assert any("cannot read image" in r.getMessage() and "1.png" in r.getMessage() for r in caplog.records)


def test_a_folder_of_only_unreadable_images_ends_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    with image_source(tmp_path, loop=True) as source:
        assert list(frames_of(source)) == []
    assert source.stats().skipped == 1


def test_a_damaged_video_is_read_past_its_bad_stretches_and_says_how_much_was_lost(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = tmp_path / "damaged.mp4"
    data = bytearray((shared_data / "video" / "vtest.mp4").read_bytes())
    for fraction in (0.05, 0.3, 0.6):  # three stretches of garbage inside the stream
        start = int(len(data) * fraction)
        data[start : start + 20_000] = bytes((i * 131 + 7) % 256 for i in range(20_000))
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), file_source(damaged) as source:
        read = sum(1 for _ in frames_of(source))
    assert 700 < read < 795  # a plain read loop stopped after 33 frames of this file
    assert source.stats().skipped == 795 - read
    (warning,) = [r.getMessage() for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert (
        warning
        == f"video {damaged}: read {read} of 795 frames; {795 - read} could not be decoded (a damaged file?) and were left out"
    )


# ---------------------------------------------------------------- cameras
def test_absent_camera_keeps_retrying_without_raising() -> None:
    settings = CameraSourceConfig(device="/dev/video99", open_timeout_s=0.3, reconnect_initial_s=0.05,
                                  reconnect_max_s=0.1)  # fmt: skip
    source = CameraSource(settings)
    with source:
        assert source.stats().state in ("connecting", "failed")
        assert wait_until(lambda: source.stats().state == "failed", timeout_s=5.0)
        assert wait_until(lambda: source.stats().reconnects >= 3, timeout_s=5.0)
        source.stop()
        assert list(source.frames()) == []
    assert source.stats().state == "ended"
    assert source.stats().frames_read == 0


# ---------------------------------------------------------------- streams (without a server)
def test_password_never_appears_in_the_name() -> None:
    source = RtspSource(RtspSourceConfig(url="rtsp://admin:s3cret@10.0.0.5:554/stream1"))
    assert source.name == "rtsp://admin:***@10.0.0.5:554/stream1"


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
        RtspSourceConfig(
            url=url, open_timeout_s=0.5, read_timeout_s=0.5, reconnect_initial_s=0.05, reconnect_max_s=0.1
        )
    )
    with source:
        assert source.stats().frames_read == 0
        assert wait_until(lambda: source.stats().state == "failed", timeout_s=5.0)
    assert source.stats().state == "ended"


# ---------------------------------------------------------------- streams (real RTSP server)
def fast_rtsp(url: str) -> RtspSource:
    return RtspSource(
        RtspSourceConfig(
            url=url, open_timeout_s=5.0, read_timeout_s=2.0, reconnect_initial_s=0.1, reconnect_max_s=0.5
        )
    )


@pytest.mark.integration
def test_rtsp_stream_frames(rtsp_server: RtspServer) -> None:
    with fast_rtsp(rtsp_server.url) as source:
        assert source.is_live
        assert source.stats().state == "connected"
        assert source.frame_size() == (360, 480)  # from the first frame, before it is taken
        frames = []
        for frame in frames_of(source):
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
        for frame in frames_of(source):
            seen.append(frame.index)
            time.sleep(0.35)  # slower than the 10 fps camera
            if len(seen) == 6:
                break
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(seen))
    # every captured frame up to the last one delivered was either delivered or overwritten
    assert source.stats().dropped_frames >= gaps > 0


@pytest.mark.integration
@pytest.mark.slow
def test_rtsp_survives_server_restarts_without_thread_leak(rtsp_server_fn: RtspServer) -> None:
    baseline = threading.active_count()
    source = fast_rtsp(rtsp_server_fn.url)
    frames_seen: list[int] = []
    consumer = threading.Thread(target=lambda: frames_seen.extend(f.index for f in frames_of(source)))
    with source:
        assert source.stats().state == "connected"
        consumer.start()
        for _ in range(5):
            before = source.stats().frames_read
            assert wait_until(lambda b=before: source.stats().frames_read > b + 3, timeout_s=10.0)
            rtsp_server_fn.kill()
            assert wait_until(lambda: source.stats().state != "connected", timeout_s=10.0), (
                "drop not noticed in 10 s"
            )
            rtsp_server_fn.start()
            assert wait_until(lambda: source.stats().state == "connected", timeout_s=15.0), (
                "no reconnect in 15 s"
            )
        assert wait_until(lambda: source.stats().frames_read > 5, timeout_s=5.0)
        # the supervisor and one capture thread, whatever happened before
        assert threading.active_count() == baseline + 3  # + the consumer thread
    consumer.join(timeout=5.0)
    assert not consumer.is_alive()
    assert threading.active_count() == baseline
    # at least one per kill; an attempt that meets the restarted server before it serves counts too
    assert source.stats().reconnects >= 5
    assert frames_seen == sorted(set(frames_seen))  # the frame counter kept rising across reconnects
    # every frame read was delivered or counted as dropped (overwritten in the one-slot hand-off while
    # the consumer was busy), but for at most the one still waiting there when the source stopped
    stats = source.stats()
    assert len(frames_seen) + stats.dropped_frames >= stats.frames_read - 1, (len(frames_seen), stats)


@pytest.mark.integration
@pytest.mark.slow
def test_rtsp_hung_server_is_noticed_by_the_frame_age_watchdog(rtsp_server_fn: RtspServer) -> None:
    source = fast_rtsp(rtsp_server_fn.url)
    idle_ticks: list[float] = []

    def consume() -> None:
        for frame in source.frames(idle_s=0.5):
            if frame is None:
                idle_ticks.append(time.monotonic())

    consumer = threading.Thread(target=consume)
    with source:
        consumer.start()
        rtsp_server_fn.pause()  # the socket stays open, nothing arrives
        assert wait_until(lambda: source.stats().state != "connected", timeout_s=10.0)
        assert idle_ticks, (
            "a waiting consumer must get idle ticks (the loop feeds the systemd watchdog on them)"
        )
        rtsp_server_fn.resume()
        before = source.stats().frames_read
        assert wait_until(
            lambda: source.stats().state == "connected" and source.stats().frames_read > before,
            timeout_s=20.0,
        )
    consumer.join(timeout=5.0)
    assert not consumer.is_alive()
