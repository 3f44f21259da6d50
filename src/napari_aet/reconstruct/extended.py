"""Extended objects: films, substrates and neighbours that reach beyond the field of view.

An isolated particle lies inside the box at every tilt. A film does not: at a tilt θ the
detector column ``u`` sees the film along ``x = (u + z sin θ) / cos θ``, which at high tilt
lies far outside the box, so the edge columns of the high-tilt projections carry material
the box cannot hold. A reconstruction confined to the box puts that signal somewhere wrong
(streaks and bright corners). The extended-object geometry reconstructs a region wider than
the box along x (the direction the tilt carries material across the field), wide enough that
every ray through the detector crosses the whole depth inside it, and keeps the central box:
the published RESIRE codes do the same (``extendedobject``), and GENFIRE cannot, since the
Fourier slice theorem needs each projection of the whole object.

:func:`detect_geometry` tells the two cases apart from the data: the object seen at the image
edges across the tilt axis (all of them for a film, some for a neighbour entering the field).
"""

from __future__ import annotations

import numpy as np

from ..geometry import rotation_matrices
from ..model import InputError, TiltSeries
from ..projections import EDGE_SIGNAL_FILM, edge_signal

GEOMETRIES = ("auto", "particle", "film")


def detect_geometry(series: TiltSeries, threshold=EDGE_SIGNAL_FILM) -> tuple[str, float]:
    """``("film", s)`` when the object extends beyond the box, else ``("particle", s)``.

    s is the 90th percentile over the projections of :func:`edge_signal`: an isolated particle
    leaves the edges of every projection empty; a film fills them in every view, a neighbour
    entering the field in the views where it enters.
    """
    signal = float(np.percentile(edge_signal(series), 90))
    return ("film" if signal > threshold else "particle"), signal


def resolve_geometry(series: TiltSeries, geometry="auto") -> tuple[str, float]:
    """``geometry`` checked, with "auto" replaced by :func:`detect_geometry`'s answer; and the
    measured edge signal."""
    if geometry not in GEOMETRIES:
        raise InputError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    detected, signal = detect_geometry(series)
    return (detected if geometry == "auto" else geometry), signal


def background_for(geometry, background="auto") -> str:
    """The background to remove before reconstructing: ``background`` unless "auto", which is
    "smooth" (estimated outside the particle) for a particle and "none" for a film (no empty
    region to measure it in)."""
    if background != "auto":
        return background
    return "smooth" if geometry == "particle" else "none"


def extended_width(series: TiltSeries, thickness=None, limit=4.0) -> int:
    """Width (voxels along x) of a region in which every ray through the detector crosses the
    whole depth ``thickness`` (voxels, default nx) at every orientation of the series.

    With ``(u, v, w) = M (x, y, z)``, the column ``u`` meets depth ``z`` and row ``y`` at
    ``x = (u - M01 y - M02 z) / M00``. Capped at ``limit`` times nx (a tilt near 90° would need an
    endless region). Same parity as nx, so the centre voxel stays the rotation centre.
    """
    _, ny, nx = series.projections.shape
    nz = nx if thickness is None else int(thickness)
    m = rotation_matrices(series.angles)
    reach = (nx / 2 + np.abs(m[:, 0, 1]) * ny / 2 + np.abs(m[:, 0, 2]) * nz / 2) / np.maximum(np.abs(m[:, 0, 0]),
                                                                                         1e-6)
    width = min(int(np.ceil(2 * reach.max())) + 2, int(limit * nx))
    return max(nx, width + (width - nx) % 2)


def crop_to_box(region, nx) -> np.ndarray:
    """The central ``nx`` columns (x, last axis) of a region wider than the box, centre kept at ``nx // 2``."""
    start = region.shape[-1] // 2 - nx // 2
    return region[..., start:start + nx]


def pad_to_region(box, width) -> np.ndarray:
    """A box ``(nz, ny, nx)`` padded along x to ``width`` by repeating its edge columns (a support
    or starting volume for the region outside the box: a film continues as it is at the edge)."""
    nx = box.shape[-1]
    before = width // 2 - nx // 2
    return np.pad(box, [(0, 0), (0, 0), (before, width - nx - before)], mode="edge")


#: How RESIRE iterates on an extended object: Nesterov acceleration (on the measured Ta film the
#: fit and R-free level off within about 30 iterations, where the plain iteration needs hundreds)
#: and 5 % of the projections held out for R-free.
FILM_ITERATIONS = {"accelerate": True, "step": 1.0, "n_iterations": 40, "r_free_fraction": 0.05}


def film_parameters(series: TiltSeries, thickness=None) -> dict:
    """RESIRE parameters for an extended object: the region :func:`extended_width` wide,
    :data:`FILM_ITERATIONS`, and nearly single-axis Euler angles (within a pixel) projected as
    single tilts."""
    return {"object_width": extended_width(series, thickness), "thickness": thickness, **FILM_ITERATIONS,
            "single_axis_tolerance": 1.0}

