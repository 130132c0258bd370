"""Overfit check: the whole training loop (assigner, losses, AGM, EMA, schedule) learns 8 real images.

Official COCO weights at 320, person only, no augmentation: AP50 on those 8 images must rise from the
start model's to at least 0.9. 32 steps of 4 images; about 45 s on the 2-core test machine when it is
idle, under 2 minutes when another job shares it (measured, not asserted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the extra: pip install 'edgepipe[train]'")

from edgepipe.train import checkpoint, loop  # noqa: E402
from edgepipe.train.checkpoint import RunInfo  # noqa: E402
from edgepipe.train.dataset import load_coco  # noqa: E402
from edgepipe.train.model import TrainingModel  # noqa: E402
from edgepipe.train.recipe import Recipe  # noqa: E402
from edgepipe.train.start import build_model, read_start  # noqa: E402

pytestmark = pytest.mark.slow
ARCH, SIZE, LABELS = "nanodet-plus-m", 320, ("person",)


def test_eight_images_are_learnt_to_ap50_090(shared_data: Path, shared_models: Path, tmp_path: Path) -> None:
    person = load_coco(shared_data / "coco", list(LABELS))
    images = person.subset(
        [i for i, s in enumerate(person.samples) if len(s.xyxy)][:8], "first 8 with persons"
    )
    assert images.num_boxes == 44
    model, new = build_model(
        read_start(shared_models / "nanodet-plus-m_320.onnx", ARCH), ARCH, LABELS, seed=0
    )
    assert new == ()  # the person outputs of the official model are kept
    cpu = torch.device("cpu")
    before = loop.evaluate(model, images, SIZE, cpu)
    recipe = Recipe(epochs=16, batch=4, lr=5e-4, warmup_steps=4, warmup_max_share=1.0, augment=False)
    job = loop.Run(
        RunInfo(ARCH, SIZE, LABELS, recipe, "official 320", agm_is_new=True), images, None, tmp_path, cpu
    )
    result = loop.run(job, model)
    trained = TrainingModel(model.spec, 1)
    trained.load_state_dict(checkpoint.load(result.last)[1].ema)  # the EMA weights, as exported
    after = loop.evaluate(trained, images, SIZE, cpu)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert before.ap50 < 0.8 and after.ap50 >= 0.9, (before.ap50, after.ap50)
    assert after.map > before.map + 0.2
