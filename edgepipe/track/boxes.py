"""Box forms the trackers use: detection xyxy → the filter's [cx, cy, s, r] and IoU corners, and back.

s = w·h is the area and r = w / h the aspect ratio (SORT's state). IoU works on corners
x1, y1, -x2, -y2: with x2 and y2 negated, one elementwise maximum gives the inner box of a pair.
Arrays of several boxes are (4, N), one coordinate per row, so every operand is contiguous.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# [cx, cy, w, h] @ this = [cx - w/2, cy - h/2, cx + w/2, cy + h/2]; the other gives x1, y1, -x2, -y2
_CENTRE_SIZE_TO_XYXY = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]])
_CENTRE_SIZE_TO_CORNERS = (_CENTRE_SIZE_TO_XYXY * [1.0, 1.0, -1.0, -1.0]).T.copy()
# this.dot(x1, y1, x2, y2 rows) = cx, cy, w, h rows; the other = x1, y1, -x2, -y2 rows
_XYXY_TO_CENTRE_SIZE = np.array([[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5], [-1, 0, 1, 0], [0, -1, 0, 1]])
_XYXY_TO_CORNERS = np.diag([1.0, 1.0, -1.0, -1.0])


def measurements(xyxy: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(M, 4) xyxy → (4, M) corners x1, y1, -x2, -y2 and (4, M) cx, cy, s, r, float64.

    Raises ValueError naming the first row that is not a box (NaN, inf, zero or negative size)."""
    boxes = xyxy.T.astype(np.float64, order="C")
    m = boxes.shape[1]
    # Finite first (an inf would warn inside the products), then w, h > 0; counting beats all().
    valid = np.count_nonzero(np.isfinite(boxes)) == 4 * m
    if valid:
        z = _XYXY_TO_CENTRE_SIZE.dot(boxes)  # cx, cy, w, h
        valid = np.count_nonzero(z[2:] > 0.0) == 2 * m
    if not valid:
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(boxes).all(axis=0) & (boxes[2:] > boxes[:2]).all(axis=0))
        row = int(bad.nonzero()[0][0])
        raise ValueError(
            f"detection {row} has box {boxes[:, row].tolist()} (x1, y1, x2, y2): every box needs finite "
            "coordinates with x2 > x1 and y2 > y1"
        )
    aspect = z[2] / z[3]
    z[2] *= z[3]
    z[3] = aspect
    return _XYXY_TO_CORNERS.dot(boxes), z


def centre_size(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r with s, r > 0 → (4, N) cx, cy, w, h, contiguous: w = √(s·r), h = s / w."""
    out: NDArray[np.float64] = cxcysr.copy()
    np.multiply(cxcysr[2], cxcysr[3], out=out[2])
    np.sqrt(out[2], out=out[2])
    np.divide(cxcysr[2], out[2], out=out[3])
    return out


def xyxy(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r → (N, 4) xyxy."""
    boxes: NDArray[np.float64] = centre_size(cxcysr).T.dot(_CENTRE_SIZE_TO_XYXY)
    return boxes


def corners(cxcysr: NDArray[np.float64]) -> NDArray[np.float64]:
    """(4, N) cx, cy, s, r → (4, N) x1, y1, -x2, -y2."""
    out: NDArray[np.float64] = _CENTRE_SIZE_TO_CORNERS.dot(centre_size(cxcysr))
    return out
