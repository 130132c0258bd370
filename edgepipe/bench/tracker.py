"""`edgepipe bench tracker`: SORT on the MOT15 sequences and on synthetic crowds.

Accuracy: MOTA, IDF1 and ID switches from py-motmetrics 1.4 (IoU 0.5, gt rows with flag 0 left out),
the settings of the SORT reference numbers in the MOT15 data's PROVENANCE.md. Speed: only the
`update` calls are timed, as CPU time of this thread, best of a few runs, for edgepipe's
SortTracker and for roboflow `trackers`' SORTTracker (set up like SORT) on the same detections
in the same run, and reported as ratios.
motmetrics and trackers are dev tools: imported inside the functions that use them.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import EdgepipeError
from edgepipe.mot import read_detections, write_results
from edgepipe.track import SortTracker
from edgepipe.types import Detections

SYNTHETIC_TARGETS = (10, 50, 500)


@dataclass(frozen=True)
class SortParams:
    """The three SORT parameters, given to both trackers."""

    max_age: int = 1
    min_hits: int = 3
    iou_threshold: float = 0.3


@dataclass(frozen=True)
class Sequence:
    """One MOT sequence folder: det/det.txt and, when present, gt/gt.txt."""

    name: str
    detections: Path
    ground_truth: Path | None


def find_sequences(data_dir: Path) -> list[Sequence]:
    """Every `<name>/det/det.txt` under data_dir, sorted by name."""
    found = sorted(data_dir.glob("*/det/det.txt"))
    if not found:
        raise EdgepipeError(f"no <sequence>/det/det.txt under {data_dir}: pass --data with MOT sequences")
    sequences = []
    for det in found:
        gt = det.parent.parent / "gt" / "gt.txt"
        sequences.append(Sequence(det.parent.parent.name, det, gt if gt.is_file() else None))
    return sequences


@contextmanager
def _motmetrics_numpy() -> Iterator[None]:
    """Lend py-motmetrics 1.4 the `np.asfarray` that NumPy 2 removed, for this block only, and
    quiet the pandas deprecation warning it sets off."""
    added = not hasattr(np, "asfarray")
    if added:
        setattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype))  # noqa: B010
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Operation with tuple is deprecated")
            yield
    finally:
        if added:
            delattr(np, "asfarray")


def mot_scores(pairs: dict[str, tuple[Path, Path | str]]) -> dict[str, dict[str, float]]:
    """{name: (gt.txt, results file or text)} → {name: scores} plus "OVERALL" over all of them.

    Scores: mota, idf1, num_switches, num_false_positives, num_misses, precision, recall."""
    import motmetrics as mm

    metrics = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "precision", "recall"]
    with _motmetrics_numpy():
        accumulators = []
        for gt_path, results in pairs.values():
            gt = mm.io.loadtxt(str(gt_path), fmt="mot15-2D", min_confidence=1)
            source = io.StringIO(results) if isinstance(results, str) else str(results)
            hypotheses = mm.io.loadtxt(source, fmt="mot15-2D")
            accumulators.append(mm.utils.compare_to_groundtruth(gt, hypotheses, "iou", distth=0.5))
        table = mm.metrics.create().compute_many(
            accumulators, metrics=metrics, names=list(pairs), generate_overall=True
        )
    return {str(name): {m: float(row[m]) for m in metrics} for name, row in table.iterrows()}


def run_ours(frames: dict[int, Detections], params: SortParams) -> tuple[str, float]:
    """Track one sequence → (MOT results text, CPU seconds spent in update)."""
    tracker = SortTracker(params.max_age, params.min_hits, params.iou_threshold)
    out = io.StringIO()
    seconds = 0.0
    for frame, detections in frames.items():
        start = time.thread_time()
        tracks = tracker.update(detections, frame_index=frame)
        seconds += time.thread_time() - start
        write_results(out, frame, tracks)
    return out.getvalue(), seconds


def _peer(params: SortParams) -> Any:
    """roboflow trackers' SORTTracker with SORT's state, parameters and no score gate."""
    from trackers import SORTTracker
    from trackers.utils.state_representations import XCYCSRStateEstimator

    return SORTTracker(
        lost_track_buffer=params.max_age,
        frame_rate=30.0,  # makes lost_track_buffer a count of frames
        track_activation_threshold=0.0,
        minimum_consecutive_frames=params.min_hits,
        minimum_iou_threshold=params.iou_threshold,
        state_estimator_class=XCYCSRStateEstimator,
    )


def _as_supervision(frames: list[Detections]) -> list[Any]:
    import supervision as sv

    return [sv.Detections(xyxy=d.xyxy, confidence=d.score, class_id=d.class_id) for d in frames]


def time_per_frame(frames: list[Detections], params: SortParams, skip: int = 0) -> tuple[float, float]:
    """Mean seconds per update call, ours then the peer's, over frames[skip:] (the first `skip`
    run untimed). CPU time of this thread (`time.thread_time`): other processes on a busy
    machine then slow neither side down."""
    ours = SortTracker(params.max_age, params.min_hits, params.iou_threshold)
    ours_s = _timed_updates(ours.update, frames, skip)
    peer_s = _timed_updates(_peer(params).update, _as_supervision(frames), skip)
    count = max(len(frames) - skip, 1)
    return ours_s / count, peer_s / count


def _timed_updates(update: Callable[[Any], object], frames: list[Any], skip: int) -> float:
    """Thread CPU seconds of update(frame) over frames[skip:], after frames[:skip] untimed."""
    for frame in frames[:skip]:
        update(frame)
    start = time.thread_time()
    for frame in frames[skip:]:
        update(frame)
    return time.thread_time() - start


def synthetic_frames(targets: int, frames: int, seed: int = 0) -> list[Detections]:
    """A crowd of `targets` 40x80 boxes at constant velocity with 1 px noise and 5% misses.

    The scene grows with the crowd (about 25 box areas per target), so boxes overlap about as
    often at 10 as at 500 targets; targets leaving one side come back on the other."""
    rng = np.random.default_rng(seed)
    side = np.sqrt(targets * 25 * 40 * 80)
    start = rng.uniform(0, side, (targets, 2))
    velocity = rng.uniform(-3, 3, (targets, 2))
    size = np.array([40.0, 80.0])
    out = []
    for f in range(frames):
        top_left = (start + f * velocity) % side
        xyxy = np.concatenate([top_left, top_left + size], axis=1) + rng.normal(0, 1, (targets, 4))
        seen = rng.random(targets) >= 0.05
        out.append(
            Detections(
                xyxy[seen].astype(np.float32),
                rng.uniform(0.5, 1, int(seen.sum())).astype(np.float32),
                np.zeros(int(seen.sum()), np.int32),
            )
        )
    return out


def _check_dev_tools() -> None:
    """Fail with what to install when the scoring or comparison packages are missing."""
    import importlib.util

    missing = [
        name for name in ("motmetrics", "trackers", "supervision") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise EdgepipeError(
            f"edgepipe bench tracker needs {', '.join(missing)}: pip install 'motmetrics==1.4.0' supervision, "
            "and 'pip install --no-deps trackers' (its opencv-python would replace opencv-python-headless)"
        )


def run_benchmark(
    data_dir: Path, params: SortParams, repeats: int = 3, targets: tuple[int, ...] = SYNTHETIC_TARGETS
) -> dict[str, Any]:
    """Everything `edgepipe bench tracker` prints, as one JSON-ready dict."""
    _check_dev_tools()
    sequences = find_sequences(data_dir)
    per_sequence: dict[str, dict[str, Any]] = {}
    to_score: dict[str, tuple[Path, Path | str]] = {}
    total_frames, ours_total, peer_total = 0, 0.0, 0.0
    for seq in sequences:
        frames = read_detections(seq.detections)
        results, _ = run_ours(frames, params)
        # Speed: the best of `repeats` runs of both on the same detections.
        ours_best = peer_best = float("inf")
        for _ in range(repeats):
            ours_mean, peer_mean = time_per_frame(list(frames.values()), params)
            ours_best, peer_best = min(ours_best, ours_mean), min(peer_best, peer_mean)
        total_frames += len(frames)
        ours_total += ours_best * len(frames)
        peer_total += peer_best * len(frames)
        per_sequence[seq.name] = {
            "frames": len(frames),
            "fps": 1.0 / ours_best,
            "peer_fps": 1.0 / peer_best,
            "speedup": peer_best / ours_best,
        }
        if seq.ground_truth is not None:
            to_score[seq.name] = (seq.ground_truth, results)
    scores = mot_scores(to_score) if to_score else {}
    for name, values in scores.items():
        per_sequence.setdefault(name, {}).update(values)
    overall = per_sequence.pop("OVERALL", {})
    overall.update(
        {
            "frames": total_frames,
            "fps": total_frames / ours_total,
            "peer_fps": total_frames / peer_total,
            "speedup": peer_total / ours_total,
        }
    )
    return {
        "params": asdict(params),
        "peer": "trackers.SORTTracker (roboflow trackers), XCYCSR state, same max_age/min_hits/IoU",
        "sequences": per_sequence,
        "overall": overall,
        "synthetic": synthetic_speed(params, repeats, targets),
    }


def synthetic_speed(
    params: SortParams, repeats: int, targets: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Mean update time per frame, ours and the peer's, for crowds of each size in `targets`
    (the first 10 frames, while tracks start, left out; best of `repeats` runs)."""
    speed = {}
    for count in targets:
        frames = synthetic_frames(count, 60 if count >= 500 else 200)
        ours_best = peer_best = float("inf")
        for _ in range(repeats):
            ours_mean, peer_mean = time_per_frame(frames, params, skip=10)
            ours_best, peer_best = min(ours_best, ours_mean), min(peer_best, peer_mean)
        speed[str(count)] = {
            "ours_ms": ours_best * 1e3,
            "peer_ms": peer_best * 1e3,
            "speedup": peer_best / ours_best,
        }
    return speed


def format_report(report: dict[str, Any]) -> str:
    """The benchmark dict as aligned text tables."""
    lines = [
        f"{'sequence':<16}{'frames':>7}{'MOTA':>8}{'IDF1':>8}{'IDs':>6}{'fps':>10}{'peer fps':>10}{'speedup':>9}"
    ]
    rows = [*report["sequences"].items(), ("OVERALL", report["overall"])]
    for name, row in rows:
        if "mota" in row:
            accuracy = f"{row['mota']:>8.3f}{row['idf1']:>8.3f}{int(row['num_switches']):>6d}"
        else:
            accuracy = f"{'-':>8}{'-':>8}{'-':>6}"
        speed = f"{row['fps']:>10.0f}{row['peer_fps']:>10.0f}{row['speedup']:>8.1f}x"
        lines.append(f"{name:<16}{row['frames']:>7d}{accuracy}{speed}")
    lines.append("")
    lines.append(f"{'targets':<16}{'ours ms':>10}{'peer ms':>10}{'speedup':>9}   (mean per-frame update)")
    for targets, row in report["synthetic"].items():
        lines.append(f"{targets:<16}{row['ours_ms']:>10.3f}{row['peer_ms']:>10.3f}{row['speedup']:>8.1f}x")
    lines.append("")
    lines.append(f"peer: {report['peer']}")
    return "\n".join(lines)
