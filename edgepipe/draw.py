"""Drawing on frames for people to look at, one module for `edgepipe snapshot`, `run --annotate` and
the live page: rules (lines with their direction and counts, zones with their occupancy), a labelled
pixel grid, detections, tracks with short trails, and a status line.

`draw_*` functions draw in place on a canvas (a BGR uint8 image the caller owns); `annotate` and
`rules_picture` make a new image from a frame. Rules are drawn in fixed colours that video rarely has
(magenta lines, cyan zones), so they stand out; tracks and classes take colours from a palette
without those two.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import OutputError
from edgepipe.geometry import reference_points
from edgepipe.rules import LineCrossing, Rules, Zone
from edgepipe.types import Counts, Detections, FrameResult, Tracks, totals

Bgr = tuple[int, int, int]
LINE_BGR: Bgr = (255, 0, 255)  # magenta
ZONE_BGR: Bgr = (255, 255, 0)  # cyan
GRID_BGR: Bgr = (210, 210, 210)
TEXT_BGR: Bgr = (255, 255, 255)
TEXT_BACKGROUND_BGR: Bgr = (0, 0, 0)
# Tracks and classes: well apart from each other and from the rule colours
PALETTE_BGR: tuple[Bgr, ...] = (
    (0, 200, 0),
    (0, 140, 255),
    (40, 40, 220),
    (220, 120, 0),
    (0, 215, 255),
    (40, 90, 160),
    (0, 255, 128),
    (200, 80, 120),
    (120, 200, 200),
    (90, 160, 90),
)
TRAIL_FRAMES = 30  # a trail shows a track's last 30 frames: 3 s at 10 fps, 1.2 s at 25 fps
ZONE_FILL_ALPHA = 0.15
GRID_STEPS_PX = (10, 20, 25, 50, 100, 200, 250, 500, 1000)
GRID_LINES = 10  # about this many grid lines across the longer side
GRID_LABEL_SIZE = 0.7  # grid labels are this much smaller than other text
FONT = cv2.FONT_HERSHEY_SIMPLEX


# ---------------------------------------------------------------- what is drawn
@dataclass(frozen=True, slots=True)
class LineShape:
    """A counting line as placed on the frame: `in_sign` +1 when "in" is the right-hand side of
    start→end on screen (image y grows downwards), -1 when it is the left."""

    name: str
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    in_sign: int

    def in_normal(self) -> NDArray[np.float64]:
        """Unit vector from the line towards its "in" side."""
        (x1, y1), (x2, y2) = self.start_xy, self.end_xy
        length = float(np.hypot(x2 - x1, y2 - y1))
        # (-dy, dx) points to the right-hand side: where Segment.position's distance is positive
        return self.in_sign * np.array([-(y2 - y1), x2 - x1], np.float64) / length


@dataclass(frozen=True, slots=True)
class ZoneShape:
    """A zone polygon as placed on the frame."""

    name: str
    polygon_xy: tuple[tuple[float, float], ...]


RuleShape = LineShape | ZoneShape


@dataclass(frozen=True, slots=True)
class Scene:
    """What is drawn on every frame of a pipeline besides its tracks: its rules, in frame pixels,
    and the model's labels."""

    rules: tuple[RuleShape, ...]
    labels: tuple[str, ...]


def rule_shapes(rules: Rules) -> tuple[RuleShape, ...]:
    """The shapes of placed rules (relative rules must have been placed on a frame size)."""
    shapes: list[RuleShape] = []
    for rule in rules.rules:
        if isinstance(rule, LineCrossing):
            start, end = rule.start.tolist(), rule.end.tolist()
            shapes.append(LineShape(rule.name, (start[0], start[1]), (end[0], end[1]), rule.in_sign))
        elif isinstance(rule, Zone):
            shapes.append(ZoneShape(rule.name, tuple((x, y) for x, y in rule.polygon.tolist())))
    return tuple(shapes)


class TrackHistory:
    """The Tracks of the last `frames` frames, for trails: adding is O(1), a reference is kept."""

    def __init__(self, frames: int = TRAIL_FRAMES) -> None:
        self._recent: deque[Tracks] = deque(maxlen=frames)

    def add(self, tracks: Tracks) -> None:
        self._recent.append(tracks)

    def recent(self) -> tuple[Tracks, ...]:
        return tuple(self._recent)


# ---------------------------------------------------------------- composed pictures
def annotate(
    result: FrameResult,
    scene: Scene,
    counts: Counts | None,
    *,
    recent: Sequence[Tracks] = (),
    status: str = "",
) -> NDArray[np.uint8]:
    """A new image of the frame with the tracks (ids and trails), the rules over them (with their
    counts; a line stays visible where people walk over it) and a status line: what `run --annotate`
    writes and the live page shows."""
    canvas: NDArray[np.uint8] = result.frame.image.copy()
    draw_tracks(canvas, result.tracks, scene.labels, recent)
    draw_rules(canvas, scene.rules, counts)
    if status:
        draw_status(canvas, status)
    return canvas


def rules_picture(
    image: NDArray[np.uint8],
    rules: Sequence[RuleShape],
    *,
    grid_step_px: int | None = None,
    detections: Detections | None = None,
    labels: Sequence[str] = (),
) -> NDArray[np.uint8]:
    """A new image for placing rules (`edgepipe snapshot`): a labelled pixel grid, every rule with
    its name and direction, and optionally detections."""
    canvas: NDArray[np.uint8] = image.copy()
    draw_grid(canvas, grid_step_px)
    if detections is not None:
        draw_detections(canvas, detections, labels)
    draw_rules(canvas, rules, None)
    return canvas


def status_text(pipeline: str, fps: float | None, result: FrameResult) -> str:
    """The status line of an annotated frame: pipeline, fps, frame number and capture time."""
    frame = result.frame
    moment = datetime.fromtimestamp(frame.timestamp).strftime("%Y-%m-%d %H:%M:%S")
    parts = [pipeline, f"{fps:.1f} fps" if fps is not None else "", f"frame {frame.index}", moment]
    if frame.source_time is not None:
        parts.append(f"t {frame.source_time:.1f} s")
    return "  ".join(part for part in parts if part)


# ---------------------------------------------------------------- drawing primitives
def _scale(canvas: NDArray[np.uint8]) -> tuple[float, int]:
    """Font scale and line thickness that read well at this frame size."""
    short_side = min(canvas.shape[:2])
    return max(0.4, short_side / 900), max(2, round(short_side / 240))


def _point(xy: Iterable[float]) -> tuple[int, int]:
    x, y = xy
    return round(x), round(y)


def draw_text(
    canvas: NDArray[np.uint8],
    text: str,
    anchor_xy: tuple[float, float],
    *,
    color: Bgr = TEXT_BGR,
    background: Bgr = TEXT_BACKGROUND_BGR,
    centered: bool = False,
    size: float = 1.0,
) -> None:
    """`text` on a filled box at `anchor_xy` (its top-left corner, or its centre), kept inside the
    frame; `size` scales the font."""
    box_w, box_h = text_box(canvas, text, size)
    font_scale = _scale(canvas)[0] * size
    (_, height), _ = cv2.getTextSize(text, FONT, font_scale, 1)
    x, y = anchor_xy
    if centered:
        x, y = x - box_w / 2, y - box_h / 2
    frame_h, frame_w = canvas.shape[:2]
    left = int(min(max(x, 0), max(frame_w - box_w, 0)))
    top = int(min(max(y, 0), max(frame_h - box_h, 0)))
    cv2.rectangle(canvas, (left, top), (left + box_w, top + box_h), background, -1)
    cv2.putText(canvas, text, (left + 3, top + 3 + height), FONT, font_scale, color, 1, cv2.LINE_AA)


def text_box(canvas: NDArray[np.uint8], text: str, size: float = 1.0) -> tuple[int, int]:
    """(width, height) in pixels of `text` on its box, as draw_text draws it on this canvas."""
    font_scale = _scale(canvas)[0] * size
    (width, height), baseline = cv2.getTextSize(text, FONT, font_scale, 1)
    return width + 6, height + baseline + 6


def _beside(
    canvas: NDArray[np.uint8],
    text: str,
    point: NDArray[np.float64],
    direction: NDArray[np.float64],
    gap_px: float,
) -> tuple[float, float]:
    """The centre for `text` `gap_px` beyond `point` along the unit vector `direction`, so that its
    box does not reach back over the point whichever way `direction` goes."""
    width, height = text_box(canvas, text)
    reach = gap_px + abs(direction[0]) * width / 2 + abs(direction[1]) * height / 2
    x, y = (point + direction * reach).tolist()
    return x, y


def draw_rules(canvas: NDArray[np.uint8], rules: Sequence[RuleShape], counts: Counts | None) -> None:
    """Zones (outlined, lightly filled, with name and occupancy) under lines (with name, an arrow
    towards "in" and the in/out labels or counts)."""
    zones = [rule for rule in rules if isinstance(rule, ZoneShape)]
    if zones:
        fill = canvas.copy()
        for zone in zones:
            cv2.fillPoly(fill, [np.round(zone.polygon_xy).astype(np.int32)], ZONE_BGR)
        cv2.addWeighted(fill, ZONE_FILL_ALPHA, canvas, 1 - ZONE_FILL_ALPHA, 0, dst=canvas)
    for zone in zones:
        _draw_zone(canvas, zone, _tally(counts, zone.name))
    for line in rules:  # over the zones: a line along a zone's edge stays visible
        if isinstance(line, LineShape):
            _draw_line(canvas, line, _tally(counts, line.name))


def _tally(counts: Counts | None, rule: str) -> Mapping[str, int] | None:
    return totals(counts[rule]) if counts is not None and rule in counts else None


def _draw_zone(canvas: NDArray[np.uint8], zone: ZoneShape, tally: Mapping[str, int] | None) -> None:
    _, thickness = _scale(canvas)
    polygon = np.round(zone.polygon_xy).astype(np.int32)
    cv2.polylines(canvas, [polygon], True, ZONE_BGR, thickness, cv2.LINE_8)
    text = zone.name if tally is None else f"{zone.name}: {tally.get('occupancy', 0)} inside"
    top_left = min(zone.polygon_xy, key=lambda p: (p[1], p[0]))  # the highest vertex
    draw_text(canvas, text, (top_left[0] + 4, top_left[1] + 4), color=ZONE_BGR)


def _draw_line(canvas: NDArray[np.uint8], line: LineShape, tally: Mapping[str, int] | None) -> None:
    _, thickness = _scale(canvas)
    start, end = np.asarray(line.start_xy), np.asarray(line.end_xy)
    cv2.line(canvas, _point(start), _point(end), LINE_BGR, thickness, cv2.LINE_8)
    for point in (start, end):
        cv2.circle(canvas, _point(point), thickness + 2, LINE_BGR, -1, cv2.LINE_8)
    middle, normal = (start + end) / 2, line.in_normal()
    arrow_px = float(np.clip(0.08 * min(canvas.shape[:2]), 25, 80))
    tip = middle + normal * arrow_px
    cv2.arrowedLine(canvas, _point(middle), _point(tip), LINE_BGR, thickness, cv2.LINE_8, tipLength=0.35)
    in_text, out_text = ("in", "out") if tally is None else (f"in {tally['in']}", f"out {tally['out']}")
    draw_text(canvas, in_text, _beside(canvas, in_text, tip, normal, 8), color=LINE_BGR, centered=True)
    draw_text(canvas, out_text, _beside(canvas, out_text, middle, -normal, 6), color=LINE_BGR, centered=True)
    # the name beyond the start point, along the line, so it covers neither the line nor its labels
    along = (start - end) / float(np.hypot(*(start - end)))
    draw_text(canvas, line.name, _beside(canvas, line.name, start, along, 6 + thickness), centered=True)


def draw_grid(canvas: NDArray[np.uint8], step_px: int | None = None) -> None:
    """Thin grid lines every `step_px` pixels (default: about GRID_LINES across), labelled with their
    pixel coordinate along the top and left edges, and the frame size in the bottom-right corner."""
    height, width = canvas.shape[:2]
    step = step_px if step_px is not None else grid_step(max(height, width))
    overlay = canvas.copy()
    for x in range(step, width, step):
        cv2.line(overlay, (x, 0), (x, height - 1), GRID_BGR, 1, cv2.LINE_8)
    for y in range(step, height, step):
        cv2.line(overlay, (0, y), (width - 1, y), GRID_BGR, 1, cv2.LINE_8)
    cv2.addWeighted(overlay, 0.6, canvas, 0.4, 0, dst=canvas)
    for x in range(step, width, step):  # centred on their line along the top edge
        draw_text(canvas, str(x), (x, 0), color=GRID_BGR, size=GRID_LABEL_SIZE, centered=True)
    for y in range(step, height, step):  # and along the left edge
        draw_text(canvas, str(y), (0, y), color=GRID_BGR, size=GRID_LABEL_SIZE, centered=True)
    size = f"{width}x{height} px"
    text_w, text_h = text_box(canvas, size)
    draw_text(canvas, size, (width - text_w - 4, height - text_h - 4))


def grid_step(size_px: int) -> int:
    """The round step (10, 20, 25, 50, 100, ...) that gives about GRID_LINES lines across `size_px`."""
    return min(GRID_STEPS_PX, key=lambda step: abs(size_px / step - GRID_LINES))


def palette_color(index: int) -> Bgr:
    """A colour per track id or class id, never one of the rule colours."""
    return PALETTE_BGR[index % len(PALETTE_BGR)]


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def draw_detections(canvas: NDArray[np.uint8], detections: Detections, labels: Sequence[str]) -> None:
    """Each box in its class's colour, with label and score."""
    _, thickness = _scale(canvas)
    for (x1, y1, x2, y2), score, class_id in zip(
        detections.xyxy.round().astype(int).tolist(),
        detections.score.tolist(),
        detections.class_id.tolist(),
        strict=True,
    ):
        color = palette_color(class_id)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        _box_label(canvas, f"{_label(labels, class_id)} {score:.2f}", (x1, y1), color)


def draw_tracks(
    canvas: NDArray[np.uint8], tracks: Tracks, labels: Sequence[str], recent: Sequence[Tracks] = ()
) -> None:
    """Each track's box and id in its own colour, with the trail of its reference point (bottom
    centre) over `recent` (older frames first)."""
    _, thickness = _scale(canvas)
    trails = _trails(tracks.track_id, recent)
    for (x1, y1, x2, y2), track_id, class_id in zip(
        tracks.xyxy.round().astype(int).tolist(),
        tracks.track_id.tolist(),
        tracks.class_id.tolist(),
        strict=True,
    ):
        color = palette_color(track_id)
        trail = trails.get(track_id)
        if trail is not None and len(trail) > 1:
            cv2.polylines(canvas, [trail], False, color, max(1, thickness - 1), cv2.LINE_8)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        _box_label(canvas, f"#{track_id} {_label(labels, class_id)}", (x1, y1), color)


def _trails(track_ids: NDArray[np.int64], recent: Sequence[Tracks]) -> dict[int, NDArray[np.int32]]:
    """Per track id in `track_ids`: its reference points over `recent`, as (K, 1, 2) int32 polylines."""
    if not recent or len(track_ids) == 0:
        return {}
    ids = np.concatenate([tracks.track_id for tracks in recent])
    points = np.concatenate([reference_points(tracks.xyxy) for tracks in recent])
    wanted = np.isin(ids, track_ids)
    ids, points = ids[wanted], np.round(points[wanted]).astype(np.int32)
    return {int(tid): points[ids == tid].reshape(-1, 1, 2) for tid in np.unique(ids)}


def _box_label(canvas: NDArray[np.uint8], text: str, top_left: tuple[int, int], color: Bgr) -> None:
    font_scale, _ = _scale(canvas)
    (width, height), baseline = cv2.getTextSize(text, FONT, font_scale, 1)
    x1, y1 = top_left
    # keep the label inside the frame for boxes touching the top or right edge
    top, left = max(y1 - height - baseline, 0), max(min(x1, canvas.shape[1] - width), 0)
    cv2.rectangle(canvas, (left, top), (left + width, top + height + baseline), color, -1)
    cv2.putText(canvas, text, (left, top + height), FONT, font_scale, (0, 0, 0), 1, cv2.LINE_AA)


def draw_status(canvas: NDArray[np.uint8], text: str) -> None:
    """One status line in the top-left corner."""
    draw_text(canvas, text, (4.0, 4.0))


# ---------------------------------------------------------------- files
def encode_jpeg(image: NDArray[np.uint8], quality: int) -> bytes:
    """`image` (BGR) as JPEG bytes."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # only for an image OpenCV cannot encode at all (a programming error)
        raise ValueError(f"cannot encode an image of shape {image.shape} as JPEG")
    return encoded.tobytes()


def write_image(path: Path, image: NDArray[np.uint8], option: str) -> None:
    """Write `image` to `path` in the format its suffix says; OutputError naming `option` otherwise."""
    ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise OutputError(
            f"{option} {path}: cannot encode an image with suffix {path.suffix!r}; use .jpg or .png"
        )
    try:
        encoded.tofile(path)
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot write: {error.strerror}") from None


class VideoFile:
    """An .mp4 file written frame by frame (MPEG-4 Part 2, which OpenCV's own FFmpeg always has),
    opened at the first frame's size; OutputError naming `option` if it cannot be."""

    def __init__(self, path: Path, fps: float, option: str) -> None:
        self.path, self.fps, self.option = path, fps, option
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: NDArray[np.uint8]) -> None:
        if self._writer is None:
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (width, height)
            )
            if not writer.isOpened():
                raise OutputError(f"{self.option} {self.path}: cannot open a video writer; use a .mp4 name")
            self._writer = writer
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
