"""MOT metrics of tracker results against MOTChallenge ground truth, computed by TrackEval.

Rows are MOTChallenge text rows as arrays: `frame, id, x, y, w, h, flag_or_score, ...` with
frames from 1 and x, y the top-left corner. Ground-truth rows whose flag (7th field) is 0 are
left out, the MOT15 convention that TrackEval (benchmark MOT15) and py-motmetrics
(`min_confidence=1`) follow; a match needs IoU >= 0.5. TrackEval is a dev tool, imported when
scores are computed (install it with --no-deps: see the message of `_metrics`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.errors import EdgepipeError

IOU_THRESHOLD = 0.5  # MOTChallenge's: a result box matches a gt box at IoU >= 0.5
OVERALL = "OVERALL"


@dataclass(frozen=True)
class TrackingScores:
    """CLEAR MOT, identity and HOTA metrics of one sequence or of several together."""

    mota: float
    motp: float  # mean IoU of the matched boxes
    idf1: float
    idp: float
    idr: float
    hota: float  # mean over TrackEval's IoU thresholds 0.05 … 0.95, as TrackEval reports it
    deta: float
    assa: float
    id_switches: int
    fragmentations: int
    true_positives: int
    false_positives: int
    misses: int  # false negatives
    recall: float
    precision: float
    mostly_tracked: int
    partly_tracked: int
    mostly_lost: int
    ids: int  # distinct result ids that were scored
    true_ids: int  # distinct gt ids
    gt_boxes: int
    frames: int


@dataclass(frozen=True)
class Sequence:
    """One sequence to score: gt and result rows and, optionally, its frame count."""

    gt: NDArray[np.float64]
    results: NDArray[np.float64]
    frames: int | None = None


def score(sequences: Mapping[str, Sequence]) -> dict[str, TrackingScores]:
    """Scores per sequence name, plus OVERALL over all of them together (TrackEval's combination:
    counts summed, then the ratios of the sums)."""
    clear, identity, hota = _metrics()
    per_sequence: dict[str, dict[str, dict[str, Any]]] = {}
    counts: dict[str, tuple[int, int, int]] = {}
    for name, sequence in sequences.items():
        data = _sequence_data(name, sequence)
        per_sequence[name] = {
            "clear": clear.eval_sequence(data),
            "identity": identity.eval_sequence(data),
            "hota": hota.eval_sequence(data),
        }
        counts[name] = (data["num_tracker_ids"], data["num_gt_ids"], data["num_timesteps"])
    out = {name: _scores(res, *counts[name]) for name, res in per_sequence.items()}
    if per_sequence:
        combined = {
            key: metric.combine_sequences({name: res[key] for name, res in per_sequence.items()})
            for key, metric in (("clear", clear), ("identity", identity), ("hota", hota))
        }
        ids, true_ids, frames = (sum(c[i] for c in counts.values()) for i in range(3))
        out[OVERALL] = _scores(combined, ids, true_ids, frames)
    return out


def _metrics() -> tuple[Any, Any, Any]:
    try:
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError:
        raise EdgepipeError(
            "tracking metrics need TrackEval: pip install --no-deps 'trackeval==1.3.0' (its metrics need only numpy "
            "and scipy; its declared opencv-python would overwrite opencv-python-headless)"
        ) from None
    config = {"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}
    return CLEAR(config), Identity(config), HOTA()


def _sequence_data(name: str, sequence: Sequence) -> dict[str, Any]:
    """The per-frame ids, boxes and IoUs TrackEval's metrics read, as its MOT15 loader makes them."""
    from trackeval.datasets._base_dataset import _BaseDataset

    gt = _checked(name, "gt", sequence.gt)
    results = _checked(name, "results", sequence.results)
    gt = gt[gt[:, 6] != 0]
    last = int(max(gt[:, 0].max(initial=0), results[:, 0].max(initial=0)))
    frames = sequence.frames if sequence.frames is not None else last
    if last > frames:
        raise EdgepipeError(f"{name}: rows for frame {last}, but the sequence has {frames} frames")
    gt_ids, result_ids = _dense_ids(gt[:, 1]), _dense_ids(results[:, 1])
    gt_at, result_at = _split_by_frame(gt[:, 0], frames), _split_by_frame(results[:, 0], frames)
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for t in range(frames):
        g, r = gt_at[t], result_at[t]
        data["gt_ids"].append(gt_ids[g])
        data["tracker_ids"].append(result_ids[r])
        data["similarity_scores"].append(_BaseDataset._calculate_box_ious(gt[g, 2:6], results[r, 2:6]))
    data.update(
        num_gt_dets=len(gt),
        num_tracker_dets=len(results),
        num_gt_ids=len(np.unique(gt_ids)),
        num_tracker_ids=len(np.unique(result_ids)),
        num_timesteps=frames,
        seq=name,
    )
    return data


def _checked(name: str, what: str, rows: NDArray[np.float64]) -> NDArray[np.float64]:
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or (len(rows) and rows.shape[1] < 7):
        raise EdgepipeError(
            f"{name}: {what} rows need 7 fields (frame, id, x, y, w, h, flag), got {rows.shape}"
        )
    rows = rows.reshape(-1, max(rows.shape[1], 7))
    if len(rows) and rows[:, 0].min() < 1:
        raise EdgepipeError(f"{name}: {what} frames are numbered from 1, found {rows[:, 0].min():g}")
    return rows


def _dense_ids(ids: NDArray[np.float64]) -> NDArray[np.int64]:
    """Ids renumbered 0, 1, 2, … (TrackEval indexes arrays by id)."""
    _, dense = np.unique(ids, return_inverse=True)
    return dense.astype(np.int64)


def _split_by_frame(frame: NDArray[np.float64], frames: int) -> list[NDArray[np.intp]]:
    """Row indices of each frame 1..frames."""
    order = np.argsort(frame, kind="stable")
    bounds = np.searchsorted(frame[order], np.arange(1, frames + 2))
    return [order[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def _scores(res: dict[str, dict[str, Any]], ids: int, true_ids: int, frames: int) -> TrackingScores:
    clear, identity, hota = res["clear"], res["identity"], res["hota"]
    return TrackingScores(
        mota=float(clear["MOTA"]),
        motp=float(clear["MOTP"]),
        idf1=float(identity["IDF1"]),
        idp=float(identity["IDP"]),
        idr=float(identity["IDR"]),
        hota=float(np.mean(hota["HOTA"])),
        deta=float(np.mean(hota["DetA"])),
        assa=float(np.mean(hota["AssA"])),
        id_switches=int(clear["IDSW"]),
        fragmentations=int(clear["Frag"]),
        true_positives=int(clear["CLR_TP"]),
        false_positives=int(clear["CLR_FP"]),
        misses=int(clear["CLR_FN"]),
        recall=float(clear["CLR_Re"]),
        precision=float(clear["CLR_Pr"]),
        mostly_tracked=int(clear["MT"]),
        partly_tracked=int(clear["PT"]),
        mostly_lost=int(clear["ML"]),
        ids=ids,
        true_ids=true_ids,
        gt_boxes=int(clear["CLR_TP"]) + int(clear["CLR_FN"]),
        frames=frames,
    )
