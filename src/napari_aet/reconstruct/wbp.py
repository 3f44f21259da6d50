"""Weighted back-projection as a reconstruction method, and the starting volume of the iterative ones
(the back-projection itself is :func:`napari_aet.backprojection.weighted_backprojection`).
"""

from __future__ import annotations

import numpy as np

from ..backprojection import relative_residual, weighted_backprojection
from ..geometry import Projector
from ..model import InputError, TiltSeries
from ._common import IterationState, check_volume


def iterate_wbp(series: TiltSeries, thickness=None):
    """WBP as a one-step iteration (so every method shares one generator API); computed at once."""
    volume = weighted_backprojection(series, thickness)
    reprojected = Projector(volume.shape, series.angles, series.projections.shape[1:]).forward(volume)
    errors = {"r_factor": [relative_residual(series.projections, reprojected)]}
    return iter([IterationState(1, 1, volume, errors, final=True)])


def starting_volume(series: TiltSeries, initial, shape, thickness=None) -> np.ndarray:
    """The first estimate of an iterative method: ``initial`` = "zeros", "wbp" or a volume of ``shape``."""
    if not isinstance(initial, str):
        return check_volume("initial volume", initial, shape)
    if initial not in ("zeros", "wbp"):
        raise InputError(f"initial must be 'zeros', 'wbp' or a volume, got {initial!r}")
    return np.zeros(shape, np.float32) if initial == "zeros" else weighted_backprojection(series, thickness)
