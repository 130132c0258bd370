"""SORT (Bewley et al. 2016, "Simple Online and Realtime Tracking"), batched over all tracks: the reference.

Each track is the constant-velocity Kalman filter of kalman.py on [cx, cy, s, r]; tracks are
matched to detections by IoU with `lap.lapjv` (associate.py); noise settings, `max_age`,
`min_hits` and `iou_threshold` follow the reference implementation (abewley/sort), so results
compare one to one (tests/data/tracker/*.json).

Speed: all per-track values live in one float64 array, one row per track (one gather, scatter or
compaction moves whole tracks); the matched rows are updated as a transposed copy, where every
operand is a contiguous block; reductions are counts. `edgepipe bench tracker` measures it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import TrackerConfig
from edgepipe.track import associate, boxes
from edgepipe.track.kalman import FILTER_COLUMNS, POS, KalmanFilter
from edgepipe.track.settings import with_fields
from edgepipe.types import Detections, Tracks

# Columns of a track row after the filter's: bookkeeping, integers stored exactly as floats.
_TIME_SINCE_UPDATE = FILTER_COLUMNS  # update calls since the last match
_HIT_STREAK = FILTER_COLUMNS + 1  # matches in a row, as of the last match
_TRACK_ID = FILTER_COLUMNS + 2  # 0 until the track is first reported
_CLASS_ID = FILTER_COLUMNS + 3  # of the detection that started the track
_ONE = FILTER_COLUMNS + 4  # always 1.0, so that predict, noise included, is a single matrix product
_ROW_SIZE = FILTER_COLUMNS + 5

_NO_ROWS = associate.NO_ROWS
_NO_IDS = np.empty(0, np.int64)
_NO_FIELDS = np.empty((_ROW_SIZE, 0))
_NO_BOXES = np.empty((0, 4), np.float32)
_NO_SCORES = np.empty(0, np.float32)
_NO_CLASSES = np.empty(0, np.int32)
_INITIAL_CAPACITY = 64


class SortTracker:
    """SORT over whole frames: `update` must be called for every frame, even with no detections.

    A track is reported in the frames where it is matched (`time_since_update < 1` in the
    reference) once it has been matched in `min_hits` frames in a row after the one it started
    in, or at once during the first `min_hits` frames; it ends after more than `max_age` frames
    without a match. Track ids count up from 1 per tracker, in the order tracks are first
    reported (by start within one frame), so tentative tracks use up no ids.
    With `match_classes`, a track only matches detections of the class it started with.
    Settings (bounds and defaults) come from `TrackerConfig`; `type` is not looked at.
    """

    def __init__(self, settings: TrackerConfig | None = None, **fields: Any) -> None:
        """`settings`, or TrackerConfig fields by name (e.g. `SortTracker(max_age=3)`), checked by TrackerConfig."""
        settings = with_fields(settings, fields, "sort")
        self.max_age = settings.max_age
        self.min_hits = settings.min_hits
        self.iou_threshold = settings.iou_threshold
        self.match_classes = settings.match_classes
        self.frame_count = 0  # update calls so far
        self._last_frame_index: int | None = None
        self._next_id = 1
        self._filter = KalmanFilter(_ROW_SIZE, one=_ONE, counters=(_TIME_SINCE_UPDATE,))
        self._new_track = self._filter.initial_row()
        # Live tracks are rows [0, _count); spare rows save a reallocation per new track.
        self._tracks = np.zeros((_INITIAL_CAPACITY, _ROW_SIZE))
        self._count = 0

    def __len__(self) -> int:
        """Live tracks, tentative ones included."""
        return self._count

    def update(
        self, detections: Detections, frame_index: int | None = None, time_s: float | None = None
    ) -> Tracks:
        """Advance all tracks to this frame, match them to `detections`, return the reported tracks.

        `frame_index` (optional) numbers the frame in its source: a jump of k predicts k steps, so
        frames a live source dropped do not look like slow motion. Dropped frames do not count as
        misses toward `max_age`; only frames passed to `update` do. `time_s` is not used: SORT
        counts frames."""
        step = self._advance_clock(frame_index)
        n = self._count
        if n:
            self._filter.predict(self._tracks[:n], step)
        m = detections.xyxy.shape[0]
        if m == 0:
            return self._tracks_out(detections, _NO_FIELDS, _NO_ROWS, _NO_ROWS)
        corners, z = boxes.measurements(detections.xyxy)
        track_rows, det_rows = self._associate(n, corners, z, detections.class_id)
        matched = self._correct(track_rows, z.take(det_rows, 1)) if len(track_rows) else _NO_FIELDS
        new_rows = _NO_ROWS
        if len(det_rows) < m:
            unmatched = np.empty(m, np.bool_)
            unmatched.fill(True)
            unmatched[det_rows] = False
            new_rows = unmatched.nonzero()[0]
            self._start_tracks(z.take(new_rows, 1).T, detections.class_id.take(new_rows))

        # Reported: matched tracks with a long enough streak; during warm-up every track seen now.
        if self.frame_count <= self.min_hits or self.min_hits == 0:
            reported = np.concatenate([matched, self._tracks[n : self._count].T], axis=1)
            track_rows = np.concatenate([track_rows, np.arange(n, self._count)])
            det_rows = np.concatenate([det_rows, new_rows])
        else:
            reported = matched
            confirmed = matched[_HIT_STREAK] >= float(self.min_hits)
            if np.count_nonzero(confirmed) < len(confirmed):
                reported = matched.compress(confirmed, 1)
                track_rows, det_rows = track_rows[confirmed], det_rows[confirmed]
        return self._tracks_out(detections, reported, track_rows, det_rows)

    def _tracks_out(
        self,
        detections: Detections,
        reported: NDArray[np.float64],
        track_rows: NDArray[np.intp],
        det_rows: NDArray[np.intp],
    ) -> Tracks:
        """Tracks for the reported fields, (_ROW_SIZE, K), and the ids of tracks that end now."""
        if len(det_rows) == 0:
            return Tracks(_NO_BOXES, _NO_SCORES, _NO_CLASSES, _NO_IDS, _NO_ROWS, self._end_tracks())
        return Tracks(
            boxes.xyxy(reported[POS]).astype(np.float32),
            detections.score.take(det_rows),
            detections.class_id.take(det_rows),
            self._ids(reported[_TRACK_ID], track_rows),
            det_rows,
            self._end_tracks(),
        )

    def _advance_clock(self, frame_index: int | None) -> int:
        """Count this update; return the frames since the previous one (1 unless frames were dropped)."""
        self.frame_count += 1
        last = self._last_frame_index
        if frame_index is None:
            self._last_frame_index = None if last is None else last + 1
            return 1
        if last is not None and frame_index <= last:
            raise ValueError(f"frame_index must increase: got {frame_index} after {last}")
        self._last_frame_index = frame_index
        return 1 if last is None else frame_index - last

    def _associate(
        self, n: int, corners: NDArray[np.float64], z: NDArray[np.float64], class_id: NDArray[np.int32]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Match predicted tracks to detections by IoU → (track rows, detection rows), same length:
        optimal for cost 1 - IoU with cost limit 1 - iou_threshold."""
        tracks = self._tracks[:n]
        if self.match_classes:
            return associate.match_iou(
                tracks[:, POS], corners, z[2], self.iou_threshold, tracks[:, _CLASS_ID], class_id
            )
        return associate.match_iou(tracks[:, POS], corners, z[2], self.iou_threshold)

    def _correct(self, track_rows: NDArray[np.intp], z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Kalman update of the matched tracks with measurements z, (4, K) cx, cy, s, r → their new
        rows, transposed: (_ROW_SIZE, K), one field per row."""
        fields: NDArray[np.float64] = self._tracks.take(track_rows, 0).T.copy()
        self._filter.correct(fields, z)
        # A streak counts matches in a row: one frame since the last match continues it (a new
        # track's first match included), more than one means a miss broke it.
        streak = fields[_HIT_STREAK]
        streak *= fields[_TIME_SINCE_UPDATE] == 1.0
        streak += 1.0
        fields[_TIME_SINCE_UPDATE] = 0.0
        self._tracks[track_rows] = fields.T
        return fields

    def _start_tracks(self, z: NDArray[np.float64], class_id: NDArray[np.int32]) -> None:
        """One new tentative track per measurement row, at rest, with the reference's initial P."""
        start, end = self._count, self._count + len(z)
        if end > len(self._tracks):
            grown = np.zeros((max(2 * len(self._tracks), end), _ROW_SIZE))
            grown[:start] = self._tracks[:start]
            self._tracks = grown
        rows = self._tracks[start:end]
        rows[:] = self._new_track
        rows[:, POS] = z
        rows[:, _CLASS_ID] = class_id
        self._count = end

    def _ids(self, ids: NDArray[np.float64], track_rows: NDArray[np.intp]) -> NDArray[np.int64]:
        """The ids of reported tracks; those reported for the first time get the next free ids,
        in the order the tracks started (rows are kept in that order)."""
        if np.count_nonzero(ids) < len(ids):
            first_time = (ids == 0.0).nonzero()[0]
            first_time = first_time[np.argsort(track_rows[first_time])]
            new_ids = np.arange(self._next_id, self._next_id + len(first_time))
            ids[first_time] = new_ids
            self._tracks[track_rows[first_time], _TRACK_ID] = new_ids
            self._next_id += len(first_time)
        return ids.astype(np.int64)

    def _end_tracks(self) -> NDArray[np.int64]:
        """Drop tracks unmatched for more than max_age frames → ids of those that were ever reported."""
        n = self._count
        dead = self._tracks[:n, _TIME_SINCE_UPDATE] > float(self.max_age)
        if not np.count_nonzero(dead):
            return _NO_IDS
        ended: NDArray[np.float64] = self._tracks[:n, _TRACK_ID][dead]
        keep = ~dead
        self._count = int(np.count_nonzero(keep))
        self._tracks[: self._count] = self._tracks[:n].compress(keep, 0)
        return ended[ended > 0.0].astype(np.int64)
