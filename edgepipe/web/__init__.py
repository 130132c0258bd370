"""The process's web server (off unless a pipeline file has an `http:` section): a page with every
pipeline's live annotated view, MJPEG streams and snapshots, /metrics, /healthz and /api/status.

    web = Web(settings, [cfg.name for cfg in configs])
    with web.server:                    # binds now: a port in use fails before the model compiles
        pipelines = [build(cfg, pool, watcher=web.views[cfg.name],
                           prometheus=web.prometheus.pipeline(cfg.name)) for cfg in configs]
        run_pipelines(pipelines, runtime)

Each pipeline's loop hands its `LiveView` references to what it has (pipeline.Watcher); the server's
threads read only from the views. view.py: the hand-off and the JPEGs; server.py: the endpoints and
authentication; page.py: the HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgepipe.config import HttpConfig, PipelineConfig
from edgepipe.errors import ConfigError
from edgepipe.metrics import LoopReading, PrometheusMetrics
from edgepipe.web.server import WebServer
from edgepipe.web.view import LiveView

__all__ = ["LiveView", "Web", "WebServer", "process_settings"]


class Web:
    """A view per pipeline, the process's Prometheus metrics and the server over both."""

    def __init__(self, settings: HttpConfig, pipelines: Sequence[str]) -> None:
        self.settings = settings
        self.views = {
            name: LiveView(name, stream_fps=settings.stream_fps, jpeg_quality=settings.jpeg_quality)
            for name in pipelines
        }
        self.prometheus = PrometheusMetrics(self._readings)
        self.server = WebServer(settings, list(self.views.values()), self.prometheus)

    def _readings(self) -> list[LoopReading]:
        return [reading for view in self.views.values() if (reading := view.reading()) is not None]


def process_settings(files: Sequence[tuple[str | Path, PipelineConfig]]) -> HttpConfig | None:
    """The one `http:` setting of a process running these pipeline files: the section of those that
    have one, which must all be the same (one server serves them all); None if none has one."""
    sections = [(str(path), cfg.http) for path, cfg in files if cfg.http is not None]
    if not sections:
        return None
    first_path, first = sections[0]
    differing = [path for path, section in sections[1:] if section != first]
    if differing:
        raise ConfigError(
            f"{', '.join(differing)}: http: differs from {first_path}'s; one server serves every pipeline of "
            "a process, so give the section in one file only, or the same in each"
        )
    return first
