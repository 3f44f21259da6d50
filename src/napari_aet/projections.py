"""The projections of a tilt series as images: pixel coordinates about the centre, the border
(background) level, and the alignment applied by resampling.

Projections are ``(n, ny, nx)``; pixel coordinates are x along columns and y along rows about the
centre pixel ``(ny // 2, nx // 2)`` (docs/conventions.md); shifts ``(n, 2)`` are (dy, dx) pixels.
A building block of alignment and refinement (docs/architecture.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import in_plane_rotation
from .model import TiltSeries


def pixel_coordinates(shape):
    """Pixel coordinates of an image ``shape`` (ny, nx): x ``(nx,)`` (columns) and y ``(ny,)`` (rows),
    float64 pixels relative to the centre ``n // 2``."""
    ny, nx = shape
    return np.arange(nx, dtype=np.float64) - nx // 2, np.arange(ny, dtype=np.float64) - ny // 2


def border_level(projections) -> np.ndarray:
    """Background level ``(n,)`` of each projection: the median of its 2-pixel border."""
    p = np.asarray(projections)
    border = np.concatenate([p[:, :2].reshape(len(p), -1), p[:, -2:].reshape(len(p), -1),
                             p[:, :, :2].reshape(len(p), -1), p[:, :, -2:].reshape(len(p), -1)], axis=1)
    return np.median(border, axis=1)


def apply_alignment(series: TiltSeries, *, order=3) -> TiltSeries:
    """The series resampled with its shifts applied and its tilt axis turned onto image y.

    First the shifts (``series.shifts[i] = (dy, dx)`` px moves projection i's content by +shift),
    then the tilt axis (``series.tilt_axis`` degrees from image y) is turned onto y: the output at
    axis-frame (u, v) is the input at ``R(a) (u, v) + centre - shift`` (docs/conventions.md,
    :func:`napari_aet.geometry.in_plane_rotation`). Sub-pixel spline
    interpolation of ``order``; pixels from outside the field of view take the projection's
    background level (:func:`border_level`). The result has the input's shape, zero shifts and
    ``tilt_axis = 0``; what was applied is recorded in ``metadata["alignment"]``.
    """
    ny, nx = series.projections.shape[1:]
    x, y = pixel_coordinates((ny, nx))
    u, v = np.meshgrid(x, y)
    rot = in_plane_rotation(series.tilt_axis)
    src_x = rot[0, 0] * u + rot[0, 1] * v + nx // 2
    src_y = rot[1, 0] * u + rot[1, 1] * v + ny // 2
    background = border_level(series.projections)
    out = np.empty_like(series.projections)
    for i, (dy, dx) in enumerate(series.shifts):
        out[i] = ndimage.map_coordinates(series.projections[i], [src_y - dy, src_x - dx], order=order,
                                         mode="grid-constant", cval=float(background[i]))
    record = {"shifts": series.shifts.tolist(), "tilt_axis": series.tilt_axis, "order": order}
    if "alignment" in series.metadata:
        record["previous"] = series.metadata["alignment"]
    metadata = {**series.metadata, "alignment": record}
    return series.replace(projections=out, shifts=np.zeros_like(series.shifts), tilt_axis=0.0,
                          metadata=metadata)
