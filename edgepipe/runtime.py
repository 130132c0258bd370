"""The process around the pipelines: one thread per pipeline, SIGTERM/SIGINT, sd_notify to systemd."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence

from edgepipe.pipeline import Pipeline, RunStats
from edgepipe.systemd import Notifier

log = logging.getLogger(__name__)


def run_pipelines(
    pipelines: list[Pipeline], on_frame: Callable[[RunStats], object] | None = None
) -> list[RunStats]:
    """Run the pipelines to their end: one on the calling thread, several on a thread each while
    the calling (main) thread waits, so that it can still take signals."""
    if len(pipelines) == 1:
        return [pipelines[0].run(on_frame)]
    results: dict[str, RunStats] = {}
    errors: list[BaseException] = []

    def work(pipeline: Pipeline) -> None:
        try:
            results[pipeline.name] = pipeline.run()
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
    """What the process adds around its pipelines: SIGTERM/SIGINT, and sd_notify to systemd.

    READY=1 once every pipeline has its model compiled and its source open; WATCHDOG=1 only while
    every running pipeline's frame loop is alive (one hung camera loop gets the service restarted);
    STATUS= with each pipeline's last status line; STOPPING=1 on a signal or at the end. The first
    SIGTERM/SIGINT stops the sources and lets each loop drain, flush and publish "offline"; a second
    one raises KeyboardInterrupt (exit 130).
    """

    def __init__(self, pipelines: Sequence[Pipeline], notifier: Notifier) -> None:
        self.pipelines = list(pipelines)
        self.notifier = notifier
        self.signal_name: str | None = None
        self._lock = threading.Lock()  # pipeline threads call in; the signal handler never takes it
        self._ready: set[str] = set()
        self._alive: set[str] = set()
        self._status: dict[str, str] = {}
        self._previous: dict[int, object] = {}
        for pipeline in self.pipelines:
            pipeline.on_ready = lambda name=pipeline.name: self.ready(name)
            pipeline.on_alive = lambda name=pipeline.name: self.alive(name)
            pipeline.on_status = lambda line, name=pipeline.name: self.status(name, line)

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

    def ready(self, name: str) -> None:
        with self._lock:
            self._ready.add(name)
            if len(self._ready) == len(self.pipelines):
                names = ", ".join(p.name for p in self.pipelines)
                self.notifier.ready(status=f"running {names}")
                log.info("ready: %s", names)

    def alive(self, name: str) -> None:
        with self._lock:
            self._alive.add(name)
            running = {p.name for p in self.pipelines if p.stats.finished is None}
            if self._alive >= running and self.notifier.watchdog():
                self._alive.clear()

    def status(self, name: str, line: str) -> None:
        with self._lock:
            self._status[name] = line
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
