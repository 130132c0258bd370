"""The process around the pipelines: one thread per pipeline, SIGTERM/SIGINT, sd_notify to systemd."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from edgepipe.systemd import Notifier

if TYPE_CHECKING:  # not imported at run time: `edgepipe run` takes signals before the heavy imports
    from edgepipe.pipeline import Lifecycle, Pipeline, RunStats
    from edgepipe.types import FrameResult

log = logging.getLogger(__name__)


def run_pipelines(
    pipelines: list[Pipeline],
    lifecycle: Lifecycle,
    on_frame: Callable[[FrameResult, RunStats], object] | None = None,
) -> list[RunStats]:
    """Run the pipelines to their end: one on the calling thread (each frame's result handed to
    `on_frame`), several on a thread each while the calling (main) thread waits, so that it can
    still take signals."""
    if len(pipelines) == 1:
        pipeline = pipelines[0]
        for result in pipeline.results(lifecycle):
            if on_frame is not None:
                on_frame(result, pipeline.stats)
        return [pipeline.stats]
    results: dict[str, RunStats] = {}
    errors: list[BaseException] = []

    def work(pipeline: Pipeline) -> None:
        try:
            results[pipeline.name] = pipeline.run(lifecycle)
        except BaseException as error:  # re-raised on the main thread below
            errors.append(error)
            for other in pipelines:
                other.stop()

    threads = [threading.Thread(target=work, args=(p,), name=f"pipeline-{p.name}") for p in pipelines]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join keeps the main thread responsive to signals
            thread.join(timeout=0.5)
    if errors:
        raise errors[0]
    return [results[p.name] for p in pipelines]


class Runtime:
    """What the process adds around its pipelines: SIGTERM/SIGINT, and sd_notify to systemd. It is
    the pipelines' Lifecycle: their loops call ready/alive/status on it.

    READY=1 once every pipeline has its model compiled and its source open; WATCHDOG=1 only while
    every running pipeline's frame loop is alive (one hung camera loop gets the service restarted);
    STATUS= with each pipeline's last status line; STOPPING=1 on a signal or at the end. The first
    SIGTERM/SIGINT stops the sources and lets each loop drain, flush and publish "offline"; a second
    one raises KeyboardInterrupt (exit 130).
    """

    def __init__(self, notifier: Notifier) -> None:
        self.pipelines: list[Pipeline] = []
        self.notifier = notifier
        self.signal_name: str | None = None
        self._lock = threading.Lock()  # pipeline threads call in; the signal handler never takes it
        self._ready: set[str] = set()
        self._alive: set[str] = set()
        self._status: dict[str, str] = {}
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Runtime:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self.signal_name is None:
            self.notifier.stopping()
        self.notifier.close()

    def attach(self, pipelines: Sequence[Pipeline]) -> None:
        """The pipelines this process runs. Signal handlers are in place before they are built (the
        model compile takes a while): a signal that came meanwhile stops them at once."""
        self.pipelines = list(pipelines)
        if self.signal_name is not None:
            for pipeline in self.pipelines:
                pipeline.stop()

    def ready(self, pipeline: str) -> None:
        with self._lock:
            self._ready.add(pipeline)
            if len(self._ready) == len(self.pipelines):
                names = ", ".join(p.name for p in self.pipelines)
                self.notifier.ready(status=f"running {names}")
                log.info("ready: %s", names)

    def alive(self, pipeline: str) -> None:
        with self._lock:
            self._alive.add(pipeline)
            running = {p.name for p in self.pipelines if p.stats.finished is None}
            if self._alive >= running and self.notifier.watchdog():
                self._alive.clear()

    def status(self, pipeline: str, line: str) -> None:
        with self._lock:
            self._status[pipeline] = line
            self.notifier.status(
                "; ".join(self._status[p.name] for p in self.pipelines if p.name in self._status)
            )

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.notifier.stopping()
        for pipeline in self.pipelines:
            pipeline.stop()
