"""Matching tracks to detections: the IoU family and the cost-limited assignment (`lap.lapjv`).

Tracks come as (N, 4) [cx, cy, s, r] rows, detections as (4, M) corners x1, y1, -x2, -y2 with
their areas (see boxes.py). A match is the assignment of pairs at or above a threshold that
maximises the summed excess of similarity over it (lapjv on 1 - similarity with cost limit
1 - threshold). `Similarities` computes one frame's matrix once and matches parts of it in stages.

Speed: at ten targets a frame costs what its numpy calls cost, not their arithmetic. A track and
a detection that are each other's only candidate are matched without lapjv: such a pair is part
of every optimum, and in most frames every pair is like that; when no box is wanted by two
tracks (or no track by two boxes) each takes its best candidate; lapjv solves only what is left
contested. Hundreds of targets only pair boxes that can overlap (a sweep along x) instead of all
N·M.
"""

from __future__ import annotations

from dataclasses import dataclass

import lap
import numpy as np
from numpy.typing import NDArray

from edgepipe.track.boxes import corners

NO_ROWS = np.empty(0, np.intp)
_SIGNS = np.array([[1.0], [1.0], [-1.0], [-1.0]])
_SMALL_ASSIGNMENT = 400  # track-detection pairs below which lapjv gets the whole similarity matrix
_DENSE_PAIRS = 4096  # above this, similarities only for pairs whose x ranges can overlap

Pairs = tuple[NDArray[np.intp], NDArray[np.intp]]


@dataclass(frozen=True)
class Buffered:
    """Which pairs `Similarities` compares by buffered IoU: those of the tracks `rows` marks (a
    mask) with the boxes `cols` marks (None: every box); the ratio; the boxes' centres (2, M) cx,
    cy (the first two rows of their [cx, cy, s, r])."""

    rows: NDArray[np.bool_]
    ratio: float
    centres: NDArray[np.float64]
    cols: NDArray[np.bool_] | None = None


def iou(
    tracks: NDArray[np.float64], box_corners: NDArray[np.float64], area: NDArray[np.float64]
) -> NDArray[np.float64]:
    """IoU of (N, 4) [cx, cy, s, r] tracks with (4, M) corners x1, y1, -x2, -y2 of areas (M,) → (N, M).

    With x2 and y2 negated, one maximum gives the inner box of every pair: max x1, max y1,
    -min x2, -min y2; then -(overlap) = max x1 - min x2. One broadcast instead of four."""
    inner = np.maximum(corners(tracks.T)[:, :, None], box_corners[:, None, :])  # (4, N, M)
    minus_overlap = inner[:2] + inner[2:]
    np.minimum(minus_overlap, 0.0, out=minus_overlap)  # a pair apart in x or y overlaps 0
    inter: NDArray[np.float64] = minus_overlap[0] * minus_overlap[1]
    union = tracks[:, 2, None] + area  # both areas > 0, so the union is too
    union -= inter
    inter /= union
    return inter


def partly_buffered_iou(
    tracks: NDArray[np.float64],
    box_corners: NDArray[np.float64],
    area: NDArray[np.float64],
    buffered: Buffered,
) -> NDArray[np.float64]:
    """(N, M): the buffered IoU for the pairs `buffered` names, the IoU for the others, in the
    same broadcasts. The boxes of a buffered pair are moved as `buffered_frame` says (centres
    multiplied by k = 1/g); a corner moves with its centre: x1 + (k-1)·cx, y1 + (k-1)·cy,
    -x2 - (k-1)·cx, -y2 - (k-1)·cy."""
    factor = buffered.rows * (1.0 / (1.0 + 2.0 * buffered.ratio) - 1.0)  # k - 1, or 0 for a plain track
    track_moves = tracks.T[[0, 1, 0, 1]] * _SIGNS  # (4, N) signed centres
    box_moves = buffered.centres[[0, 1, 0, 1]] * _SIGNS  # (4, M)
    if buffered.cols is None:  # a track moves alike against every box
        track_moves *= factor
        track_moves += corners(tracks.T)
        track_corners = track_moves[:, :, None]
        moved = box_moves[:, None, :] * factor[:, None]
    else:
        per_pair = factor[:, None] * buffered.cols  # (N, M)
        track_corners = track_moves[:, :, None] * per_pair
        track_corners += corners(tracks.T)[:, :, None]
        moved = box_moves[:, None, :] * per_pair
    moved += box_corners[:, None, :]
    inner = np.maximum(track_corners, moved, out=moved)  # (4, N, M)
    minus_overlap = inner[:2] + inner[2:]
    np.minimum(minus_overlap, 0.0, out=minus_overlap)
    inter: NDArray[np.float64] = minus_overlap[0] * minus_overlap[1]
    union = tracks[:, 2, None] + area
    union -= inter
    inter /= union
    return inter


def buffered_frame(
    tracks: NDArray[np.float64],
    box_corners: NDArray[np.float64],
    box_centres: NDArray[np.float64],
    buffer_ratio: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Tracks and box corners moved so that their IoU is the buffered IoU (C-BIoU, Yang et al.,
    WACV 2023) of the originals: both boxes of a pair grown by `buffer_ratio` of their width and
    height on every side.

    Growing both boxes by g = 1 + 2·buffer_ratio about their centres, then scaling the picture by
    1/g (IoU does not change under scaling) leaves every box its size and divides its centre by
    g. So the buffered IoU is the plain IoU of boxes whose centres are divided by g: the same
    `iou` and sweep, on moved inputs. `box_centres` (2, M) are the boxes' cx, cy."""
    shrink = 1.0 / (1.0 + 2.0 * buffer_ratio)
    moved_tracks = tracks[:, :4].copy()
    moved_tracks[:, :2] *= shrink
    shift = (1.0 - shrink) * box_centres  # x1' = x1 - (cx - cx/g), -x2' = -x2 + (cx - cx/g)
    moved = box_corners.copy()
    moved[:2] -= shift
    moved[2:] += shift
    return moved_tracks, moved


def buffered_iou(
    tracks: NDArray[np.float64],
    box_corners: NDArray[np.float64],
    box_centres: NDArray[np.float64],
    area: NDArray[np.float64],
    buffer_ratio: float,
) -> NDArray[np.float64]:
    """Buffered IoU (see `buffered_frame`) of (N, 4) tracks and (4, M) box corners → (N, M);
    buffer 0 is the IoU. It lets a track whose prediction drifted while it coasted still overlap
    the box it belongs to."""
    moved_tracks, moved = buffered_frame(tracks, box_corners, box_centres, buffer_ratio)
    return iou(moved_tracks, moved, area)


def overlapping_pairs(
    tracks: NDArray[np.float64], box_corners: NDArray[np.float64], area: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """(track rows, box columns, IoU) of the pairs whose x ranges can overlap: tracks (N, 4)
    [cx, cy, s, r], boxes as (4, M) corners x1, y1, -x2, -y2 with areas (M,)."""
    a = corners(tracks.T)
    track_rows, box_cols = _sweep(a, box_corners)
    inner = np.maximum(a.take(track_rows, 1), box_corners.take(box_cols, 1))
    minus_overlap = np.minimum(inner[:2] + inner[2:], 0.0)
    inter = minus_overlap[0] * minus_overlap[1]
    values: NDArray[np.float64] = inter / (tracks[:, 2].take(track_rows) + area.take(box_cols) - inter)
    return track_rows, box_cols, values


def _sweep(track_corners: NDArray[np.float64], box_corners: NDArray[np.float64]) -> Pairs:
    """(track rows, box columns) of every pair of (4, N) and (4, M) corners whose x ranges overlap.

    A sweep along x (boxes sorted by x1; a box can reach a track only if its x1 lies within
    the widest box width left of the track) keeps a crowd of hundreds from costing N·M."""
    order = np.argsort(box_corners[0], kind="stable")
    left = box_corners[0].take(order)
    widest = float((-box_corners[2] - box_corners[0]).max())
    first = np.searchsorted(left, track_corners[0] - widest, side="right")
    count = np.maximum(np.searchsorted(left, -track_corners[2], side="left") - first, 0)
    track_rows = np.repeat(np.arange(track_corners.shape[1]), count)
    # Position k of the flat list is box first[i] + (k - start of track i's run) in sorted order.
    box_cols = order[np.arange(len(track_rows)) + np.repeat(first - (np.cumsum(count) - count), count)]
    return track_rows, box_cols


def match_iou(
    tracks: NDArray[np.float64],
    box_corners: NDArray[np.float64],
    area: NDArray[np.float64],
    threshold: float,
    track_class: NDArray[np.float64] | None = None,
    box_class: NDArray[np.int32] | None = None,
) -> Pairs:
    """Optimal IoU matching of (N, 4) tracks to boxes → (track rows, box columns), same length.

    With classes given, a track only matches boxes of its own class."""
    n, m = tracks.shape[0], box_corners.shape[1]
    if n == 0 or m == 0:
        return NO_ROWS, NO_ROWS
    if n * m <= _DENSE_PAIRS:
        similarity = iou(tracks, box_corners, area)
        if track_class is not None:
            similarity[track_class[:, None] != box_class] = 0.0
        return match(similarity, threshold)
    track_rows, box_cols, values = overlapping_pairs(tracks, box_corners, area)
    keep = values >= threshold
    if track_class is not None and box_class is not None:
        keep &= track_class.take(track_rows) == box_class.take(box_cols)
    return match_pairs(track_rows[keep], box_cols[keep], values[keep], n, m, threshold)


class Similarities:
    """The similarities of N tracks and M boxes, computed once and matched in stages on parts of
    them: an (N, M) matrix, or for many targets only the pairs whose x ranges can overlap.

    IoU, or buffered IoU for the tracks `buffered` marks; with classes given, pairs of different
    classes have similarity 0."""

    def __init__(
        self,
        tracks: NDArray[np.float64],
        box_corners: NDArray[np.float64],
        area: NDArray[np.float64],
        buffered: Buffered | None = None,
        track_class: NDArray[np.float64] | None = None,
        box_class: NDArray[np.int32] | None = None,
    ) -> None:
        self.n, self.m = n, m = tracks.shape[0], box_corners.shape[1]
        self.matrix: NDArray[np.float64] | None = None
        if n * m <= _DENSE_PAIRS:
            if buffered is None:
                self.matrix = iou(tracks, box_corners, area)
            else:
                self.matrix = partly_buffered_iou(tracks, box_corners, area, buffered)
            if track_class is not None:
                self.matrix[track_class[:, None] != box_class] = 0.0
            return
        rows, cols, values = overlapping_pairs(tracks, box_corners, area)
        if buffered is not None:
            # The buffered pairs of the marked tracks replace their plain ones.
            marked = buffered.rows.nonzero()[0]
            moved_tracks, moved = buffered_frame(
                tracks.take(marked, 0), box_corners, buffered.centres, buffered.ratio
            )
            r2, c2, v2 = overlapping_pairs(moved_tracks, moved, area)
            r2 = marked.take(r2)
            replaced = buffered.rows.take(rows)
            if buffered.cols is not None:
                replaced &= buffered.cols.take(cols)
                keep = buffered.cols.take(c2)
                r2, c2, v2 = r2[keep], c2[keep], v2[keep]
            keep = ~replaced
            rows = np.concatenate([rows[keep], r2])
            cols, values = np.concatenate([cols[keep], c2]), np.concatenate([values[keep], v2])
        if track_class is not None and box_class is not None:
            values[track_class.take(rows) != box_class.take(cols)] = 0.0
        self.rows, self.cols, self.values = rows, cols, values

    def match(
        self, threshold: float, rows: NDArray[np.intp] | None = None, cols: NDArray[np.intp] | None = None
    ) -> Pairs:
        """Optimal matching of the tracks `rows` to the boxes `cols` (all when None), every pair
        at or above `threshold` → (track rows, box columns) of all N and M."""
        if self.matrix is not None:
            part = self.matrix if cols is None else self.matrix.take(cols, 1)
            if rows is not None:
                part = part.take(rows, 0)
            picked_rows, picked_cols = match(part, threshold)
            return (
                picked_rows if rows is None else rows.take(picked_rows),
                picked_cols if cols is None else cols.take(picked_cols),
            )
        keep = self.values >= threshold
        if rows is not None:
            wanted = np.zeros(self.n, np.bool_)
            wanted[rows] = True
            keep &= wanted.take(self.rows)
        if cols is not None:
            wanted = np.zeros(self.m, np.bool_)
            wanted[cols] = True
            keep &= wanted.take(self.cols)
        return match_pairs(self.rows[keep], self.cols[keep], self.values[keep], self.n, self.m, threshold)


def match(similarity: NDArray[np.float64], threshold: float) -> Pairs:
    """Optimal matching on an (N, M) similarity matrix → (rows, columns) with similarity >= threshold."""
    n, m = similarity.shape
    candidate = similarity >= threshold
    rows, cols = candidate.nonzero()
    if len(rows) <= 1:
        return rows, cols
    per_track = np.bincount(rows, minlength=n)
    per_box = np.bincount(cols, minlength=m)
    pairs = len(rows)
    tracks_seen, boxes_seen = np.count_nonzero(per_track), np.count_nonzero(per_box)
    if tracks_seen == pairs and boxes_seen == pairs:
        return rows, cols
    # No box wanted by two tracks (or no track by two boxes): the candidates form stars, and the
    # optimum gives each track its best box (each box its best track) without lapjv.
    if boxes_seen == pairs:
        best = np.where(candidate, similarity, -1.0).argmax(axis=1)
        track_rows = (per_track > 0).nonzero()[0]
        return track_rows, best.take(track_rows)
    if tracks_seen == pairs:
        best = np.where(candidate, similarity, -1.0).argmax(axis=0)
        box_cols = (per_box > 0).nonzero()[0]
        return best.take(box_cols), box_cols
    if n * m <= _SMALL_ASSIGNMENT:
        return optimal_pairs(similarity, threshold)
    return _solve_contested(rows, cols, similarity[candidate], per_track, per_box, threshold)


def match_pairs(
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    values: NDArray[np.float64],
    n: int,
    m: int,
    threshold: float,
) -> Pairs:
    """Optimal matching given only the candidate pairs (all at or above `threshold`) of N tracks and M boxes."""
    pairs = len(rows)
    per_track = np.bincount(rows, minlength=n)
    per_box = np.bincount(cols, minlength=m)
    if np.count_nonzero(per_track) == pairs and np.count_nonzero(per_box) == pairs:
        return rows, cols
    return _solve_contested(rows, cols, values, per_track, per_box, threshold)


def _solve_contested(
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    values: NDArray[np.float64],
    per_track: NDArray[np.intp],
    per_box: NDArray[np.intp],
    threshold: float,
) -> Pairs:
    """Keep the uncontested pairs; lapjv on the block of tracks and boxes that have rivals."""
    alone = (per_track[rows] == 1) & (per_box[cols] == 1)
    contested = ~alone
    block_rows, row_of = np.unique(rows[contested], return_inverse=True)
    block_cols, col_of = np.unique(cols[contested], return_inverse=True)
    block = np.zeros((len(block_rows), len(block_cols)))  # below the threshold can stay 0: never matched
    block[row_of, col_of] = values[contested]
    picked_rows, picked_cols = optimal_pairs(block, threshold)
    return (
        np.concatenate([rows[alone], block_rows[picked_rows]]),
        np.concatenate([cols[alone], block_cols[picked_cols]]),
    )


def optimal_pairs(similarity: NDArray[np.float64], threshold: float) -> Pairs:
    """Rows and columns of the assignment that minimises the summed 1 - similarity, each pair below
    the cost limit 1 - threshold, by `lap.lapjv`; anything left out stays unmatched."""
    col_of_row, _ = lap.lapjv(
        1.0 - similarity, extend_cost=True, cost_limit=1.0 - threshold, return_cost=False
    )
    rows = (col_of_row >= 0).nonzero()[0]
    cols = col_of_row[rows]
    # lapjv may take a pair at the limit
    keep = similarity.ravel().take(rows * similarity.shape[1] + cols) >= threshold
    return rows[keep], cols[keep]
