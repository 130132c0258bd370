"""What the web page shows of one pipeline: the loop hands a `LiveView` references to its results,
counts and heartbeats (the `Watcher` of pipeline.py: O(1), no copy); the HTTP threads draw and
JPEG-encode from there, and only while someone asks, at most `stream_fps` times a second however
many are watching.

Two locks, never held together: `_lock` guards the hand-off (the loop holds it only to swap a few
references, a reader only to take them), `_encode_lock` lets one HTTP thread draw while the others
wait for its JPEG instead of drawing the same frame again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgepipe.draw import Scene, TrackHistory, annotate, encode_jpeg, status_text
from edgepipe.metrics import LoopReading
from edgepipe.pipeline import Beat
from edgepipe.types import Counts, FrameResult, Tracks, utc_iso

POLL_S = 0.05  # how often a waiting stream looks for a new frame (a new frame does not wake it: the loop never signals)
FPS_WINDOW_S = 1.0  # the fps shown is measured over at least this long (and at most twice it)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the loop last handed over, taken in one piece."""

    scene: Scene | None
    result: FrameResult | None
    recent: tuple[Tracks, ...]
    counts: Counts | None
    counts_version: int  # bumped with each new counts dict
    beat: Beat | None
    stopped: bool
    fps: float | None  # frames per second over the last one to two seconds of heartbeats

    def key(self) -> tuple[int, int] | None:
        """What a JPEG of this shows: its frame and counts (None before the first frame)."""
        return None if self.result is None else (self.result.frame.index, self.counts_version)


class LiveView:
    """One pipeline as the page sees it (see the module docstring)."""

    def __init__(
        self,
        pipeline: str,
        *,
        stream_fps: float,
        jpeg_quality: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.interval_s = 1.0 / stream_fps
        self.jpeg_quality = jpeg_quality
        self._clock = clock
        self._lock = threading.Lock()
        self._scene: Scene | None = None
        self._result: FrameResult | None = None
        self._history = TrackHistory()
        self._counts: Counts | None = None
        self._counts_version = 0
        self._beat: Beat | None = None
        self._mark: Beat | None = None  # a heartbeat of a second or more ago, to measure fps from
        self._older_mark: Beat | None = None
        self._stopped = False
        self._encode_lock = threading.Lock()
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0  # bumped with each new JPEG; streams send the ones above what they sent
        self._jpeg_key: tuple[int, int] | None = None  # what the JPEG shows (Seen.key)
        self._encoded_at = -math.inf
        self.encoded = 0  # JPEGs made so far (the benchmark and tests read it)
        self.encode_cpu_s = 0.0  # CPU time the threads that made them spent drawing and encoding

    # ------------------------------------------------------------ the loop's side (pipeline.Watcher)
    def started(self, scene: Scene) -> None:
        with self._lock:
            self._scene = scene

    def frame(self, result: FrameResult) -> None:
        with self._lock:
            self._result = result
            self._history.add(result.tracks)

    def counts(self, counts: Counts) -> None:
        with self._lock:
            self._counts = counts
            self._counts_version += 1

    def beat(self, beat: Beat) -> None:
        with self._lock:
            self._beat = beat
            if self._mark is None or beat.at_s - self._mark.at_s >= FPS_WINDOW_S:
                self._older_mark, self._mark = self._mark, beat

    def stopped(self) -> None:
        with self._lock:
            self._stopped = True

    # ------------------------------------------------------------ the HTTP threads' side
    def seen(self) -> Seen:
        with self._lock:
            return Seen(
                self._scene,
                self._result,
                self._history.recent(),
                self._counts,
                self._counts_version,
                self._beat,
                self._stopped,
                self._fps(),
            )

    def _fps(self) -> float | None:
        """Caller holds _lock."""
        beat, mark = self._beat, self._older_mark
        if beat is None or mark is None or beat.at_s <= mark.at_s:
            return None
        return (beat.frames - mark.frames) / (beat.at_s - mark.at_s)

    def jpeg(self, newer_than: int, timeout_s: float) -> tuple[int, bytes] | None:
        """The newest annotated JPEG, with its sequence number, once there is one above `newer_than`;
        None after `timeout_s` without one, or at once when the pipeline has stopped and nothing newer
        will come."""
        deadline = self._clock() + timeout_s
        while True:
            wait_s = self._refresh()
            seen = self.seen()
            with self._encode_lock:
                if self._jpeg is not None and self._jpeg_seq > newer_than:
                    return self._jpeg_seq, self._jpeg
                drawn_last = seen.key() == self._jpeg_key
            left_s = deadline - self._clock()
            if left_s <= 0 or (seen.stopped and drawn_last):
                return None
            time.sleep(min(wait_s if wait_s is not None else POLL_S, left_s))

    def snapshot(self) -> bytes | None:
        """An annotated JPEG of the newest frame (made now unless one was made within the stream
        interval); None before the first frame."""
        self._refresh()
        with self._encode_lock:
            return self._jpeg

    def _refresh(self) -> float | None:
        """Draw and encode the newest frame if it is new and the rate allows; return how long to
        wait before the rate allows the next one (None: it would be allowed now, but no new frame)."""
        with self._encode_lock:
            wait_s = self._encoded_at + self.interval_s - self._clock()
            if wait_s > 0:
                return wait_s
            seen = self.seen()
            if seen.result is None or seen.scene is None or seen.key() == self._jpeg_key:
                return None
            cpu_s = time.thread_time()
            self._jpeg = encode_jpeg(self._draw(seen, seen.result, seen.scene), self.jpeg_quality)
            self.encode_cpu_s += time.thread_time() - cpu_s
            self._jpeg_seq += 1
            self._jpeg_key = seen.key()
            self._encoded_at = self._clock()
            self.encoded += 1
            return self.interval_s

    def _draw(self, seen: Seen, result: FrameResult, scene: Scene) -> NDArray[np.uint8]:
        status = status_text(self.pipeline, seen.fps, result)
        return annotate(result, scene, seen.counts, recent=seen.recent, status=status)

    # ------------------------------------------------------------ what the endpoints report
    def health(self, alive_timeout_s: float) -> str | None:
        """None while the loop goes round and its source is connected; else why not."""
        seen = self.seen()
        if seen.stopped:
            return "the frame loop has ended"
        if seen.beat is None:
            return "starting (model compiling, source opening)"
        silent_s = self._clock() - seen.beat.at_s
        if silent_s > alive_timeout_s:
            return f"the frame loop has been silent for {silent_s:.0f} s"
        if seen.beat.source.state != "connected":
            return f"source {seen.beat.source.state}"
        return None

    def live(self) -> dict[str, object]:
        """What the page shows, as of the last heartbeat: state, frames, fps (over the last second or
        two of heartbeats), source state, dropped frames, and the counts."""
        seen = self.seen()
        beat = seen.beat
        state = "offline" if seen.stopped else "starting" if beat is None else "online"
        live: dict[str, object] = {"state": state, "counts": seen.counts}
        if beat is not None:
            live.update(
                frames=beat.frames,
                fps=None if seen.fps is None else round(seen.fps, 1),
                source_state=beat.source.state,
                dropped_frames=beat.source.dropped_frames,
            )
        return live

    def status_payload(self) -> dict[str, object]:
        """The status as on the MQTT status topic: state, pipeline, ts and, online, the loop's stats."""
        seen = self.seen()
        online = seen.beat is not None and not seen.stopped
        payload: dict[str, object] = {
            "state": "online" if online else "offline",
            "pipeline": self.pipeline,
            "ts": utc_iso(time.time()),
        }
        if online and seen.beat is not None and seen.beat.status is not None:
            payload.update(seen.beat.status)
        return payload

    def reading(self) -> LoopReading | None:
        """The source's counters for /metrics, as of the last heartbeat."""
        beat = self.seen().beat
        return None if beat is None else LoopReading(self.pipeline, beat.source, beat.outbox_depth)
