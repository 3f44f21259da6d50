"""Real-space iterative reconstruction (RESIRE / SIRT family) with the shared projector.

``x <- P(x - step * C A^T R (A x - b))`` where ``A`` is the
:class:`~napari_aet.geometry.Projector`, ``A^T`` its exact adjoint, ``R = 1 / (A 1)`` the
inverse ray lengths, ``C = 1 / (A^T 1)`` the inverse voxel coverage and ``P`` the projection
on the constraints (support and positivity). ``C`` and ``R`` are diagonal, so clipping is
the exact projection in the metric that makes this a preconditioned projected gradient
descent on ``||A x - b||^2_R``: it converges for any ``0 < step < 2``.

With ``accelerate=True`` the gradient step is taken from an extrapolated point
(Nesterov/FISTA momentum, step <= 1). It fits the data in far fewer iterations (on the
simulated 128³ FePt sample 60 accelerated iterations traced as many atoms as 300 plain
ones), but it also reaches the model-mismatch and noise floor sooner, so it is off by default.
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


def iterate_resire(series: TiltSeries, n_iterations=50, step=1.8, accelerate=False, support=None,
                   positivity=True, initial="zeros", thickness=None):
    """A generator of :class:`IterationState`, one per RESIRE iteration (input checked at once).

    series : aligned TiltSeries. n_iterations : iterations to run.
    step : relaxation, in (0, 2) for plain iterations and (0, 1] with ``accelerate``.
    accelerate : Nesterov (FISTA) momentum; fits the data in far fewer iterations.
    support : optional ``(nz, ny, nx)`` mask (non-zero = object may exist there).
    positivity : clip negative voxels. initial : "zeros", "wbp" or an ``(nz, ny, nx)`` array.
    thickness : nz in voxels (default nx).
    errors["r_factor"][k] is ``sum|A x_k - b| / sum|b|`` of the volume yielded at step k.
    """
    check_aligned(series)
    n_iterations = check_count("n_iterations", n_iterations)
    limit = 1.0 if accelerate else 2.0
    if not (0 < step < limit or (accelerate and step == limit)):
        interval = "(0, 1] with accelerate=True" if accelerate else "(0, 2)"
        raise InputError(f"step must lie in {interval} for the iteration to converge, got {step}")
    shape = volume_shape(series, thickness)
    mask = check_volume("support", support, shape, bool)
    x = starting_volume(series, initial, shape, thickness)
    b = series.projections
    projector = Projector(shape, series.angles, b.shape[1:])
    row = _inverse(projector.forward(np.ones(shape, np.float32)))
    col = step * _inverse(projector.adjoint(np.ones(b.shape, np.float32)))

    def steps(x):
        errors = {"r_factor": []}
        projected = projector.forward(x)
        # the gradient is taken at `point` (x itself without acceleration); its projection
        # follows from linearity, so each iteration costs one forward and one adjoint.
        point, projected_point, momentum = x, projected, 1.0
        for iteration in range(1, n_iterations + 1):
            new = point - col * projector.adjoint(row * (projected_point - b))
            if mask is not None:
                new *= mask
            if positivity:
                np.maximum(new, 0, out=new)
            projected_new = projector.forward(new)
            if accelerate:
                next_momentum = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
                beta = np.float32((momentum - 1) / next_momentum)
                point = new + beta * (new - x)
                projected_point = projected_new + beta * (projected_new - projected)
                momentum = next_momentum
            else:
                point, projected_point = new, projected_new
            x, projected = new, projected_new
            errors["r_factor"].append(relative_residual(b, projected))
            yield IterationState(iteration, n_iterations, x, {k: list(v) for k, v in errors.items()},
                                 final=iteration == n_iterations)

    return steps(x)
