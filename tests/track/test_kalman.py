"""The batched 2x2-block Kalman filter against a textbook 7-state filter with SORT's matrices."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edgepipe.track.kalman import FILTER_COLUMNS, POS, PP, PV, VEL, VV, KalmanFilter

ROW = FILTER_COLUMNS + 2  # the filter, a counter, the constant 1
COUNTER, ONE = FILTER_COLUMNS, FILTER_COLUMNS + 1


class Textbook:
    """x, P of SORT's 7-state filter; F, Q, R, P0 of Bewley et al. 2016."""

    def __init__(self, z: NDArray[np.float64]) -> None:
        self.F = np.eye(7)
        self.F[0, 4] = self.F[1, 5] = self.F[2, 6] = 1.0
        self.H = np.eye(4, 7)
        self.Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
        self.R = np.diag([1.0, 1.0, 10.0, 10.0])
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        self.x = np.concatenate([z, np.zeros(3)])

    def predict(self) -> None:
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q

    def update(self, z: NDArray[np.float64]) -> None:
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (z - self.H @ self.x)
        I_KH = np.eye(7) - K @ self.H
        self.P = I_KH @ self.P @ I_KH.T + K @ self.R @ K.T  # Joseph form


def as_textbook(row: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """x (7,) and P (7, 7) of one block row."""
    x = np.concatenate([row[POS], row[VEL][:3]])
    p = np.zeros((7, 7))
    for j in range(4):
        p[j, j] = row[PP][j]
    for j in range(3):
        p[4 + j, 4 + j] = row[VV][j]
        p[j, 4 + j] = p[4 + j, j] = row[PV][j]
    return x, p


def start(kalman: KalmanFilter, z: NDArray[np.float64]) -> NDArray[np.float64]:
    rows = kalman.initial_row()[None, :].copy()
    rows[0, POS] = z
    return rows


def test_predict_and_correct_equal_the_textbook_filter() -> None:
    rng = np.random.default_rng(1)
    kalman = KalmanFilter(ROW, one=ONE, counters=(COUNTER,))
    z = np.array([100.0, 50.0, 3200.0, 0.5])
    rows, reference = start(kalman, z), Textbook(z)
    for frame in range(1, 15):
        kalman.predict(rows, 1)
        reference.predict()
        z = np.array([100 + 4.0 * frame, 50 + 2.0 * frame, 3200 + 30.0 * frame, 0.5]) + rng.normal(0, 0.5, 4)
        fields = rows.T.copy()
        kalman.correct(fields, z[:, None])
        rows[:] = fields.T
        reference.update(z)
        x, p = as_textbook(rows[0])
        np.testing.assert_allclose(x, reference.x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p, reference.P, rtol=1e-9, atol=1e-9)
        assert rows[0, VEL][3] == 0.0  # r has no velocity in SORT
    assert rows[0, COUNTER] == 14.0  # one per predict call


def test_a_k_frame_step_equals_k_single_steps() -> None:
    kalman = KalmanFilter(ROW, one=ONE, counters=(COUNTER,))
    rows = start(kalman, np.array([10.0, 20.0, 800.0, 0.4]))
    rows[0, VEL] = [3.0, -1.0, 5.0, 0.0]
    once, stepwise = rows.copy(), rows.copy()
    kalman.predict(once, 5)
    for _ in range(5):
        kalman.predict(stepwise, 1)
    np.testing.assert_allclose(once[:, :FILTER_COLUMNS], stepwise[:, :FILTER_COLUMNS], rtol=1e-12)
    assert once[0, COUNTER] == 1.0  # counters count calls, not frames
    assert stepwise[0, COUNTER] == 5.0


def test_a_box_shrinking_to_nothing_keeps_its_area() -> None:
    kalman = KalmanFilter(ROW, one=ONE)
    rows = start(kalman, np.array([10.0, 20.0, 100.0, 0.5]))
    rows[0, VEL] = [1.0, 0.0, -150.0, 0.0]
    kalman.predict(rows, 1)
    # SORT's guard: a predicted area <= 0 keeps the old area and stops shrinking.
    assert rows[0, 2] == 100.0
    assert rows[0, 6] == 0.0
    assert rows[0, 0] == 11.0


def test_batched_rows_are_independent_filters() -> None:
    kalman = KalmanFilter(ROW, one=ONE)
    zs = np.array([[10.0, 20.0, 800.0, 0.4], [300.0, 200.0, 5000.0, 0.6], [50.0, 60.0, 1200.0, 0.5]])
    batch = np.concatenate([start(kalman, z) for z in zs])
    single = [start(kalman, z) for z in zs]
    measured = zs + np.array([2.0, 1.0, 20.0, 0.0])
    kalman.predict(batch, 1)
    fields = batch.T.copy()
    kalman.correct(fields, measured.T)
    for i, rows in enumerate(single):
        kalman.predict(rows, 1)
        one = rows.T.copy()
        kalman.correct(one, measured[i][:, None])
        np.testing.assert_allclose(fields[:, i], one[:, 0], rtol=1e-12)
