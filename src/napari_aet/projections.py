"""The projections of a tilt series as images: pixel coordinates about the centre, the border
(background) level, the alignment applied by resampling, and how much object the image edges
hold (a film fills them; alignment and reconstruction both ask).

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


#: Edge signal (:func:`edge_signal`) above which the object is taken to extend beyond the box,
#: reached by the 90th percentile of the projections: an isolated particle gives ~0, a film ~1,
#: a neighbour entering the field 0.7-0.9 (in the views it enters).
EDGE_SIGNAL_FILM = 0.35


def edge_signal(series: TiltSeries, margin=0.08, smoothing=2.0) -> np.ndarray:
    """Per projection ``(n,)``: how much object the two edge strips across the tilt axis hold
    compared with the image, the smaller of two ratios that both are ~0 for an isolated particle
    and ~1 for a film.

    * level: the mean in the edge strips over the mean of the whole image, both above the series'
      background level (the 1st percentile of all pixels, smoothed by ``smoothing`` pixels so
      that noise does not count);
    * structure: the standard deviation of the band-passed image (difference of Gaussians of 1
      and 3 pixels: atoms, not a slowly varying background or a level) in the edge strips over
      that in a central strip as wide as both.

    A slowly varying background raises the level but not the structure; noise at a very low dose
    raises both. series : an aligned series (tilt axis along image y). margin : strip width as a
    fraction of nx.
    """
    projections = np.asarray(series.projections, dtype=np.float64)
    nx = projections.shape[2]
    width = max(1, int(round(margin * nx)))
    centre = slice(nx // 2 - width, nx // 2 + width)

    def edges(images):
        return np.concatenate([images[:, :, :width], images[:, :, -width:]], axis=2)

    smooth = ndimage.gaussian_filter(projections, (0, smoothing, smoothing), mode="nearest")
    above = smooth - np.percentile(smooth, 1)
    level = edges(above).mean(axis=(1, 2)) / np.maximum(above.mean(axis=(1, 2)), np.finfo(np.float64).tiny)
    band = (ndimage.gaussian_filter(projections, (0, 1, 1), mode="nearest")
            - ndimage.gaussian_filter(projections, (0, 3, 3), mode="nearest"))
    structure = edges(band).std(axis=(1, 2)) / np.maximum(band[:, :, centre].std(axis=(1, 2)),
                                                          np.finfo(np.float64).tiny)
    return np.minimum(level, structure)
