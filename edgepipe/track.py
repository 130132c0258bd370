"""SORT (Bewley et al. 2016, "Simple Online and Realtime Tracking"), batched over all tracks.

Each track is a constant-velocity Kalman filter on [cx, cy, s, r, vx, vy, vs]: box centre, area
s = w·h and aspect ratio r = w / h, with velocities for all but r. Tracks are matched to
detections by IoU with `lap.lapjv`; noise settings, `max_age`, `min_hits` and `iou_threshold`
follow the reference implementation (abewley/sort), so results compare one to one.

Every SORT matrix (F, H, Q, R and the initial P) is block-diagonal: each of cx, cy, s and r is
coupled only to its own velocity. So P stays block-diagonal, and one track's filter is four
independent 2-state filters (r with a velocity pinned at 0). That is exactly the 7-state filter,
stored as 2x2 blocks: predict is one matrix product over all tracks, update is elementwise.
"""

from __future__ import annotations

import math
from typing import TypeVar

import lap
import numpy as np
from numpy.typing import NDArray

from edgepipe.types import Detections, Tracks

# Columns of one filter row (the `_filter` array): mean position [cx, cy, s, r], mean velocity
# [vx, vy, vs, vr], and per coordinate the covariance block [[pp, pv], [pv, vv]] of (position, velocity).
_POS, _VEL, _PP, _PV, _VV = (slice(i, i + 4) for i in range(0, 20, 4))
_ROW_SIZE = 20

# Noise of the reference: Q = diag(1, 1, 1, 1, .01, .01, .0001), R = diag(1, 1, 10, 10),
# P0 = 10·diag(1, 1, 1, 1, 1000, 1000, 1000) (large: the first velocity is unknown).
# vr does not exist in SORT: zero noise and zero variance keep it at exactly 0.
_Q_POS = np.array([1.0, 1.0, 1.0, 1.0])
_Q_VEL = np.array([1e-2, 1e-2, 1e-4, 0.0])
_R = np.array([1.0, 1.0, 10.0, 10.0])
_P0_POS = np.full(4, 10.0)
_P0_VEL = np.array([1e4, 1e4, 1e4, 0.0])

_INITIAL_CAPACITY = 64

_Scalar = TypeVar("_Scalar", bound=np.generic)


def _transition(step: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Predict over `step` frames as `row @ a + b` on filter rows: x' = F x, P' = F P Fᵀ + Σ Fⁱ Q Fⁱᵀ.

    Per coordinate F = [[1, k], [0, 1]] with k = step, so pp' = pp + 2k·pv + k²·vv, pv' = pv + k·vv,
    and the process noise of k single steps adds up to k·q_pos + (k-1)k(2k-1)/6·q_vel,
    (k-1)k/2·q_vel and k·q_vel (the same as calling predict k times)."""
    k = float(step)
    a = np.eye(_ROW_SIZE)
    for j in range(4):
        a[_VEL.start + j, _POS.start + j] = k
        a[_PV.start + j, _PP.start + j] = 2 * k
        a[_VV.start + j, _PP.start + j] = k * k
        a[_VV.start + j, _PV.start + j] = k
    b = np.zeros(_ROW_SIZE)
    b[_PP] = k * _Q_POS + (k - 1) * k * (2 * k - 1) / 6 * _Q_VEL
    b[_PV] = (k - 1) * k / 2 * _Q_VEL
    b[_VV] = k * _Q_VEL
    return a, b


def _measurements(xyxy: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(M, 4) xyxy → the same as float64 and (M, 4) [cx, cy, s, r]; ValueError naming the first bad row."""
    boxes = np.asarray(xyxy, np.float64)
    wh = boxes[:, 2:] - boxes[:, :2]
    z = np.empty((len(boxes), 4))
    z[:, :2] = boxes[:, :2] + 0.5 * wh
    z[:, 2] = wh[:, 0] * wh[:, 1]
    z[:, 3] = wh[:, 0] / wh[:, 1]
    # min() > 0 is False for NaN; the sum catches inf. Only a failing frame pays for the search.
    if len(z) and not (wh.min() > 0 and math.isfinite(z.sum())):
        bad = ~(np.isfinite(boxes).all(axis=1) & (wh > 0).all(axis=1) & np.isfinite(z).all(axis=1))
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"detection {row} has box {boxes[row].tolist()} (x1, y1, x2, y2): every box needs finite "
            "coordinates with x2 > x1 and y2 > y1"
        )
    return boxes, z


class SortTracker:
    """SORT over whole frames: `update` must be called for every frame, even with no detections.

    A track is reported while it is matched (`time_since_update < 1` in the reference) and either
    has `min_hits` matches in a row or the tracker is within its first `min_hits` frames; it ends
    after more than `max_age` unmatched frames. Ids count up from 1 per tracker, in the order
    tracks are first reported, so tentative tracks use no ids.
    """

    def __init__(
        self,
        max_age: int = 1,
        min_hits: int = 3,
        iou_threshold: float = 0.3,
        match_classes: bool = False,
    ) -> None:
        if max_age < 0 or min_hits < 0 or not 0 < iou_threshold <= 1:
            raise ValueError(
                f"SortTracker needs max_age >= 0, min_hits >= 0 and 0 < iou_threshold <= 1, got "
                f"max_age={max_age}, min_hits={min_hits}, iou_threshold={iou_threshold}"
            )
        self.max_age = max_age
        self.min_hits = min_hits
        self.iou_threshold = iou_threshold
        self.match_classes = match_classes
        self.frame_count = 0  # update calls so far
        self._last_frame_index: int | None = None
        self._next_id = 1
        self._count = 0  # live tracks: rows [0, _count) of the arrays below
        self._one_step = _transition(1)
        capacity = _INITIAL_CAPACITY
        self._filter = np.zeros((capacity, _ROW_SIZE))  # see _POS ... _VV
        self._score = np.zeros(capacity, np.float32)  # of the last matched detection
        self._class_id = np.zeros(capacity, np.int32)
        self._track_id = np.zeros(capacity, np.int64)  # 0 until first reported
        self._time_since_update = np.zeros(capacity, np.int64)  # frames since the last match
        self._hit_streak = np.zeros(capacity, np.int64)  # matches in a row

    def _grow(self, capacity: int) -> None:
        """Reallocate the per-track arrays with room for `capacity` tracks, keeping the live rows."""
        n = self._count
        self._filter = _resized(self._filter, capacity, n)
        self._score = _resized(self._score, capacity, n)
        self._class_id = _resized(self._class_id, capacity, n)
        self._track_id = _resized(self._track_id, capacity, n)
        self._time_since_update = _resized(self._time_since_update, capacity, n)
        self._hit_streak = _resized(self._hit_streak, capacity, n)

    def _advance_clock(self, frame_index: int | None) -> int:
        """Frames since the previous update: 1, or the gap in `frame_index` (dropped frames)."""
        self.frame_count += 1
        last = self._last_frame_index
        if frame_index is None:
            self._last_frame_index = None if last is None else last + 1
            return 1
        if last is not None and frame_index <= last:
            raise ValueError(f"frame_index must increase: got {frame_index} after {last}")
        self._last_frame_index = frame_index
        return 1 if last is None else frame_index - last

    def update(self, detections: Detections, frame_index: int | None = None) -> Tracks:
        """Advance all tracks to this frame, match them to `detections`, return the reported tracks.

        `frame_index` (optional) numbers the frame in its source; a jump of k predicts k steps, so
        frames a live source dropped do not look like slow motion. Dropped frames do not count
        as misses toward `max_age`: only frames passed to `update` do.
        """
        step = self._advance_clock(frame_index)
        boxes, z = _measurements(detections.xyxy)
        n = self._count
        self._predict(n, step)
        track_rows, det_rows = self._associate(n, boxes, z, detections.class_id)
        self._correct(track_rows, z[det_rows])
        self._score[track_rows] = detections.score[det_rows]
        self._class_id[track_rows] = detections.class_id[det_rows]
        self._time_since_update[track_rows] = 0
        self._hit_streak[track_rows] += 1

        unmatched = np.ones(len(z), np.bool_)
        unmatched[det_rows] = False
        new_rows = np.flatnonzero(unmatched)
        self._start_tracks(z[new_rows], detections.score[new_rows], detections.class_id[new_rows])
        detection_index = np.full(self._count, -1, np.intp)
        detection_index[track_rows] = det_rows
        detection_index[n:] = new_rows

        rows, ids = self._report()
        return Tracks(
            _cxcysr_to_xyxy(self._filter[rows, _POS]).astype(np.float32),
            self._score[rows],
            self._class_id[rows],
            ids,
            detection_index[rows],
            self._end_tracks(),
        )

    def _predict(self, n: int, step: int) -> None:
        """Advance the first n filters by `step` frames; count one more frame without a match."""
        rows = self._filter[:n]
        # SORT stops shrinking a box whose area would reach zero: predicted area s + k·vs <= 0 → vs = 0.
        shrinking_away = rows[:, 2] + step * rows[:, 6] <= 0
        if shrinking_away.any():
            rows[shrinking_away, 6] = 0.0
        a, b = self._one_step if step == 1 else _transition(step)
        rows[:] = rows @ a + b
        # A streak counts consecutive matched frames: a miss in the previous frame breaks it.
        self._hit_streak[:n][self._time_since_update[:n] > 0] = 0
        self._time_since_update[:n] += 1

    def _associate(
        self, n: int, boxes: NDArray[np.float64], z: NDArray[np.float64], class_id: NDArray[np.int32]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Match predicted tracks to detections by IoU → (track rows, detection rows), same length.

        Optimal (`lap.lapjv` with cost 1 - IoU and cost limit 1 - iou_threshold), but a track and
        a detection that are each other's only candidate are matched without it: such a pair is
        part of every optimum, and in most frames all pairs are like that."""
        m = len(z)
        none = np.empty(0, np.intp)
        if n == 0 or m == 0:
            return none, none
        iou = _iou(self._filter[:n, _POS], boxes, z[:, 2])
        if self.match_classes:
            iou[self._class_id[:n, None] != class_id[None, :]] = 0.0
        track_rows, det_rows = np.divmod(np.flatnonzero(iou >= self.iou_threshold), m)
        alone = (np.bincount(track_rows, minlength=n)[track_rows] == 1) & (
            np.bincount(det_rows, minlength=m)[det_rows] == 1
        )
        if alone.all():
            return track_rows, det_rows
        rows = np.unique(track_rows[~alone])
        cols = np.unique(det_rows[~alone])
        _, col_of_row, _ = lap.lapjv(
            1.0 - iou[np.ix_(rows, cols)], extend_cost=True, cost_limit=1.0 - self.iou_threshold
        )
        picked = np.flatnonzero(col_of_row >= 0)
        contested_rows, contested_cols = rows[picked], cols[col_of_row[picked]]
        keep = iou[contested_rows, contested_cols] >= self.iou_threshold  # lapjv may take a pair at the limit
        return (
            np.concatenate([track_rows[alone], contested_rows[keep]]),
            np.concatenate([det_rows[alone], contested_cols[keep]]),
        )

    def _correct(self, track_rows: NDArray[np.intp], z: NDArray[np.float64]) -> None:
        """Kalman update of the matched tracks with their measurements z, (K, 4) [cx, cy, s, r]."""
        rows = self._filter[track_rows]
        pp, pv, vv = rows[:, _PP], rows[:, _PV], rows[:, _VV]
        innovation_var = pp + _R
        gain_pos = pp / innovation_var
        gain_vel = pv / innovation_var
        innovation = z - rows[:, _POS]
        rows[:, _POS] += gain_pos * innovation
        rows[:, _VEL] += gain_vel * innovation
        rows[:, _VV] = vv - gain_vel * pv
        rows[:, _PV] = pv - gain_pos * pv
        rows[:, _PP] = pp - gain_pos * pp
        self._filter[track_rows] = rows

    def _start_tracks(
        self, z: NDArray[np.float64], score: NDArray[np.float32], class_id: NDArray[np.int32]
    ) -> None:
        """One new tentative track per measurement row, at rest, with the reference's initial P."""
        start, k = self._count, len(z)
        if k == 0:
            return
        if start + k > len(self._filter):
            self._grow(max(2 * len(self._filter), start + k))
        end = start + k
        rows = self._filter[start:end]
        rows[:] = 0.0
        rows[:, _POS] = z
        rows[:, _PP] = _P0_POS
        rows[:, _VV] = _P0_VEL
        self._score[start:end] = score
        self._class_id[start:end] = class_id
        self._track_id[start:end] = 0
        self._time_since_update[start:end] = 0
        self._hit_streak[start:end] = 0
        self._count = end

    def _report(self) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
        """Rows and ids of the tracks matched this frame that are confirmed (or still warming up)."""
        n = self._count
        reported = self._time_since_update[:n] == 0
        if self.frame_count > self.min_hits:
            reported &= self._hit_streak[:n] >= self.min_hits
        rows = np.flatnonzero(reported)
        ids = self._track_id[rows]
        first_time = ids == 0
        if first_time.any():
            count = int(first_time.sum())
            ids[first_time] = np.arange(self._next_id, self._next_id + count)
            self._next_id += count
            self._track_id[rows] = ids
        return rows, ids

    def _end_tracks(self) -> NDArray[np.int64]:
        """Drop tracks unmatched for more than max_age frames → ids of those that were ever reported."""
        n = self._count
        dead = self._time_since_update[:n] > self.max_age
        if not dead.any():
            return np.empty(0, np.int64)
        ended = self._track_id[:n][dead]
        keep = np.flatnonzero(~dead)
        for name in ("_filter", "_score", "_class_id", "_track_id", "_time_since_update", "_hit_streak"):
            array = getattr(self, name)
            array[: len(keep)] = array[keep]
        self._count = len(keep)
        return ended[ended > 0]


def _resized(array: NDArray[_Scalar], capacity: int, n: int) -> NDArray[_Scalar]:
    """A zeroed copy of `array` with `capacity` rows, the first n copied over."""
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[:n] = array[:n]
    return grown


def _iou(
    tracks: NDArray[np.float64], boxes: NDArray[np.float64], area: NDArray[np.float64]
) -> NDArray[np.float64]:
    """IoU of (N, 4) [cx, cy, s, r] tracks and (M, 4) xyxy boxes of the given areas → (N, M).

    Coordinates go to contiguous rows first and the (N, M) temporaries are reused in place:
    at hundreds of targets this is memory-bound."""
    a = _cxcysr_to_xyxy(tracks).T.copy()
    b = boxes.T.copy()
    inter: NDArray[np.float64] = np.minimum(a[2, :, None], b[2])
    inter -= np.maximum(a[0, :, None], b[0])
    np.maximum(inter, 0.0, out=inter)
    inter_h = np.minimum(a[3, :, None], b[3])
    inter_h -= np.maximum(a[1, :, None], b[1])
    np.maximum(inter_h, 0.0, out=inter_h)
    inter *= inter_h
    union = inter_h  # reuse the buffer
    np.add(tracks[:, 2, None], area, out=union)  # both areas > 0, so the union is too
    union -= inter
    inter /= union
    return inter


def _cxcysr_to_xyxy(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 4) [cx, cy, s, r] with s, r > 0 → (N, 4) xyxy."""
    half = np.empty((len(cxcysr), 2))
    half[:, 0] = np.sqrt(cxcysr[:, 2] * cxcysr[:, 3])
    half[:, 1] = cxcysr[:, 2] / half[:, 0]
    half *= 0.5
    return np.concatenate([cxcysr[:, :2] - half, cxcysr[:, :2] + half], axis=1)
