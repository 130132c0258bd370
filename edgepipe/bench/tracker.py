"""`edgepipe bench tracker`: edgepipe's trackers against roboflow `trackers` on MOT sequences.

In one run, on the same detections: edgepipe's occlusion tracker (the default settings) and its
SORT, and roboflow `trackers` 2.6.1's SORT, ByteTrack, OC-SORT, C-BIoU and BoT-SORT (camera
motion compensation off), each at its constructor's defaults. Accuracy: MOTA, IDF1, HOTA, ID
switches, ids against true ids, from edgepipe.evaluate.tracking (TrackEval), per sequence and
over all; MOTA, IDF1 and ID switches also from py-motmetrics 1.4, the evaluator of the SORT
reference numbers. Speed: only the `update` calls are timed, as CPU time of this thread, best of
`repeats` runs, on every sequence and on synthetic crowds of 10, 50 and 500 targets.

A sequence is a folder `<name>/det/det.txt` with, when present, `gt/gt.txt` (scored) and
`seqinfo.ini` (its frameRate gives each frame its time, (frame - 1) / fps). The detections'
`high_threshold` is the score from which a box starts a track in edgepipe's occlusion tracker
(the detector's `threshold` in a pipeline); SORT and the peers use every box as they do.
motmetrics, trackers, supervision and trackeval are dev tools, imported when used.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import TrackerConfig
from edgepipe.errors import EdgepipeError
from edgepipe.evaluate.tracking import OVERALL, score
from edgepipe.evaluate.tracking import Sequence as Scored
from edgepipe.mot import read_detections, read_rows, read_seqinfo
from edgepipe.track import Tracker, build_tracker
from edgepipe.types import Detections, Tracks

SYNTHETIC_TARGETS = (10, 50, 500)
# The score from which MOT15's public (Faster R-CNN) boxes start a track: chosen on the nine
# MOT15 sequences with gt (README, "Tracker"); their scores run from 0.5 to 1.
MOT15_HIGH_THRESHOLD = 0.8
OURS = ("edgepipe-occlusion", "edgepipe-sort")
PEERS = ("roboflow-sort", "roboflow-bytetrack", "roboflow-ocsort", "roboflow-cbiou", "roboflow-botsort")


@dataclass(frozen=True)
class Sequence:
    """One MOT sequence folder: det/det.txt and, when present, gt/gt.txt and its frame rate."""

    name: str
    detections: Path
    ground_truth: Path | None
    fps: float | None
    frames: int | None


def find_sequences(data_dir: Path) -> list[Sequence]:
    """Every `<name>/det/det.txt` under data_dir, sorted by name."""
    found = sorted(data_dir.glob("*/det/det.txt"))
    if not found:
        raise EdgepipeError(f"no <sequence>/det/det.txt under {data_dir}: pass --data with MOT sequences")
    sequences = []
    for det in found:
        folder = det.parent.parent
        gt = folder / "gt" / "gt.txt"
        info = read_seqinfo(folder / "seqinfo.ini")
        fps, frames = (info.frame_rate, info.length) if info is not None else (None, None)
        sequences.append(Sequence(folder.name, det, gt if gt.is_file() else None, fps, frames))
    return sequences


# ---------------------------------------------------------------- the trackers
def make_tracker(name: str, high_threshold: float) -> Tracker:
    """A fresh tracker by its bench name; roboflow's are wrapped to take and give edgepipe types."""
    if name == "edgepipe-occlusion":
        return build_tracker(TrackerConfig(), high_threshold=high_threshold)
    if name == "edgepipe-sort":
        return build_tracker(TrackerConfig(type="sort"), high_threshold=high_threshold)
    return _Peer(name)


class _Peer:
    """A roboflow `trackers` tracker at its defaults behind the Tracker protocol (for scoring;
    speed runs call it directly on supervision Detections). It reports the detection boxes of
    tracks that have an id, as roboflow does."""

    def __init__(self, name: str) -> None:
        import trackers

        self.name = name
        makers: dict[str, Callable[[], Any]] = {
            "roboflow-sort": trackers.SORTTracker,
            "roboflow-bytetrack": trackers.ByteTrackTracker,
            "roboflow-ocsort": trackers.OCSORTTracker,
            "roboflow-cbiou": trackers.CBIoUTracker,
            "roboflow-botsort": lambda: trackers.BoTSORTTracker(enable_cmc=False),
        }
        self.tracker: Any = makers[name]()

    def update(
        self, detections: Detections, frame_index: int | None = None, time_s: float | None = None
    ) -> Tracks:
        out = self.tracker.update(as_supervision(detections))
        kept = out.tracker_id >= 0
        count = int(np.count_nonzero(kept))
        return Tracks(
            out.xyxy[kept].astype(np.float32),
            np.zeros(count, np.float32),
            np.zeros(count, np.int32),
            out.tracker_id[kept].astype(np.int64),
            np.full(count, -1, np.intp),  # roboflow does not say which detection it was
            np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.tracker.tracks)


def as_supervision(detections: Detections) -> Any:
    import supervision as sv

    return sv.Detections(xyxy=detections.xyxy, confidence=detections.score, class_id=detections.class_id)


# ---------------------------------------------------------------- accuracy
def track_rows(tracker: Tracker, frames: dict[int, Detections], fps: float | None) -> NDArray[np.float64]:
    """Run a tracker over {frame: Detections} → MOTChallenge result rows (frame, id, x, y, w, h, 1)."""
    rows = []
    for frame, detections in frames.items():
        tracks = tracker.update(
            detections, frame_index=frame, time_s=None if fps is None else (frame - 1) / fps
        )
        if len(tracks):
            xywh = tracks.xyxy.astype(np.float64)
            xywh[:, 2:] -= xywh[:, :2]
            rows.append(
                np.column_stack([np.full(len(tracks), frame), tracks.track_id, xywh, np.ones(len(tracks))])
            )
    return np.concatenate(rows) if rows else np.empty((0, 7))


def results_text(rows: NDArray[np.float64]) -> str:
    """Result rows as MOTChallenge text (for py-motmetrics)."""
    out = io.StringIO()
    for frame, track_id, x, y, w, h in rows[:, :6].tolist():
        out.write(f"{int(frame)},{int(track_id)},{x:.3f},{y:.3f},{w:.3f},{h:.3f},-1,-1,-1,-1\n")
    return out.getvalue()


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
    """py-motmetrics: {name: (gt.txt, results file or text)} → {name: scores} plus "OVERALL".

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


def accuracy(
    sequences: list[Sequence], names: tuple[str, ...], high_threshold: float, motmetrics: bool = True
) -> dict[str, dict[str, Any]]:
    """{tracker: {"trackeval": {sequence | OVERALL: scores}, "motmetrics": {...}}} on the
    sequences with ground truth."""
    scored = [seq for seq in sequences if seq.ground_truth is not None]
    frames = {seq.name: read_detections(seq.detections) for seq in scored}
    gt = {
        seq.name: read_rows(seq.ground_truth, "ground truth")
        for seq in scored
        if seq.ground_truth is not None
    }
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        results = {
            seq.name: track_rows(make_tracker(name, high_threshold), frames[seq.name], seq.fps)
            for seq in scored
        }
        trackeval = score({s.name: Scored(gt[s.name], results[s.name], s.frames) for s in scored})
        out[name] = {"trackeval": {k: asdict(v) for k, v in trackeval.items()}}
        if motmetrics:
            pairs: dict[str, tuple[Path, Path | str]] = {
                s.name: (s.ground_truth, results_text(results[s.name])) for s in scored if s.ground_truth
            }
            out[name]["motmetrics"] = mot_scores(pairs)
    return out


# ---------------------------------------------------------------- speed
def synthetic_frames(targets: int, frames: int, seed: int = 0) -> list[Detections]:
    """A crowd of `targets` 40x80 boxes at constant velocity with 1 px noise and 5% misses,
    scores uniform in [0.5, 1).

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


def seconds_per_frame(
    name: str, frames: list[Detections], high_threshold: float, fps: float | None = None, skip: int = 0
) -> float:
    """Mean CPU seconds of this thread per update call over frames[skip:] (the first `skip` run
    untimed), for a fresh tracker. Peers get supervision Detections made before the clock starts."""
    tracker = make_tracker(name, high_threshold)
    calls: list[Callable[[], object]]
    if isinstance(tracker, _Peer):
        calls = [partial(tracker.tracker.update, as_supervision(d)) for d in frames]
    else:
        step = 1.0 / fps if fps else None
        calls = [
            partial(tracker.update, d, i, None if step is None else i * step) for i, d in enumerate(frames)
        ]
    for call in calls[:skip]:
        call()
    start = time.thread_time()
    for call in calls[skip:]:
        call()
    return (time.thread_time() - start) / max(len(calls) - skip, 1)


def speed(
    sequences: list[Sequence],
    names: tuple[str, ...],
    high_threshold: float,
    repeats: int,
    targets: tuple[int, ...] = SYNTHETIC_TARGETS,
) -> dict[str, Any]:
    """Frames per second on every sequence and over all of them, and ms per frame on synthetic
    crowds: best of `repeats` runs, the trackers taking turns within each run."""
    frames = {seq.name: list(read_detections(seq.detections).values()) for seq in sequences}
    fps_of = {seq.name: seq.fps for seq in sequences}
    best: dict[str, dict[str, float]] = {name: {} for name in names}
    for _ in range(repeats):
        for seq_name, seq_frames in frames.items():
            for name in names:
                s = seconds_per_frame(name, seq_frames, high_threshold, fps_of[seq_name])
                best[name][seq_name] = min(best[name].get(seq_name, np.inf), s)
    per_sequence = {seq_name: {name: 1.0 / best[name][seq_name] for name in names} for seq_name in frames}
    total_frames = sum(len(f) for f in frames.values())
    overall = {name: total_frames / sum(best[name][s] * len(frames[s]) for s in frames) for name in names}
    synthetic: dict[str, dict[str, float]] = {}
    for count in targets:
        crowd = synthetic_frames(count, 60 if count >= 500 else 200)
        ms = {name: np.inf for name in names}
        for _ in range(repeats):
            for name in names:
                ms[name] = min(ms[name], 1e3 * seconds_per_frame(name, crowd, high_threshold, 10.0, skip=10))
        synthetic[str(count)] = ms
    return {"sequences_fps": per_sequence, "overall_fps": overall, "synthetic_ms": synthetic}


# ---------------------------------------------------------------- the whole bench
def _check_dev_tools() -> None:
    """Fail with what to install when the scoring or comparison packages are missing."""
    import importlib.util

    missing = [
        name
        for name in ("motmetrics", "trackers", "supervision", "trackeval")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise EdgepipeError(
            f"edgepipe bench tracker needs {', '.join(missing)}: pip install 'motmetrics==1.4.0' supervision, "
            "and 'pip install --no-deps trackers==2.6.1 trackeval==1.3.0' (both declare opencv-python, "
            "which would replace opencv-python-headless)"
        )


def run_benchmark(
    data_dir: Path,
    high_threshold: float = MOT15_HIGH_THRESHOLD,
    repeats: int = 3,
    targets: tuple[int, ...] = SYNTHETIC_TARGETS,
    names: tuple[str, ...] = OURS + PEERS,
) -> dict[str, Any]:
    """Everything `edgepipe bench tracker` prints, as one JSON-ready dict."""
    _check_dev_tools()
    sequences = find_sequences(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # roboflow warns about unused arguments of its own defaults
        report: dict[str, Any] = {
            "data": str(data_dir),
            "high_threshold": high_threshold,
            "settings": TrackerConfig().model_dump(),
            "sequences": {
                s.name: {"frames": s.frames, "fps": s.fps, "gt": s.ground_truth is not None}
                for s in sequences
            },
            "accuracy": accuracy(sequences, names, high_threshold),
            "speed": speed(sequences, names, high_threshold, repeats, targets),
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The benchmark dict as aligned text tables."""
    accuracy_by = report["accuracy"]
    names = list(accuracy_by)
    lines = [
        f"MOT sequences in {report['data']}; edgepipe-occlusion starts tracks from score {report['high_threshold']}"
    ]
    lines.append("")
    lines.append(
        f"{'tracker':<20}{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'IDsw':>6}{'ids':>6}{'true':>6}{'FP':>7}{'FN':>7}"
        f"{'fps':>9}{'ratio':>8}   motmetrics MOTA/IDF1/IDsw"
    )
    speed_overall = report["speed"]["overall_fps"]
    base = speed_overall.get(names[0], 0.0)
    for name in names:
        overall = accuracy_by[name]["trackeval"].get(OVERALL)
        mm = accuracy_by[name].get("motmetrics", {}).get("OVERALL")
        fps = speed_overall[name]
        row = f"{name:<20}"
        if overall:
            row += (
                f"{overall['mota']:>7.3f}{overall['idf1']:>7.3f}{overall['hota']:>7.3f}{overall['id_switches']:>6d}"
                f"{overall['ids']:>6d}{overall['true_ids']:>6d}{overall['false_positives']:>7d}{overall['misses']:>7d}"
            )
        row += f"{fps:>9.0f}{base / fps if fps else 0:>7.1f}x"
        if mm:
            row += f"   {mm['mota']:.3f}/{mm['idf1']:.3f}/{int(mm['num_switches'])}"
        lines.append(row)
    lines.append(f"ratio: {names[0]}'s update speed over each tracker's, on the same detections in this run")
    lines.append("")
    lines.append("per sequence, MOTA / IDF1 / IDsw (TrackEval)")
    sequences = [s for s in accuracy_by[names[0]]["trackeval"] if s != OVERALL]
    lines.append(
        f"{'sequence':<16}"
        + "".join(f"{n.replace('edgepipe-', 'ep-').replace('roboflow-', 'rf-'):>20}" for n in names)
    )
    for seq in sequences:
        cells = []
        for name in names:
            s = accuracy_by[name]["trackeval"][seq]
            cells.append(f"{s['mota']:.3f}/{s['idf1']:.3f}/{s['id_switches']:>3d}".rjust(20))
        lines.append(f"{seq:<16}" + "".join(cells))
    lines.append("")
    lines.append("synthetic crowds: mean ms per update (first 10 frames left out)")
    lines.append(
        f"{'targets':<10}"
        + "".join(f"{n.replace('edgepipe-', 'ep-').replace('roboflow-', 'rf-'):>15}" for n in names)
    )
    for targets, row in report["speed"]["synthetic_ms"].items():
        lines.append(f"{targets:<10}" + "".join(f"{row[n]:>15.3f}" for n in names))
    return "\n".join(lines)


_GATED = ("mota", "idf1", "hota", "id_switches", "ids", "true_ids", "false_positives", "misses")


def accuracy_summary(report_accuracy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stored regression gate's content: MOTA, IDF1, HOTA, ID switches per tracker and
    sequence (TrackEval), and MOTA, IDF1, ID switches over all from py-motmetrics."""
    out: dict[str, Any] = {}
    for name, scores in report_accuracy.items():
        out[name] = {
            seq: {k: round(v, 5) if isinstance(v, float) else v for k, v in s.items() if k in _GATED}
            for seq, s in scores["trackeval"].items()
        }
        if "motmetrics" in scores:
            mm = scores["motmetrics"]["OVERALL"]
            out[name]["motmetrics"] = {
                "mota": round(mm["mota"], 5),
                "idf1": round(mm["idf1"], 5),
                "id_switches": int(mm["num_switches"]),
            }
    return out
