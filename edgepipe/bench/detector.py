"""`edgepipe bench detector`: detector speed as a ratio to OpenVINO's own throughput, and COCO mAP.

Three speeds in one run, on the same compiled model and the same frames:
- limit: OpenVINO alone — an AsyncInferQueue whose requests hold a pre-filled input tensor;
- stage: `Detector.stream` over frames decoded beforehand (inference + copy + decode + NMS);
- video: decode → `Detector.stream` on a real video file, frames read as they are needed.
Rounds alternate limit/stage so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgepipe.config import DetectorConfig, FileSourceConfig, settings_from_options
from edgepipe.detect import Detector, ModelPool
from edgepipe.detect.runtime import frame_into
from edgepipe.errors import ConfigError, SourceError
from edgepipe.sources import FileSource, read_image
from edgepipe.types import Frame

# The official NanoDet evaluation: score > 0.05, class-aware NMS 0.6, at most 100 boxes per image.


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run: frames per second of wall time, and process CPU time (all threads) per frame."""

    fps: float
    cpu_ms: float


@dataclass(frozen=True, slots=True)
class SpeedReport:
    limit: list[Run]  # one per round
    stage: list[Run]
    video: list[Run]
    frames: int
    in_flight: int
    limit_requests: int

    @property
    def stage_ratio(self) -> float:
        """Median over rounds of stage FPS / limit FPS, each pair measured in the same round."""
        return statistics.median(s.fps / lim.fps for s, lim in zip(self.stage, self.limit, strict=True))

    @property
    def video_ratio(self) -> float:
        return statistics.median(v.fps / lim.fps for v, lim in zip(self.video, self.limit, strict=True))

    @property
    def cpu_ratio(self) -> float:
        """CPU per frame of the limit / of the stage: 1.0 means the stage adds no CPU work. Unlike
        FPS it hardly moves when other processes load the machine."""
        return statistics.median(r.cpu_ms for r in self.limit) / statistics.median(
            r.cpu_ms for r in self.stage
        )


def _timed(run: Callable[[], int]) -> Run:
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(count / wall, 1000.0 * cpu / count)


def read_frames(video: Path, count: int) -> list[Frame]:
    """The first `count` frames of a video, decoded into memory (looping if it is shorter)."""
    frames = list(iter_video(video, count))
    if not frames:
        raise SourceError(f"cannot read any frame from {video}: check the path and the codec")
    while len(frames) < count:
        frames.append(Frame(frames[len(frames) % len(frames)].image, len(frames), time.time(), None))
    return frames


def iter_video(video: Path, count: int) -> Iterator[Frame]:
    """Decode up to `count` frames of a video file, one at a time, as the pipeline's file source does."""
    with FileSource(FileSourceConfig(path=video)) as source:
        for frame in itertools.islice(source.frames(), count):
            if frame is not None:
                yield frame


def openvino_limit(
    compiled: Any,
    image: NDArray[np.uint8],
    requests: int,
    frames: int,
    inner_hw: tuple[int, int] | None = None,
) -> Run:
    """The compiled model alone: `requests` async requests that keep one pre-filled input tensor
    (the frame `image` resized into it once, as the detector does: `frame_into`)."""
    from openvino import AsyncInferQueue, Tensor

    queue = AsyncInferQueue(compiled, requests)
    network_input = np.zeros(tuple(compiled.inputs[0].get_shape()), np.uint8)
    frame_into(np.ascontiguousarray(image[None]), network_input, inner_hw)
    tensor = Tensor(network_input)
    for i in range(requests):
        queue[i].set_input_tensor(tensor)
    for _ in range(requests):  # warm-up: first inferences allocate memory for this input shape
        queue.start_async()
    queue.wait_all()

    def run() -> int:
        for _ in range(frames):
            queue.start_async()
        queue.wait_all()
        return frames

    return _timed(run)


def measure_speed(detector: Detector, video: Path, frames: int, rounds: int = 3) -> SpeedReport:
    """Limit, stage and video path back to back for `rounds`, the order rotating every round so
    that load from other processes and drift hit all three alike."""
    decoded = read_frames(video, frames)
    compiled = detector.compiled_for(decoded[0].image.shape[:2])  # the model the stage uses too
    optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    limit_requests = max(optimal, detector.in_flight)
    list(detector.stream(decoded[: 2 * detector.in_flight]))  # warm-up
    runs: dict[str, list[Run]] = {"limit": [], "stage": [], "video": []}
    measure: dict[str, Callable[[], Run]] = {
        "limit": lambda: openvino_limit(
            compiled, decoded[0].image, limit_requests, frames, detector.inner_hw(decoded[0].image.shape[:2])
        ),
        "stage": lambda: _timed(lambda: sum(1 for _ in detector.stream(decoded))),
        "video": lambda: _timed(lambda: sum(1 for _ in detector.stream(iter_video(video, frames)))),
    }
    order = list(measure)
    for round_ in range(rounds):
        for which in order[round_ % 3 :] + order[: round_ % 3]:
            runs[which].append(measure[which]())
    return SpeedReport(
        runs["limit"], runs["stage"], runs["video"], frames, detector.in_flight, limit_requests
    )


def coco_eval(model: Path, coco_dir: Path, *, pool: ModelPool, precision: str) -> dict[str, float]:
    """mAP@0.5:0.95 and AP50 on a COCO folder (val2017/ + annotations/instances_val2017.json),
    official NanoDet protocol: score > 0.05, class-aware NMS 0.6, at most 100, every class per anchor."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from edgepipe.evaluate import coco

    annotations = coco_dir / "annotations" / "instances_val2017.json"
    images_dir = coco_dir / "val2017"
    if not annotations.is_file() or not images_dir.is_dir():
        raise ConfigError(f"{coco_dir}: expected val2017/ and annotations/instances_val2017.json inside")
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotations))
    category_ids = sorted(truth.getCatIds())  # model class i is the i-th COCO category id
    settings = DetectorConfig(model=model, precision=precision, threshold=coco.SCORE_THRESHOLD,
                              nms_iou=coco.NMS_IOU, max_detections=coco.MAX_DETECTIONS)  # fmt: skip
    detector = Detector(settings, pool=pool, multi_label=True)
    if len(detector.labels) != len(category_ids):
        raise ConfigError(f"{model}: {len(detector.labels)} classes, COCO has {len(category_ids)}")
    results: list[dict[str, Any]] = []
    image_ids = sorted(truth.getImgIds())
    for image_id in image_ids:
        info = truth.loadImgs(image_id)[0]
        image = read_image(images_dir / info["file_name"])
        found = detector.detect(Frame(image, image_id, 0.0, None))
        for (x1, y1, x2, y2), score, class_id in zip(
            found.xyxy.tolist(), found.score.tolist(), found.class_id, strict=True
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[int(class_id)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    if not results:
        return {"mAP": 0.0, "AP50": 0.0, "images": float(len(image_ids))}
    evaluation = coco.bbox_evaluation(truth, results)
    return {
        "mAP": float(evaluation.stats[0]),
        "AP50": float(evaluation.stats[1]),
        "images": float(len(image_ids)),
    }


def _print_speed(model: Path, report: SpeedReport, precision: str, hint: str) -> None:
    print(
        f"{model.name} ({precision}, {hint}, {report.frames} frames x {len(report.limit)} rounds, "
        f"{report.in_flight} in flight; limit with {report.limit_requests} requests)"
    )
    print(f"  OpenVINO limit   {_runs(report.limit)}")
    print(
        f"  detector stage   {_runs(report.stage)}  FPS ratio {report.stage_ratio:.3f}  CPU ratio {report.cpu_ratio:.3f}"
    )
    print(f"  video decode+det {_runs(report.video)}  FPS ratio {report.video_ratio:.3f}")


def _runs(runs: list[Run]) -> str:
    fps = statistics.median(r.fps for r in runs)
    cpu = statistics.median(r.cpu_ms for r in runs)
    each = ", ".join(f"{r.fps:.1f}" for r in runs)
    return f"median {fps:6.1f} FPS, {cpu:5.1f} CPU ms/frame  [{each}]"


def bench_command(args: argparse.Namespace) -> int:
    from edgepipe.models import default_model_path

    models = [Path(m) for m in args.model] if args.model else [default_model_path()]
    if args.frames < 1 or args.rounds < 1:
        raise ConfigError("--frames and --rounds must be at least 1")
    if not args.no_speed and args.video is None:
        raise ConfigError("--video: give a video for the speed runs (or --no-speed with --coco)")
    pool = ModelPool()
    for model in models:
        if not args.no_speed:
            settings = settings_from_options(
                DetectorConfig,
                {"model": model, "precision": args.precision, "performance_hint": args.hint,
                 "in_flight": args.in_flight},
                {"model": "--model", "in_flight": "--in-flight"},
            )  # fmt: skip
            detector = Detector(settings, pool=pool)
            video = Path(args.video)
            _print_speed(
                model, measure_speed(detector, video, args.frames, args.rounds), args.precision, args.hint
            )
        if args.coco:
            scores = coco_eval(model, Path(args.coco), pool=pool, precision=args.precision)
            print(
                f"{model.name} ({args.precision}) COCO {int(scores['images'])} images "
                f"(score 0.05, NMS 0.6, max 100): "
                f"mAP@0.5:0.95 {scores['mAP']:.3f}  AP50 {scores['AP50']:.3f}"
            )
    return 0
