"""Video sources: files and image folders deliver every frame; cameras and streams keep the newest.

Every source is a context manager whose `frames()` iterates Frames:

    with open_source(cfg.source) as source:
        for frame in source.frames():
            if frame is None:   # no frame came for idle_s (a camera reconnecting): still alive
                continue

Live sources (camera, RTSP/HTTP, and a file with `realtime: true`) capture in their own thread into a
one-slot box: a slow consumer gets the newest frame and every overwritten frame counts as dropped,
so `Frame.index` has gaps and latency cannot build up. A live stream that stops or cannot be opened
is reopened with capped exponential backoff; it never raises, it reports its state in `stats()`.
Settings come typed and checked from config.py; sources do not check them again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import cv2
import numpy as np
from numpy.typing import NDArray

from edgepipe.config import (
    CameraSourceConfig,
    FileSourceConfig,
    ImageFolderSourceConfig,
    RtspSourceConfig,
    SourceConfig,
)
from edgepipe.errors import SourceError, mask_secrets
from edgepipe.types import Frame

log = logging.getLogger(__name__)

SourceState = Literal["connecting", "connected", "reconnecting", "failed", "ended"]
SOURCE_STATES: tuple[SourceState, ...] = get_args(SourceState)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
IDLE_S = 1.0  # without a frame for this long, frames() yields None so the loop can say it is alive
_WAKE_S = 0.2  # longest a waiting consumer sleeps before it re-checks stop(); a safety net only
# A damaged stretch of a video makes read() fail for a frame or a few, then decoding goes on: only
# this many failures in a row (or the container's last frame) is the end of the file.
_MAX_BAD_FRAMES = 25


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What a source reports about itself: read by the loop for status, metrics and health."""

    state: SourceState
    frames_read: int  # frames decoded so far
    dropped_frames: int  # live frames overwritten before the loop took them
    reconnects: int  # connection attempts after the first one (live sources)
    skipped: int = 0  # frames or images that could not be decoded (a damaged file), left out


class Source(Protocol):
    """What the frame loop needs from a source."""

    name: str  # for logs and messages; never holds a password
    is_live: bool  # keeps only the newest frame (camera, stream, realtime file)

    @property
    def fps(self) -> float | None: ...

    @property
    def frame_count(self) -> int | None:
        """Frames this source will deliver, when known before the run (a file that does not loop)."""

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...

    def frames(self, idle_s: float = IDLE_S) -> Iterator[Frame | None]:
        """Frames in order; None whenever no frame came for `idle_s` (live sources only)."""

    def frame_waiting(self) -> bool:
        """Whether taking the next frame would not block (a file: always; live: once captured)."""

    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the frames, when known before the first one is taken."""

    def stats(self) -> SourceStats: ...

    def stop(self) -> None:
        """End iteration promptly; safe from any thread and from a signal handler."""


class _LatestBox:
    """One-slot hand-off: the writer overwrites the unread frame (a drop), the reader takes the newest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # an RLock: stop() may run in a signal handler on this thread
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def close(self) -> None:
        """The writer is done: take() ends once the last frame was taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def has_frame(self) -> bool:
        """Whether a frame waits to be taken (a hint: the writer may add one right after)."""
        return self._frame is not None

    def peek(self) -> Frame | None:
        return self._frame

    def frames(self, stopped: threading.Event, idle_s: float) -> Iterator[Frame | None]:
        """The newest frame each time one is there; None after each `idle_s` without one."""
        while True:
            with self._cond:
                idle_at = time.monotonic() + idle_s
                while self._frame is None and not self._closed and not stopped.is_set():
                    left_s = idle_at - time.monotonic()
                    if left_s <= 0:
                        break
                    self._cond.wait(min(_WAKE_S, left_s))
                if stopped.is_set() or (self._frame is None and self._closed):
                    return
                frame, self._frame = self._frame, None
            yield frame  # outside the lock: the writer keeps writing while the consumer works

    def wait_first(self, timeout_s: float, stopped: threading.Event) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._frame is None and not self._closed and not stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, _WAKE_S))


class _SourceBase:
    """State, stop and counters that every source has."""

    is_live = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._fps: float | None = None
        self._frames_read = 0
        self._reconnects = 0
        self._skipped = 0
        self._stopped = threading.Event()
        self._state: SourceState = "connecting"
        self._state_lock = threading.Lock()

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return None

    def stats(self) -> SourceStats:
        return SourceStats(self._state, self._frames_read, self._dropped(), self._reconnects, self._skipped)

    def _dropped(self) -> int:
        return 0

    def stop(self) -> None:
        self._stopped.set()

    def frame_waiting(self) -> bool:
        return True

    def frame_size(self) -> tuple[int, int] | None:
        return None

    def _set_state(self, state: SourceState, reason: str = "") -> None:
        with self._state_lock:
            old, self._state = self._state, state
        if old != state:
            level = logging.WARNING if state in ("reconnecting", "failed") else logging.INFO
            log.log(level, "source %s: %s → %s%s", self.name, old, state, f" ({reason})" if reason else "")

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._set_state("ended")


class FileSource(_SourceBase):
    """Every frame of a video file in order; source_time from the container (seconds).

    `loop` replays the file (index and source_time keep rising). `realtime` paces the frames at
    the container fps in a capture thread and keeps only the newest, like a camera.
    """

    def __init__(self, settings: FileSourceConfig) -> None:
        self.path = settings.path
        super().__init__(self.path.name)
        self.loop = settings.loop
        self.realtime = settings.realtime
        self.is_live = settings.realtime
        self._cap: Any = None
        self._box = _LatestBox()
        self._thread: threading.Thread | None = None
        probe = self._open()  # fail at construction, and know fps, length and size before the run
        fps = float(probe.get(cv2.CAP_PROP_FPS))
        count = int(probe.get(cv2.CAP_PROP_FRAME_COUNT))
        size = (int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)))
        probe.release()
        self._fps = fps if math.isfinite(fps) and fps > 0 else None
        self._count = count if count > 0 else None  # from the container header; may be absent
        self._size = size if min(size) > 0 else None

    @property
    def frame_count(self) -> int | None:
        return None if self.loop else self._count

    def frame_size(self) -> tuple[int, int] | None:
        return self._size

    def frame_waiting(self) -> bool:
        return self._box.has_frame() if self.realtime else True

    def _dropped(self) -> int:
        return self._box.dropped

    def stop(self) -> None:
        self._stopped.set()
        self._box.wake()

    def _open(self) -> Any:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {self.path}: not a video OpenCV/FFmpeg can read")
        return cap

    def __enter__(self) -> FileSource:
        self._cap = self._open()
        ok, _ = self._cap.read()
        if not ok:
            self._cap.release()
            raise SourceError(
                f"cannot read a frame from video file {self.path}: the file is empty or corrupt"
            )
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._set_state("connected")
        if self.realtime:
            self._thread = threading.Thread(target=self._pace, name=f"edgepipe-file-{self.name}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._box.wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def frames(self, idle_s: float = IDLE_S) -> Iterator[Frame | None]:
        if self._cap is None:
            raise RuntimeError("use FileSource inside `with source:` before iterating")
        if self.realtime:
            return self._box.frames(self._stopped, idle_s)
        return self._decode()

    def _decode(self) -> Iterator[Frame]:
        """Decode every frame, past damaged stretches; on EOF rewind when looping. Runs on one thread only."""
        index = 0
        offset_s = 0.0  # container time of the previous passes, so source_time keeps rising
        last_s = -1.0
        failures = 0  # read() failures in a row
        this_pass = 0  # frames decoded since the last rewind
        while not self._stopped.is_set():
            ok, image = self._cap.read()
            if not ok:
                position = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
                at_end = self._count is not None and position >= self._count
                failures += 1
                if not at_end and failures < _MAX_BAD_FRAMES:
                    continue  # a frame that does not decode: the next one may
                self._report_short_pass(this_pass)
                if not self.loop or index == 0 or not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                    break
                offset_s = last_s + (1.0 / self._fps if self._fps else 0.0)
                failures = this_pass = 0
                continue
            failures = 0
            this_pass += 1
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            own_s = pos_ms / 1000.0 if math.isfinite(pos_ms) and pos_ms >= 0 else index / (self._fps or 1.0)
            last_s = offset_s + own_s
            self._frames_read += 1
            yield Frame(image, index, time.time(), last_s)
            index += 1
        self._set_state("ended")

    def _report_short_pass(self, decoded: int) -> None:
        """A pass through the file that gave fewer frames than its header says: say so (once a pass)."""
        if self._count is None or decoded >= self._count:
            return
        missing = self._count - decoded
        self._skipped += missing
        log.warning(
            "video %s: read %d of %d frames; %d could not be decoded (a damaged file?) and were left out",
            self.path,
            decoded,
            self._count,
            missing,
        )

    def _pace(self) -> None:
        start = time.monotonic()
        first_s: float | None = None
        try:
            for frame in self._decode():
                first_s = frame.source_time if first_s is None else first_s
                due = start + (frame.source_time or 0.0) - (first_s or 0.0)
                if self._stopped.wait(max(0.0, due - time.monotonic())):
                    break
                # Stamp the capture time when the "camera" delivers it, as a real camera would.
                self._box.put(Frame(frame.image, frame.index, time.time(), frame.source_time))
        finally:
            self._box.close()


def read_image(path: Path) -> NDArray[np.uint8]:
    """An image file as BGR uint8 (H, W, 3), whatever it holds (gray, alpha, 16 bit); SourceError if
    it cannot be decoded. The one image reader of the package."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise SourceError(f"cannot read image {path}: {error.strerror}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise SourceError(f"cannot read image {path}: the file is empty or not an image OpenCV can decode")
    return np.asarray(image, np.uint8)


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder (by suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImageFolderSource(_SourceBase):
    """Sorted image files of a folder as frames; source_time = i / fps."""

    def __init__(self, settings: ImageFolderSourceConfig) -> None:
        self.path = settings.path
        super().__init__(self.path.name)
        self.files = image_files(self.path)
        if not self.files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"image folder {self.path} has no images (looked for {suffixes})")
        self._fps = settings.fps
        self._rate = settings.fps  # a float for sure, unlike _fps of the base
        self.loop = settings.loop

    @property
    def frame_count(self) -> int | None:
        return None if self.loop else len(self.files)

    def __enter__(self) -> ImageFolderSource:
        self._set_state("connected")
        return self

    def frames(self, idle_s: float = IDLE_S) -> Iterator[Frame]:
        """Every image in name order (its position sets the frame index and time); an image that
        cannot be read is skipped with a WARNING and counted, the others go on."""
        position = 0
        unreadable: set[Path] = set()
        while not self._stopped.is_set():
            path = self.files[position % len(self.files)]
            index = position
            position += 1
            try:
                image = read_image(path)
            except SourceError as error:
                if path not in unreadable:  # once per file, not once per loop
                    unreadable.add(path)
                    self._skipped += 1
                    log.warning("%s; skipped", error)
                if len(unreadable) == len(self.files):
                    break  # nothing here can be read: looping would spin
            else:
                self._frames_read += 1
                yield Frame(image, index, time.time(), index / self._rate)
            if position % len(self.files) == 0 and not self.loop:
                break
        self._set_state("ended")


class _LiveSource(_SourceBase):
    """A capture thread per connection attempt, watched by a supervisor thread that reconnects.

    The supervisor recreates the capture when the reader ends (stream closed, open failed) or when
    no frame arrived for read_timeout_s (a hung peer: the reader is abandoned and exits by itself
    once FFmpeg's own read timeout returns). Backoff doubles from reconnect_initial_s up to
    reconnect_max_s and resets after a connection that delivered frames.
    """

    is_live = True

    def __init__(
        self,
        name: str,
        *,
        open_timeout_s: float,
        read_timeout_s: float,
        reconnect_initial_s: float,
        reconnect_max_s: float,
    ) -> None:
        super().__init__(name)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self._box = _LatestBox()
        self._generation = 0  # bumped to abandon the current reader
        self._progress = 0.0  # monotonic time of the reader's last sign of life (opened, frame)
        self._opened = False
        self._supervisor: threading.Thread | None = None

    def _dropped(self) -> int:
        return self._box.dropped

    def frame_waiting(self) -> bool:
        return self._box.has_frame()

    def frame_size(self) -> tuple[int, int] | None:
        frame = self._box.peek()
        return None if frame is None else (int(frame.image.shape[0]), int(frame.image.shape[1]))

    def _open(self) -> Any:
        """A new cv2.VideoCapture (opened or not); blocks at most about open_timeout_s."""
        raise NotImplementedError

    def __enter__(self) -> _LiveSource:
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"edgepipe-source-{self.name}", daemon=True
        )
        self._supervisor.start()
        self._box.wait_first(self.open_timeout_s, self._stopped)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._supervisor is not None:
            self._supervisor.join(timeout=2.0)
            self._supervisor = None
        self._set_state("ended")

    def stop(self) -> None:
        self._stopped.set()
        self._box.wake()

    def frames(self, idle_s: float = IDLE_S) -> Iterator[Frame | None]:
        if self._supervisor is None:
            raise RuntimeError(f"use {type(self).__name__} inside `with source:` before iterating")
        return self._box.frames(self._stopped, idle_s)

    def _supervise(self) -> None:
        backoff_s = self.reconnect_initial_s
        ever_connected = False
        reader: threading.Thread | None = None
        while not self._stopped.is_set():
            self._generation += 1
            self._opened = False
            self._progress = time.monotonic()
            frames_before = self._frames_read
            reader = threading.Thread(
                target=self._capture,
                args=(self._generation,),
                name=f"edgepipe-capture-{self.name}",
                daemon=True,
            )
            reader.start()
            reason = self._watch(reader)
            self._generation += 1  # the reader, if still blocked in FFmpeg, exits when it returns
            if self._stopped.is_set():
                break
            if self._frames_read > frames_before:
                ever_connected = True
                backoff_s = self.reconnect_initial_s
            self._reconnects += 1
            if backoff_s >= self.reconnect_max_s:
                self._set_state("failed", f"{reason}; retrying every {backoff_s:g} s")
            else:
                self._set_state(
                    "reconnecting" if ever_connected else "connecting", f"{reason}; retry in {backoff_s:g} s"
                )
            if self._stopped.wait(backoff_s):
                break
            backoff_s = min(backoff_s * 2, self.reconnect_max_s)
        if reader is not None:
            reader.join(timeout=1.0)
        self._box.close()

    def _watch(self, reader: threading.Thread) -> str:
        """Wait until the reader ends or stalls; return why."""
        while not self._stopped.is_set():
            if not reader.is_alive():
                return "stream ended" if self._opened else "cannot open"
            limit_s = self.read_timeout_s if self._opened else self.open_timeout_s + self.read_timeout_s
            if time.monotonic() - self._progress > limit_s:
                return f"no frame for {limit_s:g} s"
            self._stopped.wait(0.05)
        return "stopped"

    def _capture(self, generation: int) -> None:
        cap = None
        try:
            cap = self._open()
            if not cap.isOpened() or generation != self._generation:
                return
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            self._fps = fps if math.isfinite(fps) and 0 < fps < 1000 else self._fps
            self._opened = True
            self._progress = time.monotonic()
            while not self._stopped.is_set():
                ok, image = cap.read()
                if not ok or generation != self._generation:
                    return
                self._progress = time.monotonic()
                self._box.put(Frame(image, self._frames_read, time.time(), None))
                self._frames_read += 1  # only this thread writes it (the previous reader has exited)
                if self._state != "connected":
                    self._set_state("connected")
        except cv2.error as error:
            log.warning("source %s: capture failed: %s", self.name, error)
        finally:
            if cap is not None:
                cap.release()


class RtspSource(_LiveSource):
    """An RTSP or HTTP(S) stream through OpenCV's FFmpeg backend, with open/read timeouts."""

    def __init__(self, settings: RtspSourceConfig) -> None:
        super().__init__(
            mask_secrets(settings.url),
            open_timeout_s=settings.open_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            reconnect_initial_s=settings.reconnect_initial_s,
            reconnect_max_s=settings.reconnect_max_s,
        )
        self.url = settings.url
        self.transport = settings.transport

    def _open(self) -> Any:
        if self.url.startswith("rtsp"):
            _set_ffmpeg_option("rtsp_transport", self.transport)
        # The timeouts only take effect when given to the constructor (cap.set() later is ignored).
        # FFmpeg's read timeout is only the backstop that frees an abandoned reader: at its expiry it
        # may still hand out a stale buffered frame, which would reset our frame-age watchdog if the
        # two were equal. The watchdog (read_timeout_s) is what notices a hung stream.
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(2 * self.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)


def _set_ffmpeg_option(key: str, value: str) -> None:
    """Add key;value to OPENCV_FFMPEG_CAPTURE_OPTIONS, which OpenCV reads at each open.

    It is process-wide, so a key the user (or another source) already set is left alone.
    """
    current = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    options = dict(item.split(";", 1) for item in current.split("|") if ";" in item)
    if key in options:
        if options[key] != value:
            log.warning(
                "OPENCV_FFMPEG_CAPTURE_OPTIONS already sets %s=%s; not changing it to %s",
                key,
                options[key],
                value,
            )
        return
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"{current}|{key};{value}" if current else f"{key};{value}"


class CameraSource(_LiveSource):
    """A USB camera through V4L2 (index or /dev/videoN); width, height and fps are requests."""

    def __init__(self, settings: CameraSourceConfig) -> None:
        super().__init__(
            f"camera {settings.device}",
            open_timeout_s=settings.open_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            reconnect_initial_s=settings.reconnect_initial_s,
            reconnect_max_s=settings.reconnect_max_s,
        )
        self.device = settings.device
        self.width = settings.width
        self.height = settings.height
        self.requested_fps = settings.fps

    def _open(self) -> Any:
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            return cap
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
            (cv2.CAP_PROP_FPS, self.requested_fps),
        ):
            if value is not None and not cap.set(prop, float(value)):
                log.warning("camera %s: the driver refused property %d = %s", self.device, prop, value)
        return cap


def open_source(settings: SourceConfig) -> Source:
    """The source a config section describes (not yet opened: use it in `with`)."""
    if isinstance(settings, FileSourceConfig):
        return FileSource(settings)
    if isinstance(settings, ImageFolderSourceConfig):
        return ImageFolderSource(settings)
    if isinstance(settings, CameraSourceConfig):
        return CameraSource(settings)
    return RtspSource(settings)
