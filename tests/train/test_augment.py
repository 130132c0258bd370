"""Training views: boxes move exactly with the pixels; the plain view is what the detector sees."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgepipe.export.convert import preprocess
from edgepipe.train.augment import augmented, jitter_colour, random_matrix, resized, warp_boxes, warp_image
from edgepipe.train.recipe import Augmentation

SIZE = 96


def _picture(xyxy: tuple[int, int, int, int], wh: tuple[int, int] = (160, 120)) -> np.ndarray:
    image = np.zeros((wh[1], wh[0], 3), np.uint8)
    x1, y1, x2, y2 = xyxy
    image[y1:y2, x1:x2] = 255  # pixels x1..x2-1: the box edges are at x1 and x2
    return image


def _white_box(image: np.ndarray) -> list[float]:
    """Bounding box of the bright pixels, with sub-pixel edges from partially covered pixels."""
    level = image[..., 0].astype(np.float64) / 255
    cols, rows = level.max(axis=0), level.max(axis=1)
    xs, ys = np.flatnonzero(cols > 0.02), np.flatnonzero(rows > 0.02)
    return [xs[0] + 1 - cols[xs[0]], ys[0] + 1 - rows[ys[0]], xs[-1] + cols[xs[-1]], ys[-1] + rows[ys[-1]]]


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_the_pixels_under_random_warps(seed: int) -> None:
    box = (40, 30, 100, 90)
    aug = Augmentation(translate=0.05, scale=(0.8, 1.2))  # keeps the square inside the picture
    matrix = random_matrix(np.random.default_rng(seed), 160, 120, SIZE, aug)
    warped_box, keep = warp_boxes(np.array([box], np.float32), matrix, SIZE)
    assert keep.tolist() == [True]
    assert _white_box(warp_image(_picture(box), matrix, SIZE)) == pytest.approx(
        warped_box[0].tolist(), abs=0.35
    )


def test_flip_mirrors_about_the_centre() -> None:
    aug = Augmentation(flip=1.0, scale=(1, 1), stretch_x=(1, 1), stretch_y=(1, 1), translate=0.0)
    matrix = random_matrix(np.random.default_rng(0), 160, 120, 160, aug)  # no resize either (S = width)
    boxes, _ = warp_boxes(np.array([[10, 20, 50, 60]], np.float32), matrix, 160)
    assert boxes[0].tolist() == pytest.approx([110, 20 * 160 / 120, 150, 60 * 160 / 120])


def test_boxes_pushed_out_of_the_picture_are_dropped() -> None:
    shift = np.array([[1.0, 0, 200], [0, 1, 0], [0, 0, 1]])
    boxes, keep = warp_boxes(np.array([[0, 0, 10, 10], [150, 0, 160, 10]], np.float32), shift, 300)
    assert keep.tolist() == [True, False]
    assert boxes[0].tolist() == [200, 0, 210, 10]


def test_plain_view_is_the_export_preprocessing() -> None:
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    view = resized(image, np.array([[16, 12, 80, 60]], np.float32), np.array([0]), SIZE)
    np.testing.assert_array_equal(view.image, preprocess(image, SIZE)[0])
    assert view.xyxy[0].tolist() == pytest.approx([9.6, 9.6, 48, 48])


def test_the_same_generator_seed_gives_the_same_view() -> None:
    image = cv2.GaussianBlur(
        np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 2
    )
    boxes, labels = np.array([[40, 30, 100, 90]], np.float32), np.array([0])
    a, b, c = (
        augmented(image, boxes, labels, SIZE, Augmentation(), np.random.default_rng(s)) for s in (7, 7, 8)
    )
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    assert not np.array_equal(a.image, c.image)


def test_colour_jitter_with_probability_zero_changes_nothing() -> None:
    image = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    same = jitter_colour(image, np.random.default_rng(0), Augmentation(colour_probability=0.0))
    np.testing.assert_allclose(same, image.astype(np.float32), atol=1e-4)


def test_contrast_only_scales_pixels() -> None:
    aug = Augmentation(colour_probability=1.0, brightness=0.0, contrast=(1.25, 1.25), saturation=(1, 1))
    image = np.full((4, 4, 3), 100, np.uint8)
    np.testing.assert_allclose(jitter_colour(image, np.random.default_rng(0), aug), 125.0, atol=1e-3)
