"""The Python API: a pipeline file's loop as an iterator, for notebooks and scripts.

    import edgepipe

    with edgepipe.open("pipelines/door.yml", max_frames=200) as run:
        for result in run:                      # one FrameResult per processed frame
            for event in result.events:
                print(event.to_json())
        print(run.counts())                     # {"entry": {"in": 6, "out": 0}, ...}

Events also go wherever the file's `outputs:` say (MQTT, JSON lines) unless `outputs=False`;
`publishers=[...]` adds consumers of your own (any object with the Publisher methods, or
`edgepipe.CallbackPublisher(on_event)`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from edgepipe.config import PipelineConfig, load_pipeline, source_from_argument
from edgepipe.detect import ModelPool
from edgepipe.pipeline import Pipeline, RunStats, build
from edgepipe.publish import Publisher
from edgepipe.types import Counts, FrameResult


class Run:
    """One run of a pipeline: iterate it for each frame's result; `with` closes it (the source,
    the outputs, a zone's last exits) even when you stop early."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._results: Iterator[FrameResult] | None = None

    def __iter__(self) -> Iterator[FrameResult]:
        if self._results is None:
            self._results = self.pipeline.results()
        return self._results

    def counts(self) -> Counts:
        """The running totals of every rule so far."""
        return self.pipeline.rules.counts()

    @property
    def stats(self) -> RunStats:
        """Frames, detections, tracks and events so far."""
        return self.pipeline.stats

    def stop(self) -> None:
        """End the run after the frames in flight (safe from another thread)."""
        self.pipeline.stop()

    def close(self) -> None:
        """End the run now: close the source and flush and close the outputs."""
        if self._results is not None:
            self._results.close()  # type: ignore[attr-defined]  # a generator

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    pipeline: str | Path | PipelineConfig,
    *,
    source: str | None = None,
    max_frames: int | None = None,
    outputs: bool = True,
    publishers: Sequence[Publisher] = (),
    pool: ModelPool | None = None,
) -> Run:
    """Build a pipeline from its YAML file (or a loaded config) and return its run, not yet started.

    `source` replaces the file's source (a path, a folder of images, a camera index or a stream
    URL); `max_frames` stops after that many frames; `outputs=False` leaves out the file's MQTT and
    JSON-lines outputs; `publishers` receive every event and count change; `pool` shares compiled
    models between runs. Bad settings raise ConfigError (or another EdgepipeError) here."""
    cfg = pipeline if isinstance(pipeline, PipelineConfig) else load_pipeline(pipeline)
    if source is not None:
        cfg = source_from_argument(source, cfg)
    built = build(
        cfg,
        pool if pool is not None else ModelPool(),
        max_frames=max_frames,
        outputs=outputs,
        publishers=publishers,
    )
    return Run(built)
