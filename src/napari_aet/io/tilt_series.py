"""Tilt series and frame stacks: read from any supported format, write as TIFF or MRC + .tlt.

Array layouts
-------------
``"stack"`` (default): ``(n_angles, ny, nx)``, image rows = y, columns = x.
``"genfire"``: GENFIRE-Python's ``(nx, ny, n_angles)`` arrays indexed ``[x, y, angle]``
(its gridding takes projection axis 0 as x and axis 1 as y); read as
``data.transpose(2, 1, 0)``. It is detected automatically when the last axis has one entry
per angle and the first two do not.
``"angles-last"``: ``(ny, nx, n_angles)``, an image stack with the angle axis last (never
detected: it cannot be told from GENFIRE's, which it mirrors); read as ``data.transpose(2, 0, 1)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..model import InputError, TiltSeries
from .angles import find_angle_file, read_angles, write_angles
from .arrays import ImageFile, read_image_file
from .files import atomic_write, suffix_of

LAYOUTS = ("stack", "genfire", "angles-last")
#: The array axes of each layout, as the report and summary name them.
LAYOUT_AXES = {"stack": "stack (angles, y, x)", "genfire": "genfire (x, y, angles)",
               "angles-last": "angles-last (y, x, angles)"}
#: How each layout's axes become (angles, y, x).
_TO_STACK = {"stack": (0, 1, 2), "genfire": (2, 1, 0), "angles-last": (2, 0, 1)}
WRITE_EXTENSIONS = {".tif", ".tiff", ".mrc", ".st", ".ali"}


def _angles_for(path: Path, angles, metadata_angles):
    """(angles, where they came from): explicit, sidecar, then file metadata."""
    if angles is None:
        sidecar = find_angle_file(path)
        if sidecar is not None:
            return read_angles(sidecar), str(sidecar)
        if metadata_angles is not None:
            return np.asarray(metadata_angles, dtype=np.float64), "file metadata"
        raise InputError(f"no tilt angles for {path.name}: give --angles FILE or put {path.stem}.tlt "
                         "beside it")
    if isinstance(angles, (str, os.PathLike)):
        return read_angles(angles), str(angles)
    return np.asarray(angles, dtype=np.float64), "given"


def projection_order(data, n_angles, layout=None, name="data") -> tuple[np.ndarray, str]:
    """``(n_angles, ny, nx)`` view of a 3D array stored in ``layout`` (None: detected — "genfire"
    when only the last axis has one entry per angle), and the layout used."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"{name} holds a {data.ndim}D array of shape {data.shape}: expected a stack of "
                         "projections (n_angles, ny, nx)")
    if layout is None:
        layout = "genfire" if data.shape[2] == n_angles and n_angles not in data.shape[:2] else "stack"
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return data.transpose(_TO_STACK[layout]), layout


def read_tilt_series(path, *, angles=None, pixel_size=None, tilt_axis=None, layout=None,
                     missing_pixel_size=None, exclude=None) -> TiltSeries:
    """Read a tilt series from TIFF, MRC (.mrc .st .ali), NPY, MAT, EMD or DM3/DM4.

    A 4D file ``(n_angles, n_frames, ny, nx)`` holds several fast frames per tilt: they are
    registered and summed (:func:`napari_aet.frames.register_frames`), and the drift of
    every frame (px, (dy, dx)) is kept in ``metadata["frame_drift"]``.

    Parameters
    ----------
    path : the data file.
    angles : None (a sidecar ``<stem>.tlt``, ``.rawtlt``, ``_angles.txt``, ``.angles.txt``,
        else angles in the file's metadata), an angle file path, or an array in degrees,
        ``(n,)`` tilts or ``(n, 3)`` Euler angles.
    pixel_size : Å; None takes it from the file's calibration.
    tilt_axis : degrees from the image y axis; None means 0.
    layout : ``"stack"`` ``(n, ny, nx)``, ``"genfire"`` ``(nx, ny, n)``, ``"angles-last"``
        ``(ny, nx, n)`` (an image stack with the angle axis last, not GENFIRE's), or None to detect
        (``"genfire"`` when only the last axis has one entry per angle, else ``"stack"``).
    missing_pixel_size : Å to use, flagged by ``metadata["pixel_size_unknown"] = True``, when
        neither ``pixel_size`` nor the file gives one; None raises InputError instead.
    exclude : projections to leave out, ``"10,20"`` (indices from 0 in the file's order), recorded
        in ``metadata["excluded_projections"]`` (and the kept ones' file indices in
        ``metadata["file_indices"]``, :meth:`TiltSeries.file_indices`); left out before the data are checked, so an image
        of NaN can be.
    """
    return tilt_series_from_image(read_image_file(path), Path(path), angles=angles, pixel_size=pixel_size,
                                  tilt_axis=tilt_axis, layout=layout, missing_pixel_size=missing_pixel_size,
                                  exclude=exclude)


def _unwrapped(data: np.ndarray, name: str) -> np.ndarray:
    """``data``, or, when it is unsigned 16-bit data whose spread shrinks to under a tenth read as
    signed (negative values, e.g. after a background subtraction, saved as unsigned wrap round to
    just below 65536), the same bits read as signed, with a warning."""
    if data.dtype != np.uint16 or data.size == 0:
        return data
    signed = data.view(np.int16)
    if np.std(signed, dtype=np.float64) < 0.1 * np.std(data, dtype=np.float64):
        warnings.warn(f"{name}: negative values saved as unsigned 16-bit integers (wrapped round to near 65535) "
                      "are read as the negative numbers they were", stacklevel=3)
        return signed
    return data


def kept_projections(n, exclude) -> tuple[np.ndarray, list[int]]:
    """Indices ``(m,)`` of the ``n`` projections kept when those listed in ``exclude`` ("10,20":
    indices from 0 in the file's order) are left out, and the sorted indices left out."""
    try:
        excluded = sorted({int(item) for item in str(exclude).replace(" ", "").split(",") if item})
    except ValueError:
        raise InputError(f"projections to leave out must be indices such as 10,20, got {exclude!r}") from None
    outside = [i for i in excluded if not 0 <= i < n]
    if outside:
        raise InputError(f"projections to leave out: no projection {outside} among the {n} (indices 0 to {n - 1})")
    kept = np.setdiff1d(np.arange(n), excluded)
    if len(kept) < 2:
        raise InputError(f"leaving out {len(excluded)} projections would leave {len(kept)}: at least 2 are needed")
    return kept, excluded


def tilt_series_from_image(image: ImageFile, path: Path, *, angles=None, pixel_size=None, tilt_axis=None,
                           layout=None, missing_pixel_size=None, exclude=None) -> TiltSeries:
    """The TiltSeries in an already read file (see :func:`read_tilt_series` for the parameters)."""
    angles, angles_from = _angles_for(path, angles, image.angles)
    data, frame_info = _unwrapped(image.data, path.name), {}
    if data.ndim == 4:
        from ..frames import merge_frames

        if data.shape[0] != len(angles) and data.shape[1] == len(angles):  # (frames, angles, y, x), e.g. Fiji's T
            data = data.swapaxes(0, 1)
        data, frame_info = merge_frames(data)
    data, layout = projection_order(data, len(angles), layout, path.name)
    if len(data) != len(angles):
        raise InputError(f"{path.name} holds {len(data)} projections but {len(angles)} angles were found "
                         f"({angles_from}): there must be one angle per projection")
    info = {**image.info, **frame_info, "angles_from": angles_from, "pixel_size_from": "given",
            "layout": LAYOUT_AXES[layout]}
    if exclude:  # before the series is checked: a projection of NaN can be left out
        kept, info["excluded_projections"] = kept_projections(len(data), exclude)
        info["file_indices"] = kept.tolist()
        data, angles = data[kept], np.asarray(angles)[kept]
    if image.pixel_size is not None:  # headers store float32: 0.4 reads back as 0.4000000059604645
        info["file_pixel_size"] = float(f"{image.pixel_size:.6g}")
    if pixel_size is None and image.pixel_size is not None:
        pixel_size, info["pixel_size_from"] = info["file_pixel_size"], "file metadata"
        if image.pixel_size == 1.0 and image.info.get("format") == "MRC":
            info["pixel_size_warning"] = (f"{path.name}: the MRC header gives 1 Å per pixel, the value many "
                                          "programs write when the pixel size is unset: check it, or give the "
                                          "pixel size")
            warnings.warn(info["pixel_size_warning"] + " (--pixel-size)", stacklevel=2)
    if pixel_size is None:
        info["pixel_size_from"] = "unknown"
        if missing_pixel_size is None:
            raise InputError(f"{path.name} has no pixel size in its metadata: give the pixel size in Å "
                             "(pixel_size=..., --pixel-size on the command line)")
        pixel_size, info["pixel_size_unknown"] = missing_pixel_size, True
    try:
        return TiltSeries(data, angles, pixel_size, 0.0 if tilt_axis is None else tilt_axis, metadata=info)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None


def read_frames(path) -> np.ndarray:
    """Frames per tilt, float32 ``(n_angles, n_frames, ny, nx)``, from a 4D TIFF, NPY or MRC file."""
    path = Path(path)
    data = read_image_file(path, extensions=(".tif", ".tiff", ".npy", ".mrc", ".st")).data
    if data.ndim != 4:
        raise InputError(f"{path.name} holds a {data.ndim}D array of shape {data.shape}: expected frames "
                         "shaped (n_angles, n_frames, ny, nx)")
    if not np.all(np.isfinite(data)):
        tilts = np.flatnonzero(~np.isfinite(data).reshape(len(data), -1).all(axis=1))
        raise InputError(f"{path.name} contains NaN or Inf pixels, in the frames of tilts "
                         f"{', '.join(map(str, tilts[:10]))}{', …' if len(tilts) > 10 else ''} (from 0)")
    return data.astype(np.float32, copy=False)


def write_tilt_series(path, series: TiltSeries) -> list[Path]:
    """Write the projections and their angles; returns the paths written.

    ``.tif``/``.tiff``: ImageJ-compatible float32 stack, pixel size as the ImageJ calibration
    (in nm). ``.mrc``/``.st``/``.ali``: MRC image stack (ispg 0) with the pixel size in the
    header (Å). The angles go to ``<stem>.tlt`` beside it, one tilt (or Euler triple) per line.
    Tilt axis and shifts are kept only in the project file (:mod:`napari_aet.project`).
    """
    path = Path(path)
    suffix = suffix_of(path, WRITE_EXTENSIONS, "a tilt series")
    with atomic_write(path) as temporary:
        if suffix in (".tif", ".tiff"):
            import tifffile

            per_nm = 10.0 / series.pixel_size
            tifffile.imwrite(temporary, series.projections, imagej=True, resolution=(per_nm, per_nm),
                             metadata={"unit": "nm", "axes": "ZYX", "aet_kind": "stack"})
        else:
            import mrcfile

            with mrcfile.new(temporary, overwrite=True) as mrc:
                mrc.set_data(series.projections)
                mrc.set_image_stack()
                mrc.voxel_size = series.pixel_size
    return [path, write_angles(path.with_suffix(".tlt"), series.angles)]
