"""IoU, buffered IoU and the optimal matching: against direct computations, and every matching
path (dense, contested block, sweep along x) giving the same tracks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.typing import NDArray

from edgepipe.config import TrackerConfig
from edgepipe.track import SortTracker, associate
from edgepipe.track.boxes import measurements
from edgepipe.types import Detections


def cxcysr(xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 4) xyxy → (N, 4) [cx, cy, s, r], the way tracks hold their boxes."""
    return measurements(xyxy)[1].T.copy()


def direct_iou(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def grow(box: NDArray[np.float64], ratio: float) -> NDArray[np.float64]:
    w, h = box[2] - box[0], box[3] - box[1]
    return box + ratio * np.array([-w, -h, w, h])


TRACKS = np.array([[0, 0, 10, 20], [100, 100, 140, 180], [30, 0, 40, 20]], np.float64)
BOXES = np.array([[2, 1, 12, 21], [13, 0, 23, 20], [110, 90, 150, 170], [500, 500, 510, 520]], np.float64)


def test_iou_equals_the_direct_computation() -> None:
    corners, z = measurements(BOXES)
    got = associate.iou(cxcysr(TRACKS), corners, z[2])
    expected = [[direct_iou(t, b) for b in BOXES] for t in TRACKS]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert got[0, 3] == 0.0 and got[0, 0] > 0.6


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.4, 1.0])
def test_buffered_iou_grows_both_boxes_of_a_pair(ratio: float) -> None:
    corners, z = measurements(BOXES)
    got = associate.buffered_iou(cxcysr(TRACKS), corners, z[:2], z[2], ratio)
    expected = [[direct_iou(grow(t, ratio), grow(b, ratio)) for b in BOXES] for t in TRACKS]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_a_buffer_lets_boxes_that_just_miss_each_other_overlap() -> None:
    corners, z = measurements(BOXES[1:2])  # 3 px right of track 0, no overlap
    tracks = cxcysr(TRACKS[:1])
    assert associate.iou(tracks, corners, z[2])[0, 0] == 0.0
    assert associate.buffered_iou(tracks, corners, z[:2], z[2], 0.3)[0, 0] > 0.1


@pytest.mark.parametrize("cols", [None, np.array([True, False, True, False])])
def test_partly_buffered_iou_buffers_exactly_the_marked_pairs(cols: NDArray[np.bool_] | None) -> None:
    corners, z = measurements(BOXES)
    rows = np.array([True, False, True])
    got = associate.partly_buffered_iou(
        cxcysr(TRACKS), corners, z[2], associate.Buffered(rows, 0.4, z[:2], cols)
    )
    for i, t in enumerate(TRACKS):
        for j, b in enumerate(BOXES):
            buffered = rows[i] and (cols is None or cols[j])
            ratio = 0.4 if buffered else 0.0
            assert got[i, j] == pytest.approx(direct_iou(grow(t, ratio), grow(b, ratio)), abs=1e-12), (i, j)


def scene(targets: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    top_left = rng.uniform(0, 30 * np.sqrt(targets) * 10, (targets, 2))
    tracks = np.concatenate([top_left, top_left + np.array([30.0, 60.0])], axis=1)
    boxes = tracks[rng.permutation(targets)] + rng.normal(0, 8, (targets, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 5)
    return tracks, boxes


def test_the_sweep_finds_every_overlapping_pair() -> None:
    tracks, boxes = scene(300, seed=2)
    corners, z = measurements(boxes)
    state = cxcysr(tracks)
    dense = associate.iou(state, corners, z[2])
    rows, cols, values = associate.overlapping_pairs(state, corners, z[2])
    sparse = np.zeros_like(dense)
    sparse[rows, cols] = values
    np.testing.assert_allclose(sparse, dense, rtol=1e-12, atol=1e-15)
    assert len(rows) < dense.size / 10  # and it does not look at every pair


@pytest.mark.parametrize("buffered", [False, True])
@pytest.mark.parametrize("classes", [False, True])
def test_dense_and_sparse_similarities_match_alike(
    monkeypatch: pytest.MonkeyPatch, buffered: bool, classes: bool
) -> None:
    tracks, boxes = scene(200, seed=4)
    corners, z = measurements(boxes)
    state = cxcysr(tracks)
    rng = np.random.default_rng(1)
    marks = associate.Buffered(rng.random(200) < 0.3, 0.4, z[:2], rng.random(200) < 0.7) if buffered else None
    track_class = rng.integers(0, 2, 200).astype(np.float64) if classes else None
    box_class = rng.integers(0, 2, 200).astype(np.int32)
    rows, cols = rng.permutation(200)[:120], rng.permutation(200)[:150]

    def matches() -> list[list[tuple[int, int]]]:
        similarities = associate.Similarities(state, corners, z[2], marks, track_class, box_class)
        return [
            sorted(zip(*(part.tolist() for part in similarities.match(0.3, r, c)), strict=True))
            for r, c in [(None, None), (rows, None), (None, cols), (rows, cols)]
        ]

    dense = matches()
    monkeypatch.setattr(associate, "_DENSE_PAIRS", 0)
    assert matches() == dense
    assert all(len(found) > 20 for found in dense)  # the scene has real matches


def brute_force(similarity: NDArray[np.float64], threshold: float) -> float:
    """The largest summed similarity - threshold over all matchings with every pair >= threshold
    (what lapjv with cost limit 1 - threshold maximises: a pair is worth its excess over it)."""
    n, m = similarity.shape
    best = 0.0
    for cols in itertools.permutations(range(m), min(n, m)):
        for rows in itertools.permutations(range(n), len(cols)):
            values = similarity[list(rows), list(cols)]
            best = max(best, float((values[values >= threshold] - threshold).sum()))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_match_is_optimal_and_respects_the_threshold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    similarity = rng.uniform(0, 1, (4, 4)) * (rng.uniform(0, 1, (4, 4)) > 0.4)
    rows, cols = associate.match(similarity, 0.3)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert (similarity[rows, cols] >= 0.3).all()
    assert (similarity[rows, cols] - 0.3).sum() == pytest.approx(brute_force(similarity, 0.3))


@pytest.mark.parametrize(
    ("similarity", "expected"),
    [
        # one track sees two boxes, no box is shared: the track takes its best box
        (np.array([[0.5, 0.9, 0.0], [0.0, 0.0, 0.8]]), [(0, 1), (1, 2)]),
        # two tracks see one box each, the same box: the box takes its best track
        (np.array([[0.5, 0.0], [0.7, 0.0], [0.0, 0.6]]), [(1, 0), (2, 1)]),
    ],
)
def test_stars_are_matched_without_lapjv(
    monkeypatch: pytest.MonkeyPatch, similarity: NDArray[np.float64], expected: list[tuple[int, int]]
) -> None:
    def no_lapjv(*args: object) -> None:
        raise AssertionError("lapjv was called")

    monkeypatch.setattr(associate, "optimal_pairs", no_lapjv)
    rows, cols = associate.match(similarity, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == expected


def test_match_takes_lone_pairs_and_solves_the_contested_block() -> None:
    # Track 0 and box 0 have only each other; tracks 1, 2 compete for boxes 1, 2.
    similarity = np.array([[0.9, 0.0, 0.0], [0.0, 0.8, 0.7], [0.0, 0.75, 0.1]])
    rows, cols = associate.match(similarity, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (1, 2), (2, 1)]


def crowd(frames: int, targets: int, seed: int) -> list[Detections]:
    """Targets crossing in a small scene, so many frames have contested matches."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 400, (targets, 2))
    velocity = rng.uniform(-4, 4, (targets, 2))
    out = []
    for f in range(frames):
        top_left = start + f * velocity
        xyxy = np.concatenate([top_left, top_left + np.array([30.0, 60.0])], axis=1) + rng.normal(
            0, 1.5, (targets, 4)
        )
        keep = rng.random(targets) > 0.1
        out.append(
            Detections(
                xyxy[keep].astype(np.float32),
                np.ones(int(keep.sum()), np.float32),
                np.zeros(int(keep.sum()), np.int32),
            )
        )
    return out


@pytest.mark.parametrize(("dense_pairs", "small_assignment"), [(4096, 10**9), (0, 400)])
def test_every_association_path_gives_the_same_tracks(
    monkeypatch: pytest.MonkeyPatch, dense_pairs: int, small_assignment: int
) -> None:
    frames = crowd(40, 60, seed=5)

    def run() -> list[list[tuple[int, int]]]:
        tracker = SortTracker(TrackerConfig(type="sort", max_age=2, min_hits=1))
        return [
            sorted(zip(t.track_id.tolist(), t.detection_index.tolist(), strict=True))
            for t in map(tracker.update, frames)
        ]

    # By default 60 targets take the dense IoU matrix and give lapjv its contested block; the
    # variants give lapjv the whole dense matrix, or build the block from the sweep along x.
    expected = run()
    monkeypatch.setattr(associate, "_DENSE_PAIRS", dense_pairs)
    monkeypatch.setattr(associate, "_SMALL_ASSIGNMENT", small_assignment)
    assert run() == expected
