"""OcclusionTracker: SORT that keeps a person's id through occlusions (the default tracker).

Still SORT at heart: the constant-velocity Kalman filter of kalman.py, IoU-family similarity
and optimal assignment (associate.py), no appearance model. What it adds, each kept because it
measured better on MOT15 and on NanoDet detections (`edgepipe bench tracker`):

- Two score levels (ByteTrack, Zhang et al. 2022). Boxes scored at least `high_threshold` (the
  detector's threshold) are matched first and start tracks; boxes from `low_threshold` up
  only continue a track left unmatched, and need IoU >= `low_iou_threshold` with it: a person
  half hidden is still seen, a low-score box never starts a track.
- Buffered IoU for tracks that coasted (C-BIoU, Yang et al. 2023): both boxes of a pair are
  grown by `buffer_ratio` of their size, so a prediction that drifted while nobody saw the
  person still overlaps where they come back.
- While a track coasts its area stops changing (ByteTrack's filter does the same with the
  height): an area velocity extrapolated through an occlusion makes boxes shrink or balloon.
- Lifetime in seconds: a confirmed track ends after `max_age_s` without a match, whatever the
  frame rate; a tentative track ends at its first miss.
- A confirmed track is reported in every frame it is matched in; a miss does not hide it for
  `min_hits` frames again, as it does in SORT.

Also measured and left out (MOT15 IDF1 of the kept set 0.537): OC-SORT's recovery by the last
observed box (no gain on MOT15, IDF1 0.02 lower on NanoDet boxes of TUD-Campus) and its
re-update of the filter along a gap (MOT15 IDF1 0.014 lower); matching the tracks seen last
frame before the coasting ones (ID switches 265 → 205, but IDF1 0.514 and more fragments on
vtest); removing the younger of two overlapping tracks (IDF1 0.517-0.519); hiding a re-found
track until `min_hits` new matches, as SORT does (fewer switches, IDF1 and MOTA lower on
NanoDet boxes); reporting coasting tracks' predictions (MOTA 0.02-0.06 lower).

A track is tentative until it is matched `min_hits` times in a row after the frame it started
in; in the first `min_hits` frames of a run every matched track is reported at once (as
SORT). Ids count up from 1 in the order tracks are confirmed, so tentative tracks use up none.
Only tracks matched in this frame are reported: `Tracks.detection_index` is never -1.

Speed: as SortTracker, one float64 row per track, and the second association runs only when
there are low-score boxes and tracks left to match.
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

# Columns of a track row: the filter, then what predict touches (so predict is one matrix
# product over the first _PREDICTED columns), then the bookkeeping (integers stored exactly).
_MISSES = FILTER_COLUMNS  # update calls since the last match
_ONE = FILTER_COLUMNS + 1  # always 1.0: noise and the miss counter enter predict through it
_PREDICTED = FILTER_COLUMNS + 2
_ENDS_S = _PREDICTED  # the track ends once a frame is later than this without a match, seconds
_HITS = _PREDICTED + 1  # matches in a row after the start (what confirms a tentative track)
_TRACK_ID = _PREDICTED + 2  # 0 while tentative
_CLASS_ID = _PREDICTED + 3  # of the box that started the track
_ROW_SIZE = _PREDICTED + 4
_AREA_VELOCITY = POS.start + 6  # vs

_NO_ROWS = associate.NO_ROWS
_NO_MASK = np.empty(0, np.bool_)
_NO_IDS = np.empty(0, np.int64)
_NO_BOXES = np.empty((0, 4), np.float32)
_NO_SCORES = np.empty(0, np.float32)
_NO_CLASSES = np.empty(0, np.int32)
_INITIAL_CAPACITY = 64

Pairs = tuple[NDArray[np.intp], NDArray[np.intp]]


class OcclusionTracker:
    """Tracks over whole frames: `update` must be called for every frame, even with no detections.

    `high_threshold` is the detector's threshold: the score a box needs to start a track and to
    be matched first. Settings (bounds and defaults) come from `TrackerConfig`; its fields can
    also be given by name, e.g. `OcclusionTracker(high_threshold=0.5, max_age_s=2.0)`."""

    def __init__(
        self, settings: TrackerConfig | None = None, *, high_threshold: float, **fields: Any
    ) -> None:
        settings = with_fields(settings, fields, "occlusion")
        if not 0.0 <= high_threshold <= 1.0:
            raise ValueError(f"high_threshold must be a score between 0 and 1, got {high_threshold}")
        self.settings = settings
        self.high_threshold = high_threshold
        self.low_threshold = min(settings.low_threshold, high_threshold)
        self.frame_count = 0  # update calls so far
        self._frame: int | None = None  # frame index of the latest update
        self._now_s = -np.inf  # time of the latest update
        self._next_id = 1
        self._filter = KalmanFilter(_PREDICTED, one=_ONE, counters=(_MISSES,))
        self._new_track = np.zeros(_ROW_SIZE)
        self._new_track[:_PREDICTED] = self._filter.initial_row()
        self._tracks = np.zeros((_INITIAL_CAPACITY, _ROW_SIZE))
        self._count = 0  # live tracks are rows [0, _count), in the order they started

    def __len__(self) -> int:
        """Live tracks, tentative ones included."""
        return self._count

    def update(
        self, detections: Detections, frame_index: int | None = None, time_s: float | None = None
    ) -> Tracks:
        """Advance all tracks to this frame, match them to `detections`, return the reported tracks.

        `frame_index` numbers the frame in its source: a jump of k predicts k steps, so frames a
        live source dropped do not look like slow motion. `time_s` is the frame's time in
        seconds and measures `max_age_s`; without it, frames are taken to be 1 / assumed_fps
        apart (give it for every frame or for none)."""
        step = self._advance_clock(frame_index)
        now_s = time_s if time_s is not None else self._frame_number() / self.settings.assumed_fps
        if now_s <= self._now_s:  # a clock that stands or steps back: time moves on a little
            now_s = self._now_s + 1e-6
        self._now_s = now_s
        n = self._count
        coasting = _NO_MASK
        if n:
            rows = self._tracks[:n]
            coasting = rows[:, _MISSES] >= 1.0  # missed the last frame
            if np.count_nonzero(coasting):
                rows[coasting, _AREA_VELOCITY] = 0.0
            else:
                coasting = _NO_MASK
            self._filter.predict(rows[:, :_PREDICTED], step)
        if detections.xyxy.shape[0] == 0:
            return self._finish(detections, _NO_ROWS, _NO_ROWS, now_s)
        corners, z = boxes.measurements(detections.xyxy)
        score = detections.score
        high = score >= self.high_threshold
        track_rows, det_rows = self._associate(n, corners, z, detections.class_id, score, high, coasting)
        if len(track_rows):
            self._correct(track_rows, z.take(det_rows, 1), now_s)
        high[det_rows] = False  # high boxes left start tracks
        if np.count_nonzero(high):
            new_rows = high.nonzero()[0]
            self._start_tracks(z.take(new_rows, 1), detections.class_id.take(new_rows), now_s)
            if self.frame_count <= self.settings.min_hits:
                # As SORT: whatever is seen in the first min_hits frames is reported at once.
                track_rows = np.concatenate([track_rows, np.arange(self._count - len(new_rows), self._count)])
                det_rows = np.concatenate([det_rows, new_rows])
        return self._finish(detections, track_rows, det_rows, now_s)

    # ------------------------------------------------------------ association
    def _associate(
        self,
        n: int,
        corners: NDArray[np.float64],
        z: NDArray[np.float64],
        class_id: NDArray[np.int32],
        score: NDArray[np.float32],
        high: NDArray[np.bool_],
        coasting: NDArray[np.bool_],
    ) -> Pairs:
        """Tracks against the high boxes, then the tracks left against the low boxes →
        (track rows, detection rows) of the matches, same length. `coasting` marks the tracks
        that missed the last frame (an empty mask: none did)."""
        if n == 0:
            return _NO_ROWS, _NO_ROWS
        settings = self.settings
        tracks = self._tracks[:n]
        high_count = np.count_nonzero(high)
        all_high = high_count == len(high)
        buffered = None
        if settings.buffer_ratio > 0.0 and len(coasting):
            # Buffered against the high boxes; low boxes need a close plain IoU.
            buffered = associate.Buffered(coasting, settings.buffer_ratio, z[:2], None if all_high else high)
        track_class = tracks[:, _CLASS_ID] if settings.match_classes else None
        similarities = associate.Similarities(tracks[:, POS], corners, z[2], buffered, track_class, class_id)
        if all_high:
            return similarities.match(settings.iou_threshold)
        rows, cols = similarities.match(settings.iou_threshold, cols=high.nonzero()[0])
        if len(rows) == n:
            return rows, cols
        low = score >= self.low_threshold
        low &= ~high
        if not np.count_nonzero(low):
            return rows, cols
        left = np.ones(n, np.bool_)
        left[rows] = False
        low_rows, low_cols = similarities.match(
            settings.low_iou_threshold, left.nonzero()[0], low.nonzero()[0]
        )
        if not len(low_rows):
            return rows, cols
        return np.concatenate([rows, low_rows]), np.concatenate([cols, low_cols])

    # ------------------------------------------------------------ state
    def _correct(self, track_rows: NDArray[np.intp], z: NDArray[np.float64], now_s: float) -> None:
        """Kalman update of the matched tracks with measurements z, (4, K) cx, cy, s, r."""
        fields: NDArray[np.float64] = self._tracks.take(track_rows, 0).T.copy()
        self._filter.correct(fields, z)
        # Matches in a row: a match one update after the last one continues the streak.
        hits = fields[_HITS]
        hits *= fields[_MISSES] == 1.0
        hits += 1.0
        fields[_MISSES] = 0.0
        # A confirmed track may go max_age_s unmatched; a tentative one not a frame.
        fields[_ENDS_S] = (fields[_TRACK_ID] > 0.0) * self.settings.max_age_s + now_s
        self._tracks[track_rows] = fields.T

    def _start_tracks(self, z: NDArray[np.float64], class_id: NDArray[np.int32], now_s: float) -> None:
        """One new tentative track per measurement column of z, at rest."""
        start, end = self._count, self._count + z.shape[1]
        if end > len(self._tracks):
            grown = np.zeros((max(2 * len(self._tracks), end), _ROW_SIZE))
            grown[:start] = self._tracks[:start]
            self._tracks = grown
        rows = self._tracks[start:end]
        rows[:] = self._new_track
        rows[:, POS] = z.T
        rows[:, _ENDS_S] = now_s
        rows[:, _CLASS_ID] = class_id
        self._count = end

    def _finish(
        self, detections: Detections, track_rows: NDArray[np.intp], det_rows: NDArray[np.intp], now_s: float
    ) -> Tracks:
        """Confirm and report the matched tracks, end the expired ones → this frame's Tracks."""
        if len(track_rows) == 0:
            return Tracks(_NO_BOXES, _NO_SCORES, _NO_CLASSES, _NO_IDS, _NO_ROWS, self._end_tracks(now_s))
        matched = self._tracks.take(track_rows, 0).T  # read before _end_tracks moves rows
        ids = matched[_TRACK_ID]
        confirmed = ids > 0.0
        if np.count_nonzero(confirmed) < len(ids):
            ready = ~confirmed
            if self.frame_count > self.settings.min_hits:  # past the warm-up
                ready &= matched[_HITS] >= self.settings.min_hits
            if np.count_nonzero(ready):
                ids[ready] = self._confirm(track_rows[ready], now_s)
                confirmed |= ready
            matched = matched.compress(confirmed, 1)
            det_rows = det_rows[confirmed]
            if len(det_rows) == 0:
                return Tracks(_NO_BOXES, _NO_SCORES, _NO_CLASSES, _NO_IDS, _NO_ROWS, self._end_tracks(now_s))
        return Tracks(
            boxes.xyxy(matched[POS]).astype(np.float32),
            detections.score.take(det_rows),
            detections.class_id.take(det_rows),
            matched[_TRACK_ID].astype(np.int64),
            det_rows,
            self._end_tracks(now_s),
        )

    def _confirm(self, track_rows: NDArray[np.intp], now_s: float) -> NDArray[np.float64]:
        """Give the next free ids to these tentative tracks, in the order they started (rows are
        in that order) → their ids, in the order given."""
        order = np.argsort(track_rows)
        ids = np.empty(len(track_rows))
        ids[order] = np.arange(self._next_id, self._next_id + len(track_rows))
        self._tracks[track_rows, _TRACK_ID] = ids
        self._tracks[track_rows, _ENDS_S] = now_s + self.settings.max_age_s
        self._next_id += len(track_rows)
        return ids

    def _end_tracks(self, now_s: float) -> NDArray[np.int64]:
        """Drop the tracks past their end time (see _correct) → the ids of the confirmed ones."""
        rows = self._tracks[: self._count]
        dead = rows[:, _ENDS_S] < now_s
        if not np.count_nonzero(dead):
            return _NO_IDS
        ended: NDArray[np.float64] = rows[dead, _TRACK_ID]
        keep = ~dead
        self._count = int(np.count_nonzero(keep))
        self._tracks[: self._count] = rows.compress(keep, 0)
        return ended[ended > 0.0].astype(np.int64)

    # ------------------------------------------------------------ clock
    def _advance_clock(self, frame_index: int | None) -> int:
        """Count this update; return the frames since the previous one (1 unless frames were dropped)."""
        self.frame_count += 1
        last = self._frame
        if frame_index is None:
            self._frame = 0 if last is None else last + 1
            return 1
        if last is not None and frame_index <= last:
            raise ValueError(f"frame_index must increase: got {frame_index} after {last}")
        self._frame = frame_index
        return 1 if last is None else frame_index - last

    def _frame_number(self) -> int:
        return 0 if self._frame is None else self._frame
