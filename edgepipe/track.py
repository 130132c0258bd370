"""SORT (Bewley et al. 2016, "Simple Online and Realtime Tracking"), batched over all tracks.

Each track is a constant-velocity Kalman filter on [cx, cy, s, r, vx, vy, vs]: box centre, area
s = w·h and aspect ratio r = w / h, with velocities for all but r. Tracks are matched to
detections by IoU with `lap.lapjv`; noise settings, `max_age`, `min_hits` and `iou_threshold`
follow the reference implementation (abewley/sort), so results compare one to one.

Every SORT matrix (F, H, Q, R and the initial P) is block-diagonal: each of cx, cy, s and r is
coupled only to its own velocity. So P stays block-diagonal, and one track's filter is four
independent 2-state filters (r with a velocity pinned at 0). That is exactly the 7-state filter,
stored as 2x2 blocks: predict is one matrix product over all tracks, update is elementwise.

Speed: at ten targets a frame costs what its numpy calls cost, not their arithmetic. So all
per-track values live in one float64 array, one row per track (one gather, scatter or compaction
moves whole tracks); the matched rows are updated as a transposed copy, where every operand is a
contiguous block; reductions are counts; and hundreds of targets only pair boxes that can
overlap (a sweep along x). `edgepipe bench tracker` measures it against roboflow `trackers`.
"""

from __future__ import annotations

import lap
import numpy as np
from numpy.typing import NDArray

from edgepipe.types import Detections, Tracks

# Columns of a track row. Five groups of four, one entry per coordinate cx, cy, s, r: mean
# position, mean velocity ([vx, vy, vs, vr]) and the covariance block [[pp, pv], [pv, vv]];
# then the bookkeeping, integers stored exactly as floats.
_POS, _VEL, _PP, _PV, _VV = (slice(i, i + 4) for i in range(0, 20, 4))
_TIME_SINCE_UPDATE = 20  # frames (update calls) since the last match
_HIT_STREAK = 21  # matches in a row, as of the last match
_TRACK_ID = 22  # 0 until the track is first reported
_CLASS_ID = 23  # of the detection that started the track
_ONE = 24  # always 1.0, so that predict, noise included, is a single matrix product
_ROW_SIZE = 25

# Noise of the reference: Q = diag(1, 1, 1, 1, .01, .01, .0001), R = diag(1, 1, 10, 10),
# P0 = 10·diag(1, 1, 1, 1, 1000, 1000, 1000) (large: the first velocity is unknown).
# vr does not exist in SORT: zero noise and zero variance keep it at exactly 0.
_Q_POS = np.array([1.0, 1.0, 1.0, 1.0])
_Q_VEL = np.array([1e-2, 1e-2, 1e-4, 0.0])
_R = np.array([1.0, 1.0, 10.0, 10.0])
_NEW_TRACK = np.zeros(_ROW_SIZE)
_NEW_TRACK[_PP] = 10.0
_NEW_TRACK[_VV] = [1e4, 1e4, 1e4, 0.0]
_NEW_TRACK[_ONE] = 1.0

# [cx, cy, w, h] @ this = [cx - w/2, cy - h/2, cx + w/2, cy + h/2]; the other gives x1, y1, -x2, -y2
_CENTRE_SIZE_TO_XYXY = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]])
_CENTRE_SIZE_TO_CORNERS = (_CENTRE_SIZE_TO_XYXY * [1.0, 1.0, -1.0, -1.0]).T.copy()
# this.dot(x1, y1, x2, y2 rows) = cx, cy, w, h rows; the other = x1, y1, -x2, -y2 rows
_XYXY_TO_CENTRE_SIZE = np.array([[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5], [-1, 0, 1, 0], [0, -1, 0, 1]])
_XYXY_TO_CORNERS = np.diag([1.0, 1.0, -1.0, -1.0])
_NO_ROWS = np.empty(0, np.intp)
_NO_IDS = np.empty(0, np.int64)
_NO_FIELDS = np.empty((_ROW_SIZE, 0))
_NO_BOXES = np.empty((0, 4), np.float32)
_NO_SCORES = np.empty(0, np.float32)
_NO_CLASSES = np.empty(0, np.int32)

_INITIAL_CAPACITY = 64
_SMALL_ASSIGNMENT = 400  # track-detection pairs below which lapjv gets the whole IoU matrix
_DENSE_PAIRS = 4096  # above this, IoU only for pairs whose x ranges can overlap


def _transition(step: int) -> NDArray[np.float64]:
    """Predict over `step` frames as `row @ a` on track rows: x' = F x, P' = F P Fᵀ + Σ Fⁱ Q Fⁱᵀ.

    Per coordinate F = [[1, k], [0, 1]] with k = step, so pp' = pp + 2k·pv + k²·vv, pv' = pv + k·vv,
    and the process noise of k single steps adds up to k·q_pos + (k-1)k(2k-1)/6·q_vel,
    (k-1)k/2·q_vel and k·q_vel (the same as calling predict k times); it enters through the
    constant 1 column, which also counts one more frame since the last match."""
    k = float(step)
    a = np.eye(_ROW_SIZE)
    for j in range(4):
        a[_VEL.start + j, _POS.start + j] = k
        a[_PV.start + j, _PP.start + j] = 2 * k
        a[_VV.start + j, _PP.start + j] = k * k
        a[_VV.start + j, _PV.start + j] = k
    a[_ONE, _PP] = k * _Q_POS + (k - 1) * k * (2 * k - 1) / 6 * _Q_VEL
    a[_ONE, _PV] = (k - 1) * k / 2 * _Q_VEL
    a[_ONE, _VV] = k * _Q_VEL
    a[_ONE, _TIME_SINCE_UPDATE] = 1.0
    return a


def _measurements(xyxy: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(M, 4) xyxy → (4, M) corners x1, y1, -x2, -y2 (see `_iou`) and (4, M) cx, cy, s, r, float64.

    Raises ValueError naming the first row that is not a box (NaN, inf, zero or negative size)."""
    boxes = xyxy.T.astype(np.float64, order="C")
    m = boxes.shape[1]
    # Finite first (an inf would warn inside the products), then w, h > 0; counting beats all().
    valid = np.count_nonzero(np.isfinite(boxes)) == 4 * m
    if valid:
        z = _XYXY_TO_CENTRE_SIZE.dot(boxes)  # cx, cy, w, h
        valid = np.count_nonzero(z[2:] > 0.0) == 2 * m
    if not valid:
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(boxes).all(axis=0) & (boxes[2:] > boxes[:2]).all(axis=0))
        row = int(bad.nonzero()[0][0])
        raise ValueError(
            f"detection {row} has box {boxes[:, row].tolist()} (x1, y1, x2, y2): every box needs finite "
            "coordinates with x2 > x1 and y2 > y1"
        )
    aspect = z[2] / z[3]
    z[2] *= z[3]
    z[3] = aspect
    return _XYXY_TO_CORNERS.dot(boxes), z


class SortTracker:
    """SORT over whole frames: `update` must be called for every frame, even with no detections.

    A track is reported in the frames where it is matched (`time_since_update < 1` in the
    reference) once it has been matched in `min_hits` frames in a row after the one it started
    in, or at once during the first `min_hits` frames; it ends after more than `max_age` frames
    without a match. Track ids count up from 1 per tracker, in the order tracks are first
    reported (by start within one frame), so tentative tracks use up no ids.
    With `match_classes`, a track only matches detections of the class it started with.
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
        self._one_step = _transition(1)
        # Live tracks are rows [0, _count); spare rows save a reallocation per new track.
        self._tracks = np.zeros((_INITIAL_CAPACITY, _ROW_SIZE))
        self._count = 0
        self._noise_blocks: dict[int, NDArray[np.float64]] = {}  # K → R as a (4, K) block

    def __len__(self) -> int:
        """Live tracks, tentative ones included."""
        return self._count

    def update(self, detections: Detections, frame_index: int | None = None) -> Tracks:
        """Advance all tracks to this frame, match them to `detections`, return the reported tracks.

        `frame_index` (optional) numbers the frame in its source: a jump of k predicts k steps, so
        frames a live source dropped do not look like slow motion. Dropped frames do not count as
        misses toward `max_age`; only frames passed to `update` do."""
        step = self._advance_clock(frame_index)
        n = self._count
        if n:
            self._predict(n, step)
        m = detections.xyxy.shape[0]
        if m == 0:
            return self._tracks_out(detections, _NO_FIELDS, _NO_ROWS, _NO_ROWS)
        corners, z = _measurements(detections.xyxy)
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
            _xyxy(reported[_POS]).astype(np.float32),
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

    def _predict(self, n: int, step: int) -> None:
        """Advance the first n tracks by `step` frames and count one more frame without a match."""
        rows = self._tracks[:n]
        rows[:] = rows.dot(self._one_step if step == 1 else _transition(step))
        # SORT's guard for a shrinking box: where the predicted area s + k·vs is <= 0, vs = 0 and
        # s keeps its value. Checked after the fact because it almost never happens.
        vanished = rows[:, 2] <= 0.0
        if np.count_nonzero(vanished):
            rows[vanished, 2] -= step * rows[vanished, 6]
            rows[vanished, 6] = 0.0

    def _associate(
        self, n: int, corners: NDArray[np.float64], z: NDArray[np.float64], class_id: NDArray[np.int32]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Match predicted tracks to detections by IoU → (track rows, detection rows), same length.

        Optimal for cost 1 - IoU with cost limit 1 - iou_threshold (`lap.lapjv`). A track and a
        detection that are each other's only candidate are matched without lapjv: such a pair is
        part of every optimum, and in most frames every pair is like that."""
        m = corners.shape[1]
        if n == 0 or m == 0:
            return _NO_ROWS, _NO_ROWS
        threshold = self.iou_threshold
        iou = None
        if n * m <= _DENSE_PAIRS:
            iou = _iou(self._tracks[:n, _POS], corners, z[2])
            if self.match_classes:
                iou[self._tracks[:n, _CLASS_ID, None] != class_id] = 0.0
            candidate = iou >= threshold
            track_rows, det_rows = candidate.nonzero()
        else:
            track_rows, det_rows, values = _overlapping_pairs(self._tracks[:n, _POS], corners, z[2])
            keep = values >= threshold
            if self.match_classes:
                keep &= self._tracks[track_rows, _CLASS_ID] == class_id[det_rows]
            track_rows, det_rows, values = track_rows[keep], det_rows[keep], values[keep]
        pairs = len(track_rows)
        per_track = np.bincount(track_rows, minlength=n)
        per_det = np.bincount(det_rows, minlength=m)
        if np.count_nonzero(per_track) == pairs and np.count_nonzero(per_det) == pairs:
            return track_rows, det_rows
        if iou is not None and n * m <= _SMALL_ASSIGNMENT:
            return _optimal_pairs(iou, threshold)
        # Many targets: solve only the block of contested tracks and detections.
        if iou is not None:
            values = iou[candidate]
        alone = (per_track[track_rows] == 1) & (per_det[det_rows] == 1)
        contested = ~alone
        rows, row_of = np.unique(track_rows[contested], return_inverse=True)
        cols, col_of = np.unique(det_rows[contested], return_inverse=True)
        block = np.zeros((len(rows), len(cols)))  # pairs below the threshold can stay 0: never matched
        block[row_of, col_of] = values[contested]
        picked_rows, picked_cols = _optimal_pairs(block, threshold)
        return (
            np.concatenate([track_rows[alone], rows[picked_rows]]),
            np.concatenate([det_rows[alone], cols[picked_cols]]),
        )

    def _correct(self, track_rows: NDArray[np.intp], z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Kalman update of the matched tracks with measurements z, (4, K) cx, cy, s, r → their new
        rows, transposed: (_ROW_SIZE, K), one field per row.

        Per coordinate: S = pp + R, Kp = pp / S, Kv = pv / S; the covariance becomes pp·R/S,
        pv·R/S and vv - Kv·pv. Transposed, every operand is a contiguous (4, K) block, which numpy
        handles several times faster than strided column views."""
        k = len(track_rows)
        fields: NDArray[np.float64] = self._tracks.take(track_rows, 0).T.copy()
        pos, vel, pp, pv, vv = fields[_POS], fields[_VEL], fields[_PP], fields[_PV], fields[_VV]
        noise = self._noise_blocks.get(k)
        if noise is None:
            noise = self._noise_blocks[k] = np.repeat(_R, k).reshape(4, k)
        innovation_var = pp + noise
        gain_pos = pp / innovation_var
        gain_vel = pv / innovation_var
        innovation = z - pos
        gain_pos *= innovation
        pos += gain_pos
        innovation *= gain_vel
        vel += innovation
        gain_vel *= pv
        vv -= gain_vel
        noise_share = np.divide(noise, innovation_var, out=innovation_var)  # R / S = 1 - Kp
        pp *= noise_share
        pv *= noise_share
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
        rows[:] = _NEW_TRACK
        rows[:, _POS] = z
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


def _optimal_pairs(
    iou: NDArray[np.float64], iou_threshold: float
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of the assignment that minimises the summed 1 - IoU, each pair below the
    cost limit 1 - iou_threshold, by `lap.lapjv`; anything left out stays unmatched."""
    col_of_row, _ = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - iou_threshold, return_cost=False)
    rows = (col_of_row >= 0).nonzero()[0]
    cols = col_of_row[rows]
    keep = iou.ravel().take(rows * iou.shape[1] + cols) >= iou_threshold  # lapjv may take a pair at the limit
    return rows[keep], cols[keep]


def _centre_size(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r with s, r > 0 → (4, N) cx, cy, w, h, contiguous: w = √(s·r), h = s / w."""
    centre_size: NDArray[np.float64] = cxcysr.copy()
    np.multiply(cxcysr[2], cxcysr[3], out=centre_size[2])
    np.sqrt(centre_size[2], out=centre_size[2])
    np.divide(cxcysr[2], centre_size[2], out=centre_size[3])
    return centre_size


def _xyxy(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r → (N, 4) xyxy."""
    xyxy: NDArray[np.float64] = _centre_size(cxcysr).T.dot(_CENTRE_SIZE_TO_XYXY)
    return xyxy


def _corners(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r → (4, N) x1, y1, -x2, -y2."""
    corners: NDArray[np.float64] = _CENTRE_SIZE_TO_CORNERS.dot(_centre_size(cxcysr))
    return corners


def _overlapping_pairs(
    tracks: NDArray[np.float64], corners: NDArray[np.float64], area: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """(track rows, box columns, IoU) of the pairs whose x ranges can overlap: tracks (N, 4)
    [cx, cy, s, r], boxes as (4, M) corners x1, y1, -x2, -y2 with areas (M,).

    A sweep along x (boxes sorted by x1; a box can reach a track only if its x1 lies within
    the widest box width left of the track) keeps a crowd of hundreds from costing N·M."""
    a = _corners(tracks.T)
    order = np.argsort(corners[0], kind="stable")
    left = corners[0].take(order)
    widest = float((-corners[2] - corners[0]).max())
    first = np.searchsorted(left, a[0] - widest, side="right")
    count = np.maximum(np.searchsorted(left, -a[2], side="left") - first, 0)
    track_rows = np.repeat(np.arange(a.shape[1]), count)
    # Position k of the flat list is box first[i] + (k - start of track i's run) in sorted order.
    box_cols = order[np.arange(len(track_rows)) + np.repeat(first - (np.cumsum(count) - count), count)]
    inner = np.maximum(a.take(track_rows, 1), corners.take(box_cols, 1))
    minus_overlap = np.minimum(inner[:2] + inner[2:], 0.0)
    inter = minus_overlap[0] * minus_overlap[1]
    iou: NDArray[np.float64] = inter / (tracks[:, 2].take(track_rows) + area.take(box_cols) - inter)
    return track_rows, box_cols, iou


def _iou(
    tracks: NDArray[np.float64], corners: NDArray[np.float64], area: NDArray[np.float64]
) -> NDArray[np.float64]:
    """IoU of (N, 4) [cx, cy, s, r] tracks with (4, M) corners x1, y1, -x2, -y2 of areas (M,) → (N, M).

    With x2 and y2 negated, one maximum gives the inner box of every pair: max x1, max y1,
    -min x2, -min y2; then -(overlap) = max x1 - min x2. One broadcast instead of four: at ten
    targets numpy's per-call cost is the whole cost."""
    inner = np.maximum(_corners(tracks.T)[:, :, None], corners[:, None, :])  # (4, N, M)
    minus_overlap = inner[:2] + inner[2:]
    np.minimum(minus_overlap, 0.0, out=minus_overlap)  # a pair apart in x or y overlaps 0
    inter: NDArray[np.float64] = minus_overlap[0] * minus_overlap[1]
    union = tracks[:, 2, None] + area  # both areas > 0, so the union is too
    union -= inter
    inter /= union
    return inter
