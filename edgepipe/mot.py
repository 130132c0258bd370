"""MOTChallenge text files: det.txt into per-frame Detections, trajectories (gt.txt, tracker results)
into per-frame Tracks, and tracker results written frame by frame.

All are rows of `frame, id, x, y, w, h, c, ...` (frames from 1, x, y the top-left corner in pixels),
read by one parser; the seventh field is a detection's score, a result's score (or -1), or in gt.txt
the flag that says whether the row is evaluated (0: not; MOT16+ gt.txt marks non-pedestrians so too).
Results are written as `frame, id, x, y, w, h, score, -1, -1, -1`, which the MOTChallenge devkit,
py-motmetrics and TrackEval read.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import TrackerConfig
from edgepipe.errors import EdgepipeError, OutputError
from edgepipe.track import build_tracker
from edgepipe.types import Detections, Tracks

DETECTION_FIELDS = ("frame", "id", "x", "y", "w", "h", "score")
GROUND_TRUTH_FIELDS = ("frame", "id", "x", "y", "w", "h", "flag")
RESULT_FIELDS = DETECTION_FIELDS

# MOT files carry no class; every detection is a person (class 0 in COCO order, as the detector).
PERSON_CLASS_ID = 0


@dataclass(frozen=True, slots=True)
class SequenceInfo:
    """What a MOTChallenge sequence's seqinfo.ini says about it."""

    frame_rate: float
    length: int  # frames
    frame_hw: tuple[int, int] | None  # (imHeight, imWidth), when the file gives them


def read_seqinfo(path: Path | str) -> SequenceInfo | None:
    """The [Sequence] section of a MOTChallenge seqinfo.ini; None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    info = configparser.ConfigParser()
    try:
        info.read(path)
        section = info["Sequence"]
        size = (int(section["imHeight"]), int(section["imWidth"])) if "imHeight" in section else None
        return SequenceInfo(float(section["frameRate"]), int(section["seqLength"]), size)
    except (configparser.Error, KeyError, ValueError) as error:
        raise EdgepipeError(f"{path}: needs [Sequence] frameRate and seqLength: {error}") from None


def seqinfo_beside(mot_file: Path | str) -> SequenceInfo | None:
    """The seqinfo.ini of the sequence a `<seq>/det/det.txt` or `<seq>/gt/gt.txt` belongs to."""
    return read_seqinfo(Path(mot_file).resolve().parent.parent / "seqinfo.ini")


RowKind = Literal["detections", "ground truth", "results"]
_KINDS: dict[str, tuple[str, tuple[str, ...], bool]] = {  # what for messages, field names, ids checked
    "detections": ("MOT detections", DETECTION_FIELDS, False),
    "ground truth": ("ground truth", GROUND_TRUTH_FIELDS, True),
    "results": ("MOT results", RESULT_FIELDS, True),
}


def read_rows(path: Path | str, kind: RowKind = "detections") -> NDArray[np.float64]:
    """The first seven fields of every row of a MOTChallenge text file as an (N, 7) array, checked
    (the seventh: a score, or gt.txt's flag). Errors name the file, the line and the field."""
    what, fields, with_ids = _KINDS[kind]
    return _read_rows(Path(path), what, fields, with_ids=with_ids)


def read_detections(path: Path | str, min_score: float | None = None) -> dict[int, Detections]:
    """det.txt → {frame: Detections} for every frame from 1 to the last one in the file.

    Frames without a row get empty Detections, so a tracker sees each frame. Rows below
    `min_score` are dropped. Errors name the file, the line and the field."""
    rows = read_rows(path)
    last_frame = int(rows[:, 0].max()) if len(rows) else 0
    if min_score is not None:
        rows = rows[rows[:, 6] >= min_score]
    _, xyxy, score, starts = _by_frame(rows, last_frame)
    class_id = np.full(len(rows), PERSON_CLASS_ID, np.int32)
    return {
        f: Detections(xyxy[lo:hi], score[lo:hi], class_id[lo:hi])
        for f, lo, hi in zip(range(1, last_frame + 1), starts[:-1], starts[1:], strict=True)
    }


def read_trajectories(path: Path | str, *, ground_truth: bool) -> dict[int, Tracks]:
    """gt.txt (`ground_truth`) or a tracker's results → {frame: Tracks} for every frame from 1 to the
    last one, as a tracker would have reported them: each id is listed in `ended` on the frame after
    its last row (ids still there in the last frame are not: the run ends with them).

    Ground truth keeps only the rows to evaluate (flag ≠ 0), with score 1; results keep their score.
    Errors name the file, the line and the field."""
    rows = read_rows(path, "ground truth" if ground_truth else "results")
    if ground_truth:
        rows = rows[rows[:, 6] != 0]
        rows[:, 6] = 1.0
    last_frame = int(rows[:, 0].max()) if len(rows) else 0
    frame, xyxy, score, starts = _by_frame(rows, last_frame)
    track_id = rows[:, 1].astype(np.int64)
    ids, first_row = np.unique(track_id[::-1], return_index=True)
    last_of_id = frame[::-1][first_row]  # the last frame each id has a row in
    ended_order = np.argsort(last_of_id, kind="stable")
    ended_ids, ended_at = ids[ended_order], last_of_id[ended_order] + 1
    ended_starts = np.searchsorted(ended_at, np.arange(1, last_frame + 2))
    class_id = np.full(len(rows), PERSON_CLASS_ID, np.int32)
    row_index = np.arange(len(rows), dtype=np.intp)
    return {
        f: Tracks(
            xyxy[lo:hi],
            score[lo:hi],
            class_id[lo:hi],
            track_id[lo:hi],
            row_index[lo:hi] - lo,
            ended_ids[e_lo:e_hi],
        )
        for f, lo, hi, e_lo, e_hi in zip(
            range(1, last_frame + 1),
            starts[:-1],
            starts[1:],
            ended_starts[:-1],
            ended_starts[1:],
            strict=True,
        )
    }


def _read_rows(path: Path, what: str, fields: tuple[str, ...], *, with_ids: bool) -> NDArray[np.float64]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise EdgepipeError(f"cannot read {what} {path}: {error}") from error
    rows = np.array(list(_parse_rows(path, text.splitlines(), fields, with_ids)), np.float64)
    return rows.reshape(-1, len(fields))


def _by_frame(
    rows: NDArray[np.float64], last_frame: int
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """Sort rows by frame (stable, in place of the caller's array) → frame, xyxy, score and where each
    frame 1..last_frame+1 starts."""
    rows[:] = rows[np.argsort(rows[:, 0], kind="stable")]
    frame = rows[:, 0].astype(np.int64)
    xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1).astype(np.float32)
    score = rows[:, 6].astype(np.float32)
    return frame, xyxy, score, np.searchsorted(frame, np.arange(1, last_frame + 2))


def _parse_rows(
    path: Path, lines: Iterable[str], fields: tuple[str, ...], with_ids: bool
) -> Iterator[tuple[float, ...]]:
    """The first seven fields of every non-blank line, checked; `with_ids`: ids must be whole numbers ≥ 1."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < len(fields):
            raise EdgepipeError(
                f"{path}:{number}: expected at least {len(fields)} comma-separated fields "
                f"({', '.join(fields)}), found {len(parts)}"
            )
        values = []
        for name, text in zip(fields, parts, strict=False):
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
        frame, track_id, _, _, w, h, _ = values
        if frame < 1 or not frame.is_integer():
            raise EdgepipeError(
                f"{path}:{number}: field 'frame' is {parts[0].strip()!r}: frames are numbered from 1"
            )
        if with_ids and (track_id < 1 or not track_id.is_integer()):
            raise EdgepipeError(
                f"{path}:{number}: field 'id' is {parts[1].strip()!r}: track ids are whole numbers from 1"
            )
        for name, size in (("w", w), ("h", h)):
            if size <= 0:
                raise EdgepipeError(
                    f"{path}:{number}: field '{name}' is {size:g}: boxes need a positive width and height"
                )
        yield tuple(values)


def write_results(out: TextIO, frame: int, tracks: Tracks, *, with_score: bool = False) -> None:
    """Append the tracks of one frame (numbered from 1) as MOTChallenge result rows; the score
    column is -1 (as the SORT reference writes) unless `with_score`."""
    xywh = np.asarray(tracks.xyxy, np.float64).copy()
    xywh[:, 2:] -= xywh[:, :2]
    scores = tracks.score.tolist() if with_score else [None] * len(tracks)
    for track_id, (x, y, w, h), score in zip(tracks.track_id.tolist(), xywh.tolist(), scores, strict=True):
        column = "-1" if score is None else f"{score:.4f}"
        out.write(f"{frame},{track_id},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{column},-1,-1,-1\n")


class TracksWriter:
    """`edgepipe run --tracks PATH`: every reported track of every frame as MOTChallenge rows
    `frame, id, x, y, w, h, score, -1, -1, -1`, frame = the source's frame index + 1, so the file
    scores against a sequence's gt.txt. Call `write` once per frame; rows are flushed per frame, so a
    killed run keeps what it tracked."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("w", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write the tracks file {self.path}: {error.strerror}") from None

    def write(self, frame_index: int, tracks: Tracks) -> None:
        write_results(self._out, frame_index + 1, tracks, with_score=True)
        self._out.flush()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> TracksWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
