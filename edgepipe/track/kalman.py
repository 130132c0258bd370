"""The constant-velocity Kalman filter of SORT, batched over all tracks as 2x2 blocks.

The state is [cx, cy, s, r, vx, vy, vs]: box centre, area s = w·h and aspect ratio r = w / h,
with velocities for all but r, in pixels per frame. Every SORT matrix (F, H, Q, R and the
initial P) is block-diagonal: each of cx, cy, s and r is coupled only to its own velocity. So P
stays block-diagonal, and one track's filter is four independent 2-state filters (r with a
velocity pinned at 0). That is exactly the 7-state filter, stored as 2x2 blocks: predict is one
matrix product over all tracks, update is elementwise.

A tracker keeps one float64 row per track (one gather, scatter or compaction moves a whole
track): the filter takes the first FILTER_COLUMNS columns, the tracker's bookkeeping follows,
and one column that is always 1.0 lets predict add the process noise, and count frames, in the
same matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

# Five groups of four columns, one entry per coordinate cx, cy, s, r: mean position, mean
# velocity ([vx, vy, vs, vr]) and the covariance block [[pp, pv], [pv, vv]].
POS, VEL, PP, PV, VV = (slice(i, i + 4) for i in range(0, 20, 4))
FILTER_COLUMNS = 20


@dataclass(frozen=True)
class Noise:
    """Per-coordinate (cx, cy, s, r) noise: process (position, velocity), measurement, initial."""

    q_pos: NDArray[np.float64]
    q_vel: NDArray[np.float64]
    r: NDArray[np.float64]
    p0_pos: NDArray[np.float64]
    p0_vel: NDArray[np.float64]


# The reference's Q = diag(1, 1, 1, 1, .01, .01, .0001), R = diag(1, 1, 10, 10) and
# P0 = 10·diag(1, 1, 1, 1, 1000, 1000, 1000) (large: the first velocity is unknown).
# vr does not exist in SORT: zero noise and zero variance keep it at exactly 0.
SORT_NOISE = Noise(
    q_pos=np.array([1.0, 1.0, 1.0, 1.0]),
    q_vel=np.array([1e-2, 1e-2, 1e-4, 0.0]),
    r=np.array([1.0, 1.0, 10.0, 10.0]),
    p0_pos=np.array([10.0, 10.0, 10.0, 10.0]),
    p0_vel=np.array([1e4, 1e4, 1e4, 0.0]),
)


@dataclass
class KalmanFilter:
    """Predict and correct for the track rows of one tracker.

    `one` is the column that is always 1.0; `counters` are columns that predict adds 1.0 to on
    every call (whatever the step), e.g. updates since the last match."""

    row_size: int
    one: int
    counters: tuple[int, ...] = ()
    noise: Noise = SORT_NOISE
    _one_step: NDArray[np.float64] = field(init=False, repr=False)
    _noise_blocks: dict[int, NDArray[np.float64]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._one_step = self.transition(1)

    def transition(self, step: int) -> NDArray[np.float64]:
        """Predict over `step` frames as `row @ a` on track rows: x' = F x, P' = F P Fᵀ + Σ Fⁱ Q Fⁱᵀ.

        Per coordinate F = [[1, k], [0, 1]] with k = step, so pp' = pp + 2k·pv + k²·vv, pv' = pv + k·vv,
        and the process noise of k single steps adds up to k·q_pos + (k-1)k(2k-1)/6·q_vel,
        (k-1)k/2·q_vel and k·q_vel (the same as calling predict k times); it enters through the
        constant 1 column, as do the counters."""
        k = float(step)
        q_pos, q_vel = self.noise.q_pos, self.noise.q_vel
        a = np.eye(self.row_size)
        for j in range(4):
            a[VEL.start + j, POS.start + j] = k
            a[PV.start + j, PP.start + j] = 2 * k
            a[VV.start + j, PP.start + j] = k * k
            a[VV.start + j, PV.start + j] = k
        a[self.one, PP] = k * q_pos + (k - 1) * k * (2 * k - 1) / 6 * q_vel
        a[self.one, PV] = (k - 1) * k / 2 * q_vel
        a[self.one, VV] = k * q_vel
        for column in self.counters:
            a[self.one, column] = 1.0
        return a

    def predict(self, rows: NDArray[np.float64], step: int) -> None:
        """Advance track rows (N, row_size) by `step` frames, in place."""
        rows[:] = rows.dot(self._one_step if step == 1 else self.transition(step))
        # SORT's guard for a shrinking box: where the predicted area s + k·vs is <= 0, vs = 0 and
        # s keeps its value. Checked after the fact because it almost never happens.
        vanished = rows[:, 2] <= 0.0
        if np.count_nonzero(vanished):
            rows[vanished, 2] -= step * rows[vanished, 6]
            rows[vanished, 6] = 0.0

    def correct(self, fields: NDArray[np.float64], z: NDArray[np.float64]) -> None:
        """Kalman update, in place, of track fields transposed, (row_size, K) one field per row,
        with measurements z, (4, K) cx, cy, s, r.

        Per coordinate: S = pp + R, Kp = pp / S, Kv = pv / S; the covariance becomes pp·R/S,
        pv·R/S and vv - Kv·pv. Transposed, every operand is a contiguous (4, K) block, which numpy
        handles several times faster than strided column views."""
        k = fields.shape[1]
        pos, vel, pp, pv, vv = fields[POS], fields[VEL], fields[PP], fields[PV], fields[VV]
        noise = self._noise_blocks.get(k)
        if noise is None:
            noise = self._noise_blocks[k] = np.repeat(self.noise.r, k).reshape(4, k)
        innovation_var = pp + noise
        gain_pos = pp / innovation_var
        gain_vel = pv / innovation_var
        innovation = z - pos
        gain_pos *= innovation
        pos += gain_pos
        innovation *= gain_vel
        vel += innovation
        gain_vel *= pv
        vv -= gain_vel
        noise_share = np.divide(noise, innovation_var, out=innovation_var)  # R / S = 1 - Kp
        pp *= noise_share
        pv *= noise_share

    def initial_row(self) -> NDArray[np.float64]:
        """A row at rest with the initial covariance and 1.0 in the `one` column; positions 0."""
        row = np.zeros(self.row_size)
        row[PP] = self.noise.p0_pos
        row[VV] = self.noise.p0_vel
        row[self.one] = 1.0
        return row
