"""What `edgepipe train` prints: durations, loss terms, and step lines only on a terminal."""

from __future__ import annotations

import io

import pytest

from edgepipe.train.progress import Progress, duration, loss_text
from edgepipe.train.reports import EpochReport, Scores, StepReport

TERMS = {"qfl": 0.4, "giou": 0.5, "dfl": 0.2, "aux_qfl": 1.0, "aux_giou": 0.5, "aux_dfl": 0.25}


@pytest.mark.parametrize(("seconds", "text"), [(4.4, "4s"), (75, "1m15s"), (3725, "1h02m"), (-3, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_loss_text_shows_the_main_terms_and_the_agm_sum() -> None:
    assert loss_text(2.85, TERMS) == "loss 2.850 (qfl 0.400 giou 0.500 dfl 0.200 | aux 1.750)"


def _step(batch: int) -> StepReport:
    return StepReport(epoch=0, batch=batch, batches=4, step=batch, total_steps=40, lr=1e-4, loss=2.85,
                      terms=TERMS, elapsed_s=2.0 * batch, steps_this_process=batch)  # fmt: skip


def test_a_terminal_gets_a_rewritten_step_line_with_eta() -> None:
    out = io.StringIO()
    Progress(out, epochs=10, interactive=True).step(_step(4))
    assert out.getvalue() == (
        "\r\033[Kepoch 1/10 [####################] 4/4 loss 2.850 (qfl 0.400 giou 0.500 dfl 0.200 | aux 1.750) "
        "lr 1.0e-04 2.0 s/step ETA 1m12s"
    )


def test_a_log_gets_only_epoch_lines() -> None:
    out = io.StringIO()
    progress = Progress(out, epochs=10, interactive=False)
    progress.step(_step(1))
    scores = Scores(0.375, 0.658, {"person": 0.375}, {"person": 0.658})
    progress.epoch(EpochReport(epoch=2, loss={"loss": 2.85, **TERMS}, scores=scores, best=True, seconds=149))
    assert out.getvalue() == (
        "epoch 3/10: loss 2.850 (qfl 0.400 giou 0.500 dfl 0.200 | aux 1.750), val mAP 0.375 AP50 0.658 (best), 2m29s\n"
    )
