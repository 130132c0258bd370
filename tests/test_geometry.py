"""Plane geometry helpers with the expected values written out."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.geometry import distance_to_polygon_edges

# A U shape (concave): the notch x in (100, 200), y in (0, 200) is outside.
U_SHAPE = [(0, 0), (100, 0), (100, 200), (200, 200), (200, 0), (300, 0), (300, 300), (0, 300)]


@pytest.mark.parametrize(
    ("polygon", "point", "expected"),
    [
        (U_SHAPE, (50, 50), 50.0),  # inside the left arm: 50 px to x = 0, x = 100 and y = 0
        (U_SHAPE, (150, 50), 50.0),  # in the notch (outside): 50 px to both walls
        (U_SHAPE, (105, 195), 5.0),  # in the notch by its inner corner: 5 px to the wall and the floor
        # 10 px below the notch floor's infinite line and 40 px left of its wall's, but nearest
        # to their shared corner (100, 200): the distance is to segments, not lines.
        (U_SHAPE, (60, 210), 41.231056),
        (U_SHAPE, (310, 310), 14.142136),  # beyond a convex corner: to the corner (300, 300)
        (U_SHAPE, (350, 150), 50.0),  # outside, right of x = 300
        (U_SHAPE, (300, 120), 0.0),  # on an edge
        (U_SHAPE, (0, 0), 0.0),  # on a vertex
        # A repeated vertex (zero-length edge) measures to the vertex instead of dividing by zero.
        ([(0, 0), (0, 0), (10, 0), (10, 10), (0, 10)], (3, 4), 3.0),
    ],
)
def test_distance_to_polygon_edges(
    polygon: list[tuple[int, int]], point: tuple[float, float], expected: float
) -> None:
    distance = distance_to_polygon_edges(np.array([point], np.float64), np.array(polygon, np.float64))
    assert distance.shape == (1,)
    assert distance[0] == pytest.approx(expected, abs=1e-6)


def test_distance_to_polygon_edges_vectorised_and_empty() -> None:
    points = np.array([[50, 50], [150, 50], [310, 310]], np.float64)
    np.testing.assert_allclose(
        distance_to_polygon_edges(points, np.array(U_SHAPE)), [50.0, 50.0, 14.142136], atol=1e-6
    )
    assert distance_to_polygon_edges(np.empty((0, 2)), np.array(U_SHAPE)).shape == (0,)
