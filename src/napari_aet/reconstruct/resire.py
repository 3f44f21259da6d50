"""Real-space iterative reconstruction (RESIRE / SIRT family) with the shared projector.

``x <- P(x - step * C A^T R (A x - b))`` where ``A`` is the
:class:`~napari_aet.geometry.Projector`, ``A^T`` its exact adjoint, ``R = 1 / (A 1)`` the
inverse ray lengths, ``C = 1 / (A^T 1)`` the inverse voxel coverage and ``P`` the projection
on the constraints (support and positivity). ``C`` and ``R`` are diagonal, so clipping is
the exact projection in the metric that makes this a preconditioned projected gradient
descent on ``||A x - b||^2_R``: it converges for any ``0 < step < 2``.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Projector
from ..model import InputError, TiltSeries
from ._common import (
    IterationState,
    check_aligned,
    check_count,
    check_volume,
    relative_residual,
    volume_shape,
)
from .wbp import starting_volume


def _inverse(a):
    out = np.zeros_like(a)
    np.divide(1.0, a, out=out, where=a > 1e-6)
    return out


def iterate_resire(series: TiltSeries, n_iterations=50, step=1.8, support=None, positivity=True,
                   initial="zeros", thickness=None):
    """A generator of :class:`IterationState`, one per RESIRE iteration (input checked at once).

    series : aligned TiltSeries. n_iterations : iterations to run.
    step : relaxation in (0, 2); larger converges faster.
    support : optional ``(nz, ny, nx)`` mask (non-zero = object may exist there).
    positivity : clip negative voxels. initial : "zeros", "wbp" or an ``(nz, ny, nx)`` array.
    thickness : nz in voxels (default nx).
    errors["r_factor"][k] is ``sum|A x_k - b| / sum|b|`` of the volume yielded at step k.
    """
    check_aligned(series)
    n_iterations = check_count("n_iterations", n_iterations)
    if not 0 < step < 2:
        raise InputError(f"step must lie in (0, 2) for the iteration to converge, got {step}")
    shape = volume_shape(series, thickness)
    mask = check_volume("support", support, shape, bool)
    x = starting_volume(series, initial, shape, thickness)
    b = series.projections
    projector = Projector(shape, series.angles, b.shape[1:])
    row = _inverse(projector.forward(np.ones(shape, np.float32)))
    col = step * _inverse(projector.adjoint(np.ones(b.shape, np.float32)))
    residual = projector.forward(x) - b

    def steps(x, residual):
        errors = {"r_factor": []}
        for iteration in range(1, n_iterations + 1):
            x = x - col * projector.adjoint(row * residual)
            if mask is not None:
                x *= mask
            if positivity:
                np.maximum(x, 0, out=x)
            residual = projector.forward(x) - b
            errors["r_factor"].append(relative_residual(b, b + residual))
            yield IterationState(iteration, n_iterations, x, {k: list(v) for k, v in errors.items()},
                                 final=iteration == n_iterations)

    return steps(x, residual)
