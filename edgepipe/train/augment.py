"""Training images: the official NanoDet-Plus augmentation (warp.py, color.py), in numpy and OpenCV.

One affine matrix does random scale, stretch, flip and shift together with the resize to SxS
(`keep_ratio: False`, as the official config and the runtime's plain resize), so the image and its
boxes move exactly alike. Randomness comes from a numpy Generator passed in, so a sample's
augmentation depends only on its seed. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgepipe.modelcard import NANODET_MEAN_BGR, NANODET_STD_BGR
from edgepipe.train.recipe import Augmentation

# Warped boxes narrower or lower than this (mostly pushed out of the picture) are dropped: with no
# prior centre inside them they could only be matched as zero-IoU positives.
MIN_BOX_SIDE_PX = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class TrainImage:
    """One network input and its targets, in input pixels."""

    image: NDArray[np.float32]  # (3, S, S) normalised BGR, as export.convert.preprocess
    xyxy: NDArray[np.float32]  # (K, 4)
    class_id: NDArray[np.int64]  # (K,)


def random_matrix(
    rng: np.random.Generator, width: int, height: int, size: int, aug: Augmentation
) -> NDArray[np.float64]:
    """3x3 affine map from image coordinates to input coordinates (continuous, pixel edges at integers).

    Order as ShapeTransform: centre the image, scale, stretch, flip, move the centre to a random
    point (0.5 ± translate of the side), then resize to SxS."""
    centre = _translation(-width / 2, -height / 2)
    scale = rng.uniform(*aug.scale)
    zoom = np.diag([scale * rng.uniform(*aug.stretch_x), scale * rng.uniform(*aug.stretch_y), 1.0])
    flip = np.diag([-1.0 if rng.random() < aug.flip else 1.0, 1.0, 1.0])
    shift = _translation(
        rng.uniform(0.5 - aug.translate, 0.5 + aug.translate) * width,
        rng.uniform(0.5 - aug.translate, 0.5 + aug.translate) * height,
    )
    resize = np.diag([size / width, size / height, 1.0])
    matrix: NDArray[np.float64] = resize @ shift @ flip @ zoom @ centre
    return matrix


def warp_image(image: NDArray[np.uint8], matrix: NDArray[np.float64], size: int) -> NDArray[np.uint8]:
    """`image` warped by `matrix` into an SxS picture, bilinear, black outside.

    OpenCV maps pixel indices, whose centres are at i + 0.5 in box coordinates: conjugating by that
    half-pixel shift keeps the picture where the boxes say it is (as cv2.resize does)."""
    import cv2

    to_index = _translation(-0.5, -0.5) @ matrix @ _translation(0.5, 0.5)
    warped = cv2.warpAffine(image, to_index[:2], (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return np.asarray(warped, np.uint8)


def warp_boxes(
    xyxy: NDArray[np.float32], matrix: NDArray[np.float64], size: int
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Boxes mapped by `matrix` (the box around the four moved corners), clipped to the input;
    and which of them keep both sides >= MIN_BOX_SIDE_PX."""
    if len(xyxy) == 0:
        return xyxy.reshape(0, 4), np.zeros(0, np.bool_)
    x1, y1, x2, y2 = xyxy.astype(np.float64).T
    corners = np.stack(
        [np.stack([x, y, np.ones_like(x)], axis=1) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))],
        axis=1,
    )
    moved = corners @ matrix.T  # (K, 4 corners, 3)
    out = np.concatenate([moved[..., :2].min(axis=1), moved[..., :2].max(axis=1)], axis=1)
    np.clip(out, 0.0, float(size), out=out)
    keep = ((out[:, 2] - out[:, 0]) >= MIN_BOX_SIDE_PX) & ((out[:, 3] - out[:, 1]) >= MIN_BOX_SIDE_PX)
    return out.astype(np.float32), keep


def jitter_colour(
    image: NDArray[np.uint8], rng: np.random.Generator, aug: Augmentation
) -> NDArray[np.float32]:
    """Brightness, contrast and saturation changes on [0, 1] BGR pixels, each with probability
    `colour_probability` (color_aug_and_norm); returns pixels back on the 0..255 scale, not clipped."""
    import cv2

    pixels = image.astype(np.float32) / 255.0
    if rng.random() < aug.colour_probability:
        pixels += np.float32(rng.uniform(-aug.brightness, aug.brightness))
    if rng.random() < aug.colour_probability:
        pixels *= np.float32(rng.uniform(*aug.contrast))
    if rng.random() < aug.colour_probability:
        hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV)
        hsv[..., 1] *= np.float32(rng.uniform(*aug.saturation))
        pixels = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), np.float32)
    return np.asarray(pixels * 255.0, np.float32)


def normalise(pixels: NDArray[np.floating]) -> NDArray[np.float32]:
    """(S, S, 3) BGR on the 0..255 scale → (3, S, S) (x - mean) / std, the NanoDet input."""
    mean = np.array(NANODET_MEAN_BGR, np.float32)
    std = np.array(NANODET_STD_BGR, np.float32)
    return np.ascontiguousarray(((pixels.astype(np.float32) - mean) / std).transpose(2, 0, 1))


def augmented(
    image: NDArray[np.uint8],
    xyxy: NDArray[np.float32],
    class_id: NDArray[np.int64],
    size: int,
    aug: Augmentation,
    rng: np.random.Generator,
) -> TrainImage:
    """One random training view of an image and its boxes."""
    height, width = image.shape[:2]
    matrix = random_matrix(rng, width, height, size, aug)
    boxes, keep = warp_boxes(xyxy, matrix, size)
    pixels = jitter_colour(warp_image(image, matrix, size), rng, aug)
    return TrainImage(normalise(pixels), boxes[keep], class_id[keep])


def resized(
    image: NDArray[np.uint8], xyxy: NDArray[np.float32], class_id: NDArray[np.int64], size: int
) -> TrainImage:
    """The image as the detector sees it (plain resize) with its boxes scaled alike: no randomness."""
    import cv2

    height, width = image.shape[:2]
    pixels = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    boxes, keep = warp_boxes(xyxy, np.diag([size / width, size / height, 1.0]), size)
    return TrainImage(normalise(np.asarray(pixels)), boxes[keep], class_id[keep])


def _translation(dx: float, dy: float) -> NDArray[np.float64]:
    matrix = np.eye(3)
    matrix[0, 2], matrix[1, 2] = dx, dy
    return matrix
