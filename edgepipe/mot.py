"""MOTChallenge text files for `edgepipe track`: read det.txt into per-frame Detections, write results.

det.txt rows are `frame, id, x, y, w, h, score, ...` (frames from 1, x, y the top-left corner in
pixels); gt.txt rows have the same first six fields and a flag (0: not scored) for the score;
result rows are `frame, id, x, y, w, h, -1, -1, -1, -1`, which the MOTChallenge devkit,
py-motmetrics and TrackEval read.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import TrackerConfig
from edgepipe.errors import EdgepipeError
from edgepipe.track import build_tracker
from edgepipe.types import Detections, Tracks

DETECTION_FIELDS = ("frame", "id", "x", "y", "w", "h", "score")

# MOT files carry no class; every detection is a person (class 0 in COCO order, as the detector).
PERSON_CLASS_ID = 0


def read_seqinfo(path: Path | str) -> tuple[float | None, int | None]:
    """(frameRate, seqLength) of a MOTChallenge seqinfo.ini; (None, None) when there is none."""
    path = Path(path)
    if not path.is_file():
        return None, None
    info = configparser.ConfigParser()
    try:
        info.read(path)
        section = info["Sequence"]
        return float(section["frameRate"]), int(section["seqLength"])
    except (configparser.Error, KeyError, ValueError) as error:
        raise EdgepipeError(f"{path}: needs [Sequence] frameRate and seqLength: {error}") from None


def read_rows(path: Path | str, what: str = "detections") -> NDArray[np.float64]:
    """The first seven fields of every row of a MOTChallenge text file (det.txt, gt.txt or
    results) as an (N, 7) array, checked. Errors name the file, the line and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise EdgepipeError(f"cannot read MOT {what} {path}: {error}") from error
    return np.array(list(_parse_rows(path, text.splitlines())), np.float64).reshape(-1, len(DETECTION_FIELDS))


def read_detections(path: Path | str, min_score: float | None = None) -> dict[int, Detections]:
    """det.txt → {frame: Detections} for every frame from 1 to the last one in the file.

    Frames without a row get empty Detections, so a tracker sees each frame. Rows below
    `min_score` are dropped. Errors name the file, the line and the field."""
    rows = read_rows(path)
    last_frame = int(rows[:, 0].max()) if len(rows) else 0
    if min_score is not None:
        rows = rows[rows[:, 6] >= min_score]
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    frame = rows[:, 0].astype(np.int64)
    xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1).astype(np.float32)
    score = rows[:, 6].astype(np.float32)
    class_id = np.full(len(rows), PERSON_CLASS_ID, np.int32)
    starts = np.searchsorted(frame, np.arange(1, last_frame + 2))
    return {
        f: Detections(xyxy[lo:hi], score[lo:hi], class_id[lo:hi])
        for f, lo, hi in zip(range(1, last_frame + 1), starts[:-1], starts[1:], strict=True)
    }


def _parse_rows(path: Path, lines: Iterable[str]) -> Iterator[tuple[float, ...]]:
    """The first seven fields of every non-blank line, checked."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < len(DETECTION_FIELDS):
            raise EdgepipeError(
                f"{path}:{number}: expected at least {len(DETECTION_FIELDS)} comma-separated fields "
                f"({', '.join(DETECTION_FIELDS)}), found {len(fields)}"
            )
        values = []
        for name, text in zip(DETECTION_FIELDS, fields, strict=False):
            try:
                value = float(text)
            except ValueError:
                raise EdgepipeError(
                    f"{path}:{number}: field '{name}' is {text.strip()!r}, not a number"
                ) from None
            if not math.isfinite(value):
                raise EdgepipeError(
                    f"{path}:{number}: field '{name}' is {text.strip()!r}, not a finite number"
                )
            values.append(value)
        frame, _, _, _, w, h, _ = values
        if frame < 1 or not frame.is_integer():
            raise EdgepipeError(
                f"{path}:{number}: field 'frame' is {fields[0].strip()!r}: frames are numbered from 1"
            )
        for name, size in (("w", w), ("h", h)):
            if size <= 0:
                raise EdgepipeError(
                    f"{path}:{number}: field '{name}' is {size:g}: boxes need a positive width and height"
                )
        yield tuple(values)


def write_results(out: TextIO, frame: int, tracks: Tracks) -> None:
    """Append the tracks of one frame as MOTChallenge result rows."""
    xywh = np.asarray(tracks.xyxy, np.float64).copy()
    xywh[:, 2:] -= xywh[:, :2]
    for track_id, (x, y, w, h) in zip(tracks.track_id.tolist(), xywh.tolist(), strict=True):
        out.write(f"{frame},{track_id},{x:.2f},{y:.2f},{w:.2f},{h:.2f},-1,-1,-1,-1\n")


def track_file(
    det_path: Path | str,
    out: TextIO,
    settings: TrackerConfig,
    *,
    high_threshold: float,
    min_score: float | None = None,
    fps: float | None = None,
) -> None:
    """`edgepipe track`: a tracker over a det.txt, results written to `out` in MOTChallenge format.

    Boxes scored at least `high_threshold` start tracks (the occlusion tracker; SORT uses every
    box); rows below `min_score` are dropped first. With `fps`, frame f is at (f - 1) / fps seconds."""
    tracker = build_tracker(settings, high_threshold=high_threshold)
    for frame, detections in read_detections(det_path, min_score).items():
        time_s = None if fps is None else (frame - 1) / fps
        write_results(out, frame, tracker.update(detections, frame_index=frame, time_s=time_s))
