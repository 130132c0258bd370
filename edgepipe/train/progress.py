"""What `edgepipe train` shows: a self-rewriting progress line with loss terms and ETA, one line per epoch.

On a terminal the step line rewrites itself; elsewhere (logs, CI) only the epoch lines are written.
No torch here: reports come in as plain numbers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from edgepipe.train.reports import EpochReport, Scores, StepReport

BAR_WIDTH = 20
REDRAW_S = 0.2


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def loss_text(loss: float, terms: dict[str, float]) -> str:
    """`loss 1.23 (qfl 0.41 giou 0.52 dfl 0.21 | aux 0.09)`: main terms, and the AGM's sum."""
    main = " ".join(f"{k} {terms[k]:.3f}" for k in ("qfl", "giou", "dfl") if k in terms)
    aux = sum(v for k, v in terms.items() if k.startswith("aux_"))
    return f"loss {loss:.3f} ({main} | aux {aux:.3f})"


def scores_text(scores: Scores) -> str:
    text = f"mAP {scores.map:.3f} AP50 {scores.ap50:.3f}"
    if len(scores.per_class_ap) > 1:
        text += " (" + ", ".join(f"{k} {v:.3f}" for k, v in scores.per_class_ap.items()) + ")"
    return text


class Progress:
    """Receives the loop's step and epoch reports and writes them to `stream`."""

    def __init__(self, stream: TextIO, epochs: int, interactive: bool) -> None:
        self.stream = stream
        self.epochs = epochs
        self.interactive = interactive
        self._last_draw = 0.0

    def step(self, report: StepReport) -> None:
        now = time.monotonic()
        if not self.interactive or (now - self._last_draw < REDRAW_S and report.batch < report.batches):
            return
        self._last_draw = now
        per_step = report.elapsed_s / report.steps_this_process
        done = int(BAR_WIDTH * report.batch / report.batches)
        line = (
            f"epoch {report.epoch + 1}/{self.epochs} [{'#' * done:<{BAR_WIDTH}}] {report.batch}/{report.batches} "
            f"{loss_text(report.loss, report.terms)} lr {report.lr:.1e} {per_step:.1f} s/step "
            f"ETA {duration(per_step * (report.total_steps - report.step))}"
        )
        self.stream.write(f"\r\033[K{line}")
        self.stream.flush()

    def epoch(self, report: EpochReport) -> None:
        if self.interactive:
            self.stream.write("\r\033[K")
        terms = {k: v for k, v in report.loss.items() if k != "loss"}
        line = f"epoch {report.epoch + 1}/{self.epochs}: {loss_text(report.loss.get('loss', 0.0), terms)}"
        if report.scores is not None:
            line += f", val {scores_text(report.scores)}{' (best)' if report.best else ''}"
        self.stream.write(f"{line}, {duration(report.seconds)}\n")
        self.stream.flush()
