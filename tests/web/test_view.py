"""LiveView (edgepipe/web/view.py): the loop's hand-off, drawing only when asked, at a capped rate
shared by every viewer, and the health and status it reports."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepipe.draw import LineShape, Scene
from edgepipe.pipeline import Beat
from edgepipe.sources import SourceStats
from edgepipe.types import Detections, Frame, FrameResult, Tracks
from edgepipe.web.view import LiveView
from tests.fixtures.scripted import FRAME_HW, FRAMES, LINE_X, scripted_pipeline, write_frames


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


SCENE = Scene((LineShape("door", (100.0, 10.0), (100.0, 110.0), 1),), ("person",))


def result(index: int) -> FrameResult:
    image = np.full((*FRAME_HW, 3), 40 + 4 * index, np.uint8)
    return FrameResult(
        Frame(image, index, 1_800_000_000.0 + index, index / 10), Detections.empty(), Tracks.empty(), ()
    )


def beat(at_s: float, frames: int, state: str = "connected", status: dict[str, object] | None = None) -> Beat:
    return Beat(at_s, frames, SourceStats(state, frames, 0, 0), None, status)  # type: ignore[arg-type]


def view(clock: FakeClock, fps: float = 5.0) -> LiveView:
    live = LiveView("door", stream_fps=fps, jpeg_quality=80, clock=clock)
    live.started(SCENE)
    return live


def test_a_whole_run_hands_over_everything_and_draws_nothing_when_nobody_watches(tmp_path: Path) -> None:
    live = LiveView("scripted", stream_fps=5, jpeg_quality=80)
    pipeline = scripted_pipeline(write_frames(tmp_path / "frames"), tmp_path / "events.jsonl", watcher=live)
    pipeline.run()
    seen = live.seen()
    assert live.encoded == 0  # no client: not one frame was drawn or encoded
    assert seen.result is not None and seen.result.frame.index == FRAMES - 1
    assert seen.counts == pipeline.rules.counts()  # the final counts, the closing zone exit included
    assert seen.beat is not None and seen.beat.frames == FRAMES
    assert seen.stopped
    assert seen.scene is not None and seen.scene.rules[0] == LineShape(
        "door", (100.0, 10.0), (100.0, 110.0), -1
    )
    assert len(seen.recent) == min(FRAMES, 30)  # the last frames' tracks, for trails


def test_new_pictures_come_at_most_at_the_stream_rate_however_many_ask() -> None:
    clock = FakeClock()
    live = view(clock, fps=5.0)  # one picture per 0.2 s at most
    assert live.jpeg(0, timeout_s=0) is None  # no frame yet
    live.frame(result(0))
    first = live.jpeg(0, timeout_s=0)
    assert first is not None and first[0] == 1
    live.frame(result(1))  # a new frame, but within 0.2 s of the last picture
    assert live.jpeg(1, timeout_s=0) is None
    assert live.jpeg(0, timeout_s=0) == first  # a viewer who has nothing gets the last picture
    clock.t += 0.2
    second, third = live.jpeg(1, timeout_s=0), live.jpeg(1, timeout_s=0)  # two viewers, one picture
    assert second is not None and second[0] == 2 and third == second
    assert live.encoded == 2
    clock.t += 1.0
    assert live.jpeg(2, timeout_s=0) is None  # time enough, but no new frame: nothing is redrawn
    assert live.encoded == 2
    live.counts({"door": {"in": 1, "out": 0, "by_label": {}}})  # the totals changed: a picture of them
    assert live.jpeg(2, timeout_s=0) is not None and live.encoded == 3


def test_a_picture_is_the_annotated_frame() -> None:
    clock = FakeClock()
    live = view(clock)
    live.frame(result(5))
    jpeg = live.snapshot()
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (*FRAME_HW, 3)
    b, g, r = image[60, LINE_X].astype(int)  # on the line: magenta, give or take JPEG
    assert b > 180 and r > 180 and g < 100
    assert abs(int(image[60, 20].mean()) - (40 + 4 * 5)) < 8  # away from it: the frame's grey level


def test_after_the_run_a_stream_is_told_nothing_more_will_come() -> None:
    clock = FakeClock()
    live = view(clock)
    live.frame(result(0))
    sent = live.jpeg(0, timeout_s=0)
    assert sent is not None
    live.stopped()
    assert live.jpeg(sent[0], timeout_s=60) is None  # at once, not after the timeout


def test_health_follows_the_loop_and_its_source() -> None:
    clock = FakeClock()
    live = view(clock)
    assert live.health(10.0) == "starting (model compiling, source opening)"
    live.beat(beat(clock.t, 1))
    assert live.health(10.0) is None
    clock.t += 11
    assert live.health(10.0) == "the frame loop has been silent for 11 s"
    live.beat(beat(clock.t, 2, "reconnecting"))
    assert live.health(10.0) == "source reconnecting"
    live.beat(beat(clock.t, 3, "connected"))
    assert live.health(10.0) is None
    live.stopped()
    assert live.health(10.0) == "the frame loop has ended"


def test_status_is_the_mqtt_status_payload() -> None:
    clock = FakeClock()
    live = view(clock)
    assert live.status_payload()["state"] == "offline"
    live.beat(beat(clock.t, 3, status={"pipeline": "door", "fps": 9.5, "frames": 3}))
    payload = live.status_payload()
    assert payload["state"] == "online" and payload["fps"] == 9.5 and payload["frames"] == 3
    assert set(payload) >= {"state", "pipeline", "ts"}
    live.stopped()
    assert set(live.status_payload()) == {"state", "pipeline", "ts"}  # offline: as the Last Will


def test_fps_is_measured_from_the_heartbeats_over_one_to_two_seconds() -> None:
    clock = FakeClock()
    live = view(clock)
    live.beat(beat(100.0, 0))
    assert live.seen().fps is None and "fps" in live.live() and live.live()["fps"] is None
    for tenth in range(1, 16):  # 10 frames a second for 1.5 s
        live.beat(beat(100.0 + tenth / 10, tenth))
    assert live.seen().fps == pytest.approx(10.0)
    assert live.live() == {
        "state": "online",
        "counts": None,
        "frames": 15,
        "fps": 10.0,
        "source_state": "connected",
        "dropped_frames": 0,
    }
    for tenth in range(16, 41):  # then 20 a second: the older heartbeats fall out of the window
        live.beat(beat(101.5 + (tenth - 15) / 10, 15 + 2 * (tenth - 15)))
    assert live.seen().fps == pytest.approx(20.0)
